//! A fake broker on a raw socket, for what the real one does not do yet (refusing
//! credentials): it greets with `INFO`, reports each `CONNECT` line it reads and answers
//! as told.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;

use agora_protocol::bytes::BytesMut;
use agora_protocol::{decode_client, ClientFrame, Connect, Info, ServerFrame};

use super::DEADLINE;

/// What the fake broker does after a client's `CONNECT`.
#[derive(Clone, Copy)]
pub enum Answer {
    /// `OK #0`, then reads until the client goes.
    Ok,
    /// `OK #0`, then closes the connection.
    OkThenClose,
    /// `ERR #0 auth_failed bad credentials`, then closes, as the broker does.
    AuthFailed,
}

/// A fake broker on 127.0.0.1:0: its connections, in order, are answered as `answers`
/// says; every `CONNECT` line it reads is sent on the returned channel.
pub fn fake_broker(answers: Vec<Answer>) -> (SocketAddr, mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for answer in answers {
            let Ok((s, _)) = listener.accept() else {
                return;
            };
            let tx = tx.clone();
            std::thread::spawn(move || serve(s, answer, &tx));
        }
    });
    (addr, rx)
}

fn serve(mut s: TcpStream, answer: Answer, connects: &mpsc::Sender<String>) {
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut out = BytesMut::new();
    agora_protocol::encode(
        &ServerFrame::Info(Info {
            server: "fake".into(),
            version: "0".into(),
            proto: agora_protocol::PROTOCOL_VERSION,
            max_payload: 1 << 20,
            max_line: 4096,
            auth_required: true,
            tls_required: false,
            inbox: None,
        }),
        &mut out,
    );
    s.write_all(&out).unwrap();
    let mut lines = BufReader::new(s.try_clone().unwrap());
    let mut line = String::new();
    if lines.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let _ = connects.send(line.clone());
    match answer {
        Answer::Ok | Answer::OkThenClose => s.write_all(b"OK #0\r\n").unwrap(),
        Answer::AuthFailed => s
            .write_all(b"ERR #0 auth_failed bad credentials\r\n")
            .unwrap(),
    }
    if let Answer::Ok = answer {
        // Until the client's DISCONNECT or its end.
        loop {
            line.clear();
            match lines.read_line(&mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) if line.starts_with("DISCONNECT") => break,
                Ok(_) => {}
            }
        }
    }
    let _ = s.shutdown(std::net::Shutdown::Both);
}

/// The `CONNECT` frame a line holds.
pub fn connect_frame(line: &str) -> Connect {
    let mut buf = BytesMut::from(line.as_bytes());
    match decode_client(&mut buf) {
        Ok(Some(ClientFrame::Connect(c))) => c,
        other => panic!("not a CONNECT: {line:?}: {other:?}"),
    }
}
