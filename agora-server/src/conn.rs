//! The connection manager: the accept loop and one task per client.
//!
//! The accept loop does the minimum (count, spawn) and never waits on a client; when
//! `accept` fails (out of file descriptors, say) it backs off instead of spinning. A
//! client beyond [`Config::max_connections`](crate::Config::max_connections) is answered
//! `ERR too_many_connections` and closed. Each client's task reads into one buffer,
//! decodes every complete frame in it before reading again, and acts on each: publishes
//! go straight into the destination, control goes to the queue manager once per name.
//! Everything sent to the client goes through the connection's shipper.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::*};
use std::sync::Arc;

use agora_protocol::bytes::{Bytes, BytesMut};
use agora_protocol::{
    decode_client_with, AckMode, ClientFrame, Destination, ErrorCode, Info, Kind, Limits, Publish,
    ReadSize, RequestId, ServerFrame, Subscribe, PROTOCOL_VERSION,
};
use async_channel::Receiver;
use async_net::{TcpListener, TcpStream};
use futures_lite::{future, AsyncReadExt, AsyncWriteExt};

use crate::manager::{Handle, ManagerCmd};
use crate::mutators::{Chain, Verdict};
use crate::queue::{Consumer, QueueCmd, QueueShared, Refused, SLOT_SHIFT};
use crate::shipper::{self, Message, Outbound, Outbox, SubRx, Writer};
use crate::topic::{Subscriber, Topic, TopicRefused};
use crate::{Broker, ACCEPT_BACKOFF};

/// Destinations a connection remembers handles for; past this the cache starts over.
const HANDLE_CACHE: usize = 1024;

/// How long a closing connection may take to flush before it is dropped.
const FLUSH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Accepts clients until the future is dropped.
pub(crate) async fn accept_loop(
    broker: Arc<Broker>,
    listener: TcpListener,
    stop: Receiver<()>,
    alive: async_channel::Sender<()>,
) {
    let mut backoff = ACCEPT_BACKOFF.0;
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                backoff = ACCEPT_BACKOFF.0;
                let n = broker.clients_tcp.fetch_add(1, SeqCst);
                if n >= broker.config.max_connections {
                    broker.clients_tcp.fetch_sub(1, SeqCst);
                    broker.metrics.connections_rejected.fetch_add(1, Relaxed);
                    broker.metrics.error(ErrorCode::TooManyConnections);
                    let max = broker.config.max_connections;
                    broker.rt.spawn(refuse(stream, max)).detach();
                    continue;
                }
                let b = broker.clone();
                let stop = stop.clone();
                let alive = alive.clone();
                broker
                    .rt
                    .spawn(async move {
                        let writer = Writer::Tcp(stream.clone());
                        serve_client(&b, Input::Tcp(stream), writer, peer, stop).await;
                        b.clients_tcp.fetch_sub(1, SeqCst);
                        drop(alive);
                    })
                    .detach();
            }
            Err(e) => {
                log::warn!("accept failed: {e}; retrying in {backoff:?}");
                smol::Timer::after(backoff).await;
                backoff = (backoff * 2).min(ACCEPT_BACKOFF.1);
            }
        }
    }
}

/// Tells a client over the connection cap why it is closed.
async fn refuse(mut stream: TcpStream, max: usize) {
    let mut b = BytesMut::new();
    agora_protocol::encode_err(
        None,
        ErrorCode::TooManyConnections,
        &format!("the broker is at its limit of {max} connections"),
        &mut b,
    );
    let write = async {
        let _ = stream.write_all(&b).await;
        let _ = stream.flush().await;
    };
    future::or(write, async {
        smol::Timer::after(FLUSH_TIMEOUT).await;
    })
    .await;
    let _ = stream.shutdown(std::net::Shutdown::Both);
}

/// A subscription as its connection knows it.
enum Sub {
    Topic {
        topic: Arc<Topic>,
        sub: Arc<Subscriber>,
    },
    Queue {
        queue: Arc<QueueShared>,
        cid: u64,
        slot: u64,
        /// The delivery channel, to see whether the queue ended the subscription.
        tx: crate::deliveries::DeliveryTx,
        /// The broker's auto-ack mode: the queue forgets a delivery once written.
        auto_ack: bool,
    },
}

impl Sub {
    /// True once the broker ended it (`CANCEL`): its id may be used again.
    fn ended(&self) -> bool {
        match self {
            Sub::Topic { sub, .. } => sub.tx.is_closed(),
            Sub::Queue { tx, .. } => tx.is_closed(),
        }
    }
}

/// What ended a wait for the client's next bytes.
enum Event {
    Read(std::io::Result<usize>),
    Stop,
    Silent,
}

/// Why a request was refused: a code and message for the client, or `None` when the
/// broker is shutting down and the connection should just end.
type Refusal = Option<(ErrorCode, String)>;

