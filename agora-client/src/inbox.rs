//! A subscription's buffer between the driver and the application's stream.
//!
//! The driver pushes each delivery under a lock; the stream takes everything buffered
//! in one go (swapping the queue for its empty one) and then yields from its own batch
//! without touching the lock. One lock per batch on the application's side, and a
//! wake-up only when the buffer goes from empty to not empty.
//!
//! Bounded: `cap` deliveries wait in the shared buffer, plus at most one batch (itself
//! at most `cap`) the application is working through. At the limit the driver applies
//! the subscription's policy (see `driver::Driver::deliver`): drop the oldest (topics),
//! wait for room (auto-ack consumers), or give the delivery back (acking consumers).

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Mutex, MutexGuard};
use std::task::{Context, Poll};

use event_listener::{Event, EventListener};

use crate::driver::Incoming;

struct State {
    queue: VecDeque<Incoming>,
    /// No more deliveries will come (the driver forgot the subscription).
    closed: bool,
}

pub(crate) struct Inbox {
    state: Mutex<State>,
    cap: usize,
    /// Notified when the buffer goes from empty to not empty, and on close.
    ready: Event,
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
    pub(crate) fn new(cap: usize) -> Inbox {
        Inbox {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                closed: false,
            }),
            cap: cap.max(1),
            ready: Event::new(),
            room: Event::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds deliveries from the front of `items` in order, under one lock. With
    /// `drop_oldest` all go in, the oldest buffered ones dropped beyond the bound;
    /// without, as many as there is room for go in and the rest stay in `items`.
    pub(crate) fn push_all(&self, items: &mut Vec<Incoming>, drop_oldest: bool) -> Pushed {
        let mut s = self.lock();
        if s.closed {
            return Pushed::Closed;
        }
        let was_empty = s.queue.is_empty();
        let mut dropped = 0;
        if drop_oldest {
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
        let filled = was_empty && !s.queue.is_empty();
        drop(s);
        if filled {
            self.ready.notify(1);
        }
        Pushed::Ok { dropped }
    }

    /// Waits until there is room for one more delivery (or the inbox is closed).
    pub(crate) async fn room(&self) {
        loop {
            let listener = {
                let s = self.lock();
                if s.closed || s.queue.len() < self.cap {
                    return;
                }
                self.room.listen()
            };
            listener.await;
        }
    }

    /// Drops everything buffered; returns how many.
    pub(crate) fn clear(&self) -> usize {
        let mut s = self.lock();
        let n = s.queue.len();
        s.queue.clear();
        drop(s);
        self.room.notify(usize::MAX);
        n
    }

    /// No more deliveries: the stream ends once the buffer is empty.
    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.ready.notify(usize::MAX);
        self.room.notify(usize::MAX);
    }

    /// Moves everything buffered into `batch` (which must be empty). `Ready(false)`: the
    /// inbox is closed and empty.
    fn take(&self, batch: &mut VecDeque<Incoming>) -> Option<bool> {
        let mut s = self.lock();
        if !s.queue.is_empty() {
            std::mem::swap(&mut s.queue, batch);
            drop(s);
            self.room.notify(usize::MAX);
            return Some(true);
        }
        if s.closed {
            return Some(false);
        }
        None
    }
}

/// The application's end: its own batch, refilled from the inbox.
pub(crate) struct InboxReader {
    inbox: std::sync::Arc<Inbox>,
    batch: VecDeque<Incoming>,
    listener: Option<EventListener>,
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
            listener: None,
        }
    }

    /// The next delivery if one is buffered, without waiting.
    pub(crate) fn try_next(&mut self) -> Option<Incoming> {
        if let Some(i) = self.batch.pop_front() {
            return Some(i);
        }
        self.inbox.take(&mut self.batch)?;
        self.batch.pop_front()
    }

    pub(crate) fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Incoming>> {
        loop {
            if let Some(i) = self.batch.pop_front() {
                return Poll::Ready(Some(i));
            }
            match self.inbox.take(&mut self.batch) {
                Some(true) => {
                    self.listener = None;
                    continue;
                }
                Some(false) => {
                    self.listener = None;
                    return Poll::Ready(None);
                }
                None => {}
            }
            match &mut self.listener {
                None => {
                    // Listen, then look again: a push between the look and the listen
                    // notified nobody.
                    self.listener = Some(self.inbox.ready.listen());
                }
                Some(l) => match std::pin::Pin::new(l).poll(cx) {
                    Poll::Ready(()) => self.listener = None,
                    Poll::Pending => return Poll::Pending,
                },
            }
        }
    }
}
