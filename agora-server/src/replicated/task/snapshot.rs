//! A replicated queue's task and snapshots: its member compacts its log once it holds
//! more than `--raft-compact-bytes` and more than the queue's messages (so the copy a
//! snapshot makes costs at most as much as the log it replaces), offers one when
//! raft-rs wants to send it to a member behind the compacted log, sends it there in
//! pieces as the link takes them, and restores one the leader sent.

use super::*;

/// Ticks an offered snapshot is kept once nothing is sending it (raft-rs asks again
/// when it needs one).
const OFFER_TICKS: u64 = 50;

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
            if self.sending.is_empty() && self.ticked >= at + OFFER_TICKS {
                self.replica.withdraw_snapshot();
                self.offered = None;
            }
        }
        let kept = self.replica.log_bytes();
        let due = compaction_due(kept, self.machine.bytes(), self.groups.compact_bytes);
        if !due || self.failed.is_some() {
            return;
        }
        let Some(w) = self.replica.compact(self.machine.image()) else {
            return;
        };
        let (index, size) = w
            .snapshot
            .as_ref()
            .map_or((0, 0), |s| (s.get_metadata().index, s.data.len()));
        if self.write(w).await {
            log::info!(
                "{}: its log compacted to index {index} ({kept} bytes of entries; a snapshot of {size})",
                self.shared.dest
            );
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
