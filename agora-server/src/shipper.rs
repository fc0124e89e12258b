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
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

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
    },
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
            } => {
                // Pack consecutive frames into datagrams of at most `max` bytes; a frame
                // larger than that travels alone, up to what UDP can carry at all.
                let mut start = 0;
                let mut i = 0;
                while i < ends.len() {
                    let mut end = ends[i];
                    i += 1;
                    while i < ends.len() && ends[i] - start <= *max {
                        end = ends[i];
                        i += 1;
                    }
                    let datagram = &b[start..end];
                    if datagram.len() > UDP_LIMIT {
                        *dropped += 1;
                        log::trace!(
                            "a {} byte frame for UDP client {peer} fits no datagram; dropped",
                            datagram.len()
                        );
                    } else if let Err(e) = socket.send_to(datagram, *peer).await {
                        // UDP is lossy anyway: a failed send is a lost datagram, not a
                        // dead connection.
                        log::trace!("UDP send to {peer} failed: {e}");
                    }
                    start = end;
                }
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

/// A connection's handle for sending it frames, cloned into every block that may
/// need to tell the client something.
#[derive(Clone)]
pub(crate) struct Outbox {
    tx: Sender<Outbound>,
    /// Every `ERR` sent through it is counted by code.
    metrics: Arc<BrokerMetrics>,
}

impl Outbox {
    pub fn new(capacity: usize, metrics: Arc<BrokerMetrics>) -> (Outbox, Receiver<Outbound>) {
        let (tx, rx) = async_channel::bounded(capacity);
        (Outbox { tx, metrics }, rx)
    }

    /// From the connection's own task: waits for room, which slows only that client.
    /// False when the connection is gone.
    pub async fn send(&self, o: Outbound) -> bool {
        self.tx.send(o).await.is_ok()
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
    /// [`Config::reply_buffer`](crate::Config::reply_buffer) replies pile up unread is
    /// cut off: its outbox is closed, which ends the connection.
    pub fn notify(&self, f: &ServerFrame) {
        if let ServerFrame::Err(e) = f {
            self.metrics.error(e.code);
        }
        let mut b = BytesMut::new();
        encode(f, &mut b);
        match self.tx.try_send(Outbound::Bytes(b.freeze())) {
            Ok(()) | Err(TrySendError::Closed(_)) => {}
            Err(TrySendError::Full(_)) => {
                log::warn!("closing a connection whose client does not read its replies");
                self.tx.close();
            }
        }
    }

    /// Tells the client that the broker ended subscription `sid` (see
    /// [`Outbound::Cancel`]); never waits, like [`notify`](Outbox::notify).
    pub fn cancel(&self, sid: u64, code: ErrorCode, message: String) {
        let mut b = BytesMut::new();
        encode(&ServerFrame::Cancel { sid, code, message }, &mut b);
        let frame = b.freeze();
        match self.tx.try_send(Outbound::Cancel { sid, frame }) {
            Ok(()) | Err(TrySendError::Closed(_)) => {}
            Err(TrySendError::Full(_)) => {
                log::warn!("closing a connection whose client does not read its replies");
                self.tx.close();
            }
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

/// Runs a connection's shipper until the outbox closes, `Close` arrives, or a write
/// fails. Always closes the writer at the end.
/// Runs a connection's shipper; `batch` is the most bytes per write call
/// ([`BATCH_BYTES`], or 1 for the `no_batching` ablation: one frame per write).
pub(crate) async fn run(
    mut writer: Writer,
    rx: Receiver<Outbound>,
    metrics: Arc<BrokerMetrics>,
    batch: usize,
) {
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
            if let Err(e) = writer.write_batch(&buf, &ends).await {
                log::debug!("write failed, closing connection: {e}");
                break 'run;
            }
            buf.clear();
            ends.clear();
        }
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
    writer.close().await;
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
