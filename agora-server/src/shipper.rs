//! Message shippers: the one task per connection that writes to the client.
//!
//! A shipper owns the connection's [`Writer`] and drains two kinds of input: the
//! connection's outbox (encoded replies and notices, plus which subscriptions exist) and
//! each subscription's bounded delivery channel. Per wake-up it takes everything ready
//! (up to [`BATCH_BYTES`]), encodes it into one buffer and writes it with one call, so a
//! busy subscriber costs one syscall per batch, not per message. It never decides what
//! to deliver: queues and topics do that by what they put in the channels.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use agora_protocol::bytes::{Bytes, BytesMut};
use agora_protocol::{encode, encode_err, Destination, ErrorCode, RequestId, ServerFrame};
use async_channel::{Receiver, Sender, TrySendError};
use futures_lite::{AsyncWriteExt, Stream};

use crate::deliveries::{Credit, DeliveryRx, Report, Took};
pub(crate) use crate::message::{Delivery, Message};
use crate::metrics::{BrokerMetrics, LATENCY_SAMPLE};
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Most bytes encoded per write call before the shipper writes and looks again.
pub(crate) const BATCH_BYTES: usize = 64 * 1024;

/// The receiving end of a subscription, handed to the shipper.
pub(crate) struct SubRx {
    pub sid: u64,
    pub dest: Destination,
    pub rx: DeliveryRx,
    /// Deliveries taken from `rx` and not yet encoded (at most
    /// [`TAKE`](crate::deliveries::TAKE)).
    pub batch: VecDeque<Delivery>,
    /// Auto-ack queue consumers: where to report how many deliveries were written, so
    /// the queue can forget them and send more (credit).
    pub written: Option<Credit>,
    /// The destination's latency histogram (one delivery in
    /// [`LATENCY_SAMPLE`](crate::metrics::LATENCY_SAMPLE) is recorded); `None` with
    /// the `no_metrics` ablation.
    pub latency: Option<crate::metrics::LatencyRef>,
    /// Deliveries encoded so far (which ones to sample).
    pub seen: u64,
    /// Topic subscriptions: the budget their deliveries' bytes go back to.
    pub budget: Option<Arc<crate::budget::Budget>>,
    /// Bytes of deliveries encoded into the current batch, given back once it is
    /// written.
    pub unreturned: usize,
}

impl Drop for SubRx {
    /// Whatever the subscription still holds, in its channel or in an unwritten batch,
    /// goes back to the budget: every way a subscription ends passes here.
    fn drop(&mut self) {
        let left = self.rx.close_and_drain();
        let Some(b) = &self.budget else { return };
        let n = std::mem::take(&mut self.unreturned)
            + left.iter().map(|d| d.charged).sum::<usize>()
            + self.batch.iter().map(|d| d.charged).sum::<usize>();
        b.give_back(n);
    }
}

impl SubRx {
    /// A subscription's receiving end, empty.
    pub fn new(sid: u64, dest: Destination, rx: DeliveryRx) -> SubRx {
        SubRx {
            sid,
            dest,
            rx,
            batch: VecDeque::new(),
            written: None,
            latency: None,
            seen: 0,
            budget: None,
            unreturned: 0,
        }
    }

    /// The next delivery to encode; `Err(())` once the destination closed the
    /// subscription and nothing is left.
    fn next(&mut self) -> Result<Option<Delivery>, ()> {
        if let Some(d) = self.batch.pop_front() {
            return Ok(Some(d));
        }
        match self.rx.take(&mut self.batch) {
            Took::Some => Ok(self.batch.pop_front()),
            Took::Empty => Ok(None),
            Took::Closed => Err(()),
        }
    }

    /// The batch was written: its bytes go back to the budget.
    fn batch_written(&mut self) {
        if let Some(b) = &self.budget {
            b.give_back(std::mem::take(&mut self.unreturned));
        }
    }
}

