//! Encode: frames to bytes, appended to a caller's buffer.
//!
//! Encoding never fails: every frame the types allow has a wire form. Free text
//! (messages) has CR and LF replaced by spaces and tokens (names in `INFO`/`CONNECT`)
//! have blanks and control bytes replaced by `_`, so a frame can never break the framing.
//! The two hot frames, `PUB` and `MSG`, have functions that take their parts directly, so
//! a sender need not build a [`Frame`] per message.

use bytes::{BufMut, BytesMut};

use crate::frame::*;

/// Appends `frame` to `dst`.
///
/// ```
/// use bytes::BytesMut;
/// use agora_protocol::{encode, Frame};
/// let mut buf = BytesMut::new();
/// encode(&Frame::Ok { rid: Some(7) }, &mut buf);
/// assert_eq!(&buf[..], b"OK #7\r\n");
/// ```
pub fn encode(frame: &Frame, dst: &mut BytesMut) {
    match frame {
        Frame::Connect(c) => {
            line_start(dst, "CONNECT", c.rid);
            if let Some(n) = &c.name {
                dst.put_slice(b" name=");
                put_token(dst, n);
            }
            if let Some(p) = c.proto {
                dst.put_slice(b" proto=");
                put_u64(dst, u64::from(p));
            }
            if let Some(on) = c.confirm {
                dst.put_slice(if on { b" confirm=on" } else { b" confirm=off" });
            }
            crlf(dst);
        }
        Frame::Pub(p) => encode_pub(p.rid, &p.dest, &p.headers, &p.payload, dst),
        Frame::Sub(s) => {
            line_start(dst, "SUB", s.rid);
            put_dest(dst, &s.dest);
            dst.put_u8(b' ');
            put_u64(dst, s.sid);
            if let Some(n) = s.prefetch {
                dst.put_slice(b" prefetch=");
                put_u64(dst, u64::from(n));
            }
            match s.ack {
                Some(AckMode::Auto) => dst.put_slice(b" ack=auto"),
                Some(AckMode::Manual) => dst.put_slice(b" ack=manual"),
                None => {}
            }
            crlf(dst);
        }
        Frame::Unsub { rid, sid } => num_frame(dst, "UNSUB", *rid, *sid),
        Frame::Ack { rid, did } => num_frame(dst, "ACK", *rid, *did),
        Frame::Nack { rid, did } => num_frame(dst, "NACK", *rid, *did),
        Frame::SetAck { rid, on } => {
            line_start(dst, "SETACK", *rid);
            dst.put_slice(if *on { b" on" } else { b" off" });
            crlf(dst);
        }
        Frame::Stats { rid } => bare(dst, "STATS", *rid),
        Frame::Help { rid } => bare(dst, "HELP", *rid),
        Frame::Purge { rid, dest } => dest_frame(dst, "PURGE", "", *rid, dest),
        Frame::Delete { rid, dest } => dest_frame(dst, "DELETE", "", *rid, dest),
        Frame::ChainGet { rid, dest } => dest_frame(dst, "CHAIN", "GET", *rid, dest),
        Frame::ChainClear { rid, dest } => dest_frame(dst, "CHAIN", "CLEAR", *rid, dest),
        Frame::ChainSet { rid, dest, chain } => {
            line_start(dst, "CHAIN", *rid);
            dst.put_slice(b" SET");
            put_dest(dst, dest);
            body(dst, chain);
        }
        Frame::Disconnect => bare(dst, "DISCONNECT", None),
        Frame::PingReq { rid } => bare(dst, "PINGREQ", *rid),
        Frame::PingResp { rid } => bare(dst, "PINGRESP", *rid),
        Frame::Info(i) => {
            dst.put_slice(b"INFO server=");
            put_token(dst, &i.server);
            dst.put_slice(b" version=");
            put_token(dst, &i.version);
            dst.put_slice(b" proto=");
            put_u64(dst, u64::from(i.proto));
            dst.put_slice(b" max_payload=");
            put_u64(dst, i.max_payload);
            dst.put_slice(b" max_line=");
            put_u64(dst, i.max_line);
            crlf(dst);
        }
        Frame::Msg(m) => encode_msg(&m.dest, m.sid, m.did, m.count, &m.headers, &m.payload, dst),
        Frame::Ok { rid } => bare(dst, "OK", *rid),
        Frame::PubAck { rid, filtered } => {
            line_start(dst, "PUBACK", *rid);
            if *filtered {
                dst.put_slice(b" filtered");
            }
            crlf(dst);
        }
        Frame::Err(e) => encode_err(e.rid, e.code, &e.message, dst),
        Frame::StatsResp { rid, json } => {
            line_start(dst, "STATSRESP", *rid);
            body(dst, json);
        }
        Frame::HelpResp { rid, text } => {
            line_start(dst, "HELPRESP", *rid);
            body(dst, text);
        }
        Frame::ChainResp { rid, dest, chain } => {
            line_start(dst, "CHAINRESP", *rid);
            put_dest(dst, dest);
            body(dst, chain);
        }
        Frame::Cancel { sid, code, message } => {
            dst.put_slice(b"CANCEL ");
            put_u64(dst, *sid);
            dst.put_u8(b' ');
            dst.put_slice(code.as_str().as_bytes());
            put_message(dst, message);
            crlf(dst);
        }
        Frame::Shutdown { message } => {
            dst.put_slice(b"SHUTDOWN");
            put_message(dst, message);
            crlf(dst);
        }
    }
}

