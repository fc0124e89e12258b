//! A deque kept in fixed blocks, for a queue's pending messages.
//!
//! A `VecDeque` doubles its one allocation as it grows and keeps it when it drains: a
//! queue flooded to 268,000 messages of 1,000 bytes held a 48 MiB ring (96 bytes a
//! slot, half of them empty) beside its 256 MiB of payloads, copied the ring on every
//! doubling (old and new both resident for a moment), and kept all of it after a
//! consumer had emptied the queue. [`Blocks`] allocates [`BLOCK`] slots at a time and
//! frees each block as it empties: at most two blocks are partly used (the front and
//! the back), growing copies nothing, and an empty deque holds no block.

use std::collections::VecDeque;

/// Slots per block: 32 messages of 96 bytes make a 3 KiB allocation.
pub(crate) const BLOCK: usize = 32;

/// A double-ended queue of `T` in blocks of [`BLOCK`]: every block but the first and the
/// last is full.
pub(crate) struct Blocks<T> {
    blocks: VecDeque<VecDeque<T>>,
    len: usize,
}

impl<T> Default for Blocks<T> {
    fn default() -> Self {
        Blocks {
            blocks: VecDeque::new(),
            len: 0,
        }
    }
}

impl<T> Blocks<T> {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn front(&self) -> Option<&T> {
        self.blocks.front().and_then(VecDeque::front)
    }

    pub fn push_back(&mut self, t: T) {
        match self.blocks.back_mut() {
            Some(b) if b.len() < BLOCK => b.push_back(t),
            _ => {
                let mut b = VecDeque::with_capacity(BLOCK);
                b.push_back(t);
                self.blocks.push_back(b);
            }
        }
        self.len += 1;
    }

    pub fn push_front(&mut self, t: T) {
        match self.blocks.front_mut() {
            Some(b) if b.len() < BLOCK => b.push_front(t),
            _ => {
                let mut b = VecDeque::with_capacity(BLOCK);
                b.push_front(t);
                self.blocks.push_front(b);
            }
        }
        self.len += 1;
    }

    pub fn pop_front(&mut self) -> Option<T> {
        let b = self.blocks.front_mut()?;
        let t = b.pop_front();
        if b.is_empty() {
            self.blocks.pop_front();
        }
        if t.is_some() {
            self.len -= 1;
        }
        t
    }

    pub fn pop_back(&mut self) -> Option<T> {
        let b = self.blocks.back_mut()?;
        let t = b.pop_back();
        if b.is_empty() {
            self.blocks.pop_back();
        }
        if t.is_some() {
            self.len -= 1;
        }
        t
    }

    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &T> {
        self.blocks.iter().flat_map(VecDeque::iter)
    }

    pub fn iter_mut(&mut self) -> impl DoubleEndedIterator<Item = &mut T> {
        self.blocks.iter_mut().flat_map(VecDeque::iter_mut)
    }

    /// Takes every element, front first, freeing each block as it is emptied (not all
    /// at the end, as `VecDeque::drain` would).
    pub fn take_all(&mut self) -> impl Iterator<Item = T> {
        let mut all = std::mem::take(self);
        std::iter::from_fn(move || all.pop_front())
    }

    /// Blocks allocated (for tests and the bound on unused slots).
    #[cfg(test)]
    fn blocks(&self) -> usize {
        self.blocks.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against a `VecDeque` model, a seeded mix of operations: the same elements in the
    /// same order, and never more than two blocks beyond what the length needs.
    #[test]
    fn behaves_as_a_deque_in_blocks() {
        let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut b = Blocks::default();
        let mut model = VecDeque::new();
        for i in 0..200_000u64 {
            match next() % 10 {
                0..=4 => {
                    b.push_back(i);
                    model.push_back(i);
                }
                5 => {
                    b.push_front(i);
                    model.push_front(i);
                }
                6 => assert_eq!(b.pop_back(), model.pop_back()),
                _ => assert_eq!(b.pop_front(), model.pop_front()),
            }
            assert_eq!(b.len(), model.len());
            assert_eq!(b.front(), model.front());
            assert!(b.blocks() <= model.len().div_ceil(BLOCK) + 2);
            if i % 10_000 == 0 {
                assert!(b.iter().eq(model.iter()));
            }
        }
        assert!(b.take_all().eq(model.drain(..)));
        assert_eq!(b.len(), 0);
        assert_eq!(b.blocks(), 0);
    }

    #[test]
    fn an_emptied_deque_holds_no_block() {
        let mut b = Blocks::default();
        for i in 0..1000 {
            b.push_back(i);
        }
        assert_eq!(b.blocks(), 1000usize.div_ceil(BLOCK));
        while b.pop_front().is_some() {}
        assert_eq!(b.blocks(), 0);
        assert!(b.is_empty());
        assert_eq!(b.pop_front(), None);
        b.push_front(7);
        assert_eq!(b.blocks(), 1);
        assert_eq!(b.take_all().collect::<Vec<_>>(), vec![7]);
    }
}
