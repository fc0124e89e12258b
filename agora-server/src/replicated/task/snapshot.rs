//! A replicated queue's task and snapshots: its member compacts its log once it holds
//! more than `--raft-compact-bytes` and four times the queue's messages (so the copy a
//! snapshot makes costs at most a quarter of the log it replaces). The task takes the
//! queue's state (its messages' bodies shared, not copied), a blocking thread encodes
//! it, the log is compacted to it, and another writes the new log while the task goes
//! on (at the end the task adds what came meanwhile). It offers a snapshot when raft-rs
//! wants to send one to a member behind the compacted log, sends it there in pieces as
//! the link takes them, and restores one the leader sent.

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
        self.compaction().await;
    }

    /// Compacts the log when it is due: the queue's state is taken in the task (its
    /// messages' bodies shared, not copied), encoded on a blocking thread, and the log
    /// compacted to it once that is done and no write waits for a sync; then the log
    /// is written anew, on a blocking thread too.
    async fn compaction(&mut self) {
        if let Some(e) = self.encoding.as_mut() {
            if let Some(task) = e.task.take_if(|t| t.is_finished()) {
                let (data, took) = task.await;
                e.data = Some(data.into());
                e.encoded = took;
            }
            let Some(data) = e.data.clone() else {
                return;
            };
            // A leader's snapshot written meanwhile replaced the log: out of date.
            if e.generation != self.generation || self.failed.is_some() {
                self.encoding = None;
                return;
            }
            if !self.replica.may_compact() {
                return;
            }
            let mut e = self.encoding.take().expect("checked");
            let began = Instant::now();
            if let Some(w) = self.replica.compact_at(e.index, data) {
                e.made += began.elapsed();
                self.rewrite_log(w, e);
            }
            return;
        }
        let kept = self.replica.log_bytes();
        let due = compaction_due(kept, self.machine.bytes(), self.groups.compact_bytes);
        if !due || self.failed.is_some() || self.rewrite.is_some() || self.log.is_none() {
            return;
        }
        let began = Instant::now();
        let image = self.machine.take_image();
        let index = self.replica.applied();
        let made = began.elapsed();
        self.encoding = Some(Encoding {
            task: Some(smol::unblock(move || {
                let began = Instant::now();
                (image.encode(), began.elapsed())
            })),
            data: None,
            generation: self.generation,
            index,
            kept,
            began,
            made,
            encoded: Duration::ZERO,
        });
    }

    /// Writes the log anew beside it, on a blocking thread, from a compaction's
    /// snapshot and the entries after it; until it is renamed over the log, the log
    /// (whole, from before) is what a restart reads.
    fn rewrite_log(&mut self, w: Writes, e: Encoding) {
        let Some(path) = self.log.as_ref().map(|l| l.path().to_owned()) else {
            return;
        };
        let (index, size) = w
            .snapshot
            .as_ref()
            .map_or((0, 0), |s| (s.get_metadata().index, s.data.len()));
        let task = smol::unblock(move || RaftLog::begin_rewrite(&path, &w));
        self.rewrite = Some((
            task,
            Rewriting {
                generation: self.generation,
                index,
                kept: e.kept,
                size,
                began: e.began,
                made: e.made,
                encoded: e.encoded,
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
        let waited = Instant::now();
        let (log, done) = smol::unblock(move || {
            let done = log.finish_rewrite(file, &rest);
            (log, done)
        })
        .await;
        self.log = Some(log);
        match done {
            Ok(old) => {
                // Closing the log replaced frees its blocks: a second for 2 GB, not
                // waited for here.
                smol::unblock(move || old.close()).detach();
                log::info!(
                "{}: its log compacted to index {} ({} bytes of entries; a snapshot of {}, {} ms of the queue's task to take its state and compact, encoded in {} ms beside it, the log written anew in {} ms, of which the task waited {} ms for its end)",
                self.shared.dest,
                r.index,
                r.kept,
                r.size,
                r.made.as_millis(),
                r.encoded.as_millis(),
                r.began.elapsed().as_millis(),
                waited.elapsed().as_millis()
                )
            }
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
