//! The session around the messages: `CONNECT`, `SETACK`, `HELP`, `DISCONNECT` (client);
//! `INFO`, `OK`, `ERR`, `HELPRESP`, `SHUTDOWN` (broker); `PINGREQ` and `PINGRESP`
//! (either side).
//!
//! ```text
//! connect     = "CONNECT" [rid] *connect-opt
//! connect-opt = "name=" value / "proto=" number / "confirm=" ("on" / "off")
//!             / "token=" value / "user=" value / "password=" pct-encoded / kv
//!                                      ; unknown keys are ignored; proto < 2^32
//! pct-encoded = *(unreserved / "%" HEXDIG HEXDIG)   ; RFC 3986; decodes to UTF-8
//! setack      = "SETACK" [rid] ("on" / "off")
//! help        = "HELP" [rid]
//! disconnect  = "DISCONNECT"           ; no request id
//! pingreq     = ("PINGREQ" / "PING") [rid]   ; PING is an alias; senders write PINGREQ
//! pingresp    = ("PINGRESP" / "PONG") [rid]  ; PONG is an alias; senders write PINGRESP
//! info        = "INFO" *info-opt       ; no request id
//! info-opt    = %s"server=" value / %s"version=" value / %s"proto=" number
//!             / %s"max_payload=" number / %s"max_line=" number
//!             / %s"auth_required=" ("0" / "1") / %s"tls_required=" ("0" / "1")
//!             / %s"inbox=" value / kv
//!                                      ; unknown keys are ignored
//! ok          = "OK" [rid]
//! err         = "ERR" [rid] code [message]
//! helpresp    = "HELPRESP" [rid] size
//!               payload                ; text for people
//! shutdown    = "SHUTDOWN" [message]   ; no request id
//! ```
//!
//! This module owns these frames' decode and encode. Unknown `CONNECT` and `INFO` keys
//! are ignored on purpose, so that either side may be newer than the other.

use bytes::{BufMut, Bytes, BytesMut};

use crate::args::{err, number, on_off, shown, text, Args};
use crate::decode::Draft;
use crate::encode::{bare, body, crlf, line_start, put_message, put_token, put_u64};
use crate::error::{ErrorKind, ProtocolError};
use crate::frame::{Connect, ErrorCode, ErrorReply, Info, Password};
use crate::name::RequestId;
use crate::{ClientFrame, ServerFrame};

/// `connect = "CONNECT" [rid] *connect-opt`
pub(crate) fn decode_connect(a: &mut Args<'_>) -> Result<Draft<ClientFrame>, ProtocolError> {
    let rid = a.rid()?;
    let mut c = Connect {
        rid,
        ..Connect::default()
    };
    while let Some(kv) = a.kv() {
        let (k, v, at) = kv?;
        if k.eq_ignore_ascii_case(b"name") {
            c.name = Some(text(v));
        } else if k.eq_ignore_ascii_case(b"proto") {
            c.proto = Some(
                number(v)
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or_else(|| err(ErrorKind::BadArgs, at, "proto must be a number"))?,
            );
        } else if k.eq_ignore_ascii_case(b"token") {
            c.token = Some(text(v));
        } else if k.eq_ignore_ascii_case(b"user") {
            c.user = Some(text(v));
        } else if k.eq_ignore_ascii_case(b"password") {
            let p = pct_decode(v).ok_or_else(|| {
                err(
                    ErrorKind::BadArgs,
                    at,
                    "password must be percent-encoded UTF-8 (RFC 3986)",
                )
            })?;
            c.password = Some(Password::new(p));
        } else if k.eq_ignore_ascii_case(b"confirm") {
            c.confirm = Some(
                on_off(v)
                    .ok_or_else(|| err(ErrorKind::BadArgs, at, "confirm must be on or off"))?,
            );
        }
        // Unknown keys are ignored, so newer clients can talk to older brokers.
    }
    Ok(Draft::done(rid, ClientFrame::Connect(c)))
}

