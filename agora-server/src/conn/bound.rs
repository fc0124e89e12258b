//! Copies of topic publishes for the queues bound to patterns the topic's name matches
//! (`BIND`, or `bind` in the config file): a durable subscription. The publishing
//! connection puts them in, as it puts its own queue publishes: room reserved first, a
//! refusal answered to the publisher, and for a confirmed publish the `PUBACK` waits
//! until every durable copy is stored where `--fsync` says.

use super::*;
use crate::topic::wild::Bound;

/// What putting copies in the bound queues came to.
pub(super) enum Copies {
    /// In every bound queue; the stored outcomes of durable copies, for a confirm.
    Placed(Vec<Receiver<crate::store::Outcome>>),
    /// A bound queue refused them: the publisher was answered (`ERR`).
    Refused(Flow),
}

impl Conn<'_> {
    /// Puts copies of `msgs`, just published to `topic`, in the queues `bound` (its
    /// matches); `confirm`: a confirmed publish, whose durable copies are waited for.
    pub(super) async fn copy_to_bound(
        &mut self,
        rid: RequestId,
        topic: &Destination,
        bound: &[Bound],
        msgs: &[Message],
        confirm: bool,
    ) -> Copies {
        let mut waits = Vec::new();
        for b in bound {
            match self.copy_to(rid, topic, &b.0, msgs, confirm).await {
                Ok(Some(rx)) => waits.push(rx),
                Ok(None) => {}
                Err(flow) => return Copies::Refused(flow),
            }
        }
        Copies::Placed(waits)
    }

    async fn copy_to(
        &mut self,
        rid: RequestId,
        topic: &Destination,
        queue: &Destination,
        msgs: &[Message],
        confirm: bool,
    ) -> Result<Option<Receiver<crate::store::Outcome>>, Flow> {
        // A queue retired or deleted between lookup and use: resolved again.
        for _ in 0..3 {
            let q = match self.resolve(queue).await {
                Ok(Handle::Queue(q)) => q,
                Ok(Handle::Topic(_)) => return Ok(None),
                Err(r) => return Err(self.refuse(rid, r).await),
            };
            // Each copy names the topic it was published to.
            let mut copies = msgs.to_vec();
            for m in &mut copies {
                let _ = m
                    .headers
                    .insert(agora_protocol::reply::TOPIC, topic.name.as_str());
            }
            // Room for all of them, or none.
            let mut refusal = None;
            for (i, m) in copies.iter().enumerate() {
                if let Err(r) = q.reserve(m.size()) {
                    for m in &copies[..i] {
                        q.unreserve(m.size());
                    }
                    refusal = Some(r);
                    break;
                }
            }
            let (code, why) = match refusal {
                None => (ErrorCode::Internal, String::new()),
                Some(Refused::Retired) => continue,
                Some(Refused::Full(w)) => (ErrorCode::QueueFull, w),
                Some(Refused::Memory(w)) => (ErrorCode::MemoryLimit, w),
                Some(Refused::Storage(w)) => (ErrorCode::StorageFailed, w),
                Some(Refused::StorageFull(w)) => (ErrorCode::StorageFull, w),
            };
            if !why.is_empty() {
                let why = format!("{why} (the copy for {queue}, bound to {topic})");
                return Err(self.error(rid, code, &why).await);
            }
            let sizes: Vec<usize> = copies.iter().map(Message::size).collect();
            if confirm && copies.len() == 1 && q.durable.load(Relaxed) {
                let (tx, rx) = async_channel::bounded(1);
                let msg = copies.pop().expect("one");
                match q.tx.send(QueueCmd::PublishStored(msg, tx)).await {
                    Ok(()) => return Ok(Some(rx)),
                    Err(async_channel::SendError(QueueCmd::PublishStored(m, _))) => {
                        q.unreserve(m.size());
                        continue;
                    }
                    Err(_) => return Err(Err(End::Stopping)),
                }
            }
            let cmd = match copies.len() {
                1 => QueueCmd::Publish(copies.pop().expect("one")),
                _ => QueueCmd::PublishMany(copies),
            };
            match q.tx.send(cmd).await {
                Ok(()) => return Ok(None),
                Err(async_channel::SendError(_)) => {
                    for size in sizes {
                        q.unreserve(size);
                    }
                }
            }
        }
        let why = format!("{queue}, bound to {topic}, kept disappearing; publish again");
        Err(self.error(rid, ErrorCode::Internal, &why).await)
    }

    /// A confirmed publish whose durable copies are on their way to the log: its
    /// `PUBACK` waits for all of them (an `ERR` for the first that fails).
    pub(super) fn wait_all_stored(
        &self,
        rid: RequestId,
        mut waits: Vec<Receiver<crate::store::Outcome>>,
    ) {
        if waits.len() == 1 {
            return self.wait_stored(rid, waits.pop().expect("one"));
        }
        let (tx, rx) = async_channel::bounded(1);
        self.broker
            .rt
            .spawn(async move {
                for w in waits {
                    match w.recv().await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => {
                            let _ = tx.send(Err(e)).await;
                            return;
                        }
                        // A queue went away first: the receiver sees the sender gone.
                        Err(_) => return,
                    }
                }
                let _ = tx.send(Ok(())).await;
            })
            .detach();
        self.wait_stored(rid, rx);
    }
}
