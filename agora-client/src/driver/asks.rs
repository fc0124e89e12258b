//! Requests waiting for a reply: by number, with the request id whose `ERR` would
//! answer them instead, and, for those a requester wrote itself, the deadline the
//! driver's alarm keeps for them; and [`Asker`], the way a requester writes its own
//! (see [`PubBuf::write_request`](crate::pubbuf::PubBuf::write_request)).

use std::collections::HashMap;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::Mutex;
use std::time::Instant;

use agora_protocol::{Destination, Headers};

use super::{Core, Ctl, Pending, Reply, Shared};
use crate::error::Error;
use crate::lock;
use crate::pubbuf::Sent;

/// Requests waiting for their reply.
#[derive(Default)]
pub(super) struct Requests {
    /// By number.
    pub(super) waiting: HashMap<u64, Waiting>,
    /// When the driver's alarm for their deadlines rings (`None`: it is not set).
    pub(super) alarm: Option<Instant>,
}

/// A request waiting for its reply.
pub(super) struct Waiting {
    pub(super) reply: Reply,
    /// The request id of its publish (whose `ERR` would answer it instead).
    pub(super) rid: u64,
    /// When the driver answers it [`Error::Timeout`]: for one the requester wrote
    /// itself (the others' requesters keep their own timers, which also cover the
    /// wait for room in the command queue).
    pub(super) deadline: Option<Instant>,
}

impl Requests {
    /// Answers every request whose deadline has passed [`Error::Timeout`], forgets
    /// it, and sets the alarm for the next deadline (returned).
    pub(super) fn expire(
        &mut self,
        now: Instant,
        pending: &Mutex<HashMap<u64, Pending>>,
    ) -> Option<Instant> {
        let expired: Vec<u64> = self
            .waiting
            .iter()
            .filter(|(_, w)| w.deadline.is_some_and(|d| d <= now))
            .map(|(&n, _)| n)
            .collect();
        for n in expired {
            if let Some(w) = self.waiting.remove(&n) {
                lock(pending).remove(&w.rid);
                let _ = w.reply.try_send(Err(Error::Timeout));
            }
        }
        self.alarm = self.waiting.values().filter_map(|w| w.deadline).min();
        self.alarm
    }
}

/// A client's way to write a request itself, registered as the driver registers the
/// ones it writes (see [`PubBuf::write_request`]). Weak: the driver's end (its error
/// and event streams ending) must not wait for the client's handles.
pub(crate) struct Asker(pub(super) std::sync::Weak<Core>);

impl Asker {
    /// Writes request `number` to `dest` on the requester's thread, when the
    /// connection allows it; `reply` then gets its answer as for [`Cmd::Ask`]. False
    /// if it was not written (nothing is registered): the driver must write it.
    pub(crate) fn ask_direct(
        &self,
        shared: &Shared,
        (dest, headers, payload): (&Destination, &Headers, &[u8]),
        number: u64,
        reply: &Reply,
        deadline: Instant,
    ) -> bool {
        let Some(core) = self.0.upgrade() else {
            return false;
        };
        let mut rid = None;
        let mut ring = false;
        let sent = shared.pubs.write_request(|inbox, buf| {
            let mut headers = headers.clone();
            let to = format!("topic:{inbox}.{number}");
            if headers
                .insert(agora_protocol::reply::REPLY_TO, &to)
                .is_err()
            {
                return false;
            }
            let id = core.next_rid.fetch_add(1, SeqCst);
            lock(&core.pending).insert(
                id,
                Pending {
                    reply: Some(reply.clone()),
                    sid: None,
                    resend: None,
                },
            );
            let mut requests = lock(&core.requests);
            requests.waiting.insert(
                number,
                Waiting {
                    reply: reply.clone(),
                    rid: id,
                    deadline: Some(deadline),
                },
            );
            // The driver's alarm times it out; it needs telling only when this
            // deadline comes before the one it is set for (with one timeout for every
            // request, only the first since the alarm last rang with nothing left).
            if requests.alarm.is_none_or(|a| deadline < a) {
                requests.alarm = Some(deadline);
                ring = true;
            }
            drop(requests);
            agora_protocol::encode_pub(Some(id), dest, &headers, payload, buf);
            rid = Some(id);
            true
        });
        if sent != Sent::Nothing {
            if ring {
                let _ = core.ctl_tx.try_send(Ctl::Alarm);
            }
            return true;
        }
        if let Some(id) = rid {
            lock(&core.requests).waiting.remove(&number);
            lock(&core.pending).remove(&id);
        }
        false
    }
}
