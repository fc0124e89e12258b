//! Fire-and-forget publishes, encoded on the publisher's own thread.
//!
//! A publish without a confirm needs nothing from the driver but the write, so the
//! application's handle encodes the `PUB` frame itself, under a lock, into a buffer the
//! driver swaps out and writes whole. That costs one uncontended lock per publish
//! instead of a command on a channel, a wake-up of the driver per burst instead of one
//! per message, and no copy of the destination per message.
//!
//! The buffer is bounded in bytes: a publisher finding it at its limit waits until the
//! driver has taken it (one frame may pass the limit, so a payload larger than the limit
//! still goes). Only whole frames are ever in it, so a reconnect sends them on the next
//! connection as they are.
//!
//! Order: the driver takes the buffer before it handles any command, so a publish made
//! before a command was queued goes out before it (and a confirmed publish never
//! overtakes an earlier fire-and-forget one).

use std::sync::Mutex;
use std::task::{Context, Poll, Waker};

use agora_protocol::bytes::BytesMut;
use agora_protocol::{encode_pub, Destination, Headers};
use event_listener::Event;

use crate::error::{Error, Result};
use crate::lock;

struct State {
    buf: BytesMut,
    /// The driver has stopped for good: publishes fail with [`Error::Closed`].
    closed: bool,
    /// The driver, waiting for the buffer to fill; woken after the lock is let go.
    driver: Option<Waker>,
}

pub(crate) struct PubBuf {
    state: Mutex<State>,
    /// Bytes buffered before a publisher waits.
    limit: usize,
    /// Notified when the driver has taken the buffer, or closed it (publishers at the
    /// limit listen).
    taken: Event,
}

impl std::fmt::Debug for PubBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PubBuf")
            .field("limit", &self.limit)
            .finish()
    }
}

impl PubBuf {
    pub(crate) fn new(limit: usize) -> PubBuf {
        PubBuf {
            state: Mutex::new(State {
                buf: BytesMut::new(),
                closed: false,
                driver: None,
            }),
            limit: limit.max(1),
            taken: Event::new(),
        }
    }

    /// Encodes a fire-and-forget `PUB`, waiting while the buffer is at its limit.
    pub(crate) async fn publish(
        &self,
        dest: &Destination,
        headers: &Headers,
        payload: &[u8],
    ) -> Result<()> {
        loop {
            let listener = {
                let mut s = lock(&self.state);
                if s.closed {
                    return Err(Error::Closed);
                }
                if s.buf.len() < self.limit {
                    let driver = if s.buf.is_empty() {
                        s.driver.take()
                    } else {
                        None
                    };
                    encode_pub(None, dest, headers, payload, &mut s.buf);
                    drop(s);
                    if let Some(w) = driver {
                        w.wake();
                    }
                    return Ok(());
                }
                // Listen before the lock is let go, so the driver's notification after
                // it takes the buffer cannot be missed.
                self.taken.listen()
            };
            listener.await;
        }
    }

    /// Moves whatever is buffered to the end of `out` (swapping buffers when `out` is
    /// empty, so nothing is copied); false if there was nothing.
    pub(crate) fn take_into(&self, out: &mut BytesMut) -> bool {
        let mut s = lock(&self.state);
        if s.buf.is_empty() {
            return false;
        }
        if out.is_empty() {
            std::mem::swap(out, &mut s.buf);
        } else {
            out.extend_from_slice(&s.buf);
            s.buf.clear();
        }
        drop(s);
        self.taken.notify(usize::MAX);
        true
    }

    pub(crate) fn is_empty(&self) -> bool {
        lock(&self.state).buf.is_empty()
    }

    /// Waits until something is buffered (one waiter: the driver).
    pub(crate) async fn filled(&self) {
        std::future::poll_fn(|cx| self.poll_filled(cx)).await
    }

    fn poll_filled(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut s = lock(&self.state);
        if !s.buf.is_empty() {
            return Poll::Ready(());
        }
        match &mut s.driver {
            Some(w) if w.will_wake(cx.waker()) => {}
            slot => *slot = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// The driver has stopped: drop what is buffered, fail every later publish, wake
    /// every waiting one. Returns the bytes dropped.
    pub(crate) fn close(&self) -> usize {
        let mut s = lock(&self.state);
        s.closed = true;
        let n = s.buf.len();
        s.buf = BytesMut::new();
        drop(s);
        self.taken.notify(usize::MAX);
        n
    }
}
