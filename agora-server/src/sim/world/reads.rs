//! Connections reading frames in pieces through the read budget
//! ([`ReadBudget`](crate::budget::ReadBudget)): each begins a frame of a random size,
//! reads it a random number of bytes at a time, and may read on while it holds part of
//! a frame only when the budget says so, as `conn/read.rs` does. Checked after every
//! read: the budget counts exactly what the readers hold; it is passed by at most one
//! free first read per reader; and whenever every reader holding part of a frame is
//! waiting, that is a deadlock (the rule lets the reader that grew last go on, so there
//! must never be one).

use super::{Check, World};
use crate::budget::ReadBudget;

/// Readers, the largest frame, the most one read takes, and the budget: four frames,
/// so readers often wait.
pub(super) const READERS: usize = 6;
const FRAME: usize = 1000;
const READ: usize = 300;
pub(super) const LIMIT: usize = 4 * FRAME;

/// One connection's frame in progress.
#[derive(Default)]
pub(crate) struct Reader {
    /// Bytes charged to the budget (the part of the frame read).
    held: usize,
    /// The frame's size; 0 before one begins.
    frame: usize,
}

pub(super) fn budget() -> ReadBudget {
    ReadBudget::new(LIMIT, FRAME)
}

impl World {
    /// One reader reads (or waits for room).
    pub(super) fn read_step(&mut self) -> String {
        let i = self.rng.below(READERS as u64) as usize;
        let r = &self.readers[i];
        if r.held > 0 && !self.read_budget.may_read(r.held, i as u64 + 1) {
            return format!("reader {i} waits holding {}", r.held);
        }
        let frame = match r.frame {
            0 => 1 + self.rng.below(FRAME as u64) as usize,
            f => f,
        };
        let n = (1 + self.rng.below(READ as u64) as usize).min(frame - r.held);
        let got = r.held + n;
        let r = &mut self.readers[i];
        r.frame = frame;
        if got == frame {
            // A whole frame: decoded, and no longer held.
            self.read_budget.set(&mut r.held, 0, i as u64 + 1);
            r.frame = 0;
            self.report.frames_read += 1;
            format!("reader {i} finishes a frame of {frame}")
        } else {
            self.read_budget.set(&mut r.held, got, i as u64 + 1);
            format!("reader {i} holds {got} of {frame}")
        }
    }

    pub(super) fn check_reads(&self) -> Check {
        let held: usize = self.readers.iter().map(|r| r.held).sum();
        if self.read_budget.used() != held {
            return Err(format!(
                "the read budget counts {} but the readers hold {held}",
                self.read_budget.used()
            ));
        }
        if held > LIMIT + READERS * READ {
            return Err(format!(
                "readers hold {held}, past the read budget of {LIMIT}"
            ));
        }
        let waiting = |(i, r): (usize, &Reader)| {
            r.held > 0 && !self.read_budget.could_read(r.held, i as u64 + 1)
        };
        if self.readers.iter().enumerate().all(waiting) {
            return Err("every reader holds part of a frame and waits: a deadlock".into());
        }
        Ok(())
    }

    /// At the end every reader lets go: the budget must read zero.
    pub(super) fn drain_reads(&mut self) -> Check {
        for (i, r) in self.readers.iter_mut().enumerate() {
            self.read_budget.set(&mut r.held, 0, i as u64 + 1);
        }
        match self.read_budget.used() {
            0 => Ok(()),
            n => Err(format!("{n} bytes of read budget still used")),
        }
    }
}
