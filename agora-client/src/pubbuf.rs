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
//!
//! Settles: a consumer's `ACK` and `NACK` are encoded here too, by the thread that
//! settles, into a second buffer the driver writes right after the publishes (so a
//! responder's reply goes out before the `ACK` that lets its request go). A delivery id
//! means something only on the connection it came from: the settles buffer belongs to
//! one connection generation, a settle of another one is refused
//! ([`Error::StaleDelivery`]), and a new connection empties it
//! ([`PubBuf::connected`]). It needs no limit of its own: a consumer holds at most
//! its prefetch of unsettled deliveries, so at most that many settles (about 20 bytes
//! each) are ever in it.
//!
//! Direct writes: a publish that finds the buffer empty and the driver idle (waiting,
//! with nothing taken since it last waited) is written to the socket by the publisher
//! itself, under the lock, when the connection is clear TCP on the shared threads, does
//! not confirm, and no publisher did so in the last 20 µs ([`write_direct`]). A publish
//! now and then, a round trip's or a reply's, then costs a `send` on the publisher's
//! thread and no wake-up of the driver's; a publisher in a loop still fills the buffer
//! and the driver writes what it gathers. The driver takes the buffer (and so the lock)
//! before it writes anything, so a direct write never lands inside one of its writes.

use std::io::Write;
use std::net::TcpStream;
use std::sync::{Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use agora_protocol::bytes::{Buf, BytesMut};
use agora_protocol::{encode, encode_pub, ClientFrame, Destination, Headers, Nack};
use event_listener::Event;

use crate::error::{Error, Result};
use crate::lock;

struct State {
    buf: BytesMut,
    /// Encoded `ACK`s and `NACK`s of deliveries of connection `generation`.
    settles: BytesMut,
    generation: u64,
    /// The driver has stopped for good: publishes fail with [`Error::Closed`].
    closed: bool,
    /// The driver, waiting for the buffer to fill; woken after the lock is let go.
    driver: Option<Waker>,
    /// Bytes buffered before the driver is woken: 0, the first frame wakes it;
    /// more while it gathers a stream's publishes.
    want: usize,
    /// The connection's socket, for a publisher's own write (clear TCP on the shared
    /// threads; `None` otherwise, and between connections).
    direct: Option<TcpStream>,
    /// The driver waits with nothing taken and nothing to write (it has not taken the
    /// buffer since): a write now cannot overtake anything it holds.
    idle: bool,
    /// The connection confirms publishes (`SETACK on`): a fire-and-forget `PUB` must
    /// wait for the driver to switch that off first.
    confirm_on: bool,
    /// When a publisher last wrote the socket itself.
    last_direct: Option<Instant>,
    /// Bytes at the front of `buf` that end a frame whose start a publisher wrote
    /// itself: they belong to this connection only.
    tail: usize,
    /// The connection's inbox, once the driver has subscribed it: a requester may
    /// then write its request itself.
    inbox: Option<String>,
}

/// What a publisher's own write of a frame did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Sent {
    /// All of it is on the socket.
    All,
    /// Its start is: the rest is buffered for the driver, on this connection only.
    Part,
    /// Nothing: it was not tried, or the socket took none of it.
    Nothing,
}

