//! Administration: `PURGE`, `DELETE` and `STATS` (client), `STATSRESP` (broker).
//!
//! ```text
//! purge     = "PURGE" [rid] dest
//! delete    = "DELETE" [rid] dest
//! stats     = "STATS" [rid]
//! statsresp = "STATSRESP" [rid] size
//!             payload                  ; a JSON document (schema in the book)
//! ```
//!
//! This module owns these frames' decode and encode; it knows nothing of the `STATS`
//! document's contents.

use bytes::{Bytes, BytesMut};

use crate::args::Args;
use crate::decode::Draft;
use crate::encode::{bare, body, dest_frame, line_start};
use crate::error::ProtocolError;
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

/// `stats = "STATS" [rid]`
pub(crate) fn decode_stats(a: &mut Args<'_>) -> Result<Draft<ClientFrame>, ProtocolError> {
    let rid = a.rid()?;
    a.end()?;
    Ok(Draft::done(rid, ClientFrame::Stats { rid }))
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

pub(crate) fn encode_stats(rid: RequestId, dst: &mut BytesMut) {
    bare(dst, "STATS", rid);
}

pub(crate) fn encode_statsresp(rid: RequestId, json: &[u8], dst: &mut BytesMut) {
    line_start(dst, "STATSRESP", rid);
    body(dst, json);
}
