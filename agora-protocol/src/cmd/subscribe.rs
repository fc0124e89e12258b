//! Subscriptions and their deliveries' fate: `SUB`, `UNSUB`, `HOLD`, `RESUME`, `ACK`,
//! `NACK` (client) and `CANCEL`, `DROPPED` (broker).
//!
//! ```text
//! sub     = "SUB" [rid] dest sid *sub-opt
//! sub-opt = "prefetch=" number           ; 1 to 2^32 - 1
//!         / "ack=" ("auto" / "manual")   ; the last of a repeated option wins;
//!                                        ; any other option is bad_args
//! unsub   = "UNSUB" [rid] sid
//! hold    = "HOLD" [rid] sid             ; flow control: nothing more until RESUME
//! resume  = "RESUME" [rid] sid
//! ack     = "ACK" [rid] did
//! nack    = "NACK" [rid] did [nack-opt]
//! nack-opt = "delay=" number ("ms" / "s" / "m")   ; 1 ms to 1 hour: back in the queue then
//!         / "dlq"                                ; straight to the dead-letter queue
//!         / "unseen"                             ; back now, not counted as a delivery
//! cancel  = "CANCEL" sid code [message]  ; no request id
//! dropped = "DROPPED" sid count          ; no request id; protocol 2
//! sid     = number                       ; subscription id, chosen by the client
//! did     = number                       ; delivery id, from a MSG
//! ```
//!
//! This module owns these frames' decode and encode; what the broker does with them is
//! the broker's business.

use bytes::{BufMut, BytesMut};

use crate::args::{err, number, shown, Args};
use crate::decode::Draft;
use crate::encode::{crlf, line_start, num_frame, put_dest, put_message, put_u64};
use crate::error::{ErrorKind, ProtocolError};
use crate::frame::{AckMode, ErrorCode, Nack, Subscribe};
use crate::name::RequestId;
use crate::{ClientFrame, ServerFrame};

/// `sub = "SUB" [rid] dest sid *sub-opt`
pub(crate) fn decode_sub(a: &mut Args<'_>) -> Result<Draft<ClientFrame>, ProtocolError> {
    let rid = a.rid()?;
    // Topics may be subscribed to by pattern; queues have no wildcards.
    let dest = a.sub_dest()?;
    let sid = a.u64("a subscription id")?;
    let (mut prefetch, mut ack) = (None, None);
    while let Some(kv) = a.kv() {
        let (k, v, at) = kv?;
        if k.eq_ignore_ascii_case(b"prefetch") {
            prefetch = Some(
                number(v)
                    .and_then(|n| u32::try_from(n).ok())
                    .filter(|&n| n > 0)
                    .ok_or_else(|| {
                        err(
                            ErrorKind::BadArgs,
                            at,
                            "prefetch must be a number from 1 to 2^32-1",
                        )
                    })?,
            );
        } else if k.eq_ignore_ascii_case(b"ack") {
            ack = Some(if v.eq_ignore_ascii_case(b"auto") {
                AckMode::Auto
            } else if v.eq_ignore_ascii_case(b"manual") {
                AckMode::Manual
            } else {
                return Err(err(
                    ErrorKind::BadArgs,
                    at,
                    "ack must be 'auto' or 'manual'",
                ));
            });
        } else {
            return Err(err(
                ErrorKind::BadArgs,
                at,
                format!("unknown SUB option '{}' (prefetch, ack)", shown(k)),
            ));
        }
    }
    Ok(Draft {
        rid,
        frame: ClientFrame::Sub(Subscribe {
            rid,
            dest: dest.unfilled(),
            sid,
            prefetch,
            ack,
        }),
        name: Some(dest.name),
    })
}

/// `unsub = "UNSUB" [rid] sid`
pub(crate) fn decode_unsub(a: &mut Args<'_>) -> Result<Draft<ClientFrame>, ProtocolError> {
    let rid = a.rid()?;
    let sid = a.u64("a subscription id")?;
    a.end()?;
    Ok(Draft::done(rid, ClientFrame::Unsub { rid, sid }))
}

/// `hold = "HOLD" [rid] sid`
pub(crate) fn decode_hold(a: &mut Args<'_>) -> Result<Draft<ClientFrame>, ProtocolError> {
    let rid = a.rid()?;
    let sid = a.u64("a subscription id")?;
    a.end()?;
    Ok(Draft::done(rid, ClientFrame::Hold { rid, sid }))
}

/// `resume = "RESUME" [rid] sid`
pub(crate) fn decode_resume(a: &mut Args<'_>) -> Result<Draft<ClientFrame>, ProtocolError> {
    let rid = a.rid()?;
    let sid = a.u64("a subscription id")?;
    a.end()?;
    Ok(Draft::done(rid, ClientFrame::Resume { rid, sid }))
}

/// `dropped = "DROPPED" sid count`
pub(crate) fn decode_dropped(a: &mut Args<'_>) -> Result<Draft<ServerFrame>, ProtocolError> {
    let sid = a.u64("a subscription id")?;
    let count = a.u64("a count")?;
    a.end()?;
    Ok(Draft::done(None, ServerFrame::Dropped { sid, count }))
}

pub(crate) fn encode_hold(rid: RequestId, sid: u64, hold: bool, dst: &mut BytesMut) {
    num_frame(dst, if hold { "HOLD" } else { "RESUME" }, rid, sid);
}

