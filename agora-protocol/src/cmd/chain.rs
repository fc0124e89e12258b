//! Mutator chains: `CHAIN GET`, `CHAIN SET`, `CHAIN CLEAR` (client), `CHAINRESP`
//! (broker).
//!
//! ```text
//! chain-get   = "CHAIN" [rid] "GET" dest
//! chain-set   = "CHAIN" [rid] "SET" dest size
//!               payload                ; the chain text
//! chain-clear = "CHAIN" [rid] "CLEAR" dest
//! chainresp   = "CHAINRESP" [rid] dest size
//!               payload                ; the chain text; empty: no chain
//! ```
//!
//! `CHAIN` is one command word with three forms, and only `SET` carries a payload: the
//! command table marks it so (`Body::SizedIfSet`), and the framing reads the size before
//! this module reads the rest. This module owns the frames, not the chain syntax (that
//! is the broker's).

use bytes::{BufMut, Bytes, BytesMut};

use crate::args::{err, shown, Args};
use crate::decode::Draft;
use crate::encode::{body, dest_frame, line_start, put_dest};
use crate::error::{ErrorKind, ProtocolError};
use crate::name::{Destination, RequestId};
use crate::{ClientFrame, ServerFrame};

/// `chain-get / chain-set / chain-clear`; for `SET` the size is already taken off.
pub(crate) fn decode_chain(a: &mut Args<'_>) -> Result<Draft<ClientFrame>, ProtocolError> {
    let rid = a.rid()?;
    let sub = a.next("GET, SET or CLEAR")?;
    let d = if sub.eq_ignore_ascii_case(b"GET")
        || sub.eq_ignore_ascii_case(b"CLEAR")
        || sub.eq_ignore_ascii_case(b"SET")
    {
        a.dest()?
    } else {
        return Err(err(
            ErrorKind::BadArgs,
            a.offset(sub),
            format!(
                "CHAIN takes GET <dest>, SET <dest> <n> or CLEAR <dest>, got '{}'",
                shown(sub)
            ),
        ));
    };
    a.end()?;
    let dest = d.unfilled();
    let frame = if sub.eq_ignore_ascii_case(b"GET") {
        ClientFrame::ChainGet { rid, dest }
    } else if sub.eq_ignore_ascii_case(b"CLEAR") {
        ClientFrame::ChainClear { rid, dest }
    } else {
        ClientFrame::ChainSet {
            rid,
            dest,
            chain: Bytes::new(),
        }
    };
    Ok(Draft {
        rid,
        frame,
        name: Some(d.name),
    })
}

/// `chainresp = "CHAINRESP" [rid] dest size`, the size already taken off.
pub(crate) fn decode_chainresp(a: &mut Args<'_>) -> Result<Draft<ServerFrame>, ProtocolError> {
    let rid = a.rid()?;
    let d = a.dest()?;
    a.end()?;
    Ok(Draft {
        rid,
        frame: ServerFrame::ChainResp {
            rid,
            dest: d.unfilled(),
            chain: Bytes::new(),
        },
        name: Some(d.name),
    })
}

pub(crate) fn encode_chain_get(rid: RequestId, dest: &Destination, dst: &mut BytesMut) {
    dest_frame(dst, "CHAIN", "GET", rid, dest);
}

pub(crate) fn encode_chain_clear(rid: RequestId, dest: &Destination, dst: &mut BytesMut) {
    dest_frame(dst, "CHAIN", "CLEAR", rid, dest);
}

pub(crate) fn encode_chain_set(
    rid: RequestId,
    dest: &Destination,
    chain: &[u8],
    dst: &mut BytesMut,
) {
    line_start(dst, "CHAIN", rid);
    dst.put_slice(b" SET");
    put_dest(dst, dest);
    body(dst, chain);
}

pub(crate) fn encode_chainresp(
    rid: RequestId,
    dest: &Destination,
    chain: &[u8],
    dst: &mut BytesMut,
) {
    line_start(dst, "CHAINRESP", rid);
    put_dest(dst, dest);
    body(dst, chain);
}