/// What a connection's shipper is told through its outbox.
pub(crate) enum Outbound {
    /// Encoded frames to write as they are.
    Bytes(Bytes),
    /// A new subscription to drain (boxed: it keeps every outbox slot small).
    AddSub(Box<SubRx>),
    /// The broker ended a subscription: stop draining it (dropping what it still
    /// holds, so no `MSG` follows), then write the `CANCEL` frame.
    Cancel { sid: u64, frame: Bytes },
    /// Stop draining a subscription (what it still holds is dropped: a queue gives its
    /// unacked messages back itself). For an auto-ack queue consumer the shipper then
    /// reports what it wrote and tells the queue the consumer is gone, in that order, so
    /// the queue gives back exactly what was never written.
    RemoveSub(u64),
    /// Write what is pending, then close the connection.
    Close,
}

/// What the broker keeps for one UDP source beside its task: whether it has proved it
/// receives (echoed its token), how much it may still be answered before it has (the
/// amplification rule), and the bytes of its datagrams waiting for its task.
pub(crate) struct UdpSource {
    verified: std::sync::atomic::AtomicBool,
    /// Bytes the broker may still send an unverified source: [`UDP_AMPLIFICATION`]
    /// times what it sent, at most [`UDP_CREDIT_MAX`].
    credit: AtomicUsize,
    /// Bytes of datagrams handed to its task and not yet taken.
    pub queued: AtomicUsize,
    metrics: Arc<BrokerMetrics>,
}

/// An unverified UDP source is answered at most this many times the bytes it sent.
pub(crate) const UDP_AMPLIFICATION: usize = 4;
/// Most answer credit an unverified source can bank.
pub(crate) const UDP_CREDIT_MAX: usize = 16 * 1024;

impl UdpSource {
    pub fn new(metrics: Arc<BrokerMetrics>) -> UdpSource {
        UdpSource {
            verified: Default::default(),
            credit: AtomicUsize::new(0),
            queued: AtomicUsize::new(0),
            metrics,
        }
    }

    /// A datagram of `n` bytes came from the source: more it may be answered.
    pub fn received(&self, n: usize) {
        let _ = self.credit.fetch_update(AcqRel, Acquire, |c| {
            Some((c + UDP_AMPLIFICATION * n).min(UDP_CREDIT_MAX))
        });
    }

    /// The source echoed its token: it is answered in full from now on.
    pub fn verify(&self) {
        self.verified.store(true, Relaxed);
    }

    pub fn is_verified(&self) -> bool {
        self.verified.load(Relaxed)
    }

    /// Whether `n` bytes may be sent to it now (and, if not yet verified, spends them).
    fn spend(&self, n: usize) -> bool {
        if self.is_verified() {
            return true;
        }
        let ok = self
            .credit
            .fetch_update(AcqRel, Acquire, |c| c.checked_sub(n))
            .is_ok();
        if !ok {
            self.metrics.udp_unanswered.fetch_add(1, Relaxed);
        }
        ok
    }
}

/// The writing half of a client's transport. Shippers do not know which one it is.
pub(crate) enum Writer {
    /// A TCP stream (a clone of the connection's socket).
    Tcp(async_net::TcpStream),
    /// A UDP peer: datagrams to its address from the broker's one UDP socket.
    Udp {
        socket: async_net::UdpSocket,
        peer: std::net::SocketAddr,
        /// Frames are packed into datagrams up to this size.
        max: usize,
        /// Frames too large for any datagram, dropped (counted for the log).
        dropped: u64,
        /// The source's proof and answer credit.
        source: Arc<UdpSource>,
        /// The datagram being packed.
        buf: Vec<u8>,
    },
}

/// The `ERR` that replaces an answer too large for any datagram, with the answer's
/// request id (its second token, when that is `#<n>`).
fn too_large_for_udp(frame: &[u8]) -> BytesMut {
    let rid = frame
        .split(|b| *b == b' ' || *b == b'\r')
        .nth(1)
        .and_then(|t| t.strip_prefix(b"#"))
        .and_then(|t| std::str::from_utf8(t).ok())
        .and_then(|t| t.parse().ok());
    let mut b = BytesMut::new();
    encode_err(
        rid,
        ErrorCode::PayloadTooLarge,
        &format!(
            "the answer is {} bytes; over UDP an answer must fit one datagram ({UDP_LIMIT} bytes): ask over TCP",
            frame.len()
        ),
        &mut b,
    );
    b
}

