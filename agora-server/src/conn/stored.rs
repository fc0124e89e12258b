//! Confirmed publishes to durable queues waiting for the log: each is answered
//! (`PUBACK`, or `ERR`) once its record is where `--fsync` says, in order, and before any
//! later answer on the connection.

use super::*;

/// A confirmed publish waiting for its record to be stored.
pub(super) struct Unstored {
    rid: RequestId,
    stored: Receiver<crate::store::Outcome>,
}

impl Conn<'_> {
    /// A confirmed publish to a durable queue was handed over; its answer waits for
    /// its record to be stored ([`settle_stored`](Conn::settle_stored)).
    pub(super) fn wait_stored(&self, rid: RequestId, stored: Receiver<crate::store::Outcome>) {
        self.unstored
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back(Unstored { rid, stored });
    }

    /// Answers, in order, every confirmed publish waiting for its record: `PUBACK` once
    /// stored, `ERR storage_failed` when the log cannot store it, `ERR internal` when its
    /// queue went away first. Waits for the log's writer (bounded by its sync).
    pub(super) async fn settle_stored(&self) -> Flow {
        loop {
            let Some(stored) = self.oldest_unstored() else {
                return Ok(());
            };
            let outcome = stored.recv().await;
            self.answer_stored(outcome).await?;
        }
    }

    /// Answers the confirmed publishes at the front whose records are stored already,
    /// without waiting for the others.
    pub(super) async fn settle_stored_now(&self) -> Flow {
        while let Some(stored) = self.oldest_unstored() {
            match stored.try_recv() {
                Ok(outcome) => self.answer_stored(Ok(outcome)).await?,
                Err(async_channel::TryRecvError::Empty) => return Ok(()),
                Err(async_channel::TryRecvError::Closed) => {
                    self.answer_stored(Err(async_channel::RecvError)).await?
                }
            }
        }
        Ok(())
    }

    /// The receiver of the oldest confirmed publish waiting for the log (a clone: the
    /// entry stays until [`answer_stored`](Conn::answer_stored) takes it).
    pub(super) fn oldest_unstored(&self) -> Option<Receiver<crate::store::Outcome>> {
        self.unstored
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .front()
            .map(|u| u.stored.clone())
    }

    /// Takes the oldest confirmed publish waiting for the log, whose `outcome` has
    /// come, and answers it.
    pub(super) async fn answer_stored(
        &self,
        outcome: Result<crate::store::Outcome, async_channel::RecvError>,
    ) -> Flow {
        let front = self
            .unstored
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop_front();
        let Some(Unstored { rid, .. }) = front else {
            return Ok(());
        };
        let sent = match outcome {
            Ok(Ok(())) => {
                let ack = ServerFrame::PubAck {
                    rid,
                    filtered: false,
                };
                self.outbox.frame(&ack).await
            }
            Ok(Err(why)) => {
                self.broker.metrics.error(ErrorCode::StorageFailed);
                let why = format!("not confirmed: {why}");
                self.outbox.err(rid, ErrorCode::StorageFailed, &why).await
            }
            Err(_) => {
                let why = "the queue was removed before the message was stored; publish again";
                self.outbox.err(rid, ErrorCode::Internal, why).await
            }
        };
        match sent {
            true => Ok(()),
            false => Err(End::Gone),
        }
    }
}
