//! `SUB`, `UNSUB`, `ACK`, `NACK`: joining a topic or a queue, leaving, and settling a
//! queue delivery.

use super::*;

impl Conn<'_> {
    /// A `SUB` as the session planned it, after letting go of the subscriptions the
    /// broker ended (`released`).
    pub(super) async fn subscribe(
        &mut self,
        s: Subscribe,
        plan: Result<SubPlan, Refusal>,
        released: Vec<Sub>,
    ) -> Flow {
        let rid = s.rid;
        for sub in released {
            self.drop_sub(sub).await;
        }
        let plan = match plan {
            Ok(plan) => plan,
            Err(r) => return self.refused(rid, r).await,
        };
        let r = match plan {
            SubPlan::Topic if s.dest.name.is_pattern() => Ok(self.subscribe_wild(&s)),
            SubPlan::Topic => self.subscribe_topic(&s).await,
            SubPlan::Queue {
                prefetch,
                auto_ack,
                slot,
            } => self.subscribe_queue(&s, prefetch, auto_ack, slot).await,
        };
        let r = r.map(|(add, sub)| {
            self.session.add(s.sid, plan, sub);
            add
        });
        self.show();
        match r {
            // The OK goes out before the shipper starts on the subscription, so no
            // MSG can overtake it; deliveries wait in the channel meanwhile.
            Ok(mut add) => {
                add.notify = self.session.proto >= 2;
                self.reply(&ServerFrame::Ok { rid }).await?;
                match self.outbox.send(Outbound::AddSub(Box::new(add))).await {
                    true => Ok(()),
                    false => Err(End::Gone),
                }
            }
            Err(denied) => self.refuse(rid, denied).await,
        }
    }

    /// Joins a topic; returns the subscription's receiving end for the shipper, and
    /// the connection's handle on it.
    pub(super) async fn subscribe_topic(&mut self, s: &Subscribe) -> Result<(SubRx, Sub), Denied> {
        let (sub, rx) = self.subscriber(s.sid, None, &s.dest);
        for _ in 0..3 {
            let Handle::Topic(topic) = self.resolve(&s.dest).await? else {
                return Err(Denied::Stopping);
            };
            if topic.subscribe(sub.clone()) {
                let mut add = SubRx::new(s.sid, s.dest.compact(), rx);
                add.latency =
                    (!self.broker.config.ablation.no_metrics).then(|| topic.latency.clone());
                add.budget = Some(self.broker.budget.clone());
                return Ok((add, Sub::Topic { topic, sub }));
            }
        }
        Err(Denied::Refused(
            ErrorCode::Internal,
            "topic kept disappearing".to_owned(),
        ))
    }

    /// A topic subscriber for subscription `sid` of this connection (with its pattern,
    /// for a wildcard one), and the receiving end of its deliveries.
    fn subscriber(
        &self,
        sid: u64,
        pattern: Option<crate::auth::Pattern>,
        interest: &Destination,
    ) -> (Arc<Subscriber>, crate::deliveries::DeliveryRx) {
        let (tx, rx) = crate::deliveries::queue();
        let sub = Arc::new(Subscriber {
            sid,
            tx,
            cap: self.broker.config.subscriber_buffer,
            outbox: self.outbox.clone(),
            dropped: AtomicU64::new(0),
            link: self.link.then_some(self.info.id),
            interest: match (&self.broker.cluster, self.link) {
                (Some(c), false) => c.interest.hold(interest),
                _ => None,
            },
            pattern,
        });
        (sub, rx)
    }

    /// A wildcard subscription: into the broker's index, from which every topic whose
    /// name it matches delivers to it.
    pub(super) fn subscribe_wild(&mut self, s: &Subscribe) -> (SubRx, Sub) {
        let pattern = crate::auth::Pattern::of(&s.dest);
        let (sub, rx) = self.subscriber(s.sid, Some(pattern.clone()), &s.dest);
        self.broker.wild.subscribe(&pattern, sub.clone());
        let mut add = SubRx::new(s.sid, s.dest.compact(), rx);
        add.budget = Some(self.broker.budget.clone());
        (add, Sub::Wild { pattern, sub })
    }

    /// Joins a queue as a consumer with the session's plan; returns the subscription's
    /// receiving end, and the connection's handle on it.
    pub(super) async fn subscribe_queue(
        &mut self,
        s: &Subscribe,
        prefetch: u32,
        auto_ack: bool,
        slot: u64,
    ) -> Result<(SubRx, Sub), Denied> {
        let cid = self.broker.id();
        for _ in 0..3 {
            let Handle::Queue(queue) = self.resolve(&s.dest).await? else {
                return Err(Denied::Stopping);
            };
            // Counted before the queue hears of it, so the manager never retires a
            // queue a consumer is joining.
            queue.consumers.fetch_add(1, SeqCst);
            if queue.closed.load(SeqCst) {
                queue.consumers.fetch_sub(1, SeqCst);
                continue;
            }
            // Credit (prefetch) bounds it.
            let (tx, rx) = crate::deliveries::queue();
            let mut add = SubRx::new(s.sid, s.dest.compact(), rx);
            add.written = auto_ack.then(|| queue.credit(cid));
            add.latency = (!self.broker.config.ablation.no_metrics).then(|| queue.latency.clone());
            let consumer_tx = tx.clone();
            let consumer = Consumer {
                cid,
                sid: s.sid,
                slot,
                prefetch,
                auto_ack,
                link: self.link,
                port: crate::queue::Port {
                    tx,
                    outbox: self.outbox.clone(),
                },
            };
            if queue.tx.send(QueueCmd::Subscribe(consumer)).await.is_err() {
                queue.consumers.fetch_sub(1, SeqCst);
                return Err(Denied::Stopping);
            }
            let sub = Sub::Queue {
                queue,
                cid,
                tx: consumer_tx,
                auto_ack,
            };
            return Ok((add, sub));
        }
        Err(Denied::Refused(
            ErrorCode::Internal,
            "queue kept disappearing".to_owned(),
        ))
    }

    /// Lets go of subscription `sid`, which the session no longer holds.
    pub(super) async fn unsubscribe(&mut self, sid: u64, sub: Sub) {
        match sub {
            // An auto-ack consumer's queue forgets what was written to it, so it must
            // hear of the end only after the shipper has stopped writing and reported
            // the last of it: the shipper tells the queue (see `Outbound::RemoveSub`).
            // Were the queue told first, deliveries being written at that moment would
            // be given to another consumer as well.
            Sub::Queue {
                queue,
                cid,
                auto_ack: true,
                ..
            } => {
                if !self.outbox.send(Outbound::RemoveSub(sid)).await {
                    let _ = queue.tx.send(QueueCmd::Unsubscribe { cid }).await;
                }
            }
            sub => {
                self.drop_sub(sub).await;
                self.outbox.send(Outbound::RemoveSub(sid)).await;
            }
        }
    }

    /// `HOLD` (`on`) or `RESUME` of subscription `sid`: a queue gives the consumer
    /// nothing new meanwhile (told and heard before this returns); a topic
    /// subscription's deliveries wait in its buffer (the shipper stops writing them).
    pub(super) async fn hold_sub(&mut self, sid: u64, on: bool) {
        match self.session.sub(sid) {
            Some(Sub::Queue { queue, cid, .. }) => {
                let (tx, rx) = async_channel::bounded(1);
                let cmd = QueueCmd::Hold {
                    cid: *cid,
                    on,
                    reply: tx,
                };
                // A queue gone (deleted) holds nothing; its CANCEL is on the way.
                if queue.tx.send(cmd).await.is_ok() {
                    let _ = rx.recv().await;
                }
            }
            Some(_) => {
                self.outbox.send(Outbound::Hold { sid, on }).await;
            }
            None => {}
        }
    }

    pub(super) async fn drop_sub(&mut self, sub: Sub) {
        match sub {
            Sub::Topic { topic, sub } => topic.unsubscribe(&sub),
            Sub::Wild { pattern, sub } => {
                self.broker.wild.unsubscribe(&pattern, &sub);
                sub.tx.close();
            }
            Sub::Queue { queue, cid, .. } => {
                let _ = queue.tx.send(QueueCmd::Unsubscribe { cid }).await;
            }
        }
    }

    /// Settles delivery `did` of subscription `sid`, which the session found for it.
    pub(super) async fn ack(
        &mut self,
        rid: RequestId,
        sid: u64,
        did: u64,
        ack: bool,
        how: agora_protocol::Nack,
    ) -> Flow {
        let Some(Sub::Queue { queue, cid, .. }) = self.session.sub(sid) else {
            return self
                .error(
                    rid,
                    ErrorCode::UnknownDelivery,
                    &format!("delivery {did} is not outstanding on this connection"),
                )
                .await;
        };
        let (queue, cid) = (queue.clone(), *cid);
        let (reply, answer) = match rid {
            Some(_) => {
                let (tx, rx) = async_channel::bounded(1);
                (Some(tx), Some(rx))
            }
            None => (None, None),
        };
        let cmd = QueueCmd::Ack {
            cid,
            did,
            ack,
            how,
            reply,
        };
        if queue.tx.send(cmd).await.is_err() {
            // The queue is gone (deleted): nothing of it is outstanding any more.
            return self
                .error(
                    rid,
                    ErrorCode::UnknownDelivery,
                    &format!("delivery {did} belonged to a queue that no longer exists"),
                )
                .await;
        }
        // With a request id the client wants an answer: wait for the queue's verdict
        // so the reply keeps its place among this connection's replies.
        let Some(answer) = answer else { return Ok(()) };
        if answer.recv().await.unwrap_or(false) {
            self.reply(&ServerFrame::Ok { rid }).await
        } else {
            self.error(
                rid,
                ErrorCode::UnknownDelivery,
                &format!("delivery {did} is not outstanding on this subscription"),
            )
            .await
        }
    }
}