/// Appends a `PUB` (or, with headers, `HPUB`) frame without building a [`Frame`].
pub fn encode_pub(
    rid: RequestId,
    dest: &Destination,
    headers: &Headers,
    payload: &[u8],
    dst: &mut BytesMut,
) {
    let hdr = block_len(headers);
    dst.reserve(32 + dest.name.len() + hdr + payload.len());
    line_start(dst, if hdr == 0 { "PUB" } else { "HPUB" }, rid);
    put_dest(dst, dest);
    sizes_and_body(dst, headers, hdr, payload);
}

/// Appends a `MSG` (or, with headers, `HMSG`) delivery frame without building a
/// [`Frame`].
pub fn encode_msg(
    dest: &Destination,
    sid: u64,
    did: u64,
    count: u32,
    headers: &Headers,
    payload: &[u8],
    dst: &mut BytesMut,
) {
    let hdr = block_len(headers);
    dst.reserve(64 + dest.name.len() + hdr + payload.len());
    dst.put_slice(if hdr == 0 { b"MSG" } else { b"HMSG" });
    put_dest(dst, dest);
    dst.put_u8(b' ');
    put_u64(dst, sid);
    dst.put_u8(b' ');
    put_u64(dst, did);
    dst.put_u8(b' ');
    put_u64(dst, u64::from(count));
    sizes_and_body(dst, headers, hdr, payload);
}

/// Appends an `ERR` frame without building a [`Frame`].
pub fn encode_err(rid: RequestId, code: ErrorCode, message: &str, dst: &mut BytesMut) {
    line_start(dst, "ERR", rid);
    dst.put_u8(b' ');
    dst.put_slice(code.as_str().as_bytes());
    put_message(dst, message);
    crlf(dst);
}

/// The header block's size on the wire: 0 without headers (a plain `PUB`/`MSG`).
fn block_len(headers: &Headers) -> usize {
    if headers.is_empty() {
        0
    } else {
        headers.encoded_len()
    }
}

fn sizes_and_body(dst: &mut BytesMut, headers: &Headers, hdr: usize, payload: &[u8]) {
    dst.put_u8(b' ');
    if hdr > 0 {
        put_u64(dst, hdr as u64);
        dst.put_u8(b' ');
    }
    put_u64(dst, (hdr + payload.len()) as u64);
    crlf(dst);
    if hdr > 0 {
        for (k, v) in headers.iter() {
            dst.put_slice(k.as_bytes());
            dst.put_slice(b": ");
            dst.put_slice(v.as_bytes());
            crlf(dst);
        }
        crlf(dst);
    }
    dst.put_slice(payload);
    crlf(dst);
}

fn dest_frame(dst: &mut BytesMut, cmd: &str, sub: &str, rid: RequestId, dest: &Destination) {
    line_start(dst, cmd, rid);
    if !sub.is_empty() {
        dst.put_u8(b' ');
        dst.put_slice(sub.as_bytes());
    }
    put_dest(dst, dest);
    crlf(dst);
}

fn line_start(dst: &mut BytesMut, cmd: &str, rid: RequestId) {
    dst.put_slice(cmd.as_bytes());
    if let Some(r) = rid {
        dst.put_slice(b" #");
        put_u64(dst, r);
    }
}

fn bare(dst: &mut BytesMut, cmd: &str, rid: RequestId) {
    line_start(dst, cmd, rid);
    crlf(dst);
}

fn num_frame(dst: &mut BytesMut, cmd: &str, rid: RequestId, n: u64) {
    line_start(dst, cmd, rid);
    dst.put_u8(b' ');
    put_u64(dst, n);
    crlf(dst);
}

fn body(dst: &mut BytesMut, b: &[u8]) {
    dst.put_u8(b' ');
    put_u64(dst, b.len() as u64);
    crlf(dst);
    dst.put_slice(b);
    crlf(dst);
}

fn put_dest(dst: &mut BytesMut, d: &Destination) {
    dst.put_u8(b' ');
    dst.put_slice(d.kind.as_str().as_bytes());
    dst.put_u8(b':');
    dst.put_slice(d.name.as_bytes());
}

#[inline]
fn put_u64(dst: &mut BytesMut, n: u64) {
    let mut b = itoa::Buffer::new();
    dst.put_slice(b.format(n).as_bytes());
}

#[inline]
fn crlf(dst: &mut BytesMut) {
    dst.put_slice(b"\r\n");
}

/// A token: printable, no blanks. Anything else becomes `_`.
fn put_token(dst: &mut BytesMut, s: &str) {
    for &b in s.as_bytes() {
        dst.put_u8(if b > b' ' && b != 0x7f { b } else { b'_' });
    }
}

/// ` <message>` with line breaks flattened; nothing for an empty message.
fn put_message(dst: &mut BytesMut, m: &str) {
    let m = m.trim_matches([' ', '\t']);
    if m.is_empty() {
        return;
    }
    dst.put_u8(b' ');
    for &b in m.as_bytes() {
        dst.put_u8(if b == b'\r' || b == b'\n' { b' ' } else { b });
    }
}
