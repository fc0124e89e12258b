//! Encode: frames to bytes, appended to a caller's buffer, and the small writers every
//! command's encoder shares.
//!
//! Encoding never fails: every frame the types allow has a wire form. Free text
//! (messages) has CR and LF replaced by spaces and tokens (names in `INFO`/`CONNECT`)
//! have blanks and control bytes replaced by `_`, so a frame can never break the framing.
//! The two hot frames, `PUB` and `MSG`, have functions that take their parts directly
//! ([`encode_pub`](crate::encode_pub), [`encode_msg`](crate::encode_msg)), so a sender
//! need not build a frame per message.

use bytes::{BufMut, BytesMut};

use crate::name::{Destination, RequestId};
use crate::Frame;

/// Appends `frame`, a [`ClientFrame`](crate::ClientFrame) or a
/// [`ServerFrame`](crate::ServerFrame), to `dst`.
///
/// ```
/// use bytes::BytesMut;
/// use agora_protocol::{encode, ServerFrame};
/// let mut buf = BytesMut::new();
/// encode(&ServerFrame::Ok { rid: Some(7) }, &mut buf);
/// assert_eq!(&buf[..], b"OK #7\r\n");
/// ```
pub fn encode<F: Frame>(frame: &F, dst: &mut BytesMut) {
    frame.encode(dst);
}

/// The command word and, when there is one, ` #<rid>`.
pub(crate) fn line_start(dst: &mut BytesMut, cmd: &str, rid: RequestId) {
    dst.put_slice(cmd.as_bytes());
    if let Some(r) = rid {
        dst.put_slice(b" #");
        put_u64(dst, r);
    }
}

/// A frame that is its word and request id only (`OK`, `STATS`, `PINGREQ`, …).
pub(crate) fn bare(dst: &mut BytesMut, cmd: &str, rid: RequestId) {
    line_start(dst, cmd, rid);
    crlf(dst);
}

/// A frame with one number after its request id (`ACK`, `UNSUB`, …).
pub(crate) fn num_frame(dst: &mut BytesMut, cmd: &str, rid: RequestId, n: u64) {
    line_start(dst, cmd, rid);
    dst.put_u8(b' ');
    put_u64(dst, n);
    crlf(dst);
}

/// A frame with a destination after its request id and an optional sub-command.
pub(crate) fn dest_frame(
    dst: &mut BytesMut,
    cmd: &str,
    sub: &str,
    rid: RequestId,
    dest: &Destination,
) {
    line_start(dst, cmd, rid);
    if !sub.is_empty() {
        dst.put_u8(b' ');
        dst.put_slice(sub.as_bytes());
    }
    put_dest(dst, dest);
    crlf(dst);
}

/// ` <n>` CRLF, the `n` bytes, CRLF: the end of a frame with a body.
pub(crate) fn body(dst: &mut BytesMut, b: &[u8]) {
    dst.put_u8(b' ');
    put_u64(dst, b.len() as u64);
    crlf(dst);
    dst.put_slice(b);
    crlf(dst);
}

/// ` queue:<name>` or ` topic:<name>`.
pub(crate) fn put_dest(dst: &mut BytesMut, d: &Destination) {
    dst.put_u8(b' ');
    dst.put_slice(d.kind.as_str().as_bytes());
    dst.put_u8(b':');
    dst.put_slice(d.name.as_bytes());
}

#[inline]
pub(crate) fn put_u64(dst: &mut BytesMut, n: u64) {
    let mut b = itoa::Buffer::new();
    dst.put_slice(b.format(n).as_bytes());
}

#[inline]
pub(crate) fn crlf(dst: &mut BytesMut) {
    dst.put_slice(b"\r\n");
}

/// A token: printable, no blanks. Anything else becomes `_`.
pub(crate) fn put_token(dst: &mut BytesMut, s: &str) {
    for &b in s.as_bytes() {
        dst.put_u8(if b > b' ' && b != 0x7f { b } else { b'_' });
    }
}

/// ` <message>` with line breaks flattened; nothing for an empty message.
pub(crate) fn put_message(dst: &mut BytesMut, m: &str) {
    let m = m.trim_matches([' ', '\t']);
    if m.is_empty() {
        return;
    }
    dst.put_u8(b' ');
    for &b in m.as_bytes() {
        dst.put_u8(if b == b'\r' || b == b'\n' { b' ' } else { b });
    }
}
