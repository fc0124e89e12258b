//! The driver thread's side of a connection: it takes commands, control messages and
//! the publish buffer, encodes them into one buffer and writes it with one call. It
//! never reads the socket and never waits on anything but the socket, its channels and
//! the publish buffer.

use std::sync::atomic::Ordering::SeqCst;

use agora_protocol::bytes::BytesMut;
use agora_protocol::{encode, encode_pub, AckMode, ClientFrame, Destination, Subscribe};
use futures_lite::future;

use super::stream::WriteHalf;
use super::{Answer, Cmd, Ctl, Driver, End, Resend, SubEntry, Waiting, INBOX_SID};
use crate::error::Error;
use crate::lock;

/// The writer stops draining commands into one buffer past this many bytes.
const BATCH_BYTES: usize = 256 * 1024;

/// While a publisher streams, the writer waits for this many bytes of publishes (or
/// the builder's linger) before it writes them.
const GATHER_BYTES: usize = 64 * 1024;

impl Driver {
    /// Subscribes again, with the same sids, to everything the application still
    /// holds; a queue consumer's deliveries from the lost connection are dropped from
    /// its buffer (the broker gives them back, redelivered).
    pub(super) fn resubscribe(&self, out: &mut BytesMut) {
        let subs = lock(&self.core.subs);
        for (&sid, e) in subs.iter() {
            if e.manual_ack() {
                let n = e.inbox.clear();
                if n > 0 {
                    log::debug!("agora client: dropped {n} stale deliveries of {}", e.dest);
                }
            }
            // The new subscription is not held.
            e.inbox.unhold();
            let rid = self.register(None, Some(sid));
            encode(&sub_frame(rid, sid, e), out);
        }
    }

    /// Writes its half of the connection (on clear TCP with dedicated threads, a
    /// blocking socket: a full one holds up the driver's thread, which has nothing else
    /// to do meanwhile; on the shared threads, an await).
    pub(super) async fn writer(
        &self,
        stream: &mut WriteHalf,
        mut out: BytesMut,
        generation: u64,
    ) -> End {
        enum Next {
            Cmd(Cmd),
            Ctl(Ctl),
            Published,
            Alarm,
            Gone,
        }
        // The alarm for the deadlines of requests their requesters wrote themselves:
        // when it rings, and its timer (kept across waits: arming one wakes the
        // reactor).
        let mut alarm: Option<(std::time::Instant, async_io::Timer)> = None;
        loop {
            if !out.is_empty() {
                if let Err(e) = stream.write_all(&out).await {
                    return End::Lost(Error::Io(e));
                }
                out.clear();
                if self.closing.borrow().is_some() {
                    // Everything is written, DISCONNECT last: the broker answers what
                    // came before it, then closes; the reader sees that and ends. A broker
                    // that never closes gets the request timeout.
                    async_io::Timer::after(self.opts.request_timeout).await;
                    return End::Closed;
                }
            }
            // Publishes that arrived during the last write: a publisher is streaming,
            // so gather a large write (or wait the linger) rather than write a few
            // frames at a time.
            let gather = match self.shared.pubs.len() {
                0 => 0,
                _ if self.opts.publish_linger.is_zero() => 0,
                _ => GATHER_BYTES.min(self.opts.publish_buffer),
            };
            // The alarm first: `or` polls its second future only when the first is
            // not ready, and a stream of publishes or commands is always ready.
            let next = future::or(
                async {
                    match &mut alarm {
                        Some((_, timer)) => {
                            timer.await;
                            Next::Alarm
                        }
                        None => future::pending().await,
                    }
                },
                future::or(
                    async { self.ctl_rx.recv().await.map_or(Next::Gone, Next::Ctl) },
                    future::or(
                        async { self.cmd_rx.recv().await.map_or(Next::Gone, Next::Cmd) },
                        async {
                            if gather == 0 {
                                self.shared.pubs.filled(0).await;
                            } else {
                                future::or(self.shared.pubs.filled(gather), async {
                                    async_io::Timer::after(self.opts.publish_linger).await;
                                })
                                .await;
                            }
                            Next::Published
                        },
                    ),
                ),
            )
            .await;
            match next {
                Next::Ctl(c) => self.on_ctl(c, generation, &mut out),
                Next::Cmd(c) => self.on_cmd(c, &mut out),
                Next::Published => {
                    self.take_published(&mut out);
                }
                Next::Alarm => {
                    let now = std::time::Instant::now();
                    let next = lock(&self.core.requests).expire(now, &self.core.pending);
                    alarm = next.map(|at| (at, async_io::Timer::at(at)));
                }
                Next::Gone => {
                    self.take_published(&mut out);
                    encode(&ClientFrame::Disconnect, &mut out);
                    let _ = stream.write_all(&out).await;
                    return End::Closed;
                }
            }
            // Batch: take everything else that is waiting, up to a bound.
            while out.len() < BATCH_BYTES && self.closing.borrow().is_none() {
                if let Ok(c) = self.ctl_rx.try_recv() {
                    self.on_ctl(c, generation, &mut out);
                } else if let Ok(c) = self.cmd_rx.try_recv() {
                    self.on_cmd(c, &mut out);
                } else {
                    break;
                }
            }
            if self.closing.borrow().is_none() {
                self.take_published(&mut out);
            }
            // A requester set the alarm earlier than it rings.
            if self.alarm_moved.replace(false) {
                let at = lock(&self.core.requests).alarm;
                if at != alarm.as_ref().map(|(when, _)| *when) {
                    alarm = at.map(|at| (at, async_io::Timer::at(at)));
                }
            }
        }
    }