pub(crate) fn encode_dropped(sid: u64, count: u64, dst: &mut BytesMut) {
    line_start(dst, "DROPPED", None);
    dst.put_u8(b' ');
    put_u64(dst, sid);
    dst.put_u8(b' ');
    put_u64(dst, count);
    crlf(dst);
}

/// `ack = "ACK" [rid] did`
pub(crate) fn decode_ack(a: &mut Args<'_>) -> Result<Draft<ClientFrame>, ProtocolError> {
    let rid = a.rid()?;
    let did = a.u64("a delivery id")?;
    a.end()?;
    Ok(Draft::done(rid, ClientFrame::Ack { rid, did }))
}

/// `nack = "NACK" [rid] did [nack-opt]`
pub(crate) fn decode_nack(a: &mut Args<'_>) -> Result<Draft<ClientFrame>, ProtocolError> {
    let rid = a.rid()?;
    let did = a.u64("a delivery id")?;
    let mut how = Nack::Requeue;
    if a.pos < a.len {
        let t = a.toks[a.pos];
        let at = a.offset(t);
        a.pos += 1;
        how = if t.eq_ignore_ascii_case(b"dlq") {
            Nack::DeadLetter
        } else if t.eq_ignore_ascii_case(b"unseen") {
            Nack::Unseen
        } else if let Some(v) = strip_prefix_ignore_case(t, b"delay=") {
            Nack::Delay(nack_delay(v).ok_or_else(|| {
                err(
                    ErrorKind::BadArgs,
                    at,
                    format!(
                        "delay= takes 1 ms to 1 hour, as <n>ms, <n>s or <n>m, got '{}'",
                        shown(v)
                    ),
                )
            })?)
        } else {
            return Err(err(
                ErrorKind::BadArgs,
                at,
                format!(
                    "unknown NACK option '{}' (delay=<duration>, dlq, unseen)",
                    shown(t)
                ),
            ));
        };
    }
    a.end()?;
    Ok(Draft::done(rid, ClientFrame::Nack { rid, did, how }))
}

fn strip_prefix_ignore_case<'a>(t: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    (t.len() >= prefix.len() && t[..prefix.len()].eq_ignore_ascii_case(prefix))
        .then(|| &t[prefix.len()..])
}

/// `<n>ms`, `<n>s` or `<n>m`, from 1 ms to [`MAX_NACK_DELAY`].
fn nack_delay(v: &[u8]) -> Option<std::time::Duration> {
    use std::time::Duration;
    let digits = v.iter().take_while(|b| b.is_ascii_digit()).count();
    let n = number(&v[..digits])?;
    let d = match &v[digits..] {
        b"ms" => Duration::from_millis(n),
        b"s" => Duration::from_secs(n),
        b"m" => Duration::from_secs(n.checked_mul(60)?),
        _ => return None,
    };
    (d >= Duration::from_millis(1) && d <= MAX_NACK_DELAY).then_some(d)
}

/// The longest a `NACK delay=` may hold a message back.
pub const MAX_NACK_DELAY: std::time::Duration = std::time::Duration::from_secs(3600);

/// `cancel = "CANCEL" sid code [message]`
pub(crate) fn decode_cancel(a: &mut Args<'_>) -> Result<Draft<ServerFrame>, ProtocolError> {
    let sid = a.u64("a subscription id")?;
    let code = ErrorCode::from_token(a.next("an error code")?);
    let message = a.rest_text();
    Ok(Draft::done(
        None,
        ServerFrame::Cancel { sid, code, message },
    ))
}

pub(crate) fn encode_sub(s: &Subscribe, dst: &mut BytesMut) {
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

pub(crate) fn encode_unsub(rid: RequestId, sid: u64, dst: &mut BytesMut) {
    num_frame(dst, "UNSUB", rid, sid);
}

pub(crate) fn encode_ack(rid: RequestId, did: u64, dst: &mut BytesMut) {
    num_frame(dst, "ACK", rid, did);
}

pub(crate) fn encode_nack(rid: RequestId, did: u64, how: Nack, dst: &mut BytesMut) {
    line_start(dst, "NACK", rid);
    dst.put_u8(b' ');
    put_u64(dst, did);
    match how {
        Nack::Requeue => {}
        Nack::DeadLetter => dst.put_slice(b" dlq"),
        Nack::Unseen => dst.put_slice(b" unseen"),
        Nack::Delay(d) => {
            // In the largest unit that is exact.
            let ms = d.as_millis() as u64;
            dst.put_slice(b" delay=");
            match ms {
                ms if ms % 60_000 == 0 => {
                    put_u64(dst, ms / 60_000);
                    dst.put_u8(b'm');
                }
                ms if ms % 1000 == 0 => {
                    put_u64(dst, ms / 1000);
                    dst.put_u8(b's');
                }
                ms => {
                    put_u64(dst, ms);
                    dst.put_slice(b"ms");
                }
            }
        }
    }
    crlf(dst);
}

pub(crate) fn encode_cancel(sid: u64, code: ErrorCode, message: &str, dst: &mut BytesMut) {
    dst.put_slice(b"CANCEL ");
    put_u64(dst, sid);
    dst.put_u8(b' ');
    dst.put_slice(code.as_str().as_bytes());
    put_message(dst, message);
    crlf(dst);
}
