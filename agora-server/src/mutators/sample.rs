//! `sample N`: keeps one message in N (the first, the N+1st, …) across all of the
//! destination's publishers.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::{Msg, Mutator, Step, Verdict};

pub(super) struct Sample {
    every: u64,
    seen: AtomicU64,
}

impl Sample {
    pub fn new(every: u64) -> Sample {
        Sample {
            every,
            seen: AtomicU64::new(0),
        }
    }
}

impl Mutator for Sample {
    fn apply(&self, _: &mut Msg) -> Step {
        if self.seen.fetch_add(1, Relaxed).is_multiple_of(self.every) {
            Verdict::Keep.into()
        } else {
            Verdict::Drop.into()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{chain, run};

    #[test]
    fn keeps_one_in_n() {
        let c = chain("sample 4");
        let kept: Vec<usize> = (0..12).filter(|_| run(&c, &[], "x").is_some()).collect();
        assert_eq!(kept, vec![0, 4, 8]);
        let c = chain("sample 1");
        assert!((0..5).all(|_| run(&c, &[], "x").is_some()));
    }
}