    /// Moves the publishers' encoded fire-and-forget publishes into `out`, switching
    /// confirms off first if the last publish written was a confirmed one.
    fn take_published(&self, out: &mut BytesMut) -> bool {
        if self.confirm.get() && !self.shared.pubs.is_empty() {
            encode(
                &ClientFrame::SetAck {
                    rid: None,
                    on: false,
                },
                out,
            );
            self.set_confirm(false);
        }
        self.shared.pubs.take_into(out)
    }

    fn on_ctl(&self, c: Ctl, generation: u64, out: &mut BytesMut) {
        // Publishes and settles made before the message was queued go out before it: a
        // responder's reply before the ACK that lets its request go, a consumer's ACKs
        // before its UNSUB (which gives back what it has not acked).
        self.take_published(out);
        match c {
            Ctl::Settle {
                did,
                generation: g,
                ack,
                how,
            } => {
                if g != generation {
                    log::debug!("agora client: dropping settle of stale delivery {did}");
                } else if ack {
                    encode(&ClientFrame::Ack { rid: None, did }, out);
                } else {
                    encode(
                        &ClientFrame::Nack {
                            rid: None,
                            did,
                            how,
                        },
                        out,
                    );
                }
            }
            Ctl::Unsub { sid } => {
                let mut subs = lock(&self.core.subs);
                if subs.remove(&sid).is_some() {
                    encode(&ClientFrame::Unsub { rid: None, sid }, out);
                }
                if subs.is_empty() {
                    if let Some(r) = self.drained.take() {
                        let _ = r.try_send(Ok(Answer::Ok));
                    }
                }
            }
            Ctl::Hold { sid, on } => {
                if lock(&self.core.subs).contains_key(&sid) {
                    let frame = match on {
                        true => ClientFrame::Hold { rid: None, sid },
                        false => ClientFrame::Resume { rid: None, sid },
                    };
                    encode(&frame, out);
                }
            }
            Ctl::Pong { rid } => encode(&ClientFrame::PingResp { rid }, out),
            Ctl::Closing => {}
            Ctl::Forget { number } => {
                let forgotten = lock(&self.core.requests).waiting.remove(&number);
                if let Some(w) = forgotten {
                    lock(&self.core.pending).remove(&w.rid);
                }
            }
            Ctl::Alarm => self.alarm_moved.set(true),
        }
    }

