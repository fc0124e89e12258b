//! What the application's handles send the driver: commands, in order and bounded, and
//! the small control messages that must never wait for room.

use agora_protocol::bytes::Bytes;
use agora_protocol::{ClientFrame, Destination, Headers};
use async_channel::Sender;

use super::{Reply, SubEntry};
use crate::error::Error;

/// Requests from the application, in order.
pub(crate) enum Cmd {
    Publish {
        dest: Destination,
        headers: Headers,
        payload: Bytes,
        confirm: Option<Reply>,
    },
    Subscribe {
        sid: u64,
        entry: SubEntry,
        reply: Reply,
    },
    Unsubscribe {
        sid: u64,
        reply: Reply,
    },
    Ping {
        reply: Reply,
    },
    Stats {
        page: agora_protocol::StatsPage,
        reply: Reply,
    },
    /// Any other request answered by `OK`, a `…RESP` or `ERR`: the frame is built once
    /// its request id is known.
    Request {
        frame: Box<dyn FnOnce(agora_protocol::RequestId) -> ClientFrame + Send>,
        reply: Reply,
    },
    /// A request: publish with a reply address under the connection's inbox (the
    /// inbox subscribed first, once per connection); the reply, or an `ERR` to the
    /// publish, answers `reply`.
    Ask {
        dest: Destination,
        headers: Headers,
        payload: Bytes,
        /// The request's number (see [`Shared::next_request`]).
        number: u64,
        reply: Reply,
    },
    /// `Client::drain`: topic subscriptions end, consumers are held and their streams
    /// end once drained; `reply` hears once the application has let go of every
    /// consumer.
    Drain {
        reply: Reply,
    },
    Close {
        reply: Sender<()>,
    },
}

/// Small control messages that must never wait for room.
pub(crate) enum Ctl {
    Settle {
        did: u64,
        generation: u64,
        ack: bool,
        /// For a `NACK` (`!ack`): now, later, or to the dead-letter queue.
        how: agora_protocol::Nack,
    },
    Unsub {
        sid: u64,
    },
    /// `HOLD` (`on`) or `RESUME` of a topic subscription whose buffer filled, or was
    /// taken.
    Hold {
        sid: u64,
        on: bool,
    },
    Pong {
        rid: Option<u64>,
    },
    /// `close()` was called: stop reconnecting.
    Closing,
    /// A request's caller stopped waiting (timeout, or its future dropped): forget it.
    Forget {
        number: u64,
    },
    /// A request the requester wrote itself has a deadline before the one the
    /// driver's alarm is set for: set it again.
    Alarm,
}

impl Cmd {
    /// Answers a command the driver will never carry out with `e`.
    pub(crate) fn fail(self, e: Error) {
        match self {
            Cmd::Publish { confirm, .. } => {
                if let Some(r) = confirm {
                    let _ = r.try_send(Err(e));
                }
            }
            Cmd::Subscribe { reply, .. }
            | Cmd::Ask { reply, .. }
            | Cmd::Unsubscribe { reply, .. }
            | Cmd::Ping { reply }
            | Cmd::Stats { reply, .. }
            | Cmd::Request { reply, .. } => {
                let _ = reply.try_send(Err(e));
            }
            Cmd::Drain { reply } => {
                let _ = reply.try_send(Err(e));
            }
            Cmd::Close { reply } => {
                let _ = reply.try_send(());
            }
        }
    }
}