struct Conn<'a> {
    broker: &'a Broker,
    peer: SocketAddr,
    outbox: Outbox,
    limits: Limits,
    /// Publisher confirms on (`SETACK on`).
    confirm: bool,
    /// The client's name from `CONNECT`.
    name: Option<String>,
    subs: HashMap<u64, Sub>,
    /// Delivery-id slot → subscription id, for routing `ACK`/`NACK`.
    slots: HashMap<u64, u64>,
    next_slot: u64,
    /// Handles of destinations this client used, so a publish needs no manager trip.
    handles: HashMap<Destination, Handle>,
    /// The last destination used and its handle: a run of publishes to one name skips
    /// even the hash lookup.
    last: Option<(Destination, Handle)>,
    /// When the bytes being decoded were read: every message of one read shares it
    /// (one clock read per read, not per message).
    read_at: std::time::Instant,
    /// Fire-and-forget publishes to one destination decoded in a row, held back until
    /// the run ends (another frame or destination, the end of the bytes read, or
    /// [`PUBLISH_RUN`] of them) and then handed over together: fanned out at once to a
    /// topic's subscribers (`Topic::publish_all`), or sent to a queue's task as one
    /// command (their room in the queue is reserved as each is read).
    run: Option<(Handle, Vec<Message>)>,
    /// The last run's vector, kept for the next one.
    spare: Vec<Message>,
}

/// Most publishes held back in one run.
const PUBLISH_RUN: usize = 512;

/// Where a client's frames come from.
pub(crate) enum Input {
    /// A TCP stream, read in bulk.
    Tcp(TcpStream),
    /// Datagrams from one UDP source address, handed over by the UDP loop.
    Udp(Receiver<Bytes>),
}

