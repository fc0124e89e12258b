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
    /// Unique among the subscriptions a shipper has carried (a `sid` may be used again
    /// once its subscription ended): whose each frame of a batch is.
    pub serial: u64,
    /// `HOLD`: nothing of it is written until `RESUME`.
    pub held: bool,
    /// The client speaks protocol 2: it is told of dropped messages (`DROPPED`).
    pub notify: bool,
    /// Messages dropped before the batch taken last, not yet told.
    pub dropped: u64,
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
            serial: 0,
            held: false,
            notify: false,
            dropped: 0,
        }
    }

    /// The next delivery to encode; `Err(())` once the destination closed the
    /// subscription and nothing is left.
    fn next(&mut self) -> Result<Option<Delivery>, ()> {
        if let Some(d) = self.batch.pop_front() {
            return Ok(Some(d));
        }
        match self.rx.take_counted(&mut self.batch, &mut self.dropped) {
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

mod outbox;
mod udp;
pub(crate) use outbox::{Outbound, Outbox, OutboxRx};
pub(crate) use udp::{UdpSource, Writer, UDP_AMPLIFICATION};

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
            if s.held {
                continue;
            }
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
        d.topic.as_ref().unwrap_or(&s.dest),
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
    info: Arc<crate::conns::ConnInfo>,
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
    // Whose each frame is: a subscription's serial for a delivery, `None` for the rest.
    let mut owners: Vec<Option<u64>> = Vec::new();
    let mut serials = 0u64;
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
                        owners.push(None);
                    }
                    Outbound::AddSub(s) => {
                        let mut s = *s;
                        serials += 1;
                        s.serial = serials;
                        subs.push(s);
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
                        owners.push(None);
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
                    Outbound::Hold { sid, on } => {
                        if let Some(s) = subs.iter_mut().find(|s| s.sid == sid) {
                            s.held = on;
                        }
                    }
                    Outbound::Close => closing = true,
                }
            }
            let mut i = 0;
            while i < subs.len() && buf.len() < batch {
                if subs[i].held {
                    i += 1;
                    continue;
                }
                let next = subs[i].next();
                if subs[i].dropped > 0 {
                    // Where the gap is: before the deliveries taken after it.
                    let count = std::mem::take(&mut subs[i].dropped);
                    if subs[i].notify {
                        let sid = subs[i].sid;
                        encode(&ServerFrame::Dropped { sid, count }, &mut buf);
                        ends.push(buf.len());
                        owners.push(None);
                    }
                }
                match next {
                    Ok(Some(d)) => {
                        encode_delivery(&mut subs[i], &d, &mut buf, now);
                        ends.push(buf.len());
                        owners.push(Some(subs[i].serial));
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
            info.bytes_out.fetch_add(buf.len() as u64, Relaxed);
            let mut done = 0;
            if let Err(e) = write(&mut writer, &buf, &ends, &mut done, write_timeout).await {
                // The deliveries that went out whole before the write stopped were
                // written: an auto-ack queue must not give them to another consumer.
                for (serial, n) in delivered(&ends, &owners, done) {
                    if let Some(s) = subs.iter().find(|s| s.serial == serial) {
                        report_written(s, n).await;
                    }
                }
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
            owners.clear();
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
    // Auto-ack consumers still here hear that nothing more will be written, after the
    // write reports above, so their queues take back the rest; so do any whose
    // `AddSub` never got here. (A `RemoveSub` left unread would have told them the
    // same.)
    for s in &subs {
        if let Some(credit) = &s.written {
            credit.report(Report::Stopped).await;
        }
    }
    // What was queued and never written goes back; a task waiting for room sees the
    // end.
    while let Ok(o) = rx.try_recv() {
        taken += o.bytes();
        if let Outbound::AddSub(s) = &o {
            if let Some(credit) = &s.written {
                credit.report(Report::Stopped).await;
            }
        }
    }
    output.give_back(taken);
    output.room_tx.close();
    writer.close().await;
}

/// How many of each subscription's deliveries in a batch went out whole when its write
/// stopped after `done` bytes: the frames that end at or before `done`, by owner
/// (`owners[k]` is frame `k`'s subscription serial, `None` for a reply).
fn delivered(ends: &[usize], owners: &[Option<u64>], done: usize) -> Vec<(u64, usize)> {
    let mut out: Vec<(u64, usize)> = Vec::new();
    for (_, owner) in ends.iter().zip(owners).take_while(|(end, _)| **end <= done) {
        let Some(serial) = owner else { continue };
        match out.iter_mut().find(|(s, _)| s == serial) {
            Some((_, n)) => *n += 1,
            None => out.push((*serial, 1)),
        }
    }
    out
}

/// Writes a batch, counting in `done` the bytes written; one not written within
/// `timeout` fails with `TimedOut`. The timer is only armed when the socket is not ready at once, so a
/// client that reads costs no timer per write.
async fn write(
    writer: &mut Writer,
    buf: &[u8],
    ends: &[usize],
    done: &mut usize,
    timeout: Duration,
) -> std::io::Result<()> {
    let w = writer.write_batch(buf, ends, done);
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

#[cfg(test)]
mod tests {
    use super::delivered;

    #[test]
    fn a_write_that_stopped_counts_only_whole_deliveries() {
        // Frames: a reply (0..10), sub 1 (10..30), sub 2 (30..50), sub 1 (50..70).
        let ends = [10, 30, 50, 70];
        let owners = [None, Some(1), Some(2), Some(1)];
        assert_eq!(delivered(&ends, &owners, 0), vec![]);
        assert_eq!(delivered(&ends, &owners, 29), vec![]);
        assert_eq!(delivered(&ends, &owners, 30), vec![(1, 1)]);
        assert_eq!(delivered(&ends, &owners, 69), vec![(1, 1), (2, 1)]);
        assert_eq!(delivered(&ends, &owners, 70), vec![(1, 2), (2, 1)]);
    }
}
