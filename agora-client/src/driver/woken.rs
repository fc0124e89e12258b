//! Two futures in one task, each polled only when its own waker fired.
//!
//! On the shared threads a connection's reader and writer are one task. With
//! `futures_lite::future::or`, every wake-up of the task polled both, and polling the
//! reader of an async socket is a `recv` system call (async-io tries the read before it
//! waits): each time publishes or acks woke the writer, the reader made a `recv` that
//! found nothing. Here each future gets a waker of its own that marks it and wakes the
//! task; a poll of the task polls only the marked ones.

use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

use crate::lock;

/// One future's mark, and the task to wake.
struct Mark {
    woken: AtomicBool,
    task: Mutex<Option<Waker>>,
}

impl Mark {
    fn new() -> Arc<Mark> {
        Arc::new(Mark {
            // Both are polled the first time.
            woken: AtomicBool::new(true),
            task: Mutex::new(None),
        })
    }

    /// Keeps the task's current waker (before the mark is read, so a wake-up after
    /// the read reaches the task).
    fn set_task(&self, cx: &Context<'_>) {
        let mut t = lock(&self.task);
        match &*t {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => *t = Some(cx.waker().clone()),
        }
    }
}

impl Wake for Mark {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, SeqCst);
        if let Some(w) = &*lock(&self.task) {
            w.wake_by_ref();
        }
    }
}

/// The output of whichever of `a` and `b` finishes first (`a` when both could); the
/// other is dropped.
pub(super) async fn or_woken<T>(a: impl Future<Output = T>, b: impl Future<Output = T>) -> T {
    let mut a = pin!(a);
    let mut b = pin!(b);
    let (ma, mb) = (Mark::new(), Mark::new());
    let (wa, wb) = (Waker::from(ma.clone()), Waker::from(mb.clone()));
    std::future::poll_fn(|cx| {
        ma.set_task(cx);
        mb.set_task(cx);
        if ma.woken.swap(false, SeqCst) {
            if let Poll::Ready(v) = a.as_mut().poll(&mut Context::from_waker(&wa)) {
                return Poll::Ready(v);
            }
        }
        if mb.woken.swap(false, SeqCst) {
            if let Poll::Ready(v) = b.as_mut().poll(&mut Context::from_waker(&wb)) {
                return Poll::Ready(v);
            }
        }
        Poll::Pending
    })
    .await
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    /// A future that counts its polls and is ready once `open` is set.
    async fn gate(polls: &Cell<u32>, open: &Cell<bool>, out: u32) -> u32 {
        std::future::poll_fn(|cx| {
            polls.set(polls.get() + 1);
            if open.get() {
                Poll::Ready(out)
            } else {
                // Remember the waker for the test to fire.
                WAKERS.with(|w| w.borrow_mut().push(cx.waker().clone()));
                Poll::Pending
            }
        })
        .await
    }

    thread_local! {
        static WAKERS: std::cell::RefCell<Vec<Waker>> = const { std::cell::RefCell::new(Vec::new()) };
    }

    #[test]
    fn only_the_future_whose_waker_fired_is_polled_again() {
        let (pa, pb) = (Cell::new(0), Cell::new(0));
        let (oa, ob) = (Cell::new(false), Cell::new(false));
        let mut f = Box::pin(or_woken(gate(&pa, &oa, 1), gate(&pb, &ob, 2)));
        let task = Waker::noop();
        let mut cx = Context::from_waker(task);
        assert!(f.as_mut().poll(&mut cx).is_pending());
        assert_eq!((pa.get(), pb.get()), (1, 1), "both polled the first time");
        let wakers: Vec<Waker> = WAKERS.with(|w| w.borrow_mut().drain(..).collect());
        assert_eq!(wakers.len(), 2);

        // Polled again with nothing woken: neither is polled.
        assert!(f.as_mut().poll(&mut cx).is_pending());
        assert_eq!((pa.get(), pb.get()), (1, 1));

        // b's waker fires: only b is polled.
        wakers[1].wake_by_ref();
        assert!(f.as_mut().poll(&mut cx).is_pending());
        assert_eq!((pa.get(), pb.get()), (1, 2));

        // a's waker fires and a is ready: its output.
        ob.set(true);
        oa.set(true);
        wakers[0].wake_by_ref();
        assert_eq!(f.as_mut().poll(&mut cx), Poll::Ready(1));
        assert_eq!((pa.get(), pb.get()), (2, 2));
    }
}
