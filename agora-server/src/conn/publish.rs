//! `PUB`/`HPUB`: the chain, the route into the destination, runs of publishes held back
//! and handed over together, and the confirm (`PUBACK`, `filtered`).

use super::bound::Copies;
use super::*;

impl Conn<'_> {
    /// A publish the session let through, answered as `mode` says.
    pub(super) async fn publish(&mut self, p: Publish, mode: PubMode) -> Flow {
        let msg = Message {
            received: self.read_at,
            headers: p.headers,
            payload: p.payload,
        };
        self.route(p.rid, &p.dest, msg, false, mode).await
    }

    /// Hands over the held-back run of publishes, if any.
    pub(super) async fn end_run(&mut self) -> Flow {
        let Some(Run {
            handle, mut msgs, ..
        }) = self.run.take()
        else {
            return Ok(());
        };
        let topic = match handle {
            Handle::Topic(t) => t,
            Handle::Queue(q) => {
                return match q.tx.send(QueueCmd::PublishMany(msgs)).await {
                    Ok(()) => Ok(()),
                    Err(async_channel::SendError(QueueCmd::PublishMany(msgs))) => {
                        // The queue was removed meanwhile: to its successor, one by one.
                        let mut flow = Ok(());
                        for m in msgs {
                            q.unreserve(m.size());
                            if flow.is_ok() {
                                flow =
                                    Box::pin(self.route(None, &q.dest, m, true, PubMode::Forget))
                                        .await;
                            }
                        }
                        flow
                    }
                    Err(_) => Err(End::Stopping),
                };
            }
        };
        let mut flow = Ok(());
        if let Ok(bound) = topic.publish_run(&mut msgs, self.link) {
            if !bound.is_empty() {
                if let Copies::Refused(f) = self
                    .copy_to_bound(None, &topic.dest, &bound, &msgs, false)
                    .await
                {
                    flow = f;
                }
            }
        } else {
            // Removed meanwhile, or the budget cannot take them all: one by one, as
            // if they had never been held back (their chain has run already).
            let dest = topic.dest.clone();
            for m in msgs.drain(..) {
                if flow.is_ok() {
                    // Boxed: `route` may end a run itself (not with `mutated` set).
                    flow = Box::pin(self.route(None, &dest, m, true, PubMode::Forget)).await;
                }
            }
        }
        msgs.clear();
        self.spare = msgs;
        flow
    }

    /// Adds a message to the run of publishes held back for `h` (named `dest`), ending
    /// the run held for another destination first (the session ends runs on
    /// everything else).
    pub(super) async fn hold(&mut self, dest: &Destination, h: Handle, msg: Message) -> Flow {
        match &mut self.run {
            Some(run) if run.handle.same(&h) => run.msgs.push(msg),
            _ => {
                self.end_run().await?;
                let mut msgs = std::mem::take(&mut self.spare);
                msgs.push(msg);
                self.run = Some(Run {
                    dest: dest.clone(),
                    handle: h,
                    msgs,
                });
            }
        }
        Ok(())
    }

    /// The hot path of fire-and-forget publishing, without an `await`: a `PUB` to the
    /// destination of the run held back joins it when nothing would treat it otherwise
    /// (see [`join`](Conn::join)). `Some`: not taken, nothing changed; it goes the
    /// whole way (`handle`).
    #[inline]
    pub(super) fn join_run(&mut self, p: Publish) -> Option<Publish> {
        match &self.run {
            // A request is never held back (nobody listening refuses it); a message id
            // is checked by the session first.
            Some(run)
                if run.dest == p.dest
                    && reply::reply_to(&p.headers).is_none()
                    && agora_protocol::msg_id::msg_id(&p.headers).is_none() => {}
            _ => return Some(p),
        }
        let msg = Message {
            received: self.read_at,
            headers: p.headers,
            payload: p.payload,
        };
        self.join(msg).err().map(|(m, _)| Publish {
            rid: p.rid,
            dest: p.dest,
            headers: m.headers,
            payload: m.payload,
        })
    }

    /// Adds a publish to the destination of the run held back to that run, when
    /// nothing would treat it otherwise: no chain, the destination still open, room in
    /// a queue, resident memory under its limit, and the session's rules. `Err`: not
    /// taken, nothing changed; the message back, with the run's destination.
    /// (`Conn::run` must hold a run.)
    #[inline]
    pub(super) fn join(&mut self, msg: Message) -> Result<(), (Message, Destination)> {
        let Some(run) = &mut self.run else {
            unreachable!("join without a run");
        };
        let h = &run.handle;
        if h.is_closed()
            || (h.chain().is_set() && !self.link)
            || self.broker.metrics.over_rss.load(Relaxed)
        {
            return Err((msg, run.dest.clone()));
        }
        let size = msg.size();
        // A queue refuses (full, say): the whole way gives the client its answer.
        let reserved = match h {
            Handle::Queue(q) => q.reserve(size).is_ok(),
            Handle::Topic(_) => true,
        };
        if reserved && self.session.joins_run() {
            run.msgs.push(msg);
            return Ok(());
        }
        if let (true, Handle::Queue(q)) = (reserved, h) {
            q.unreserve(size);
        }
        Err((msg, run.dest.clone()))
    }

    /// Routes a message to its destination and answers as `mode` says; `mutated`: its
    /// chain has run (one that comes back here from `end_run` is fire-and-forget and
    /// is published alone).
    pub(super) async fn route(
        &mut self,
        rid: RequestId,
        dest: &Destination,
        mut msg: Message,
        mut mutated: bool,
        mode: PubMode,
    ) -> Flow {
        let runs = mode.hold() && !mutated;
        if self.broker.metrics.over_rss.load(Relaxed) {
            let why = format!(
                "the broker's resident memory is above its limit of {} bytes (--rss-limit)",
                self.broker.config.rss_limit()
            );
            return self.error(rid, ErrorCode::MemoryLimit, &why).await;
        }
        // A reply to an inbox address goes to the inbox's topic, its MSG naming the
        // address.
        let (target, named) = match reply::inbox_of(dest.name.as_str()) {
            Some(inbox) if dest.kind == Kind::Topic && inbox.len() < dest.name.len() => {
                match Destination::topic(inbox) {
                    Ok(t) => (t, Some(dest.clone())),
                    Err(_) => (dest.clone(), None),
                }
            }
            _ => (dest.clone(), None),
        };
        // A destination can be retired between lookup and use; resolving again finds
        // (or makes) its successor. Three tries is plenty: retiring takes idle minutes.
        for _ in 0..3 {
            // An inbox is made by its owner's subscription, never by a reply: a reply
            // to an inbox nobody holds (its requester gone, or a made-up address) is
            // dropped, as a topic drops a message nobody subscribes to.
            let h = match reply::is_inbox(target.name.as_str()) {
                true => self.find(&target).await,
                false => self.resolve_publish(&target).await.map(Some),
            };
            let h = match h {
                Ok(Some(h)) => h,
                Ok(None) if mode.is_request() => {
                    let why = format!("nobody listens on {dest}: the request was not kept");
                    return self.error(rid, ErrorCode::NoResponders, &why).await;
                }
                Ok(None) => {
                    // A reply to an inbox of another node of the cluster goes there.
                    if let (Some(c), false) = (&self.broker.cluster, self.link) {
                        c.forward_reply(dest, &msg);
                    }
                    return self.confirmed(mode, rid, false).await;
                }
                Err(r) => return self.refuse(rid, r).await,
            };
            if mode.is_request() && !h.listened() {
                let why = format!("nobody listens on {dest}: the request was not kept");
                return self.error(rid, ErrorCode::NoResponders, &why).await;
            }
            // A publish from another node ran its chain there.
            if !mutated && !self.link {
                mutated = true;
                if let Some(chain) = h.chain().get() {
                    if crate::mutators::run_on(&chain, &mut msg).await == Verdict::Drop {
                        h.chain().count_filtered();
                        return self.confirmed(mode, rid, true).await;
                    }
                }
            }
            match h {
                Handle::Topic(t) if runs => return self.hold(dest, Handle::Topic(t), msg).await,
                Handle::Topic(t) => match t.publish_as(&msg, named.as_ref(), self.link) {
                    Ok(bound) if bound.is_empty() => return self.confirmed(mode, rid, false).await,
                    Ok(bound) => {
                        let one = std::slice::from_ref(&msg);
                        return match self
                            .copy_to_bound(rid, &t.dest, &bound, one, mode.confirms())
                            .await
                        {
                            Copies::Refused(flow) => flow,
                            Copies::Placed(w) if w.is_empty() => {
                                self.confirmed(mode, rid, false).await
                            }
                            Copies::Placed(w) => {
                                self.wait_all_stored(rid, w);
                                Ok(())
                            }
                        };
                    }
                    Err(TopicRefused::Memory(why)) => {
                        return self.error(rid, ErrorCode::MemoryLimit, &why).await
                    }
                    Err(TopicRefused::Closed) => continue,
                },
                Handle::Queue(q) => match q.reserve(msg.size()) {
                    Ok(()) if runs => return self.hold(dest, Handle::Queue(q), msg).await,
                    Ok(()) if mode.confirms() && q.durable.load(Relaxed) => {
                        let (tx, rx) = async_channel::bounded(1);
                        match q.tx.send(QueueCmd::PublishStored(msg, tx)).await {
                            Ok(()) => {
                                self.wait_stored(rid, rx);
                                return Ok(());
                            }
                            Err(async_channel::SendError(QueueCmd::PublishStored(m, _))) => {
                                q.unreserve(m.size());
                                msg = m;
                            }
                            Err(_) => return Err(End::Stopping),
                        }
                    }
                    Ok(()) => match q.tx.send(QueueCmd::Publish(msg)).await {
                        Ok(()) => return self.confirmed(mode, rid, false).await,
                        Err(async_channel::SendError(QueueCmd::Publish(m))) => {
                            q.unreserve(m.size());
                            msg = m;
                        }
                        Err(_) => return Err(End::Stopping),
                    },
                    Err(Refused::Full(why)) => {
                        return self.error(rid, ErrorCode::QueueFull, &why).await
                    }
                    Err(Refused::Memory(why)) => {
                        return self.error(rid, ErrorCode::MemoryLimit, &why).await
                    }
                    Err(Refused::Retired) => continue,
                    Err(Refused::Storage(why)) => {
                        return self.error(rid, ErrorCode::StorageFailed, &why).await
                    }
                    Err(Refused::StorageFull(why)) => {
                        return self.error(rid, ErrorCode::StorageFull, &why).await
                    }
                },
            }
        }
        self.error(
            rid,
            ErrorCode::Internal,
            &format!("{dest} kept disappearing; publish again"),
        )
        .await
    }

    /// The publish is where it goes (`filtered`: its chain dropped it, counted): a
    /// `PUBACK` if its mode owes one.
    pub(super) async fn confirmed(&self, mode: PubMode, rid: RequestId, filtered: bool) -> Flow {
        match mode.placed(rid, filtered) {
            Some(ack) => self.reply(&ack).await,
            None => Ok(()),
        }
    }
}