/// A publish that finds the driver idle and the buffer empty is written by the
/// publisher itself, at most once in this long (a publisher in a loop is faster: it
/// fills the buffer and the driver writes what it gathers).
const DIRECT_GAP: Duration = Duration::from_micros(20);

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
                settles: BytesMut::new(),
                generation: 1,
                closed: false,
                driver: None,
                want: 0,
                direct: None,
                idle: false,
                confirm_on: false,
                last_direct: None,
                tail: 0,
                inbox: None,
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
                    if was_empty && write_direct(&mut s) {
                        return Ok(());
                    }
                    let wake = (was_empty && s.want == 0) || (s.want > 0 && s.buf.len() >= s.want);
                    release(s, wake);
                    return Ok(());
                }
                // Listen before the lock is let go, so the driver's notification after
                // it takes the buffer cannot be missed.
                self.taken.listen()
            };
            listener.await;
        }
    }

    /// Encodes the `ACK` (`how` is `None`) or `NACK` of delivery `did`, read on
    /// connection `generation`: refused with [`Error::StaleDelivery`] once another
    /// connection has begun. Never waits (see the module's docs for the bound).
    pub(crate) fn settle(&self, generation: u64, did: u64, how: Option<Nack>) -> Result<()> {
        let mut s = lock(&self.state);
        if s.closed {
            return Err(Error::Closed);
        }
        if s.generation != generation {
            return Err(Error::StaleDelivery);
        }
        let first = s.settles.is_empty();
        let frame = match how {
            None => ClientFrame::Ack { rid: None, did },
            Some(how) => ClientFrame::Nack {
                rid: None,
                did,
                how,
            },
        };
        encode(&frame, &mut s.settles);
        // The first settle wakes the driver even while it gathers publishes: a
        // consumer's next deliveries wait for it.
        release(s, first);
        Ok(())
    }

    /// Connection `generation` begins: settles of earlier ones are dropped (their
    /// delivery ids mean nothing on it) and later ones refused; so is the end of a
    /// frame whose start went to the last one. `direct`: its socket, when publishers
    /// may write it themselves (see [`write_direct`]).
    pub(crate) fn connected(&self, generation: u64, direct: Option<TcpStream>) {
        let mut s = lock(&self.state);
        s.generation = generation;
        let n = s.settles.len();
        s.settles.clear();
        let tail = s.tail.min(s.buf.len());
        s.buf.advance(tail);
        s.tail = 0;
        s.direct = direct;
        s.idle = false;
        s.confirm_on = false;
        s.inbox = None;
        drop(s);
        if n > 0 {
            log::debug!("agora client: dropped {n} bytes of settles of a lost connection");
        }
        if tail > 0 {
            log::debug!("agora client: dropped the last {tail} bytes of a publish half written");
        }
    }

    /// The connection has ended: nobody writes its socket any more.
    pub(crate) fn disconnected(&self) {
        let mut s = lock(&self.state);
        s.direct = None;
        s.idle = false;
    }

    /// The driver has subscribed the connection's inbox (its `SUB` is written before
    /// the driver next waits idle, so before any write of a requester's own).
    pub(crate) fn set_inbox(&self, inbox: String) {
        lock(&self.state).inbox = Some(inbox);
    }

    /// A request written by the requester itself, when a publish could be (see
    /// [`write_direct`]) and the inbox is subscribed: `encode` puts the frame, with its
    /// reply address under the inbox it is given, into the empty buffer (false: it
    /// changed its mind, nothing is written). [`Sent::Nothing`] leaves the buffer as it
    /// was, for the request to go through the driver; [`Sent::Part`] has woken the
    /// driver to write the rest.
    pub(crate) fn write_request(&self, encode: impl FnOnce(&str, &mut BytesMut) -> bool) -> Sent {
        let mut s = lock(&self.state);
        if s.closed || !s.buf.is_empty() || !may_write_direct(&mut s) {
            return Sent::Nothing;
        }
        let Some(inbox) = s.inbox.clone() else {
            return Sent::Nothing;
        };
        if !encode(&inbox, &mut s.buf) {
            s.buf.clear();
            return Sent::Nothing;
        }
        let sent = send_buf(&mut s);
        match sent {
            Sent::All => {}
            Sent::Nothing => s.buf.clear(),
            Sent::Part => release(s, true),
        }
        sent
    }

    /// The driver switched the connection's confirms on or off.
    pub(crate) fn set_confirm(&self, on: bool) {
        lock(&self.state).confirm_on = on;
    }

    /// Moves whatever is buffered to the end of `out`, publishes first, then settles
    /// (swapping buffers when `out` is empty, so nothing is copied); false if there was
    /// nothing.
    pub(crate) fn take_into(&self, out: &mut BytesMut) -> bool {
        let mut s = lock(&self.state);
        s.want = 0;
        s.idle = false;
        s.tail = 0;
        if s.buf.is_empty() && s.settles.is_empty() {
            return false;
        }
        let published = !s.buf.is_empty();
        if out.is_empty() {
            std::mem::swap(out, &mut s.buf);
        } else {
            out.extend_from_slice(&s.buf);
            s.buf.clear();
        }
        out.extend_from_slice(&s.settles);
        s.settles.clear();
        drop(s);
        if published {
            self.taken.notify(usize::MAX);
        }
        true
    }

    /// No publish is buffered (settles may be).
    pub(crate) fn is_empty(&self) -> bool {
        lock(&self.state).buf.is_empty()
    }

    /// Bytes of publishes buffered.
    pub(crate) fn len(&self) -> usize {
        lock(&self.state).buf.len()
    }

    /// Waits until at least `want` bytes of publishes (and at least one frame) are
    /// buffered, or a settle is (one waiter: the driver). The wish lasts until the
    /// driver next takes the buffer.
    pub(crate) async fn filled(&self, want: usize) {
        std::future::poll_fn(|cx| self.poll_filled(cx, want)).await
    }

    fn poll_filled(&self, cx: &mut Context<'_>, want: usize) -> Poll<()> {
        let mut s = lock(&self.state);
        if (!s.buf.is_empty() && s.buf.len() >= want) || !s.settles.is_empty() {
            return Poll::Ready(());
        }
        s.want = want;
        s.idle = want == 0;
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
        s.settles = BytesMut::new();
        s.direct = None;
        s.idle = false;
        drop(s);
        self.taken.notify(usize::MAX);
        n
    }
}

