//! [`ClientFrame`]: every frame a client may send, and so every frame the broker reads.
//!
//! This module owns the variants and the dispatch from a variant to its family's
//! encoder (under `cmd/`); the grammar of each lives with its encoder and parser there.

use bytes::{Bytes, BytesMut};

use crate::cmd::{admin, chain, publish, session, subscribe};
use crate::decode::{decode_frame, Parsed, Side};
use crate::frame::{Connect, Headers, Publish, Subscribe};
use crate::name::{Destination, Name, RequestId};
use crate::table::{CommandSpec, Parser, SentBy};
use crate::{Frame, Limits, ProtocolError};

/// A frame a client sends to the broker.
///
/// The comment on each variant gives its line; the book's Protocol chapter and the
/// command's module give its grammar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientFrame {
    /// `CONNECT [#rid] [name=…] [proto=…] [confirm=on|off]`
    Connect(Connect),
    /// `PUB` / `HPUB`
    Pub(Publish),
    /// `SUB [#rid] <dest> <sid> [prefetch=<n>] [ack=auto|manual]`
    Sub(Subscribe),
    /// `UNSUB [#rid] <sid>`
    Unsub {
        /// Request id.
        rid: RequestId,
        /// The subscription to end.
        sid: u64,
    },
    /// `HOLD [#rid] <sid>`: flow control; the broker sends the subscription nothing
    /// more until `RESUME` (a topic's messages wait in its subscriber buffer, a queue
    /// gives the consumer no new deliveries).
    Hold {
        /// Request id.
        rid: RequestId,
        /// The subscription.
        sid: u64,
    },
    /// `RESUME [#rid] <sid>`: the broker sends the held subscription's messages again.
    Resume {
        /// Request id.
        rid: RequestId,
        /// The subscription.
        sid: u64,
    },
    /// `ACK [#rid] <did>`: the delivery is done with; the broker forgets the message.
    Ack {
        /// Request id (an `ACK` with an id is answered by `OK`).
        rid: RequestId,
        /// The delivery id.
        did: u64,
    },
    /// `NACK [#rid] <did> [delay=<duration>] [dlq]`: give the message back, for
    /// redelivery now or later, or to the dead-letter queue.
    Nack {
        /// Request id.
        rid: RequestId,
        /// The delivery id.
        did: u64,
        /// What becomes of the message.
        how: crate::frame::Nack,
    },
    /// `SETACK [#rid] on|off`: publisher confirms on this connection.
    SetAck {
        /// Request id.
        rid: RequestId,
        /// On or off.
        on: bool,
    },
    /// `STATS [#rid] [prefix=…] [after=…] [limit=…]`: ask for the broker's state, and a
    /// page of its destinations.
    Stats {
        /// Request id.
        rid: RequestId,
        /// Which destinations to list.
        page: crate::frame::StatsPage,
    },
    /// `HELP [#rid]`: ask for a summary of the commands.
    Help {
        /// Request id.
        rid: RequestId,
    },
    /// `PURGE [#rid] <queue>`: drop every pending message of a queue.
    Purge {
        /// Request id.
        rid: RequestId,
        /// The queue.
        dest: Destination,
    },
    /// `DELETE [#rid] <dest>`: remove a destination; its subscribers get `CANCEL`.
    Delete {
        /// Request id.
        rid: RequestId,
        /// The destination.
        dest: Destination,
    },
    /// `BIND [#rid] <queue> topic:<name-or-pattern>`: every message published to a
    /// topic the pattern matches is also put in the queue (a durable subscription).
    Bind {
        /// Request id.
        rid: RequestId,
        /// The queue.
        queue: Destination,
        /// The topic name or pattern.
        topic: Destination,
    },
    /// `UNBIND [#rid] <queue> topic:<name-or-pattern>`: removes that binding.
    Unbind {
        /// Request id.
        rid: RequestId,
        /// The queue.
        queue: Destination,
        /// The topic name or pattern.
        topic: Destination,
    },
    /// `CHAIN [#rid] GET <dest>`: show a destination's mutator chain.
    ChainGet {
        /// Request id.
        rid: RequestId,
        /// The destination.
        dest: Destination,
    },
    /// `CHAIN [#rid] SET <dest> <n>` + chain text: attach a mutator chain.
    ChainSet {
        /// Request id.
        rid: RequestId,
        /// The destination.
        dest: Destination,
        /// The chain, in the mutator chain syntax.
        chain: Bytes,
    },
    /// `CHAIN [#rid] CLEAR <dest>`: remove a destination's mutator chain.
    ChainClear {
        /// Request id.
        rid: RequestId,
        /// The destination.
        dest: Destination,
    },
    /// `PINGREQ [#rid]`: are you there? (The broker asks too: [`ServerFrame::PingReq`].)
    ///
    /// [`ServerFrame::PingReq`]: crate::ServerFrame::PingReq
    PingReq {
        /// Request id echoed by `PINGRESP`.
        rid: RequestId,
    },
    /// `PINGRESP [#rid]`: yes, to the broker's `PINGREQ`.
    PingResp {
        /// The request id of the `PINGREQ`.
        rid: RequestId,
    },
    /// `DISCONNECT`: the client is leaving; the broker flushes and closes.
    Disconnect,
}

