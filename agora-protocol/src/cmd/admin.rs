//! Administration: `PURGE`, `DELETE`, `BIND`, `UNBIND` and `STATS` (client), `STATSRESP`
//! (broker).
//!
//! ```text
//! purge     = "PURGE" [rid] dest
//! delete    = "DELETE" [rid] dest
//! bind      = "BIND" [rid] dest pattern-dest      ; queue:<name> topic:<name or pattern>
//! unbind    = "UNBIND" [rid] dest pattern-dest
//! stats     = "STATS" [rid] *stats-opt
//! stats-opt = "prefix=" value / "after=" dest / "limit=" number   ; limit >= 1
//! statsresp = "STATSRESP" [rid] size
//!             payload                  ; a JSON document (schema in the book)
//! ```
//!
//! This module owns these frames' decode and encode; it knows nothing of the `STATS`
//! document's contents.

use bytes::{BufMut, Bytes, BytesMut};

use crate::args::{err, number, shown, text, Args};
use crate::decode::Draft;
use crate::encode::{bare, body, crlf, dest_frame, line_start, put_u64};
use crate::error::{ErrorKind, ProtocolError};
use crate::frame::StatsPage;
use crate::name::{Destination, RequestId};
use crate::{ClientFrame, ServerFrame};

/// `purge = "PURGE" [rid] dest`
pub(crate) fn decode_purge(a: &mut Args<'_>) -> Result<Draft<ClientFrame>, ProtocolError> {
    let rid = a.rid()?;
    let d = a.dest()?;
    a.end()?;
    Ok(Draft {
        rid,
        frame: ClientFrame::Purge {
            rid,
            dest: d.unfilled(),
        },
        name: Some(d.name),
    })
}

/// `delete = "DELETE" [rid] dest`
pub(crate) fn decode_delete(a: &mut Args<'_>) -> Result<Draft<ClientFrame>, ProtocolError> {
    let rid = a.rid()?;
    let d = a.dest()?;
    a.end()?;
    Ok(Draft {
        rid,
        frame: ClientFrame::Delete {
            rid,
            dest: d.unfilled(),
        },
        name: Some(d.name),
    })
}

/// `bind = "BIND" [rid] dest pattern-dest` and `unbind = "UNBIND" …`: a queue and a
/// topic name or pattern. Decoded whole (an administrative frame: the names are
/// copied, not split off the buffer); that the first is a queue and the second a
/// topic is the broker's rule to answer.
pub(crate) fn decode_bind(a: &mut Args<'_>) -> Result<Draft<ClientFrame>, ProtocolError> {
    let rid = a.rid()?;
    let queue = a.dest()?;
    let queue = owned(a, queue);
    let topic = a.sub_dest()?;
    let topic = owned(a, topic);
    a.end()?;
    let frame = match a.cmd {
        "UNBIND" => ClientFrame::Unbind { rid, queue, topic },
        _ => ClientFrame::Bind { rid, queue, topic },
    };
    Ok(Draft::done(rid, frame))
}

/// A destination the line holds, copied out of it.
fn owned(a: &Args<'_>, d: crate::args::DestSpan) -> Destination {
    let mut dest = d.unfilled();
    dest.name = crate::name::Name::from_validated(Bytes::copy_from_slice(&a.line[d.name]));
    dest
}