/// Sends one datagram. UDP is lossy anyway: a failed send is a lost datagram, not a
/// dead connection.
async fn send_datagram(socket: &async_net::UdpSocket, d: &[u8], peer: std::net::SocketAddr) {
    if let Err(e) = socket.send_to(d, peer).await {
        log::trace!("UDP send to {peer} failed: {e}");
    }
}

/// The largest UDP payload IPv4 allows.
const UDP_LIMIT: usize = 65_507;

impl Writer {
    /// Writes a batch of whole frames; `ends` says where each frame ends.
    async fn write_batch(&mut self, b: &[u8], ends: &[usize]) -> std::io::Result<()> {
        match self {
            Writer::Tcp(s) => s.write_all(b).await,
            Writer::Udp {
                socket,
                peer,
                max,
                dropped,
                source,
                buf,
            } => {
                // Pack consecutive frames into datagrams of at most `max` bytes; a frame
                // larger than that travels alone, up to what UDP can carry at all. An
                // unverified source is sent each frame only if its allowance covers it.
                let verified = source.is_verified();
                let mut start = 0;
                buf.clear();
                for &end in ends {
                    let frame = &b[start..end];
                    start = end;
                    let too_large;
                    let frame = match frame.len() > UDP_LIMIT {
                        false => frame,
                        // A delivery is dropped (counted); an answer is replaced by a
                        // short ERR naming the limit.
                        true if frame.starts_with(b"MSG ") || frame.starts_with(b"HMSG ") => {
                            *dropped += 1;
                            log::trace!(
                                "a {} byte delivery for UDP client {peer} fits no datagram; dropped",
                                frame.len()
                            );
                            continue;
                        }
                        true => {
                            too_large = too_large_for_udp(frame);
                            &too_large[..]
                        }
                    };
                    if !verified && !source.spend(frame.len()) {
                        log::trace!(
                            "a {} byte frame for unverified UDP source {peer} is over its allowance; not sent",
                            frame.len()
                        );
                        continue;
                    }
                    if !buf.is_empty() && buf.len() + frame.len() > *max {
                        send_datagram(socket, buf, *peer).await;
                        buf.clear();
                    }
                    buf.extend_from_slice(frame);
                }
                if !buf.is_empty() {
                    send_datagram(socket, buf, *peer).await;
                    buf.clear();
                }
                // A large frame's room is not kept for every quiet source.
                buf.shrink_to(*max);
                Ok(())
            }
        }
    }

    async fn close(&mut self) {
        match self {
            Writer::Tcp(s) => {
                let _ = s.flush().await;
                let _ = s.shutdown(std::net::Shutdown::Both);
            }
            Writer::Udp { .. } => {}
        }
    }
}

/// The bytes of replies and notices queued for one connection and not yet written,
/// against its cap ([`Config::max_output`](crate::Config::max_output)).
pub(crate) struct Output {
    queued: AtomicUsize,
    cap: usize,
    /// A token each time the shipper has written some: the connection's task waits on
    /// it for room. Closed when the shipper ends.
    room_tx: Sender<()>,
    room_rx: Receiver<()>,
    metrics: Arc<BrokerMetrics>,
}

impl Output {
    /// Takes `n` bytes of room if there is some (an empty outbox always takes one
    /// reply, whatever its size, so a large answer is never refused for size alone).
    fn try_take(&self, n: usize) -> bool {
        let mut cur = self.queued.load(Acquire);
        loop {
            if cur != 0 && cur + n > self.cap {
                return false;
            }
            match self
                .queued
                .compare_exchange_weak(cur, cur + n, AcqRel, Acquire)
            {
                Ok(_) => {
                    self.metrics.output_queued.fetch_add(n, Relaxed);
                    return true;
                }
                Err(now) => cur = now,
            }
        }
    }

    /// The shipper wrote (or dropped) `n` queued bytes.
    fn give_back(&self, n: usize) {
        if n == 0 {
            return;
        }
        self.queued.fetch_sub(n, AcqRel);
        self.metrics.output_queued.fetch_sub(n, Relaxed);
        let _ = self.room_tx.try_send(());
    }

