//! A bounded channel that allocates as it fills: the queues' command channels.
//!
//! `async_channel::bounded(n)` allocates its `n` slots when it is made: 512 commands of
//! about 72 bytes, some 37 KB for every queue, idle or not (most of what an idle queue
//! cost). This one keeps the same bound and the same waiting (a sender waits for room,
//! which stops its connection being read) over an unbounded channel, whose storage
//! grows in blocks of 31 slots as commands arrive and shrinks as they are taken: an
//! idle queue holds no slots at all. The count is an atomic beside it; senders waiting
//! for room park on an [`event_listener::Event`].

use std::sync::atomic::{AtomicUsize, Ordering::*};
use std::sync::Arc;

pub(crate) use async_channel::{RecvError, SendError, TryRecvError, TrySendError};

struct Shared {
    /// Commands sent and not yet taken (or being sent).
    len: AtomicUsize,
    cap: usize,
    /// Notified when a command is taken or the channel closes.
    room: event_listener::Event,
}

/// A channel of at most `cap` commands (at least 1).
pub(crate) fn bounded<T>(cap: usize) -> (Tx<T>, Rx<T>) {
    let (tx, rx) = async_channel::unbounded();
    let shared = Arc::new(Shared {
        len: AtomicUsize::new(0),
        cap: cap.max(1),
        room: event_listener::Event::new(),
    });
    (
        Tx {
            inner: tx,
            shared: shared.clone(),
        },
        Rx { inner: rx, shared },
    )
}

/// The sending side; cloned freely.
pub(crate) struct Tx<T> {
    inner: async_channel::Sender<T>,
    shared: Arc<Shared>,
}

impl<T> Clone for Tx<T> {
    fn clone(&self) -> Self {
        Tx {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<T> Tx<T> {
    /// Takes a place if there is one.
    fn take_place(&self) -> bool {
        let s = &self.shared;
        let mut n = s.len.load(Acquire);
        loop {
            if n >= s.cap {
                return false;
            }
            match s.len.compare_exchange_weak(n, n + 1, AcqRel, Acquire) {
                Ok(_) => return true,
                Err(now) => n = now,
            }
        }
    }

    fn push(&self, v: T) -> Result<(), SendError<T>> {
        match self.inner.try_send(v) {
            Ok(()) => Ok(()),
            Err(TrySendError::Closed(v)) | Err(TrySendError::Full(v)) => {
                self.shared.len.fetch_sub(1, AcqRel);
                Err(SendError(v))
            }
        }
    }

    /// Sends, waiting for room; `Err` (with the command) once the receiver is gone.
    pub async fn send(&self, v: T) -> Result<(), SendError<T>> {
        // Bounded by the receiver: each turn ends with a place taken, the channel
        // closed, or a command taken by the receiver (which notifies).
        loop {
            if self.inner.is_closed() {
                return Err(SendError(v));
            }
            if self.take_place() {
                return self.push(v);
            }
            let listener = self.shared.room.listen();
            if self.inner.is_closed() || self.shared.len.load(Acquire) < self.shared.cap {
                continue;
            }
            listener.await;
        }
    }

    /// Sends if there is room now.
    pub fn try_send(&self, v: T) -> Result<(), TrySendError<T>> {
        if self.inner.is_closed() {
            return Err(TrySendError::Closed(v));
        }
        if !self.take_place() {
            return Err(TrySendError::Full(v));
        }
        self.push(v).map_err(|SendError(v)| TrySendError::Closed(v))
    }

    #[cfg(test)]
    pub fn is_closed(&self) -> bool {
        self.inner.is_closed()
    }

    /// Closes the channel; true if this call closed it.
    pub fn close(&self) -> bool {
        let closed = self.inner.close();
        self.shared.room.notify(usize::MAX);
        closed
    }
}

/// The receiving side (one per channel: the queue's task).
pub(crate) struct Rx<T> {
    inner: async_channel::Receiver<T>,
    shared: Arc<Shared>,
}

impl<T> Rx<T> {
    fn took(&self) {
        self.shared.len.fetch_sub(1, AcqRel);
        self.shared.room.notify(1);
    }

    pub async fn recv(&self) -> Result<T, RecvError> {
        let v = self.inner.recv().await?;
        self.took();
        Ok(v)
    }

    pub fn try_recv(&self) -> Result<T, TryRecvError> {
        let v = self.inner.try_recv()?;
        self.took();
        Ok(v)
    }

    /// Closes the channel: senders fail at once, waiting ones wake.
    pub fn close(&self) -> bool {
        let closed = self.inner.close();
        self.shared.room.notify(usize::MAX);
        closed
    }
}

impl<T> Drop for Rx<T> {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future::block_on;

    #[test]
    fn holds_at_most_its_bound_and_senders_wait_for_room() {
        let (tx, rx) = bounded::<u32>(2);
        assert!(tx.try_send(1).is_ok());
        assert!(tx.try_send(2).is_ok());
        assert!(matches!(tx.try_send(3), Err(TrySendError::Full(3))));
        // A waiting sender goes on once the receiver takes one.
        let waiting = std::thread::spawn({
            let tx = tx.clone();
            move || block_on(tx.send(3))
        });
        assert_eq!(block_on(rx.recv()), Ok(1));
        assert!(waiting.join().unwrap().is_ok());
        assert_eq!(rx.try_recv(), Ok(2));
        assert_eq!(rx.try_recv(), Ok(3));
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn closing_wakes_waiting_senders_and_hands_back_the_command() {
        let (tx, rx) = bounded::<u32>(1);
        tx.try_send(1).unwrap();
        let waiting = std::thread::spawn({
            let tx = tx.clone();
            move || block_on(tx.send(2))
        });
        drop(rx);
        assert_eq!(waiting.join().unwrap(), Err(SendError(2)));
        assert!(tx.is_closed());
        assert!(matches!(tx.try_send(3), Err(TrySendError::Closed(3))));
    }

    #[test]
    fn many_senders_never_pass_the_bound() {
        let (tx, rx) = bounded::<u64>(8);
        let senders: Vec<_> = (0..4)
            .map(|t| {
                let tx = tx.clone();
                std::thread::spawn(move || {
                    for i in 0..10_000 {
                        block_on(tx.send(t * 100_000 + i)).unwrap();
                    }
                })
            })
            .collect();
        let mut got = 0;
        while got < 40_000 {
            assert!(rx.shared.len.load(SeqCst) <= 8);
            block_on(rx.recv()).unwrap();
            got += 1;
        }
        for s in senders {
            s.join().unwrap();
        }
        assert_eq!(rx.shared.len.load(SeqCst), 0);
    }
}
