//! The reader's side of a connection: it reads the socket, decodes
//! every complete frame, answers waiting requests by request id and hands deliveries
//! to subscriptions' inboxes by sid. It never writes the socket (a reply it owes, such
//! as `PINGRESP`, goes to the driver's control channel) and never waits on the
//! application, except for an auto-ack consumer's full buffer (see `deliver_run`).

use std::sync::atomic::Ordering::SeqCst;
use std::sync::Arc;

use agora_protocol::bytes::BytesMut;
use agora_protocol::{decode_server_with, Limits, ReadSize, ServerFrame};
use async_channel::Receiver;
use futures_lite::future;

use super::stream::ReadHalf;
use super::{Answer, Core, Ctl, End, INBOX_SID};
use crate::error::{Error, Result, ServerError};
use crate::inbox::{Incoming, Pushed};
use crate::lock;

/// Most deliveries handed to a subscription's inbox at once.
const RUN_MAX: usize = 512;

impl Core {
    /// The reader: reads its half of the connection until it ends (on a dedicated
    /// thread, a blocking socket under `block_on`).
    pub(super) async fn read(
        &self,
        stream: &mut ReadHalf,
        mut buf: BytesMut,
        generation: u64,
        limits: &Limits,
        stop: &Receiver<()>,
    ) -> End {
        let mut run: Vec<Incoming> = Vec::new();
        let mut run_sid = 0;
        let mut read_size = ReadSize::default();
        loop {
            loop {
                let frame = decode_server_with(&mut buf, limits);
                // Deliveries to one subscription in a row go to it together (one lock
                // of its inbox per run), before anything else is acted on.
                if let Ok(Some(ServerFrame::Msg(m))) = frame {
                    if !run.is_empty() && (m.sid != run_sid || run.len() >= RUN_MAX) {
                        self.deliver_run(run_sid, &mut run, generation, stop).await;
                    }
                    run_sid = m.sid;
                    run.push(Incoming { msg: m, generation });
                    continue;
                }
                if !run.is_empty() {
                    self.deliver_run(run_sid, &mut run, generation, stop).await;
                }
                match frame {
                    Ok(Some(f)) => self.on_frame(f),
                    Ok(None) => break,
                    Err(e) if e.is_fatal() => return End::Lost(Error::Protocol(e)),
                    Err(e) => log::warn!("agora client: skipped a frame from the broker: {e}"),
                }
            }
            // On the shared threads the reader is a future of the driver's task: let the
            // writer run between reads (a `HOLD` must go out while the broker is still
            // sending), or a socket that always has data would keep it from ever running.
            // On a dedicated thread this costs one more poll per read.
            futures_lite::future::yield_now().await;
            let len = buf.len();
            buf.resize(len + read_size.get(), 0);
            match stream.read(&mut buf[len..]).await {
                Ok(0) => {
                    if self.closing.load(SeqCst) {
                        return End::Closed;
                    }
                    return End::Lost(Error::Io(std::io::ErrorKind::UnexpectedEof.into()));
                }
                Ok(n) => {
                    buf.truncate(len + n);
                    read_size.after_read(n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => buf.truncate(len),
                Err(e) => {
                    if self.closing.load(SeqCst) {
                        return End::Closed;
                    }
                    return End::Lost(Error::Io(e));
                }
            }
        }
    }

    fn answer(&self, rid: Option<u64>, a: Result<Answer>) -> Option<Result<Answer>> {
        let p = rid.and_then(|r| lock(&self.pending).remove(&r));
        match p {
            Some(p) => {
                if a.is_err() {
                    if let Some(sid) = p.sid {
                        lock(&self.subs).remove(&sid);
                    }
                }
                match p.reply {
                    Some(r) => {
                        let _ = r.try_send(a);
                        None
                    }
                    // A re-subscribe after reconnect: nobody waits, errors go to the
                    // error stream.
                    None => Some(a),
                }
            }
            None => Some(a),
        }
    }

    /// A reply in the inbox: to the request its address numbers (`<inbox>.<n>`), if
    /// that one still waits; a late or stray reply is dropped.
    fn reply_arrived(&self, d: agora_protocol::Delivery) {
        let number = d
            .dest
            .name
            .as_str()
            .rsplit('.')
            .next()
            .and_then(|n| n.parse::<u64>().ok());
        let waiting = number.and_then(|n| lock(&self.requests).waiting.remove(&n));
        match waiting {
            Some(w) => {
                lock(&self.pending).remove(&w.rid);
                let _ = w.reply.try_send(Ok(Answer::Reply(d)));
            }
            None => log::debug!("agora client: a reply to {} nobody waits for", d.dest),
        }
    }

    fn report(&self, e: ServerError) {
        log::warn!("agora client: broker error: {e}");
        // Drop-oldest: an application that never reads errors() keeps a bounded list.
        self.event(crate::events::Event::ServerError(e.clone()));
        let _ = self.errors.force_send(e);
    }

    /// Acts on one frame other than a delivery.
    fn on_frame(&self, f: ServerFrame) {
        match f {
            ServerFrame::Ok { rid } => {
                self.answer(rid, Ok(Answer::Ok));
            }
            ServerFrame::PubAck { rid, filtered } => {
                self.answer(rid, Ok(Answer::PubAck { filtered }));
            }
            ServerFrame::StatsResp { rid, json } => {
                self.answer(rid, Ok(Answer::Body(json)));
            }
            ServerFrame::HelpResp { rid, text } => {
                self.answer(rid, Ok(Answer::Body(text)));
            }
            ServerFrame::ChainResp { rid, chain, .. } => {
                self.answer(rid, Ok(Answer::Body(chain)));
            }
            ServerFrame::PingResp { rid } => {
                self.answer(rid, Ok(Answer::Ok));
            }
            ServerFrame::Err(e) => {
                let rid = e.rid;
                let err = Error::Server {
                    code: e.code,
                    message: e.message.clone(),
                };
                if self.answer(rid, Err(err)).is_some() {
                    self.report(ServerError {
                        code: e.code,
                        message: e.message,
                        request_id: rid,
                    });
                }
            }
            ServerFrame::Cancel { sid, code, message } => {
                let dest = lock(&self.subs).remove(&sid).map(|e| e.dest.clone());
                let what = dest.map_or_else(|| format!("subscription {sid}"), |d| d.to_string());
                self.report(ServerError {
                    code,
                    message: format!("{what} cancelled: {message}"),
                    request_id: None,
                });
            }
            ServerFrame::Dropped { sid, count } => {
                // The broker dropped messages in its buffer for this subscription.
                let entry = lock(&self.subs)
                    .get(&sid)
                    .map(|e| (e.dest.clone(), e.dropped.clone()));
                if let Some((dest, dropped)) = entry {
                    let before = dropped.fetch_add(count, SeqCst);
                    log::warn!(
                        "agora client: the broker dropped {count} messages of {dest} (its subscriber buffer was full); {} so far",
                        before + count
                    );
                    self.event(crate::events::Event::Dropped {
                        destination: dest,
                        count,
                    });
                }
            }
            ServerFrame::PingReq { rid } => {
                let _ = self.ctl_tx.try_send(Ctl::Pong { rid });
            }
            ServerFrame::Shutdown { message } => {
                log::info!(
                    "agora client: broker {} is shutting down: {message}",
                    self.addr()
                );
            }
            other => log::debug!("agora client: ignored {} from the broker", other.command()),
        }
    }

    /// Hands a run of deliveries to one subscription (`sid`), emptying `run`:
    ///
    /// - Topic subscription full: drop its oldest buffered messages and count them
    ///   (`Subscription::dropped`), as the broker does for a slow subscriber.
    /// - Auto-ack consumer full: wait for room. This stops the reading of this
    ///   connection, and so the broker's sending (TCP backpressure); nothing is lost.
    /// - Acking consumer full: cannot happen while the broker keeps to the prefetch
    ///   (the buffer holds `prefetch` deliveries); if it does, the delivery is NACKed so
    ///   the broker gives it to someone, never dropped.
    ///
    /// A wait for room ends early when the connection is over (`stop` closed); the run
    /// is then dropped, as everything read on a lost connection but not yet handed over.
    async fn deliver_run(
        &self,
        sid: u64,
        run: &mut Vec<Incoming>,
        generation: u64,
        stop: &Receiver<()>,
    ) {
        if sid == INBOX_SID {
            for i in run.drain(..) {
                self.reply_arrived(i.msg);
            }
            return;
        }
        let (inbox, auto_ack, acking, dropped, dest) = {
            let subs = lock(&self.subs);
            let Some(e) = subs.get(&sid) else {
                // Ended locally; the broker takes back unacked deliveries on UNSUB.
                run.clear();
                return;
            };
            if Arc::strong_count(&e.inbox) <= 1 {
                // Nobody holds the stream (a subscribe whose caller gave up waiting,
                // say): end it at the broker too.
                let _ = self.ctl_tx.try_send(Ctl::Unsub { sid });
                run.clear();
                return;
            }
            (
                e.inbox.clone(),
                e.auto_ack,
                e.prefetch.is_some(),
                e.dropped.clone(),
                e.dest.clone(),
            )
        };
        if auto_ack {
            loop {
                if let Pushed::Closed = inbox.push_all(run, false) {
                    run.clear();
                    return;
                }
                if run.is_empty() {
                    return;
                }
                future::or(inbox.room(), async {
                    let _ = stop.recv().await;
                })
                .await;
                if stop.is_closed() {
                    run.clear();
                    return;
                }
            }
        }
        if !acking {
            if let Pushed::Ok { dropped: k } = inbox.push_all(run, true) {
                if k > 0 {
                    let before = dropped.fetch_add(k, SeqCst);
                    self.event(crate::events::Event::Dropped {
                        destination: dest.clone(),
                        count: k,
                    });
                    // Once per power of two passed.
                    let bits = |x: u64| 64 - x.leading_zeros();
                    if bits(before) != bits(before + k) {
                        log::warn!(
                            "agora client: subscription to {dest} is not drained; {} messages dropped so far",
                            before + k
                        );
                    }
                }
            }
            run.clear();
            return;
        }
        let _ = inbox.push_all(run, false);
        for item in run.drain(..) {
            log::warn!(
                "agora client: consumer of {dest} over its prefetch; giving delivery {} back",
                item.msg.did
            );
            let _ = self.ctl_tx.try_send(Ctl::Settle {
                did: item.msg.did,
                generation,
                ack: false,
                how: agora_protocol::Nack::Requeue,
            });
        }
    }
}
