//! A subscription's buffer between the driver and the application's stream.
//!
//! The driver pushes each delivery under a lock; the stream takes everything buffered
//! in one go (swapping the queue for its empty one) and then yields from its own batch
//! without touching the lock. One lock per batch on the application's side, and a
//! wake-up only when the buffer goes from empty to not empty. The stream's waker is
//! kept in the locked state and woken after the lock is let go, so the woken
//! application never finds the reader thread still holding anything (a shared
//! `event_listener::Event` wakes while holding its own list's lock, and the
//! application's first step then was to wait for that lock).
//!
//! Bounded: `cap` deliveries wait in the shared buffer, plus at most one batch (itself
//! at most `cap`) the application is working through. At the limit the driver applies
//! the subscription's policy (see `driver::Core::deliver_run`): drop the oldest (topics),
//! wait for room (auto-ack consumers), or give the delivery back (acking consumers).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::task::{Context, Poll, Waker};

use event_listener::Event;

use crate::lock;

/// A delivery on its way to a subscription, with the connection it arrived on.
pub(crate) struct Incoming {
    pub msg: agora_protocol::Delivery,
    pub generation: u64,
}

struct State {
    queue: VecDeque<Incoming>,
    /// The broker was asked to hold the subscription (the buffer reached its bound).
    held: bool,
    /// No more deliveries will come (the driver forgot the subscription).
    closed: bool,
    /// Draining: the stream ends once what is buffered has been taken.
    draining: bool,
    /// The application's stream, waiting for the buffer to fill.
    waiting: Option<Waker>,
}

/// How a subscription asks the broker to hold (`true`) and resume (`false`) it.
pub(crate) type Flow = Box<dyn Fn(bool) + Send + Sync>;

pub(crate) struct Inbox {
    state: Mutex<State>,
    cap: usize,
    /// Flow control instead of dropping ([`Overflow::Hold`](crate::Overflow::Hold)).
    flow: Option<Flow>,
    /// Notified when the application has taken a batch (room for a waiting driver).
    room: Event,
}

/// What [`Inbox::push_all`] did.
pub(crate) enum Pushed {
    /// `dropped` older deliveries made room (only with `drop_oldest`).
    Ok { dropped: u64 },
    /// The inbox is closed (the subscription ended): nothing was taken.
    Closed,
}

impl Inbox {
    /// An inbox that asks the broker to hold its subscription once `cap` deliveries
    /// wait, and to resume once the application has taken them.
    pub(crate) fn with_flow(cap: usize, flow: Option<Flow>) -> Inbox {
        Inbox {
            flow,
            state: Mutex::new(State {
                held: false,
                draining: false,
                queue: VecDeque::new(),
                closed: false,
                waiting: None,
            }),
            cap: cap.max(1),
            room: Event::new(),
        }
    }

    /// Adds deliveries from the front of `items` in order, under one lock. With
    /// `drop_oldest` all go in, the oldest buffered ones dropped beyond the bound;
    /// without, as many as there is room for go in and the rest stay in `items`.
    ///
    /// With flow control, everything goes in, and reaching the bound asks the broker
    /// to hold the subscription: what it had already sent still arrives, and is kept.
    pub(crate) fn push_all(&self, items: &mut Vec<Incoming>, drop_oldest: bool) -> Pushed {
        let mut s = lock(&self.state);
        if s.closed {
            return Pushed::Closed;
        }
        let was_empty = s.queue.is_empty();
        let mut dropped = 0;
        let mut hold = false;
        if self.flow.is_some() {
            s.queue.extend(items.drain(..));
            if s.queue.len() >= self.cap && !s.held {
                s.held = true;
                hold = true;
            }
        } else if drop_oldest {
            for item in items.drain(..) {
                if s.queue.len() >= self.cap && s.queue.pop_front().is_some() {
                    dropped += 1;
                }
                s.queue.push_back(item);
            }
        } else {
            let n = items.len().min(self.cap.saturating_sub(s.queue.len()));
            s.queue.extend(items.drain(..n));
        }
        let waiting = if was_empty && !s.queue.is_empty() {
            s.waiting.take()
        } else {
            None
        };
        drop(s);
        if let Some(w) = waiting {
            w.wake();
        }
        if let (true, Some(flow)) = (hold, &self.flow) {
            flow(true);
        }
        Pushed::Ok { dropped }
    }

