//! [`ServerFrame`]: every frame the broker may send, and so every frame a client reads.
//!
//! This module owns the variants and the dispatch from a variant to its family's
//! encoder (under `cmd/`); the grammar of each lives with its encoder and parser there.

use bytes::{Bytes, BytesMut};

use crate::cmd::{admin, chain, publish, session, subscribe};
use crate::decode::{decode_frame, Parsed, Side};
use crate::frame::{Delivery, ErrorCode, ErrorReply, Headers, Info};
use crate::name::{Destination, Name, RequestId};
use crate::table::{CommandSpec, Parser, SentBy};
use crate::{Frame, Limits, ProtocolError};

/// A frame the broker sends to a client.
///
/// The comment on each variant gives its line; the book's Protocol chapter and the
/// command's module give its grammar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerFrame {
    /// `INFO …`: the greeting.
    Info(Info),
    /// `MSG` / `HMSG`: a delivery.
    Msg(Delivery),
    /// `OK [#rid]`: the request succeeded.
    Ok {
        /// Request id.
        rid: RequestId,
    },
    /// `PUBACK [#rid] [filtered]`: the publish is accepted (or was dropped on purpose
    /// by the destination's mutator chain: `filtered`).
    PubAck {
        /// Request id.
        rid: RequestId,
        /// A mutator dropped the message.
        filtered: bool,
    },
    /// `ERR [#rid] <code> <message>`
    Err(ErrorReply),
    /// `STATSRESP [#rid] <n>` + JSON document.
    StatsResp {
        /// Request id.
        rid: RequestId,
        /// The JSON document (schema in the book).
        json: Bytes,
    },
    /// `HELPRESP [#rid] <n>` + text.
    HelpResp {
        /// Request id.
        rid: RequestId,
        /// The help text.
        text: Bytes,
    },
    /// `CHAINRESP [#rid] <dest> <n>` + chain text (empty: no chain).
    ChainResp {
        /// Request id.
        rid: RequestId,
        /// The destination.
        dest: Destination,
        /// The chain.
        chain: Bytes,
    },
    /// `CANCEL <sid> <code> <message>`: the broker ended a subscription.
    Cancel {
        /// The subscription.
        sid: u64,
        /// Why.
        code: ErrorCode,
        /// Human-readable text.
        message: String,
    },
    /// `DROPPED <sid> <count>`: the broker dropped `count` of the subscription's
    /// messages (its subscriber buffer was full under the drop-oldest policy) since
    /// the last notice; sent where the gap is, before the next delivery. Only to
    /// clients that speak protocol 2.
    Dropped {
        /// The subscription.
        sid: u64,
        /// Messages dropped.
        count: u64,
    },
    /// `SHUTDOWN [<message>]`: the broker is shutting down; it will close soon.
    Shutdown {
        /// Human-readable text.
        message: String,
    },
    /// `PINGREQ [#rid]`: are you there? A client answers with `PINGRESP`.
    PingReq {
        /// Request id echoed by `PINGRESP`.
        rid: RequestId,
    },
    /// `PINGRESP [#rid]`: yes, to the client's `PINGREQ`.
    PingResp {
        /// The request id of the `PINGREQ`.
        rid: RequestId,
    },
}

impl Frame for ServerFrame {
    fn encode(&self, dst: &mut BytesMut) {
        match self {
            ServerFrame::Info(i) => session::encode_info(i, dst),
            ServerFrame::Msg(m) => {
                publish::encode_msg(&m.dest, m.sid, m.did, m.count, &m.headers, &m.payload, dst)
            }
            ServerFrame::Ok { rid } => session::encode_bare("OK", *rid, dst),
            ServerFrame::PubAck { rid, filtered } => publish::encode_puback(*rid, *filtered, dst),
            ServerFrame::Err(e) => session::encode_err(e.rid, e.code, &e.message, dst),
            ServerFrame::StatsResp { rid, json } => admin::encode_statsresp(*rid, json, dst),
            ServerFrame::HelpResp { rid, text } => session::encode_helpresp(*rid, text, dst),
            ServerFrame::ChainResp { rid, dest, chain } => {
                chain::encode_chainresp(*rid, dest, chain, dst)
            }
            ServerFrame::Cancel { sid, code, message } => {
                subscribe::encode_cancel(*sid, *code, message, dst)
            }
            ServerFrame::Dropped { sid, count } => subscribe::encode_dropped(*sid, *count, dst),
            ServerFrame::Shutdown { message } => session::encode_shutdown(message, dst),
            ServerFrame::PingReq { rid } => session::encode_bare("PINGREQ", *rid, dst),
            ServerFrame::PingResp { rid } => session::encode_bare("PINGRESP", *rid, dst),
        }
    }