/// `setack = "SETACK" [rid] ("on" / "off")`
pub(crate) fn decode_setack(a: &mut Args<'_>) -> Result<Draft<ClientFrame>, ProtocolError> {
    let rid = a.rid()?;
    let t = a.next("'on' or 'off'")?;
    let on = on_off(t).ok_or_else(|| {
        err(
            ErrorKind::BadArgs,
            a.offset(t),
            format!("SETACK takes 'on' or 'off', got '{}'", shown(t)),
        )
    })?;
    a.end()?;
    Ok(Draft::done(rid, ClientFrame::SetAck { rid, on }))
}

/// `help = "HELP" [rid]`
pub(crate) fn decode_help(a: &mut Args<'_>) -> Result<Draft<ClientFrame>, ProtocolError> {
    let rid = a.rid()?;
    a.end()?;
    Ok(Draft::done(rid, ClientFrame::Help { rid }))
}

/// `disconnect = "DISCONNECT"`
pub(crate) fn decode_disconnect(a: &mut Args<'_>) -> Result<Draft<ClientFrame>, ProtocolError> {
    a.end()?;
    Ok(Draft::done(None, ClientFrame::Disconnect))
}

/// `pingreq = ("PINGREQ" / "PING") [rid]`, read by either side.
fn ping_rid(a: &mut Args<'_>) -> Result<RequestId, ProtocolError> {
    let rid = a.rid()?;
    a.end()?;
    Ok(rid)
}

pub(crate) fn decode_pingreq_client(a: &mut Args<'_>) -> Result<Draft<ClientFrame>, ProtocolError> {
    let rid = ping_rid(a)?;
    Ok(Draft::done(rid, ClientFrame::PingReq { rid }))
}

pub(crate) fn decode_pingreq_server(a: &mut Args<'_>) -> Result<Draft<ServerFrame>, ProtocolError> {
    let rid = ping_rid(a)?;
    Ok(Draft::done(rid, ServerFrame::PingReq { rid }))
}

/// `pingresp = ("PINGRESP" / "PONG") [rid]`, read by either side.
pub(crate) fn decode_pingresp_client(
    a: &mut Args<'_>,
) -> Result<Draft<ClientFrame>, ProtocolError> {
    let rid = ping_rid(a)?;
    Ok(Draft::done(rid, ClientFrame::PingResp { rid }))
}

pub(crate) fn decode_pingresp_server(
    a: &mut Args<'_>,
) -> Result<Draft<ServerFrame>, ProtocolError> {
    let rid = ping_rid(a)?;
    Ok(Draft::done(rid, ServerFrame::PingResp { rid }))
}

/// `info = "INFO" *info-opt`
pub(crate) fn decode_info(a: &mut Args<'_>) -> Result<Draft<ServerFrame>, ProtocolError> {
    let mut info = Info::default();
    while let Some(kv) = a.kv() {
        let (k, v, at) = kv?;
        let num = || {
            number(v).ok_or_else(|| {
                err(
                    ErrorKind::BadArgs,
                    at,
                    format!("INFO {} must be a number", shown(k)),
                )
            })
        };
        if k.eq_ignore_ascii_case(b"server") {
            info.server = text(v);
        } else if k.eq_ignore_ascii_case(b"version") {
            info.version = text(v);
        } else if k.eq_ignore_ascii_case(b"proto") {
            info.proto = u32::try_from(num()?)
                .map_err(|_| err(ErrorKind::BadArgs, at, "proto too large"))?;
        } else if k.eq_ignore_ascii_case(b"max_payload") {
            info.max_payload = num()?;
        } else if k.eq_ignore_ascii_case(b"max_line") {
            info.max_line = num()?;
        } else if k.eq_ignore_ascii_case(b"auth_required") {
            info.auth_required = num()? != 0;
        } else if k.eq_ignore_ascii_case(b"tls_required") {
            info.tls_required = num()? != 0;
        } else if k.eq_ignore_ascii_case(b"inbox") {
            info.inbox = Some(text(v));
        }
        // Unknown keys are ignored (newer brokers may say more).
    }
    Ok(Draft::done(None, ServerFrame::Info(info)))
}