/// Serves one client until it leaves, is cut off, or the broker stops: reads and acts
/// on its frames; its shipper writes to `writer`.
pub(crate) async fn serve_client(
    broker: &Broker,
    input: Input,
    writer: Writer,
    peer: SocketAddr,
    stop: Receiver<()>,
) {
    if let Input::Tcp(stream) = &input {
        let _ = stream.set_nodelay(true);
    }
    log::debug!("client {peer} connected");
    let (outbox, out_rx) = Outbox::new(broker.config.reply_buffer, broker.metrics.clone());
    let batch = match broker.config.ablation.no_batching {
        true => 1,
        false => shipper::BATCH_BYTES,
    };
    let shipper = broker
        .rt
        .spawn(shipper::run(writer, out_rx, broker.metrics.clone(), batch));
    let mut c = Conn {
        broker,
        peer,
        outbox: outbox.clone(),
        limits: Limits {
            max_line: broker.config.max_line,
            max_payload: broker.config.max_payload,
        },
        confirm: false,
        name: None,
        subs: HashMap::new(),
        slots: HashMap::new(),
        next_slot: 1,
        handles: HashMap::new(),
        last: None,
        read_at: std::time::Instant::now(),
        run: None,
        spare: Vec::new(),
    };
    let info = ServerFrame::Info(Info {
        server: broker.config.server_name.clone(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        proto: PROTOCOL_VERSION,
        max_payload: broker.config.max_payload as u64,
        max_line: broker.config.max_line as u64,
    });
    if outbox.frame(&info).await {
        match input {
            Input::Tcp(stream) => c.read_loop(stream, &stop).await,
            Input::Udp(datagrams) => c.datagram_loop(datagrams, &stop).await,
        }
    }
    c.teardown().await;
    if !outbox.send(Outbound::Close).await {
        outbox.close();
    }
    if future::or(
        async {
            shipper.await;
            Some(())
        },
        async {
            smol::Timer::after(FLUSH_TIMEOUT).await;
            None
        },
    )
    .await
    .is_none()
    {
        log::debug!("client {peer} did not take its last bytes in time");
    }
    log::debug!(
        "client {peer}{} disconnected",
        c.name
            .as_deref()
            .map(|n| format!(" ({n})"))
            .unwrap_or_default()
    );
}

impl Conn<'_> {
    async fn read_loop(&mut self, mut stream: TcpStream, stop: &Receiver<()>) {
        let mut read_size = ReadSize::default();
        let mut buf = BytesMut::with_capacity(read_size.get());
        // Pings sent since the client was last heard from.
        let mut missed = 0;
        // One timer for the connection's life, moved forward as the client is heard
        // from (registering a timer per read would cost a reactor round trip per read).
        let ping_every = self.broker.config.ping_interval;
        let no_pings = self.broker.config.ablation.no_defences;
        let mut ping_timer = smol::Timer::after(ping_every);
        loop {
            loop {
                let next = decode_client_with(&mut buf, &self.limits);
                // A run of publishes held back ends with the bytes decoded, or an error.
                if !matches!(next, Ok(Some(_))) && !self.end_run().await {
                    return;
                }
                match next {
                    Ok(Some(f)) => {
                        if !self.handle(f).await {
                            return;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        log::debug!("client {}: {e}", self.peer);
                        let msg = e.to_string();
                        if !self.outbox.err(e.request_id(), e.code(), &msg).await {
                            return;
                        }
                        if e.is_fatal() {
                            return;
                        }
                    }
                }
            }
            if buf.is_empty()
                && buf.capacity() > 4 * ReadSize::MAX
                && read_size == ReadSize::default()
            {
                // Give a big buffer back once the client has gone quiet.
                buf = BytesMut::with_capacity(ReadSize::MIN);
            }
            let len = buf.len();
            buf.resize(len + read_size.get(), 0);
            let event = future::or(
                async { Event::Read(stream.read(&mut buf[len..]).await) },
                future::or(
                    async {
                        let _ = stop.recv().await;
                        Event::Stop
                    },
                    async {
                        if no_pings {
                            future::pending::<()>().await;
                        }
                        (&mut ping_timer).await;
                        Event::Silent
                    },
                ),
            )
            .await;
            match event {
                Event::Read(Ok(n)) if n > 0 => {
                    buf.truncate(len + n);
                    self.read_at = std::time::Instant::now();
                    self.broker
                        .metrics
                        .bytes_in_tcp
                        .fetch_add(n as u64, Relaxed);
                    missed = 0;
                    read_size.after_read(n);
                }
                Event::Read(_) => return, // EOF or error: the client is gone
                Event::Stop => {
                    self.outbox
                        .frame(&ServerFrame::Shutdown {
                            message: "the broker is shutting down".to_owned(),
                        })
                        .await;
                    return;
                }
                Event::Silent => {
                    buf.truncate(len);
                    // Heard from since the timer was set: not silent, look again later.
                    let quiet = self.read_at.elapsed();
                    if quiet < ping_every {
                        ping_timer.set_after(ping_every - quiet);
                        continue;
                    }
                    ping_timer.set_after(ping_every);
                    let max = self.broker.config.max_missed_pings;
                    if missed >= max {
                        log::debug!("client {} did not answer {max} pings", self.peer);
                        let why = format!("no answer to {max} pings; closing");
                        self.outbox.err(None, ErrorCode::Timeout, &why).await;
                        return;
                    }
                    missed += 1;
                    if !self.outbox.frame(&ServerFrame::PingReq { rid: None }).await {
                        return;
                    }
                }
            }
            if self.outbox.is_closed() {
                return;
            }
        }
    }

    /// A UDP client: each datagram holds whole frames. A client not heard from for
    /// [`Config::udp_idle_timeout`](crate::Config::udp_idle_timeout) is forgotten.
    async fn datagram_loop(&mut self, datagrams: Receiver<Bytes>, stop: &Receiver<()>) {
        let idle = self.broker.config.udp_idle_timeout;
        loop {
            let next = future::or(
                async { datagrams.recv().await.map_err(|_| Event::Stop) },
                future::or(
                    async {
                        let _ = stop.recv().await;
                        Err(Event::Stop)
                    },
                    async {
                        smol::Timer::after(idle).await;
                        Err(Event::Silent)
                    },
                ),
            )
            .await;
            let d = match next {
                Ok(d) => d,
                Err(Event::Silent) => {
                    log::debug!("UDP client {} idle for {idle:?}; forgotten", self.peer);
                    return;
                }
                Err(_) => {
                    if !stop.is_closed() {
                        return;
                    }
                    self.outbox
                        .frame(&ServerFrame::Shutdown {
                            message: "the broker is shutting down".to_owned(),
                        })
                        .await;
                    return;
                }
            };
            self.broker
                .metrics
                .bytes_in_udp
                .fetch_add(d.len() as u64, Relaxed);
            self.read_at = std::time::Instant::now();
            let mut buf = BytesMut::from(&d[..]);
            loop {
                let next = decode_client_with(&mut buf, &self.limits);
                if !matches!(next, Ok(Some(_))) && !self.end_run().await {
                    return;
                }
                match next {
                    Ok(Some(f)) => {
                        if !self.handle(f).await {
                            return;
                        }
                    }
                    Ok(None) => {
                        if !buf.is_empty() {
                            let why = format!(
                                "the datagram ends inside a frame ({} bytes left): over UDP a frame must fit in one datagram",
                                buf.len()
                            );
                            if !self.outbox.err(None, ErrorCode::BadFrame, &why).await {
                                return;
                            }
                        }
                        break;
                    }
                    Err(e) => {
                        let msg = e.to_string();
                        if !self.outbox.err(e.request_id(), e.code(), &msg).await {
                            return;
                        }
                        if e.is_fatal() {
                            // The rest of this datagram is lost; the next one starts afresh.
                            break;
                        }
                    }
                }
            }
        }
    }

    /// Acts on one frame; false ends the connection.
    async fn handle(&mut self, f: ClientFrame) -> bool {
        // A held-back run of publishes goes out before anything else is acted on.
        if self.run.is_some() && !matches!(f, ClientFrame::Pub(_)) && !self.end_run().await {
            return false;
        }
        match f {
            ClientFrame::Pub(p) => self.publish(p).await,
            ClientFrame::Ack { rid, did } => self.ack(rid, did, true).await,
            ClientFrame::Nack { rid, did } => self.ack(rid, did, false).await,
            ClientFrame::Sub(s) => self.subscribe(s).await,
            ClientFrame::Unsub { rid, sid } => {
                if self.unsubscribe(sid).await {
                    self.outbox.frame(&ServerFrame::Ok { rid }).await
                } else {
                    self.outbox
                        .err(
                            rid,
                            ErrorCode::UnknownSubscription,
                            &format!("no subscription {sid} on this connection"),
                        )
                        .await
                }
            }
            ClientFrame::SetAck { rid, on } => {
                self.confirm = on;
                self.outbox.frame(&ServerFrame::Ok { rid }).await
            }
            ClientFrame::Connect(c) => {
                if let Some(p) = c.proto {
                    if p != PROTOCOL_VERSION {
                        return self
                            .outbox
                            .err(
                                c.rid,
                                ErrorCode::BadArgs,
                                &format!(
                                    "protocol version {p} is not supported; this broker speaks {PROTOCOL_VERSION}"
                                ),
                            )
                            .await;
                    }
                }
                if let Some(on) = c.confirm {
                    self.confirm = on;
                }
                if let Some(n) = c.name {
                    log::debug!("client {} is {n}", self.peer);
                    self.name = Some(n);
                }
                self.outbox.frame(&ServerFrame::Ok { rid: c.rid }).await
            }
            ClientFrame::Stats { rid } => {
                let (tx, rx) = async_channel::bounded(1);
                if self
                    .broker
                    .manager
                    .send(ManagerCmd::List { reply: tx })
                    .await
                    .is_err()
                {
                    return false;
                }
                let handles = rx.recv().await.unwrap_or_default();
                let json = crate::stats::document(self.broker, &handles);
                self.outbox
                    .frame(&ServerFrame::StatsResp {
                        rid,
                        json: Bytes::from(json),
                    })
                    .await
            }
            ClientFrame::Help { rid } => {
                self.outbox
                    .frame(&ServerFrame::HelpResp {
                        rid,
                        text: Bytes::from(agora_protocol::help_text()),
                    })
                    .await
            }
            ClientFrame::PingReq { rid } => self.outbox.frame(&ServerFrame::PingResp { rid }).await,
            ClientFrame::PingResp { .. } => true,
            ClientFrame::Disconnect => false,
            ClientFrame::Purge { rid, dest } => self.purge(rid, dest).await,
            ClientFrame::Delete { rid, dest } => self.delete(rid, dest).await,
            ClientFrame::ChainGet { rid, dest } => self.chain_get(rid, dest).await,
            ClientFrame::ChainSet { rid, dest, chain } => {
                self.chain_set(rid, dest, Some(chain)).await
            }
            ClientFrame::ChainClear { rid, dest } => self.chain_set(rid, dest, None).await,
        }
    }

    /// The handle for `dest`, from the cache or the queue manager. `Err(None)`: the
    /// broker is going away.
    async fn resolve(&mut self, dest: &Destination) -> Result<Handle, Refusal> {
        if let Some((d, h)) = &self.last {
            if d == dest && !h.is_closed() {
                return Ok(h.clone());
            }
        }
        if let Some(h) = self.handles.get(dest) {
            if !h.is_closed() {
                let h = h.clone();
                self.last = Some((dest.compact(), h.clone()));
                return Ok(h);
            }
        }
        let (tx, rx) = async_channel::bounded(1);
        self.broker
            .manager
            .send(ManagerCmd::Resolve {
                dest: dest.clone(),
                reply: tx,
            })
            .await
            .map_err(|_| None)?;
        let h = rx.recv().await.map_err(|_| None)?.map_err(Some)?;
        if self.handles.len() >= HANDLE_CACHE {
            self.handles.clear();
        }
        self.handles.insert(dest.compact(), h.clone());
        self.last = Some((dest.compact(), h.clone()));
        Ok(h)
    }

    /// Answers a refused request; false if the connection should end.
    async fn refuse(&self, rid: RequestId, r: Refusal) -> bool {
        match r {
            Some((code, why)) => self.outbox.err(rid, code, &why).await,
            None => false,
        }
    }

    async fn publish(&mut self, p: Publish) -> bool {
        if p.dest.name.is_reserved() {
            return self
                .outbox
                .err(
                    p.rid,
                    ErrorCode::NotPermitted,
                    &format!("{} is reserved for the broker", p.dest),
                )
                .await;
        }
        let msg = Message {
            received: self.read_at,
            headers: p.headers,
            payload: p.payload,
        };
        self.route(p.rid, &p.dest, msg, false).await
    }

    /// Fans out the held-back run of topic publishes, if any; false if the connection
    /// should end.
    async fn end_run(&mut self) -> bool {
        let Some((h, mut msgs)) = self.run.take() else {
            return true;
        };
        let topic = match h {
            Handle::Topic(t) => t,
            Handle::Queue(q) => {
                return match q.tx.send(QueueCmd::PublishMany(msgs)).await {
                    Ok(()) => true,
                    Err(async_channel::SendError(QueueCmd::PublishMany(msgs))) => {
                        // The queue was removed meanwhile: to its successor, one by one.
                        let mut ok = true;
                        for m in msgs {
                            q.unreserve(m.size());
                            if ok {
                                ok = Box::pin(self.route(None, &q.dest, m, true)).await;
                            }
                        }
                        ok
                    }
                    Err(_) => false,
                };
            }
        };
        let mut ok = true;
        if topic.publish_all(&msgs).is_err() {
            // Removed meanwhile, or the budget cannot take them all: one by one, as
            // if they had never been held back (their chain has run already).
            let dest = topic.dest.clone();
            for m in msgs.drain(..) {
                if ok {
                    // Boxed: `route` may end a run itself (not with `mutated` set).
                    ok = Box::pin(self.route(None, &dest, m, true)).await;
                }
            }
        }
        msgs.clear();
        self.spare = msgs;
        ok
    }

    /// Adds a message to the run of publishes held back for `h`, ending the run held
    /// for another destination first.
    async fn hold(&mut self, h: Handle, msg: Message) -> bool {
        match &mut self.run {
            Some((held, msgs)) if held.same(&h) => msgs.push(msg),
            _ => {
                if !self.end_run().await {
                    return false;
                }
                let mut msgs = std::mem::take(&mut self.spare);
                msgs.push(msg);
                self.run = Some((h, msgs));
            }
        }
        if self
            .run
            .as_ref()
            .is_some_and(|(_, m)| m.len() >= PUBLISH_RUN)
        {
            return self.end_run().await;
        }
        true
    }

    /// Routes a message to its destination; `mutated`: its chain has run.
    async fn route(
        &mut self,
        rid: RequestId,
        dest: &Destination,
        mut msg: Message,
        mut mutated: bool,
    ) -> bool {
        // A run held back is only of fire-and-forget publishes to one destination; one
        // that comes back here (`end_run`) is published one by one.
        let runs = !mutated && !self.confirm && !self.broker.config.ablation.no_publish_batching;
        // A destination can be retired between lookup and use; resolving again finds
        // (or makes) its successor. Three tries is plenty: retiring takes idle minutes.
        for _ in 0..3 {
            let h = match self.resolve(dest).await {
                Ok(h) => h,
                Err(r) => return self.refuse(rid, r).await,
            };
            if !mutated {
                mutated = true;
                if let Some(chain) = h.chain().get() {
                    if crate::mutators::run_on(&chain, &mut msg).await == Verdict::Drop {
                        h.chain().count_filtered();
                        return self.filtered(rid).await;
                    }
                }
            }
            match h {
                Handle::Topic(t) if runs => return self.hold(Handle::Topic(t), msg).await,
                Handle::Topic(t) => match t.publish(&msg) {
                    Ok(()) => return self.confirmed(rid).await,
                    Err(TopicRefused::Memory(why)) => {
                        return self.outbox.err(rid, ErrorCode::MemoryLimit, &why).await
                    }
                    Err(TopicRefused::Closed) => continue,
                },
                Handle::Queue(q) => match q.reserve(msg.size()) {
                    Ok(()) if runs => return self.hold(Handle::Queue(q), msg).await,
                    Ok(()) => match q.tx.send(QueueCmd::Publish(msg)).await {
                        Ok(()) => return self.confirmed(rid).await,
                        Err(async_channel::SendError(QueueCmd::Publish(m))) => {
                            q.unreserve(m.size());
                            msg = m;
                        }
                        Err(_) => return false,
                    },
                    Err(Refused::Full(why)) => {
                        return self.outbox.err(rid, ErrorCode::QueueFull, &why).await
                    }
                    Err(Refused::Memory(why)) => {
                        return self.outbox.err(rid, ErrorCode::MemoryLimit, &why).await
                    }
                    Err(Refused::Retired) => continue,
                },
            }
        }
        self.outbox
            .err(
                rid,
                ErrorCode::Internal,
                &format!("{dest} kept disappearing; publish again"),
            )
            .await
    }

    async fn confirmed(&self, rid: RequestId) -> bool {
        if self.confirm {
            self.outbox
                .frame(&ServerFrame::PubAck {
                    rid,
                    filtered: false,
                })
                .await
        } else {
            true
        }
    }

    async fn subscribe(&mut self, s: Subscribe) -> bool {
        let rid = s.rid;
        // Subscriptions the broker ended (CANCEL) free their ids and their places.
        let ended: Vec<u64> = self
            .subs
            .iter()
            .filter(|(_, sub)| sub.ended())
            .map(|(sid, _)| *sid)
            .collect();
        for sid in ended {
            if let Some(sub) = self.subs.remove(&sid) {
                self.drop_sub(sub).await;
            }
        }
        // Clients may listen to the broker's own topics, never create others.
        let readable =
            s.dest.kind == Kind::Topic && s.dest.name.as_str() == crate::metrics::METRICS_TOPIC;
        if s.dest.name.is_reserved() && !readable {
            return self
                .outbox
                .err(
                    rid,
                    ErrorCode::NotPermitted,
                    &format!("{} is reserved for the broker", s.dest),
                )
                .await;
        }
        if self.subs.contains_key(&s.sid) {
            return self
                .outbox
                .err(
                    rid,
                    ErrorCode::DuplicateSubscription,
                    &format!(
                        "subscription {} is already active on this connection",
                        s.sid
                    ),
                )
                .await;
        }
        let max = self.broker.config.max_subscriptions;
        if self.subs.len() >= max {
            return self
                .outbox
                .err(
                    rid,
                    ErrorCode::TooManySubscriptions,
                    &format!("at most {max} subscriptions per connection"),
                )
                .await;
        }
        let r = match s.dest.kind {
            Kind::Topic => self.subscribe_topic(&s).await,
            Kind::Queue => self.subscribe_queue(&s).await,
        };
        match r {
            // The OK goes out before the shipper starts on the subscription, so no
            // MSG can overtake it; deliveries wait in the channel meanwhile.
            Ok(add) => {
                self.outbox.frame(&ServerFrame::Ok { rid }).await
                    && self.outbox.send(Outbound::AddSub(Box::new(add))).await
            }
            Err(Some((code, why))) => self.outbox.err(rid, code, &why).await,
            Err(None) => false,
        }
    }

    /// Joins a topic; returns the subscription's receiving end for the shipper.
    async fn subscribe_topic(&mut self, s: &Subscribe) -> Result<SubRx, Refusal> {
        if s.prefetch.is_some() || s.ack.is_some() {
            return Err(Some((
                ErrorCode::BadArgs,
                "prefetch and ack apply to queue subscriptions only".to_owned(),
            )));
        }
        let (tx, rx) = crate::deliveries::queue();
        let sub = Arc::new(Subscriber {
            sid: s.sid,
            tx,
            cap: self.broker.config.subscriber_buffer,
            outbox: self.outbox.clone(),
            dropped: AtomicU64::new(0),
        });
        for _ in 0..3 {
            let Handle::Topic(topic) = self.resolve(&s.dest).await? else {
                return Err(None);
            };
            if topic.subscribe(sub.clone()) {
                let mut add = SubRx::new(s.sid, s.dest.compact(), rx);
                add.latency =
                    (!self.broker.config.ablation.no_metrics).then(|| topic.latency.clone());
                add.budget = Some(self.broker.budget.clone());
                self.subs.insert(s.sid, Sub::Topic { topic, sub });
                return Ok(add);
            }
        }
        Err(Some((
            ErrorCode::Internal,
            "topic kept disappearing".to_owned(),
        )))
    }

    /// Joins a queue as a consumer; returns the subscription's receiving end.
    async fn subscribe_queue(&mut self, s: &Subscribe) -> Result<SubRx, Refusal> {
        let cfg = &self.broker.config;
        let prefetch = s.prefetch.unwrap_or(cfg.default_prefetch);
        if prefetch > cfg.max_prefetch {
            return Err(Some((
                ErrorCode::BadArgs,
                format!(
                    "prefetch {prefetch} is above the limit of {}",
                    cfg.max_prefetch
                ),
            )));
        }
        let auto_ack = s.ack == Some(AckMode::Auto);
        let slot = self.next_slot;
        self.next_slot += 1;
        let cid = self.broker.id();
        for _ in 0..3 {
            let Handle::Queue(queue) = self.resolve(&s.dest).await? else {
                return Err(None);
            };
            // Counted before the queue hears of it, so the manager never retires a
            // queue a consumer is joining.
            queue.consumers.fetch_add(1, SeqCst);
            if queue.closed.load(SeqCst) {
                queue.consumers.fetch_sub(1, SeqCst);
                continue;
            }
            // Credit (prefetch) bounds it.
            let (tx, rx) = crate::deliveries::queue();
            let mut add = SubRx::new(s.sid, s.dest.compact(), rx);
            add.written = auto_ack.then(|| queue.credit(cid));
            add.latency = (!self.broker.config.ablation.no_metrics).then(|| queue.latency.clone());
            let consumer_tx = tx.clone();
            let consumer = Consumer {
                cid,
                sid: s.sid,
                slot,
                prefetch,
                auto_ack,
                port: crate::queue::Port {
                    tx,
                    outbox: self.outbox.clone(),
                },
            };
            if queue.tx.send(QueueCmd::Subscribe(consumer)).await.is_err() {
                queue.consumers.fetch_sub(1, SeqCst);
                return Err(None);
            }
            self.slots.insert(slot, s.sid);
            self.subs.insert(
                s.sid,
                Sub::Queue {
                    queue,
                    cid,
                    slot,
                    tx: consumer_tx,
                    auto_ack,
                },
            );
            return Ok(add);
        }
        Err(Some((
            ErrorCode::Internal,
            "queue kept disappearing".to_owned(),
        )))
    }

    /// Ends a subscription; false if there was none with that id.
    async fn unsubscribe(&mut self, sid: u64) -> bool {
        let Some(sub) = self.subs.remove(&sid) else {
            return false;
        };
        match sub {
            // An auto-ack consumer's queue forgets what was written to it, so it must
            // hear of the end only after the shipper has stopped writing and reported
            // the last of it: the shipper tells the queue (see `Outbound::RemoveSub`).
            // Were the queue told first, deliveries being written at that moment would
            // be given to another consumer as well.
            Sub::Queue {
                queue,
                cid,
                slot,
                auto_ack: true,
                ..
            } => {
                self.slots.remove(&slot);
                if !self.outbox.send(Outbound::RemoveSub(sid)).await {
                    let _ = queue.tx.send(QueueCmd::Unsubscribe { cid }).await;
                }
            }
            sub => {
                self.drop_sub(sub).await;
                self.outbox.send(Outbound::RemoveSub(sid)).await;
            }
        }
        true
    }

    async fn drop_sub(&mut self, sub: Sub) {
        match sub {
            Sub::Topic { topic, sub } => topic.unsubscribe(&sub),
            Sub::Queue {
                queue, cid, slot, ..
            } => {
                self.slots.remove(&slot);
                let _ = queue.tx.send(QueueCmd::Unsubscribe { cid }).await;
            }
        }
    }

    async fn ack(&mut self, rid: RequestId, did: u64, ack: bool) -> bool {
        let sub = self
            .slots
            .get(&(did >> SLOT_SHIFT))
            .and_then(|sid| self.subs.get(sid));
        let Some(Sub::Queue { queue, cid, .. }) = sub else {
            return self
                .outbox
                .err(
                    rid,
                    ErrorCode::UnknownDelivery,
                    &format!("delivery {did} is not outstanding on this connection"),
                )
                .await;
        };
        let (queue, cid) = (queue.clone(), *cid);
        let (reply, answer) = match rid {
            Some(_) => {
                let (tx, rx) = async_channel::bounded(1);
                (Some(tx), Some(rx))
            }
            None => (None, None),
        };
        let cmd = QueueCmd::Ack {
            cid,
            did,
            ack,
            reply,
        };
        if queue.tx.send(cmd).await.is_err() {
            // The queue is gone (deleted): nothing of it is outstanding any more.
            return self
                .outbox
                .err(
                    rid,
                    ErrorCode::UnknownDelivery,
                    &format!("delivery {did} belonged to a queue that no longer exists"),
                )
                .await;
        }
        // With a request id the client wants an answer: wait for the queue's verdict
        // so the reply keeps its place among this connection's replies.
        let Some(answer) = answer else { return true };
        if answer.recv().await.unwrap_or(false) {
            self.outbox.frame(&ServerFrame::Ok { rid }).await
        } else {
            self.outbox
                .err(
                    rid,
                    ErrorCode::UnknownDelivery,
                    &format!("delivery {did} is not outstanding on this subscription"),
                )
                .await
        }
    }

    async fn purge(&mut self, rid: RequestId, dest: Destination) -> bool {
        if dest.kind != Kind::Queue {
            return self
                .outbox
                .err(rid, ErrorCode::BadArgs, "only queues can be purged")
                .await;
        }
        if dest.name.is_reserved() {
            let why = format!("{dest} is reserved for the broker");
            return self.outbox.err(rid, ErrorCode::NotPermitted, &why).await;
        }
        // Purging never creates the queue it names.
        let (tx, rx) = async_channel::bounded(1);
        let lookup = ManagerCmd::Lookup {
            dest: dest.clone(),
            reply: tx,
        };
        if self.broker.manager.send(lookup).await.is_err() {
            return false;
        }
        let Ok(Some(Handle::Queue(q))) = rx.recv().await else {
            let why = format!("there is no {dest}");
            return self
                .outbox
                .err(rid, ErrorCode::UnknownDestination, &why)
                .await;
        };
        let (tx, rx) = async_channel::bounded(1);
        if q.tx.send(QueueCmd::Purge { reply: tx }).await.is_err() {
            let why = format!("{dest} was deleted");
            return self
                .outbox
                .err(rid, ErrorCode::UnknownDestination, &why)
                .await;
        }
        let n = rx.recv().await.unwrap_or(0);
        log::info!("purged {n} messages from {dest}");
        self.outbox.frame(&ServerFrame::Ok { rid }).await
    }

    async fn delete(&mut self, rid: RequestId, dest: Destination) -> bool {
        if dest.name.is_reserved() {
            return self
                .outbox
                .err(
                    rid,
                    ErrorCode::NotPermitted,
                    &format!("{dest} is reserved for the broker"),
                )
                .await;
        }
        let (tx, rx) = async_channel::bounded(1);
        if self
            .broker
            .manager
            .send(ManagerCmd::Delete {
                dest: dest.clone(),
                reply: tx,
            })
            .await
            .is_err()
        {
            return false;
        }
        self.handles.remove(&dest);
        match rx.recv().await.ok().flatten() {
            Some(_) => self.outbox.frame(&ServerFrame::Ok { rid }).await,
            None => {
                self.outbox
                    .err(
                        rid,
                        ErrorCode::UnknownDestination,
                        &format!("there is no {dest}"),
                    )
                    .await
            }
        }
    }

    /// Gives back everything this connection held.
    async fn teardown(&mut self) {
        // Publishes read before the client left are delivered all the same.
        self.end_run().await;
        let subs: Vec<Sub> = self.subs.drain().map(|(_, s)| s).collect();
        for s in subs {
            self.drop_sub(s).await;
        }
    }
}

/// Mutator chains: `CHAIN GET|SET|CLEAR` and the `filtered` answer to a publish.
impl Conn<'_> {
    /// A publish the destination's chain dropped: counted, and confirmed as filtered.
    async fn filtered(&self, rid: RequestId) -> bool {
        if self.confirm {
            self.outbox
                .frame(&ServerFrame::PubAck {
                    rid,
                    filtered: true,
                })
                .await
        } else {
            true
        }
    }

    /// `CHAIN SET` (`Some` text; blank text clears) or `CHAIN CLEAR` (`None`). A chain
    /// that does not parse, or names an undeclared database, changes nothing.
    async fn chain_set(&mut self, rid: RequestId, dest: Destination, text: Option<Bytes>) -> bool {
        if dest.name.is_reserved() {
            let why = format!("{dest} is reserved for the broker");
            return self.outbox.err(rid, ErrorCode::NotPermitted, &why).await;
        }
        let chain = match text {
            None => None,
            Some(b) => {
                let parsed = std::str::from_utf8(&b)
                    .map_err(|_| "the chain is not UTF-8".to_owned())
                    .and_then(|t| {
                        Chain::parse(t, &self.broker.mutators).map_err(|e| e.to_string())
                    });
                match parsed {
                    Ok(c) if c.is_empty() => None,
                    Ok(c) => Some(Arc::new(c)),
                    Err(why) => return self.outbox.err(rid, ErrorCode::BadChain, &why).await,
                }
            }
        };
        let (tx, rx) = async_channel::bounded(1);
        let cmd = ManagerCmd::SetChain {
            dest,
            chain,
            reply: tx,
        };
        if self.broker.manager.send(cmd).await.is_err() {
            return false;
        }
        match rx.recv().await {
            Ok(Ok(())) => self.outbox.frame(&ServerFrame::Ok { rid }).await,
            Ok(Err((code, why))) => self.outbox.err(rid, code, &why).await,
            Err(_) => false,
        }
    }

    /// `CHAIN GET`: the chain's text, empty for none.
    async fn chain_get(&mut self, rid: RequestId, dest: Destination) -> bool {
        let (tx, rx) = async_channel::bounded(1);
        let cmd = ManagerCmd::GetChain {
            dest: dest.compact(),
            reply: tx,
        };
        if self.broker.manager.send(cmd).await.is_err() {
            return false;
        }
        let Ok(chain) = rx.recv().await else {
            return false;
        };
        let text = chain.map_or_else(Bytes::new, |c| Bytes::copy_from_slice(c.text().as_bytes()));
        self.outbox
            .frame(&ServerFrame::ChainResp {
                rid,
                dest,
                chain: text,
            })
            .await
    }
}
