//! A subscription's deliveries on their way to its connection's shipper.
//!
//! Many producers (publishing connections for a topic, the queue's task for a queue
//! consumer), one consumer (the shipper). A `VecDeque` under a mutex and one stored
//! waker: a push is a lock, a `push_back` and, only when the shipper is waiting, a wake;
//! the shipper takes up to [`TAKE`] deliveries per lock. Cheaper per message than a
//! general-purpose channel (no per-message notification bookkeeping), and the queue
//! only grows as far as it is filled: its bound is the producer's policy (a topic's
//! subscriber buffer, a queue consumer's prefetch), checked with [`DeliveryTx::len`].

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use crate::message::Delivery;

/// The producers' end of the queue that carries deliveries to a shipper.
pub(crate) type DeliveryTx = Tx<Delivery>;
/// The shipper's end.
pub(crate) type DeliveryRx = Rx<Delivery>;

/// Most deliveries the shipper takes per lock.
pub const TAKE: usize = 256;

/// Slots past which an emptied delivery queue frees its buffer (80 KiB of deliveries).
const SHRINK_ABOVE: usize = 1024;

struct State<T> {
    queue: VecDeque<T>,
    /// Items dropped to make room since the consumer last took ([`Rx::take_counted`]).
    dropped: u64,
    closed: bool,
    /// The shipper, while it waits for this queue.
    waker: Option<Waker>,
}

struct Inner<T> {
    state: Mutex<State<T>>,
}

impl<T> Inner<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The producers' end. Cloning shares the queue.
pub struct Tx<T>(Arc<Inner<T>>);

impl<T> Clone for Tx<T> {
    fn clone(&self) -> Self {
        Tx(self.0.clone())
    }
}

/// The consumer's end.
pub struct Rx<T>(Arc<Inner<T>>);

/// A new, empty, open queue (generic, so that `benches/primitives.rs` measures this
/// very code).
pub fn queue<T>() -> (Tx<T>, Rx<T>) {
    let inner = Arc::new(Inner {
        state: Mutex::new(State {
            queue: VecDeque::new(),
            dropped: 0,
            closed: false,
            waker: None,
        }),
    });
    (Tx(inner.clone()), Rx(inner))
}

/// What [`Tx::push_all`] did.
#[derive(Default, Debug)]
pub(crate) struct Pushed {
    /// Deliveries added, the first ones offered.
    pub pushed: usize,
    /// Their payloads' bytes.
    pub pushed_bytes: u64,
    /// Older deliveries dropped to make room.
    pub dropped: u64,
    /// Budget charges of deliveries dropped or refused.
    pub unplaced: usize,
    /// Some were refused: the queue is closed, or full without `drop_oldest`.
    pub refused: bool,
}

/// What [`Rx::take`] found.
pub enum Took {
    /// Deliveries were moved into the batch.
    Some,
    Empty,
    /// Closed and empty: nothing more will come.
    Closed,
}

impl<T> Tx<T> {
    /// Adds an item; hands it back if the queue is closed.
    pub fn push(&self, d: T) -> Result<(), T> {
        let mut s = self.0.lock();
        if s.closed {
            return Err(d);
        }
        s.queue.push_back(d);
        let w = s.waker.take();
        drop(s);
        if let Some(w) = w {
            w.wake();
        }
        Ok(())
    }

    /// Items waiting for the consumer.
    pub fn len(&self) -> usize {
        self.0.lock().queue.len()
    }

    /// True when nothing waits for the consumer.
    pub fn is_empty(&self) -> bool {
        self.0.lock().queue.is_empty()
    }

    /// Removes the oldest waiting item (a topic's drop-oldest policy).
    pub fn pop_oldest(&self) -> Option<T> {
        self.0.lock().queue.pop_front()
    }

    /// Closes the queue: no more pushes; the consumer takes what is left, then sees it
    /// closed. True if this call closed it.
    pub fn close(&self) -> bool {
        let mut s = self.0.lock();
        if s.closed {
            return false;
        }
        s.closed = true;
        let w = s.waker.take();
        drop(s);
        if let Some(w) = w {
            w.wake();
        }
        true
    }

    /// True once the queue is closed.
    pub fn is_closed(&self) -> bool {
        self.0.lock().closed
    }
}

impl Tx<Delivery> {
    /// Budget bytes the waiting deliveries hold (for the simulation's checks).
    pub(crate) fn charged(&self) -> usize {
        self.0.lock().queue.iter().map(|d| d.charged).sum()
    }

