//! A connection's outbox: the encoded replies and notices its shipper writes, and the
//! subscriptions it is told of, bounded in bytes ([`Output`]).

use super::*;

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
    /// `HOLD` (`on`) or `RESUME` of a subscription: while held nothing of it is
    /// written (its deliveries wait in its bounded channel, under its policy).
    Hold { sid: u64, on: bool },
    /// Write what is pending, then close the connection.
    Close,
}

/// The bytes of replies and notices queued for one connection and not yet written,
/// against its cap ([`Config::max_output`](crate::Config::max_output)).
pub(crate) struct Output {
    queued: AtomicUsize,
    cap: usize,
    /// A token each time the shipper has written some: the connection's task waits on
    /// it for room. Closed when the shipper ends.
    pub(super) room_tx: Sender<()>,
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
    pub(super) fn give_back(&self, n: usize) {
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
    pub(super) rx: Receiver<Outbound>,
    pub(super) output: Arc<Output>,
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
    pub(super) fn bytes(&self) -> usize {
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
