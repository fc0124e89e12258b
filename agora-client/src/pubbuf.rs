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
//! Gathering: while a publisher streams (publishes arrived while the driver's last
//! write was under way), the driver asks to be woken only once 64 KiB are buffered
//! ([`PubBuf::filled`]), and waits that long at most (the builder's `publish_linger`):
//! one write of 64 KiB instead of a write every few frames, each waking the broker.
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
    /// Bytes buffered before the driver is woken: 0, the first frame wakes it;
    /// more while it gathers a stream's publishes.
    want: usize,
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
                want: 0,
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
                    let was_empty = s.buf.is_empty();
                    encode_pub(None, dest, headers, payload, &mut s.buf);
                    let driver =
                        if (was_empty && s.want == 0) || (s.want > 0 && s.buf.len() >= s.want) {
                            s.want = 0;
                            s.driver.take()
                        } else {
                            None
                        };
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
        s.want = 0;
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

    /// Bytes buffered.
    pub(crate) fn len(&self) -> usize {
        lock(&self.state).buf.len()
    }

    /// Waits until at least `want` bytes (and at least one frame) are buffered (one
    /// waiter: the driver). The wish lasts until the driver next takes the buffer.
    pub(crate) async fn filled(&self, want: usize) {
        std::future::poll_fn(|cx| self.poll_filled(cx, want)).await
    }

    fn poll_filled(&self, cx: &mut Context<'_>, want: usize) -> Poll<()> {
        let mut s = lock(&self.state);
        if !s.buf.is_empty() && s.buf.len() >= want {
            return Poll::Ready(());
        }
        s.want = want;
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    use std::sync::Arc;
    use std::task::Wake;

    use super::*;

    /// Counts its wake-ups.
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, SeqCst);
        }
    }

    fn publish(p: &PubBuf) {
        let dest = Destination::parse("topic:t").unwrap();
        futures_lite::future::block_on(p.publish(&dest, &Headers::new(), b"0123456789")).unwrap();
    }

    fn poll(p: &PubBuf, want: usize, count: &Arc<Count>) -> Poll<()> {
        let waker = Waker::from(count.clone());
        p.poll_filled(&mut Context::from_waker(&waker), want)
    }

    #[test]
    fn the_driver_is_woken_by_the_first_frame_or_when_what_it_gathers_is_there() {
        let p = PubBuf::new(1 << 20);
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let woken = || count.0.load(SeqCst);
        assert!(poll(&p, 0, &count).is_pending());
        publish(&p);
        assert_eq!(woken(), 1, "the first frame wakes an idle driver");
        assert!(poll(&p, 0, &count).is_ready());
        let frame = p.len();

        // Gathering: the driver waits for 10 frames' bytes; the frames before them do
        // not wake it, the one that completes them does, once.
        assert!(poll(&p, 10 * frame, &count).is_pending());
        for _ in 0..8 {
            publish(&p);
        }
        assert_eq!(woken(), 1, "frames short of what it gathers");
        publish(&p);
        assert_eq!(woken(), 2, "the tenth frame");
        publish(&p);
        assert_eq!(woken(), 2, "nobody is waiting any more");
        assert!(poll(&p, 10 * frame, &count).is_ready());

        // Taking the buffer ends a wish: the next frame wakes the driver, whatever it
        // waited for before (the linger's end took the buffer short of it).
        assert!(poll(&p, 100 * frame, &count).is_pending());
        let mut out = BytesMut::new();
        assert!(p.take_into(&mut out));
        assert_eq!(out.len(), 11 * frame);
        assert!(poll(&p, 0, &count).is_pending());
        publish(&p);
        assert_eq!(woken(), 3);
    }
}