/// Lets the lock go, then wakes the driver if `wake` (which ends its wish to gather):
/// woken after, so it never finds the lock still held.
fn release(mut s: MutexGuard<'_, State>, wake: bool) {
    let driver = if wake {
        s.want = 0;
        s.driver.take()
    } else {
        None
    };
    drop(s);
    if let Some(w) = driver {
        w.wake();
    }
}

/// Writes the one frame in the buffer to the socket from the publisher's thread, when
/// the driver is idle (so nothing it holds can be overtaken), the connection does not
/// confirm, and no publisher did so in the last [`DIRECT_GAP`]: a publish then costs a
/// `send` and no wake-up of the driver's thread (a round trip one thread hop shorter).
/// True if all of it went; otherwise what is left stays for the driver, which the
/// caller wakes (the end of a frame half written is this connection's only).
fn write_direct(s: &mut State) -> bool {
    may_write_direct(s) && send_buf(s) == Sent::All
}

/// Whether a publisher may write the socket now (see [`write_direct`]); if so, the
/// gap starts again.
fn may_write_direct(s: &mut State) -> bool {
    if !s.idle || s.confirm_on || !s.settles.is_empty() || s.direct.is_none() {
        return false;
    }
    let now = Instant::now();
    if s.last_direct
        .is_some_and(|t| now.duration_since(t) < DIRECT_GAP)
    {
        return false;
    }
    s.last_direct = Some(now);
    true
}