    /// A new connection made the subscription again, not held: the next time the
    /// buffer reaches its bound asks again.
    pub(crate) fn unhold(&self) {
        lock(&self.state).held = false;
    }

    /// Waits until there is room for one more delivery (or the inbox is closed).
    pub(crate) async fn room(&self) {
        loop {
            let listener = {
                let s = lock(&self.state);
                if s.closed || s.queue.len() < self.cap {
                    return;
                }
                self.room.listen()
            };
            listener.await;
        }
    }

    /// Deliveries buffered now.
    pub(crate) fn len(&self) -> usize {
        lock(&self.state).queue.len()
    }

    /// Drops everything buffered; returns how many.
    pub(crate) fn clear(&self) -> usize {
        let mut s = lock(&self.state);
        let n = s.queue.len();
        s.queue.clear();
        drop(s);
        self.room.notify(usize::MAX);
        n
    }

    /// Draining: the stream ends once the buffer is empty (what arrives after that is
    /// not handed out).
    pub(crate) fn drain(&self) {
        let mut s = lock(&self.state);
        s.draining = true;
        let waiting = s.waiting.take();
        drop(s);
        if let Some(w) = waiting {
            w.wake();
        }
    }

    /// No more deliveries: the stream ends once the buffer is empty.
    pub(crate) fn close(&self) {
        let mut s = lock(&self.state);
        s.closed = true;
        let waiting = s.waiting.take();
        drop(s);
        if let Some(w) = waiting {
            w.wake();
        }
        self.room.notify(usize::MAX);
    }

    /// Moves everything buffered into `batch` (which must be empty). `Some(false)`: the
    /// inbox is closed and empty. `None`: nothing yet, and `waker` (if any) is woken by
    /// the next push or the close.
    fn take(&self, batch: &mut VecDeque<Incoming>, waker: Option<&Waker>) -> Option<bool> {
        let mut s = lock(&self.state);
        if !s.queue.is_empty() {
            std::mem::swap(&mut s.queue, batch);
            let resume = std::mem::take(&mut s.held);
            drop(s);
            self.room.notify(usize::MAX);
            if let (true, Some(flow)) = (resume, &self.flow) {
                flow(false);
            }
            return Some(true);
        }
        if s.closed || s.draining {
            return Some(false);
        }
        if let Some(w) = waker {
            match &mut s.waiting {
                Some(old) if old.will_wake(w) => {}
                slot => *slot = Some(w.clone()),
            }
        }
        None
    }
}

/// The application's end: its own batch, refilled from the inbox.
pub(crate) struct InboxReader {
    inbox: std::sync::Arc<Inbox>,
    batch: VecDeque<Incoming>,
}

impl std::fmt::Debug for InboxReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InboxReader")
            .field("batch", &self.batch.len())
            .finish()
    }
}

impl InboxReader {
    pub(crate) fn new(inbox: std::sync::Arc<Inbox>) -> InboxReader {
        InboxReader {
            inbox,
            batch: VecDeque::new(),
        }
    }

    /// Draining: the stream ends once what is buffered has been taken.
    pub(crate) fn drain(&self) {
        self.inbox.drain();
    }

    /// Deliveries buffered for the application, not yet taken.
    pub(crate) fn buffered(&self) -> usize {
        self.batch.len() + self.inbox.len()
    }

    /// The next delivery if one is buffered, without waiting.
    pub(crate) fn try_next(&mut self) -> Option<Incoming> {
        if let Some(i) = self.batch.pop_front() {
            return Some(i);
        }
        self.inbox.take(&mut self.batch, None)?;
        self.batch.pop_front()
    }

    pub(crate) fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Incoming>> {
        if let Some(i) = self.batch.pop_front() {
            return Poll::Ready(Some(i));
        }
        match self.inbox.take(&mut self.batch, Some(cx.waker())) {
            Some(true) => Poll::Ready(self.batch.pop_front()),
            Some(false) => Poll::Ready(None),
            None => Poll::Pending,
        }
    }
}