    /// Adds deliveries in order under one lock, keeping at most `cap` waiting: at the
    /// limit the oldest is dropped if `drop_oldest`, else the rest are refused.
    pub(crate) fn push_all(
        &self,
        items: impl Iterator<Item = Delivery>,
        cap: usize,
        drop_oldest: bool,
    ) -> Pushed {
        let mut r = Pushed::default();
        let mut s = self.0.lock();
        if s.closed {
            r.refused = true;
            r.unplaced = items.map(|d| d.charged).sum();
            return r;
        }
        let mut items = items;
        while let Some(d) = items.next() {
            if s.queue.len() >= cap {
                if drop_oldest {
                    if let Some(old) = s.queue.pop_front() {
                        r.unplaced += old.charged;
                        r.dropped += 1;
                        s.dropped += 1;
                    }
                } else {
                    r.refused = true;
                    r.unplaced += d.charged + items.map(|d| d.charged).sum::<usize>();
                    break;
                }
            }
            r.pushed_bytes += d.msg.payload.len() as u64;
            s.queue.push_back(d);
            r.pushed += 1;
        }
        let w = s.waker.take();
        drop(s);
        if let Some(w) = w {
            w.wake();
        }
        r
    }
}

impl<T> Rx<T> {
    /// Moves up to [`TAKE`] items to the end of `batch`.
    pub fn take(&self, batch: &mut VecDeque<T>) -> Took {
        self.take_counted(batch, &mut 0)
    }

    /// [`take`](Rx::take), adding to `dropped` the items dropped to make room since
    /// the last take (they were older than what it takes now).
    pub fn take_counted(&self, batch: &mut VecDeque<T>, dropped: &mut u64) -> Took {
        let mut s = self.0.lock();
        *dropped += std::mem::take(&mut s.dropped);
        let n = s.queue.len().min(TAKE);
        if n > 0 {
            batch.extend(s.queue.drain(..n));
            // A buffer that grew while its subscriber was behind is given back once it
            // has emptied (a `VecDeque` keeps its largest size otherwise).
            if s.queue.is_empty() && s.queue.capacity() > SHRINK_ABOVE {
                s.queue = VecDeque::new();
            }
            return Took::Some;
        }
        if s.closed {
            Took::Closed
        } else {
            Took::Empty
        }
    }

    /// Ready when the queue has something or is closed; otherwise remembers `cx`'s
    /// waker for the next push or close.
    pub fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut s = self.0.lock();
        if !s.queue.is_empty() || s.closed {
            return Poll::Ready(());
        }
        match &mut s.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            w => *w = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// Closes the queue from the consumer's side and returns what it still held.
    pub fn close_and_drain(&self) -> VecDeque<T> {
        let mut s = self.0.lock();
        s.closed = true;
        s.waker = None;
        std::mem::take(&mut s.queue)
    }
}

/// What an auto-ack queue consumer's shipper tells its queue.
pub(crate) enum Report {
    /// This many more deliveries were written: they leave the queue, credit comes back.
    Written(usize),
    /// The subscription ended and nothing more will be written (sent after the last
    /// `Written`, so the queue never gives back what was being written).
    Stopped,
}

/// The credit handle: the way from an auto-ack consumer's shipper back to its queue. A
/// function the queue makes, so the shipper needs none of the queue's types (and the
/// queue none of the shipper's). One call per written batch, not per message.
pub(crate) struct Credit(
    #[allow(clippy::type_complexity)]
    Box<dyn Fn(Report) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>,
);

impl Credit {
    pub fn new(
        f: impl Fn(Report) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync + 'static,
    ) -> Credit {
        Credit(Box::new(f))
    }

    /// Tells the queue; waits for room in its channel, which slows only this shipper.
    pub async fn report(&self, r: Report) {
        (self.0)(r).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_emptied_backlog_frees_its_buffer() {
        let (tx, rx) = queue::<u64>();
        for i in 0..5000 {
            assert!(tx.push(i).is_ok());
        }
        assert!(rx.0.lock().queue.capacity() >= 5000);
        let mut batch = VecDeque::new();
        let mut seen = 0;
        while let Took::Some = rx.take(&mut batch) {
            seen += batch.drain(..).count();
        }
        assert_eq!(seen, 5000);
        assert_eq!(rx.0.lock().queue.capacity(), 0);
        // A short queue keeps its buffer: no allocation per batch.
        for i in 0..100 {
            assert!(tx.push(i).is_ok());
        }
        let cap = rx.0.lock().queue.capacity();
        assert!(matches!(rx.take(&mut batch), Took::Some));
        assert_eq!(rx.0.lock().queue.capacity(), cap);
    }
}