/// Sends the buffer (one frame) on the socket: what is not taken stays in it.
fn send_buf(s: &mut State) -> Sent {
    let Some(socket) = &s.direct else {
        return Sent::Nothing;
    };
    // The socket is non-blocking (the reactor's): a full one refuses at once.
    match (&*socket).write(&s.buf) {
        Ok(n) if n == s.buf.len() => {
            s.buf.clear();
            Sent::All
        }
        Ok(0) => Sent::Nothing,
        Ok(n) => {
            s.buf.advance(n);
            s.tail = s.buf.len();
            Sent::Part
        }
        // Full, or failing: the driver writes it, or finds the failure.
        Err(_) => Sent::Nothing,
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

    #[test]
    fn settles_go_after_the_publishes_and_belong_to_one_connection() {
        let p = PubBuf::new(1 << 20);
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let woken = || count.0.load(SeqCst);

        // Gathering publishes: the first settle wakes the driver all the same, the
        // next ones do not.
        publish(&p);
        assert!(poll(&p, 1 << 16, &count).is_pending());
        p.settle(1, 7, None).unwrap();
        assert_eq!(woken(), 1, "the first settle wakes a gathering driver");
        p.settle(1, 8, Some(Nack::Requeue)).unwrap();
        assert_eq!(woken(), 1);
        assert!(poll(&p, 1 << 16, &count).is_ready());

        // Publishes first, then the settles in the order they were made.
        let mut out = BytesMut::new();
        assert!(p.take_into(&mut out));
        let mut frames = Vec::new();
        while let Some(f) = agora_protocol::decode_client(&mut out).unwrap() {
            frames.push(f);
        }
        assert!(matches!(frames[0], ClientFrame::Pub { .. }), "{frames:?}");
        assert!(
            matches!(frames[1], ClientFrame::Ack { did: 7, .. }),
            "{frames:?}"
        );
        assert!(
            matches!(
                frames[2],
                ClientFrame::Nack {
                    did: 8,
                    how: Nack::Requeue,
                    ..
                }
            ),
            "{frames:?}"
        );
        assert_eq!(frames.len(), 3);
        assert!(!p.take_into(&mut out), "nothing left");

        // A settle made before a reconnect is dropped with its connection; one of a
        // delivery of the old connection is refused after it.
        p.settle(1, 9, None).unwrap();
        p.connected(2, None);
        assert!(matches!(p.settle(1, 10, None), Err(Error::StaleDelivery)));
        assert!(
            !p.take_into(&mut out),
            "the old connection's settle was dropped"
        );
        p.settle(2, 1, None).unwrap();
        assert!(p.take_into(&mut out));
        assert!(matches!(
            agora_protocol::decode_client(&mut out).unwrap(),
            Some(ClientFrame::Ack { did: 1, .. })
        ));

        p.close();
        assert!(matches!(p.settle(2, 2, None), Err(Error::Closed)));
    }

    /// A connected pair of sockets on loopback: the buffer's end (non-blocking, as the
    /// reactor's), and the broker's.
    fn pair() -> (TcpStream, TcpStream) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let ours = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        ours.set_nonblocking(true).unwrap();
        (ours, l.accept().unwrap().0)
    }

    fn read_frame(from: &mut TcpStream) -> ClientFrame {
        use std::io::Read;
        let mut buf = BytesMut::new();
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(f) = agora_protocol::decode_client(&mut buf).unwrap() {
                return f;
            }
            let n = from.read(&mut chunk).unwrap();
            assert!(n > 0, "the socket closed");
            buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// A buffer on connection 1 of a [`pair`], the broker's end, and a waker's count.
    fn connected_pair() -> (PubBuf, TcpStream, Arc<Count>) {
        let (ours, broker) = pair();
        let p = PubBuf::new(1 << 20);
        p.connected(1, Some(ours));
        (p, broker, Arc::new(Count(AtomicUsize::new(0))))
    }

    #[test]
    fn a_publish_finding_the_driver_idle_is_written_by_the_publisher() {
        let (p, mut broker, count) = connected_pair();
        let woken = || count.0.load(SeqCst);

        // Not before the driver has waited idle once (it may hold frames to write).
        publish(&p);
        assert!(!p.is_empty(), "buffered");
        let mut out = BytesMut::new();
        assert!(p.take_into(&mut out));

        // Idle: written at once, the driver not woken.
        assert!(poll(&p, 0, &count).is_pending());
        publish(&p);
        assert_eq!(p.len(), 0, "written by the publisher");
        assert_eq!(woken(), 0);
        assert!(matches!(read_frame(&mut broker), ClientFrame::Pub { .. }));

        // The next one, within the gap (as if at once, however slow this test runs): a
        // publisher in a loop fills the buffer instead.
        let just_now = |p: &PubBuf| {
            lock(&p.state).last_direct = Some(Instant::now() + Duration::from_secs(3600))
        };
        let long_ago = |p: &PubBuf| lock(&p.state).last_direct = None;
        just_now(&p);
        publish(&p);
        assert!(!p.is_empty());
        assert_eq!(woken(), 1, "buffered, and the driver woken");
        assert!(p.take_into(&mut out));

        // While the connection confirms, never.
        p.set_confirm(true);
        long_ago(&p);
        assert!(poll(&p, 0, &count).is_pending());
        publish(&p);
        assert!(!p.is_empty(), "the driver must switch confirms off first");
        assert!(p.take_into(&mut out));
        p.set_confirm(false);

        // Nor while gathering, nor with a settle waiting (it must go first).
        assert!(poll(&p, 1 << 16, &count).is_pending());
        publish(&p);
        assert!(!p.is_empty(), "gathering");
        assert!(p.take_into(&mut out));
        assert!(poll(&p, 0, &count).is_pending());
        p.settle(1, 3, None).unwrap();
        publish(&p);
        assert!(!p.is_empty(), "behind a settle");
        assert!(p.take_into(&mut out));

        // A frame larger than the socket takes is half written: the rest is the
        // driver's, on this connection only; a new connection drops it.
        assert!(poll(&p, 0, &count).is_pending());
        let dest = Destination::parse("topic:t").unwrap();
        let big = vec![7u8; 64 << 20];
        futures_lite::future::block_on(p.publish(&dest, &Headers::new(), &big)).unwrap();
        let left = p.len();
        assert!(left > 0 && left < big.len(), "{left} bytes left");
        p.connected(2, None);
        assert_eq!(p.len(), 0, "the end of the half-written frame is dropped");
        drop(broker);
    }

    #[test]
    fn a_request_is_written_by_the_requester_only_once_the_inbox_is_subscribed() {
        let (p, mut broker, count) = connected_pair();
        let dest = Destination::parse("topic:time").unwrap();
        let ask = |p: &PubBuf| {
            p.write_request(|inbox, buf| {
                let mut h = Headers::new();
                h.insert("agora-reply-to", &format!("topic:{inbox}.1"))
                    .unwrap();
                encode_pub(Some(9), &dest, &h, b"now?", buf);
                true
            })
        };
        assert!(poll(&p, 0, &count).is_pending());
        assert_eq!(ask(&p), Sent::Nothing, "no inbox yet");
        assert!(p.is_empty());

        p.set_inbox("_INBOX.c1".to_owned());
        assert_eq!(p.write_request(|_, _| false), Sent::Nothing);
        assert!(
            p.is_empty(),
            "a request that changed its mind leaves nothing"
        );
        lock(&p.state).last_direct = None;
        assert_eq!(ask(&p), Sent::All);
        assert!(p.is_empty());
        assert_eq!(count.0.load(SeqCst), 0, "the driver was not woken");
        match read_frame(&mut broker) {
            ClientFrame::Pub(pb) => {
                assert_eq!(pb.rid, Some(9));
                assert_eq!(
                    pb.headers.get("agora-reply-to"),
                    Some("topic:_INBOX.c1.1"),
                    "{pb:?}"
                );
            }
            f => panic!("{f:?}"),
        }

        // A new connection has no inbox until the driver subscribes one again.
        let (ours, _broker) = pair();
        p.connected(2, Some(ours));
        assert!(poll(&p, 0, &count).is_pending());
        lock(&p.state).last_direct = None;
        assert_eq!(ask(&p), Sent::Nothing);
    }
}