/// `ok = "OK" [rid]`
pub(crate) fn decode_ok(a: &mut Args<'_>) -> Result<Draft<ServerFrame>, ProtocolError> {
    let rid = a.rid()?;
    a.end()?;
    Ok(Draft::done(rid, ServerFrame::Ok { rid }))
}

/// `err = "ERR" [rid] code [message]`
pub(crate) fn decode_err(a: &mut Args<'_>) -> Result<Draft<ServerFrame>, ProtocolError> {
    let rid = a.rid()?;
    let code = ErrorCode::from_token(a.next("an error code")?);
    let message = a.rest_text();
    Ok(Draft::done(
        rid,
        ServerFrame::Err(ErrorReply { rid, code, message }),
    ))
}

/// `helpresp = "HELPRESP" [rid] size`, the size already taken off.
pub(crate) fn decode_helpresp(a: &mut Args<'_>) -> Result<Draft<ServerFrame>, ProtocolError> {
    let rid = a.rid()?;
    a.end()?;
    Ok(Draft::done(
        rid,
        ServerFrame::HelpResp {
            rid,
            text: Bytes::new(),
        },
    ))
}

/// `shutdown = "SHUTDOWN" [message]`
pub(crate) fn decode_shutdown(a: &mut Args<'_>) -> Result<Draft<ServerFrame>, ProtocolError> {
    let message = a.rest_text();
    Ok(Draft::done(None, ServerFrame::Shutdown { message }))
}

pub(crate) fn encode_connect(c: &Connect, dst: &mut BytesMut) {
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
    if let Some(t) = &c.token {
        dst.put_slice(b" token=");
        put_token(dst, t);
    }
    if let Some(u) = &c.user {
        dst.put_slice(b" user=");
        put_token(dst, u);
    }
    if let Some(p) = &c.password {
        dst.put_slice(b" password=");
        pct_encode(p.expose(), dst);
    }
    crlf(dst);
}

pub(crate) fn encode_setack(rid: RequestId, on: bool, dst: &mut BytesMut) {
    line_start(dst, "SETACK", rid);
    dst.put_slice(if on { b" on" } else { b" off" });
    crlf(dst);
}

/// The frames that are a word and a request id: `HELP`, `OK`, `PINGREQ`, `PINGRESP`,
/// and `DISCONNECT` (never with an id).
pub(crate) fn encode_bare(word: &str, rid: RequestId, dst: &mut BytesMut) {
    bare(dst, word, rid);
}

pub(crate) fn encode_info(i: &Info, dst: &mut BytesMut) {
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
    if i.auth_required {
        dst.put_slice(b" auth_required=1");
    }
    if i.tls_required {
        dst.put_slice(b" tls_required=1");
    }
    if let Some(inbox) = &i.inbox {
        dst.put_slice(b" inbox=");
        put_token(dst, inbox);
    }
    crlf(dst);
}

/// Appends an `ERR` frame without building a [`ServerFrame`].
pub fn encode_err(rid: RequestId, code: ErrorCode, message: &str, dst: &mut BytesMut) {
    line_start(dst, "ERR", rid);
    dst.put_u8(b' ');
    dst.put_slice(code.as_str().as_bytes());
    put_message(dst, message);
    crlf(dst);
}

pub(crate) fn encode_helpresp(rid: RequestId, text: &[u8], dst: &mut BytesMut) {
    line_start(dst, "HELPRESP", rid);
    body(dst, text);
}

pub(crate) fn encode_shutdown(message: &str, dst: &mut BytesMut) {
    dst.put_slice(b"SHUTDOWN");
    put_message(dst, message);
    crlf(dst);
}

/// RFC 3986 percent-encoding: unreserved characters as they are, every other byte as
/// `%XX`.
pub(crate) fn pct_encode(text: &str, dst: &mut BytesMut) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in text.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            dst.put_u8(b);
        } else {
            dst.put_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
        }
    }
}

/// The text `v` percent-encodes; `None` for a bad escape or bytes that are not UTF-8.
/// Characters that need no escape are taken as they are, escaped or not.
pub(crate) fn pct_decode(v: &[u8]) -> Option<String> {
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    while i < v.len() {
        if v[i] == b'%' {
            let hex = v.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(v[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}
