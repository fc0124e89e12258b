//! A replicated queue's task and snapshots: its member compacts its log once it holds
//! more than `--raft-compact-bytes` and four times the queue's messages (so the copy a
//! snapshot makes costs at most a quarter of the log it replaces), writing the new log
//! on a blocking thread while the task goes on (the task copies the queue's state, and
//! at the end adds what came meanwhile), offers one when
//! raft-rs wants to send it to a member behind the compacted log, sends it there in
//! pieces as the link takes them, and restores one the leader sent.

use super::*;

/// How long an offered snapshot is kept once nothing is sending it (raft-rs asks again
/// when it needs one).
const OFFER_KEPT: Duration = Duration::from_secs(5);

impl Task {
    /// Sends the pieces of snapshots on their way, offers or withdraws one as raft-rs
    /// needs, and compacts the log when it is due.
    pub(super) async fn snapshots(&mut self) {
        self.send_pieces();
        if self.replica.snapshot_wanted() && self.failed.is_none() {
            self.replica.offer_snapshot(self.machine.image());
            self.offered = Some(self.ticked);
        }
        if let Some(at) = self.offered {
            let kept = (OFFER_KEPT.as_millis() / self.groups.tick.as_millis()) as u64;
            if self.sending.is_empty() && self.ticked >= at + kept {
                self.replica.withdraw_snapshot();
                self.offered = None;
            }
        }
        // A log being written anew: finished once its file is ready.
        if self.rewrite.as_ref().is_some_and(|(t, _)| t.is_finished()) {
            let (task, r) = self.rewrite.take().expect("checked");
            match task.await {
                Ok(file) if r.generation == self.generation => {
                    self.finish_rewrite(file, &r).await;
                }
                // A leader's snapshot was written meanwhile: this one is out of date.
                Ok(file) => file.abandon(),
                Err(e) => log::warn!(
                    "{}: its log could not be written anew ({e}); it stays as it was",
                    self.shared.dest
                ),
            }
        }
        let kept = self.replica.log_bytes();
        let due = compaction_due(kept, self.machine.bytes(), self.groups.compact_bytes);
        if !due || self.failed.is_some() || self.rewrite.is_some() {
            return;
        }
        let Some(path) = self.log.as_ref().map(|l| l.path().to_owned()) else {
            return;
        };
        let began = Instant::now();
        let Some(w) = self.replica.compact(self.machine.image()) else {
            return;
        };
        let made = began.elapsed();
        let (index, size) = w
            .snapshot
            .as_ref()
            .map_or((0, 0), |s| (s.get_metadata().index, s.data.len()));
        // Written beside the log on a blocking thread while this task goes on; until
        // it is renamed over the log, the log (whole, from before) is what a restart
        // reads.
        let task = smol::unblock(move || RaftLog::begin_rewrite(&path, &w));
        self.rewrite = Some((
            task,
            Rewriting {
                generation: self.generation,
                index,
                kept,
                size,
                began,
                made,
            },
        ));
    }

    /// Ends a log's rewrite: what the member holds after its snapshot now is appended
    /// to the new file, which replaces the log.
    async fn finish_rewrite(&mut self, file: Rewrite, r: &Rewriting) {
        let Some(mut log) = self.log.take() else {
            file.abandon();
            return;
        };
        let rest = self.replica.held_writes();
        let (log, done) = smol::unblock(move || {
            let done = log.finish_rewrite(file, &rest);
            (log, done)
        })
        .await;
        self.log = Some(log);
        match done {
            Ok(()) => log::info!(
                "{}: its log compacted to index {} ({} bytes of entries; a snapshot of {}, made in {} ms in the queue's task, the log written anew beside it in {} ms)",
                self.shared.dest,
                r.index,
                r.kept,
                r.size,
                r.made.as_millis(),
                r.began.elapsed().as_millis()
            ),
            // Where the log's appends go is not known for sure: as any write that
            // failed, this member stops promising anything.
            Err(e) => self.stop_taking_part(format!("its Raft log cannot be written anew: {e}")),
        }
    }

    /// Hands the links what pieces they take now; reports a snapshot sent once its
    /// last piece left, or failed when it did not within `SEND_TIMEOUT`.
    fn send_pieces(&mut self) {
        let mut i = 0;
        while i < self.sending.len() {
            let o = &mut self.sending[i];
            let to = o.to();
            let mut done = None;
            for _ in 0..64 {
                let Some(f) = o.next() else {
                    break;
                };
                let mut bytes = Vec::new();
                if f.encode(&mut bytes).is_err() || !self.groups.send_bytes(to, bytes) {
                    break;
                }
                if o.sent() {
                    done = Some(true);
                    break;
                }
            }
            if done.is_none() && o.started.elapsed() >= super::super::chunks::SEND_TIMEOUT {
                done = Some(false);
            }
            match done {
                Some(sent) => {
                    self.sending.swap_remove(i);
                    self.replica.report_snapshot(to, sent);
                    if !sent {
                        log::warn!(
                            "{}: a snapshot for node {to} did not leave in time; sent again later",
                            self.shared.dest
                        );
                    }
                }
                None => i += 1,
            }
        }
    }

    /// The leader's state (up to `index`) replaces this member's: it was behind what
    /// the leader compacted.
    pub(super) fn restore(&mut self, index: u64, data: &[u8]) {
        let before = (self.machine.depth(), self.machine.bytes());
        match self.machine.restore(data) {
            Ok(void) => {
                if !void.is_empty() {
                    self.void(&void);
                }
                self.counts.clear();
                self.shared.release(before.0, before.1);
                self.shared
                    .restored(self.machine.depth(), self.machine.bytes(), true);
                // Its own publishers whose messages the snapshot holds are stored.
                let me = self.groups.me;
                let machine = &self.machine;
                self.waiting.retain(|seq, (w, _, _)| {
                    if machine.has_seen(me, *seq) {
                        let _ = w.try_send(Ok(()));
                        return false;
                    }
                    true
                });
                log::info!(
                    "{}: restored the leader's snapshot at index {index} ({} messages)",
                    self.shared.dest,
                    self.machine.depth()
                );
            }
            Err(why) => {
                let why = format!("the leader's snapshot at index {index} cannot be read: {why}");
                log::error!(
                    "{}: {why}; this node no longer takes part in its group",
                    self.shared.dest
                );
                self.failed = Some(why);
            }
        }
    }
}