/// `stats = "STATS" [rid] *stats-opt`. Unlike `CONNECT`'s, an unknown option is an
/// error: a misspelt `limit` must not silently list everything.
pub(crate) fn decode_stats(a: &mut Args<'_>) -> Result<Draft<ClientFrame>, ProtocolError> {
    let rid = a.rid()?;
    let mut page = StatsPage::default();
    while let Some(kv) = a.kv() {
        let (k, v, at) = kv?;
        if k.eq_ignore_ascii_case(b"prefix") {
            page.prefix = Some(text(v));
        } else if k.eq_ignore_ascii_case(b"after") {
            let d = std::str::from_utf8(v)
                .ok()
                .and_then(|t| t.parse::<Destination>().ok())
                .ok_or_else(|| {
                    err(
                        ErrorKind::BadArgs,
                        at,
                        format!(
                            "after= takes a destination (queue:name or topic:name), got '{}'",
                            shown(v)
                        ),
                    )
                })?;
            page.after = Some(d);
        } else if k.eq_ignore_ascii_case(b"limit") {
            let n = number(v)
                .and_then(|n| u32::try_from(n).ok())
                .filter(|n| *n > 0)
                .ok_or_else(|| err(ErrorKind::BadArgs, at, "limit must be a number from 1"))?;
            page.limit = Some(n);
        } else if k.eq_ignore_ascii_case(b"connections") {
            let n = number(v)
                .and_then(|n| u32::try_from(n).ok())
                .filter(|n| *n > 0)
                .ok_or_else(|| {
                    err(
                        ErrorKind::BadArgs,
                        at,
                        "connections must be a number from 1",
                    )
                })?;
            page.connections = Some(n);
        } else if k.eq_ignore_ascii_case(b"connections_after") {
            let n = number(v).ok_or_else(|| {
                err(
                    ErrorKind::BadArgs,
                    at,
                    "connections_after takes a connection id (a number)",
                )
            })?;
            page.connections_after = Some(n);
        } else {
            return Err(err(
                ErrorKind::BadArgs,
                at,
                format!(
                    "unknown STATS option '{}' (prefix, after, limit, connections, connections_after)",
                    shown(k)
                ),
            ));
        }
    }
    a.end()?;
    Ok(Draft::done(rid, ClientFrame::Stats { rid, page }))
}

/// `statsresp = "STATSRESP" [rid] size`, the size already taken off.
pub(crate) fn decode_statsresp(a: &mut Args<'_>) -> Result<Draft<ServerFrame>, ProtocolError> {
    let rid = a.rid()?;
    a.end()?;
    Ok(Draft::done(
        rid,
        ServerFrame::StatsResp {
            rid,
            json: Bytes::new(),
        },
    ))
}

pub(crate) fn encode_purge(rid: RequestId, dest: &Destination, dst: &mut BytesMut) {
    dest_frame(dst, "PURGE", "", rid, dest);
}

pub(crate) fn encode_delete(rid: RequestId, dest: &Destination, dst: &mut BytesMut) {
    dest_frame(dst, "DELETE", "", rid, dest);
}

pub(crate) fn encode_bind(
    word: &str,
    rid: RequestId,
    queue: &Destination,
    topic: &Destination,
    dst: &mut BytesMut,
) {
    line_start(dst, word, rid);
    crate::encode::put_dest(dst, queue);
    crate::encode::put_dest(dst, topic);
    crlf(dst);
}

pub(crate) fn encode_stats(rid: RequestId, page: &StatsPage, dst: &mut BytesMut) {
    if page.is_default() {
        return bare(dst, "STATS", rid);
    }
    line_start(dst, "STATS", rid);
    if let Some(p) = &page.prefix {
        dst.put_slice(b" prefix=");
        dst.put_slice(p.as_bytes());
    }
    if let Some(d) = &page.after {
        dst.put_slice(b" after=");
        dst.put_slice(d.to_string().as_bytes());
    }
    if let Some(n) = page.limit {
        dst.put_slice(b" limit=");
        put_u64(dst, n.into());
    }
    if let Some(n) = page.connections {
        dst.put_slice(b" connections=");
        put_u64(dst, n.into());
    }
    if let Some(n) = page.connections_after {
        dst.put_slice(b" connections_after=");
        put_u64(dst, n);
    }
    crlf(dst);
}

pub(crate) fn encode_statsresp(rid: RequestId, json: &[u8], dst: &mut BytesMut) {
    line_start(dst, "STATSRESP", rid);
    body(dst, json);
}