    fn decode_with(buf: &mut BytesMut, limits: &Limits) -> Result<Option<Self>, ProtocolError> {
        decode_frame(buf, limits)
    }

    fn request_id(&self) -> RequestId {
        self.request_id()
    }

    fn command(&self) -> &'static str {
        self.command()
    }
}

impl ServerFrame {
    /// The request id the frame carries, if any.
    pub fn request_id(&self) -> RequestId {
        match self {
            ServerFrame::Err(e) => e.rid,
            ServerFrame::Ok { rid }
            | ServerFrame::PubAck { rid, .. }
            | ServerFrame::StatsResp { rid, .. }
            | ServerFrame::HelpResp { rid, .. }
            | ServerFrame::ChainResp { rid, .. }
            | ServerFrame::PingReq { rid }
            | ServerFrame::PingResp { rid } => *rid,
            ServerFrame::Info(_)
            | ServerFrame::Msg(_)
            | ServerFrame::Cancel { .. }
            | ServerFrame::Dropped { .. }
            | ServerFrame::Shutdown { .. } => None,
        }
    }

    /// The command word that starts the frame's line, e.g. `"MSG"`.
    pub fn command(&self) -> &'static str {
        match self {
            ServerFrame::Info(_) => "INFO",
            ServerFrame::Msg(m) if m.headers.is_empty() => "MSG",
            ServerFrame::Msg(_) => "HMSG",
            ServerFrame::Ok { .. } => "OK",
            ServerFrame::PubAck { .. } => "PUBACK",
            ServerFrame::Err(_) => "ERR",
            ServerFrame::StatsResp { .. } => "STATSRESP",
            ServerFrame::HelpResp { .. } => "HELPRESP",
            ServerFrame::ChainResp { .. } => "CHAINRESP",
            ServerFrame::Cancel { .. } => "CANCEL",
            ServerFrame::Dropped { .. } => "DROPPED",
            ServerFrame::Shutdown { .. } => "SHUTDOWN",
            ServerFrame::PingReq { .. } => "PINGREQ",
            ServerFrame::PingResp { .. } => "PINGRESP",
        }
    }
}

impl Side for ServerFrame {
    const SENT_BY: SentBy = SentBy::Broker;

    #[inline]
    fn parser(spec: &CommandSpec) -> Option<Parser<Self>> {
        spec.broker
    }

    #[inline(always)]
    fn direct(
        buf: &mut BytesMut,
        content: usize,
        line_total: usize,
        limits: &Limits,
    ) -> Option<Option<Self>> {
        publish::direct_msg(buf, content, line_total, limits)
    }

    #[inline(always)]
    fn fast(line: &[u8]) -> Option<Parsed<Self>> {
        publish::fast_msg(line)
    }

    fn fill(&mut self, name: Bytes, payload: Bytes, headers: Headers) {
        let dest = match self {
            ServerFrame::Msg(m) => {
                m.payload = payload;
                m.headers = headers;
                &mut m.dest
            }
            ServerFrame::ChainResp { dest, chain, .. } => {
                *chain = payload;
                dest
            }
            ServerFrame::StatsResp { json, .. } => {
                *json = payload;
                return;
            }
            ServerFrame::HelpResp { text, .. } => {
                *text = payload;
                return;
            }
            _ => return,
        };
        dest.name = Name::from_validated(name);
    }
}
