//! A broker's receive loop over the sans-IO codec: bytes arrive in pieces, frames a
//! client sends come out, bad frames are answered with `ERR`, and a fatal error ends the
//! connection.
//!
//! `cargo run -p agora-protocol --example receive-loop`

use agora_protocol::bytes::BytesMut;
use agora_protocol::{decode_client_with, encode_err, ClientFrame, Limits};

// ANCHOR: loop
/// Decodes everything complete in `read_buf`; replies go into `write_buf`. Returns false
/// when the connection must close after `write_buf` is flushed.
fn on_readable(read_buf: &mut BytesMut, write_buf: &mut BytesMut, limits: &Limits) -> bool {
    loop {
        match decode_client_with(read_buf, limits) {
            Ok(Some(frame)) => handle(frame),
            Ok(None) => return true, // read more bytes, then call again
            Err(e) => {
                encode_err(e.request_id(), e.code(), &e.to_string(), write_buf);
                if e.is_fatal() {
                    return false;
                }
            }
        }
    }
}
// ANCHOR_END: loop

fn handle(frame: ClientFrame) {
    println!("frame: {frame:?}");
}

fn main() {
    let limits = Limits::default();
    let (mut read_buf, mut write_buf) = (BytesMut::new(), BytesMut::new());
    // The network delivers bytes in arbitrary pieces.
    for piece in [
        &b"PUB topic:pri"[..],
        b"ces 5\r\nhel",
        b"lo\r\nFROB\r\nPUB topic:t 3\r\ntoolong\r\n",
    ] {
        read_buf.extend_from_slice(piece);
        if !on_readable(&mut read_buf, &mut write_buf, &limits) {
            break;
        }
    }
    print!("replies:\n{}", String::from_utf8_lossy(&write_buf));
}