    /// Bytes queued now.
    pub fn queued(&self) -> usize {
        self.queued.load(Acquire)
    }
}

/// What the shipper takes from a connection's outbox.
pub(crate) struct OutboxRx {
    rx: Receiver<Outbound>,
    output: Arc<Output>,
}

/// A connection's handle for sending it frames, cloned into every block that may
/// need to tell the client something. Bounded twice: in entries (the channel), and in
/// bytes queued and not yet written ([`Output`]).
#[derive(Clone)]
pub(crate) struct Outbox {
    tx: Sender<Outbound>,
    output: Arc<Output>,
    /// Every `ERR` sent through it is counted by code.
    metrics: Arc<BrokerMetrics>,
}

impl Outbound {
    /// The bytes it puts on the wire (counted against the output cap).
    fn bytes(&self) -> usize {
        match self {
            Outbound::Bytes(b) => b.len(),
            Outbound::Cancel { frame, .. } => frame.len(),
            _ => 0,
        }
    }
}

impl Outbox {
    /// An outbox of at most `capacity` entries and `max_output` bytes queued.
    pub fn new(
        capacity: usize,
        max_output: usize,
        metrics: Arc<BrokerMetrics>,
    ) -> (Outbox, OutboxRx) {
        let (tx, rx) = async_channel::bounded(capacity);
        let (room_tx, room_rx) = async_channel::bounded(1);
        let output = Arc::new(Output {
            queued: AtomicUsize::new(0),
            cap: max_output,
            room_tx,
            room_rx,
            metrics: metrics.clone(),
        });
        let inbox = OutboxRx {
            rx,
            output: output.clone(),
        };
        (
            Outbox {
                tx,
                output,
                metrics,
            },
            inbox,
        )
    }

    /// From the connection's own task: waits for room (in entries and in bytes), which
    /// stops that client being read until its shipper has written what is queued. False
    /// when the connection is gone (the shipper ends a client that does not read within
    /// [`Config::write_timeout`](crate::Config::write_timeout)).
    pub async fn send(&self, o: Outbound) -> bool {
        let n = o.bytes();
        while !self.output.try_take(n) {
            if self.tx.is_closed() || self.output.room_rx.recv().await.is_err() {
                return false;
            }
        }
        match self.tx.send(o).await {
            Ok(()) => true,
            Err(_) => {
                self.output.give_back(n);
                false
            }
        }
    }

    /// Encodes and sends a frame from the connection's own task.
    pub async fn frame(&self, f: &ServerFrame) -> bool {
        let mut b = BytesMut::new();
        encode(f, &mut b);
        self.send(Outbound::Bytes(b.freeze())).await
    }

    /// Sends an `ERR` from the connection's own task.
    pub async fn err(&self, rid: RequestId, code: ErrorCode, message: &str) -> bool {
        self.metrics.error(code);
        let mut b = BytesMut::new();
        encode_err(rid, code, message, &mut b);
        self.send(Outbound::Bytes(b.freeze())).await
    }

    /// From any other task (a queue, a topic): never waits. A client that lets
    /// [`Config::reply_buffer`](crate::Config::reply_buffer) replies, or
    /// [`Config::max_output`](crate::Config::max_output) bytes, pile up unread is cut
    /// off: its outbox is closed, which ends the connection.
    pub fn notify(&self, f: &ServerFrame) {
        if let ServerFrame::Err(e) = f {
            self.metrics.error(e.code);
        }
        let mut b = BytesMut::new();
        encode(f, &mut b);
        self.push(Outbound::Bytes(b.freeze()));
    }

    /// Tells the client that the broker ended subscription `sid` (see
    /// [`Outbound::Cancel`]); never waits, like [`notify`](Outbox::notify).
    pub fn cancel(&self, sid: u64, code: ErrorCode, message: String) {
        let mut b = BytesMut::new();
        encode(&ServerFrame::Cancel { sid, code, message }, &mut b);
        let frame = b.freeze();
        self.push(Outbound::Cancel { sid, frame });
    }