    fn on_cmd(&self, c: Cmd, out: &mut BytesMut) {
        // Publishes made before this command was queued go out before it.
        self.take_published(out);
        match c {
            Cmd::Publish {
                dest,
                headers,
                payload,
                confirm,
            } => {
                // Confirms are switched per connection, so switch them only when the
                // kind of publish changes: the broker applies SETACK in order.
                let want = confirm.is_some();
                if want != self.confirm.get() {
                    encode(
                        &ClientFrame::SetAck {
                            rid: None,
                            on: want,
                        },
                        out,
                    );
                    self.set_confirm(want);
                }
                // Under a reconnect policy a confirmed publish is kept until answered,
                // to be written again if the connection is lost first.
                let resend = match (&confirm, &self.opts.reconnect) {
                    (Some(_), Some(_)) => Some(Resend {
                        dest: dest.clone(),
                        headers: headers.clone(),
                        payload: payload.clone(),
                    }),
                    _ => None,
                };
                let rid = confirm.and_then(|r| self.register_resend(Some(r), None, resend));
                encode_pub(rid, &dest, &headers, &payload, out);
            }
            Cmd::Subscribe { sid, entry, reply } => {
                let rid = self.register(Some(reply), Some(sid));
                encode(&sub_frame(rid, sid, &entry), out);
                lock(&self.core.subs).insert(sid, entry);
            }
            Cmd::Unsubscribe { sid, reply } => {
                let removed = lock(&self.core.subs).remove(&sid).is_some();
                if removed {
                    let rid = self.register(Some(reply), None);
                    encode(&ClientFrame::Unsub { rid, sid }, out);
                } else {
                    let _ = reply.try_send(Ok(Answer::Ok));
                }
            }
            Cmd::Ping { reply } => {
                let rid = self.register(Some(reply), None);
                encode(&ClientFrame::PingReq { rid }, out);
            }
            Cmd::Stats { page, reply } => {
                let rid = self.register(Some(reply), None);
                encode(&ClientFrame::Stats { rid, page }, out);
            }
            Cmd::Request { frame, reply } => {
                let rid = self.register(Some(reply), None);
                encode(&frame(rid), out);
            }
            Cmd::Ask {
                dest,
                mut headers,
                payload,
                number,
                reply,
            } => {
                let Some(inbox) = self.inbox(out) else {
                    let _ = reply.try_send(Err(Error::NoInbox));
                    return;
                };
                let to = format!("topic:{inbox}.{number}");
                if let Err(e) = headers.insert(agora_protocol::reply::REPLY_TO, &to) {
                    log::error!("agora client: reply address {to}: {e:?}");
                    let _ = reply.try_send(Err(Error::NoInbox));
                    return;
                }
                // Never held in a run: its confirm setting is the connection's.
                let Some(rid) = self.register(Some(reply.clone()), None) else {
                    return;
                };
                let waiting = Waiting {
                    reply,
                    rid,
                    deadline: None,
                };
                lock(&self.core.requests).waiting.insert(number, waiting);
                encode_pub(Some(rid), &dest, &headers, &payload, out);
            }
            Cmd::Drain { reply } => {
                let mut subs = lock(&self.core.subs);
                let topics: Vec<u64> = subs
                    .iter()
                    .filter(|(_, e)| e.prefetch.is_none())
                    .map(|(sid, _)| *sid)
                    .collect();
                // A topic subscription ends now: its stream yields what it buffered.
                for sid in topics {
                    subs.remove(&sid);
                    encode(&ClientFrame::Unsub { rid: None, sid }, out);
                }
                // A consumer is given nothing new; its stream ends once drained, and
                // the application's dropping it sends the UNSUB.
                for (&sid, e) in subs.iter() {
                    encode(&ClientFrame::Hold { rid: None, sid }, out);
                    e.inbox.drain();
                }
                match subs.is_empty() {
                    true => {
                        let _ = reply.try_send(Ok(Answer::Ok));
                    }
                    false => *self.drained.borrow_mut() = Some(reply),
                }
            }
            Cmd::Close { reply } => {
                encode(&ClientFrame::Disconnect, out);
                *self.closing.borrow_mut() = Some(reply);
                self.core.closing.store(true, SeqCst);
            }
        }
    }
}

impl Driver {
    /// This connection's inbox, subscribed (into `out`) at its first request; `None`
    /// when the broker's `INFO` named none.
    fn inbox(&self, out: &mut BytesMut) -> Option<String> {
        if let Some(i) = self.inbox.borrow().as_ref() {
            return Some(i.clone());
        }
        let inbox = lock(&self.shared.info).inbox.clone()?;
        let dest = Destination::topic(&inbox).ok()?;
        // Nobody waits for its OK; an ERR goes to the error stream.
        let rid = self.register(None, None);
        let sub = Subscribe {
            rid,
            dest,
            sid: INBOX_SID,
            prefetch: None,
            ack: None,
        };
        encode(&ClientFrame::Sub(sub), out);
        *self.inbox.borrow_mut() = Some(inbox.clone());
        self.shared.pubs.set_inbox(inbox.clone());
        Some(inbox)
    }
}

fn sub_frame(rid: Option<u64>, sid: u64, e: &SubEntry) -> ClientFrame {
    ClientFrame::Sub(Subscribe {
        rid,
        dest: e.dest.clone(),
        sid,
        prefetch: e.prefetch,
        ack: e.prefetch.map(|_| {
            if e.auto_ack {
                AckMode::Auto
            } else {
                AckMode::Manual
            }
        }),
    })
}
