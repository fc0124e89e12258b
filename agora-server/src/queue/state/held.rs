//! Every message a queue holds, and where: what the simulation checks its invariants
//! on.

use super::{Held, Place, QueueState};

impl<P> QueueState<P> {
    /// Calls `f` with every message the queue holds and where it is: what the
    /// simulation checks its invariants on.
    pub fn for_each_held(&self, mut f: impl FnMut(Place, &Held)) {
        self.pending.iter().for_each(|h| f(Place::Pending, h));
        self.delayed.iter().for_each(|(_, h)| f(Place::Pending, h));
        for c in &self.consumers {
            let cid = c.c.cid;
            c.unacked
                .iter()
                .for_each(|(did, o)| f(Place::Outstanding(cid, *did), &o.held));
            c.inflight
                .iter()
                .for_each(|h| f(Place::Outstanding(cid, 0), h));
        }
        self.dead.iter().for_each(|(h, _)| f(Place::Dead, h));
    }
}