impl Frame for ClientFrame {
    fn encode(&self, dst: &mut BytesMut) {
        match self {
            ClientFrame::Connect(c) => session::encode_connect(c, dst),
            ClientFrame::Pub(p) => publish::encode_pub(p.rid, &p.dest, &p.headers, &p.payload, dst),
            ClientFrame::Sub(s) => subscribe::encode_sub(s, dst),
            ClientFrame::Unsub { rid, sid } => subscribe::encode_unsub(*rid, *sid, dst),
            ClientFrame::Hold { rid, sid } => subscribe::encode_hold(*rid, *sid, true, dst),
            ClientFrame::Resume { rid, sid } => subscribe::encode_hold(*rid, *sid, false, dst),
            ClientFrame::Ack { rid, did } => subscribe::encode_ack(*rid, *did, dst),
            ClientFrame::Nack { rid, did, how } => subscribe::encode_nack(*rid, *did, *how, dst),
            ClientFrame::SetAck { rid, on } => session::encode_setack(*rid, *on, dst),
            ClientFrame::Stats { rid, page } => admin::encode_stats(*rid, page, dst),
            ClientFrame::Help { rid } => session::encode_bare("HELP", *rid, dst),
            ClientFrame::Purge { rid, dest } => admin::encode_purge(*rid, dest, dst),
            ClientFrame::Delete { rid, dest } => admin::encode_delete(*rid, dest, dst),
            ClientFrame::Bind { rid, queue, topic } => {
                admin::encode_bind("BIND", *rid, queue, topic, dst)
            }
            ClientFrame::Unbind { rid, queue, topic } => {
                admin::encode_bind("UNBIND", *rid, queue, topic, dst)
            }
            ClientFrame::ChainGet { rid, dest } => chain::encode_chain_get(*rid, dest, dst),
            ClientFrame::ChainClear { rid, dest } => chain::encode_chain_clear(*rid, dest, dst),
            ClientFrame::ChainSet { rid, dest, chain } => {
                chain::encode_chain_set(*rid, dest, chain, dst)
            }
            ClientFrame::PingReq { rid } => session::encode_bare("PINGREQ", *rid, dst),
            ClientFrame::PingResp { rid } => session::encode_bare("PINGRESP", *rid, dst),
            ClientFrame::Disconnect => session::encode_bare("DISCONNECT", None, dst),
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

impl ClientFrame {
    /// The request id the frame carries, if any.
    pub fn request_id(&self) -> RequestId {
        match self {
            ClientFrame::Connect(c) => c.rid,
            ClientFrame::Pub(p) => p.rid,
            ClientFrame::Sub(s) => s.rid,
            ClientFrame::Unsub { rid, .. }
            | ClientFrame::Hold { rid, .. }
            | ClientFrame::Resume { rid, .. }
            | ClientFrame::Ack { rid, .. }
            | ClientFrame::Nack { rid, .. }
            | ClientFrame::SetAck { rid, .. }
            | ClientFrame::Stats { rid, .. }
            | ClientFrame::Help { rid }
            | ClientFrame::Purge { rid, .. }
            | ClientFrame::Delete { rid, .. }
            | ClientFrame::Bind { rid, .. }
            | ClientFrame::Unbind { rid, .. }
            | ClientFrame::ChainGet { rid, .. }
            | ClientFrame::ChainSet { rid, .. }
            | ClientFrame::ChainClear { rid, .. }
            | ClientFrame::PingReq { rid }
            | ClientFrame::PingResp { rid } => *rid,
            ClientFrame::Disconnect => None,
        }
    }

    /// The command word that starts the frame's line, e.g. `"PUB"`.
    pub fn command(&self) -> &'static str {
        match self {
            ClientFrame::Connect(_) => "CONNECT",
            ClientFrame::Pub(p) if p.headers.is_empty() => "PUB",
            ClientFrame::Pub(_) => "HPUB",
            ClientFrame::Sub(_) => "SUB",
            ClientFrame::Unsub { .. } => "UNSUB",
            ClientFrame::Hold { .. } => "HOLD",
            ClientFrame::Resume { .. } => "RESUME",
            ClientFrame::Ack { .. } => "ACK",
            ClientFrame::Nack { .. } => "NACK",
            ClientFrame::SetAck { .. } => "SETACK",
            ClientFrame::Stats { .. } => "STATS",
            ClientFrame::Help { .. } => "HELP",
            ClientFrame::Purge { .. } => "PURGE",
            ClientFrame::Delete { .. } => "DELETE",
            ClientFrame::Bind { .. } => "BIND",
            ClientFrame::Unbind { .. } => "UNBIND",
            ClientFrame::ChainGet { .. }
            | ClientFrame::ChainSet { .. }
            | ClientFrame::ChainClear { .. } => "CHAIN",
            ClientFrame::PingReq { .. } => "PINGREQ",
            ClientFrame::PingResp { .. } => "PINGRESP",
            ClientFrame::Disconnect => "DISCONNECT",
        }
    }
}

impl Side for ClientFrame {
    const SENT_BY: SentBy = SentBy::Client;

    #[inline]
    fn parser(spec: &CommandSpec) -> Option<Parser<Self>> {
        spec.client
    }

    #[inline(always)]
    fn direct(
        buf: &mut BytesMut,
        content: usize,
        line_total: usize,
        limits: &Limits,
    ) -> Option<Option<Self>> {
        publish::direct_pub(buf, content, line_total, limits)
    }

    #[inline(always)]
    fn fast(_line: &[u8]) -> Option<Parsed<Self>> {
        None
    }

    fn fill(&mut self, name: Bytes, payload: Bytes, headers: Headers) {
        let dest = match self {
            ClientFrame::Pub(p) => {
                p.payload = payload;
                p.headers = headers;
                &mut p.dest
            }
            ClientFrame::ChainSet { dest, chain, .. } => {
                *chain = payload;
                dest
            }
            ClientFrame::Sub(Subscribe { dest, .. })
            | ClientFrame::Purge { dest, .. }
            | ClientFrame::Delete { dest, .. }
            | ClientFrame::ChainGet { dest, .. }
            | ClientFrame::ChainClear { dest, .. } => dest,
            _ => return,
        };
        dest.name = Name::from_validated(name);
    }
}