    fn push(&self, o: Outbound) {
        let n = o.bytes();
        if self.tx.is_closed() {
            return;
        }
        if !self.output.try_take(n) {
            return self.cut_off();
        }
        match self.tx.try_send(o) {
            Ok(()) => {}
            Err(TrySendError::Closed(_)) => self.output.give_back(n),
            Err(TrySendError::Full(_)) => {
                self.output.give_back(n);
                self.cut_off();
            }
        }
    }

    /// Closes a connection whose client does not read what it is sent.
    fn cut_off(&self) {
        if self.tx.close() {
            self.metrics.slow_closed.fetch_add(1, Relaxed);
            log::warn!(
                "closing a connection whose client does not read its replies ({} bytes queued)",
                self.output.queued()
            );
        }
    }

    /// Ends the connection without waiting.
    pub fn close(&self) {
        self.tx.close();
    }

    /// True once the connection's shipper has stopped.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

/// What woke the shipper.
enum Wake {
    Out(Outbound),
    /// A subscription has deliveries, or was closed by its destination.
    Subs,
    Closed,
}

/// Waits until the outbox or any subscription has something.
struct WaitAny<'a> {
    rx: &'a mut Pin<Box<Receiver<Outbound>>>,
    subs: &'a mut [SubRx],
}

impl Future for WaitAny<'_> {
    type Output = Wake;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Wake> {
        let this = &mut *self;
        match this.rx.as_mut().poll_next(cx) {
            Poll::Ready(Some(o)) => return Poll::Ready(Wake::Out(o)),
            Poll::Ready(None) => return Poll::Ready(Wake::Closed),
            Poll::Pending => {}
        }
        for s in this.subs.iter_mut() {
            if !s.batch.is_empty() || s.rx.poll_ready(cx).is_ready() {
                return Poll::Ready(Wake::Subs);
            }
        }
        Poll::Pending
    }
}

fn encode_delivery(s: &mut SubRx, d: &Delivery, buf: &mut BytesMut, now: Instant) {
    s.seen += 1;
    s.unreturned += d.charged;
    if s.seen % LATENCY_SAMPLE == 1 {
        if let Some(l) = &s.latency {
            l.record(now.saturating_duration_since(d.msg.received));
        }
    }
    agora_protocol::encode_msg(
        &s.dest,
        s.sid,
        d.did,
        d.count,
        &d.msg.headers,
        &d.msg.payload,
        buf,
    );
}

/// Runs a connection's shipper until the outbox closes, `Close` arrives, a write fails
/// or one batch is not written within `write_timeout` (the client does not read:
/// counted and logged). Always closes the writer at the end. `batch` is the most bytes per
/// write call ([`BATCH_BYTES`], or 1 for the `no_batching` ablation: one frame per
/// write).
pub(crate) async fn run(
    mut writer: Writer,
    inbox: OutboxRx,
    metrics: Arc<BrokerMetrics>,
    batch: usize,
    write_timeout: Duration,
) {
    let OutboxRx { rx, output } = inbox;
    // Queued bytes taken into the batch being written, given back once it is.
    let mut taken = 0usize;
    let mut rx = Box::pin(rx);
    let mut subs: Vec<SubRx> = Vec::new();
    // Starts small and grows with the batches it carries (up to BATCH_BYTES and the
    // last frame), so an idle connection costs little.
    let mut buf = BytesMut::with_capacity(4096);
    // Where each frame in `buf` ends: a UDP writer packs whole frames into datagrams.
    let mut ends: Vec<usize> = Vec::new();
    let mut written: Vec<usize> = Vec::new();
    let mut closing = false;
    'run: loop {
        let wake = WaitAny {
            rx: &mut rx,
            subs: &mut subs,
        }
        .await;
        written.clear();
        written.resize(subs.len(), 0);
        // One clock read per batch: latency is measured to the write of the batch.
        let now = Instant::now();
        // `Subs` needs nothing more: every subscription is looked at below.
        let mut pending = match wake {
            Wake::Out(o) => Some(o),
            // Closed: the outbox is closed and empty; `try_recv` below says so again.
            Wake::Closed | Wake::Subs => None,
        };
        // Drain the outbox first (replies keep their order relative to subscription
        // changes), then each subscription, until the batch is full or all are empty.
        loop {
            let mut progressed = false;
            while buf.len() < batch {
                let o = match pending.take() {
                    Some(o) => o,
                    None => match rx.try_recv() {
                        Ok(o) => o,
                        Err(async_channel::TryRecvError::Empty) => break,
                        Err(async_channel::TryRecvError::Closed) => {
                            closing = true;
                            break;
                        }
                    },
                };
                progressed = true;
                taken += o.bytes();
                match o {
                    Outbound::Bytes(b) => {
                        buf.extend_from_slice(&b);
                        ends.push(buf.len());
                    }
                    Outbound::AddSub(s) => {
                        subs.push(*s);
                        written.push(0);
                    }
                    Outbound::Cancel { sid, frame } => {
                        if let Some(i) = subs.iter().position(|s| s.sid == sid) {
                            report_written(&subs[i], written[i]).await;
                            subs.swap_remove(i);
                            written.swap_remove(i);
                        }
                        buf.extend_from_slice(&frame);
                        ends.push(buf.len());
                    }
                    Outbound::RemoveSub(sid) => {
                        if let Some(i) = subs.iter().position(|s| s.sid == sid) {
                            // Encoded into this batch counts as written: it is.
                            report_written(&subs[i], written[i]).await;
                            let s = subs.swap_remove(i);
                            written.swap_remove(i);
                            if let Some(credit) = &s.written {
                                credit.report(Report::Stopped).await;
                            }
                        }
                    }
                    Outbound::Close => closing = true,
                }
            }
            let mut i = 0;
            while i < subs.len() && buf.len() < batch {
                match subs[i].next() {
                    Ok(Some(d)) => {
                        encode_delivery(&mut subs[i], &d, &mut buf, now);
                        ends.push(buf.len());
                        written[i] += 1;
                        progressed = true;
                    }
                    Err(()) => {
                        report_written(&subs[i], written[i]).await;
                        subs.swap_remove(i);
                        written.swap_remove(i);
                        progressed = true;
                    }
                    Ok(None) => i += 1,
                }
            }
            if !progressed || buf.len() >= batch || closing {
                break;
            }
        }
        if !buf.is_empty() {
            metrics.bytes_out.fetch_add(buf.len() as u64, Relaxed);
            if let Err(e) = write(&mut writer, &buf, &ends, write_timeout).await {
                match e.kind() {
                    std::io::ErrorKind::TimedOut => {
                        metrics.slow_closed.fetch_add(1, Relaxed);
                        log::warn!("{e}; closing the connection");
                    }
                    _ => log::debug!("write failed, closing connection: {e}"),
                }
                break 'run;
            }
            buf.clear();
            ends.clear();
        }
        output.give_back(std::mem::take(&mut taken));
        for s in subs.iter_mut() {
            s.batch_written();
        }
        for (s, n) in subs.iter().zip(&written) {
            report_written(s, *n).await;
        }
        if closing {
            break;
        }
    }
    rx.close();
    // What was queued and never written goes back; a task waiting for room sees the
    // end.
    while let Ok(o) = rx.try_recv() {
        taken += o.bytes();
    }
    output.give_back(taken);
    output.room_tx.close();
    writer.close().await;
}

/// Writes a batch; one not written within `timeout` fails with `TimedOut`. The timer is only armed when the socket is not ready at once, so a
/// client that reads costs no timer per write.
async fn write(
    writer: &mut Writer,
    buf: &[u8],
    ends: &[usize],
    timeout: Duration,
) -> std::io::Result<()> {
    let w = writer.write_batch(buf, ends);
    futures_lite::pin!(w);
    if let Some(r) = futures_lite::future::poll_once(&mut w).await {
        return r;
    }
    futures_lite::future::or(w, async {
        smol::Timer::after(timeout).await;
        Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("the client did not read for {timeout:?}"),
        ))
    })
    .await
}

/// Tells an auto-ack queue how many of its deliveries were written.
async fn report_written(s: &SubRx, n: usize) {
    if n == 0 {
        return;
    }
    if let Some(credit) = &s.written {
        credit.report(Report::Written(n)).await;
    }
}
