//! The driver: the one task that owns the socket.
//!
//! It runs on a thread of its own under `async_io::block_on`, so the client needs no
//! executor from the application and works under smol, tokio-with-compat, or a plain
//! `block_on`. Application handles talk to it over two channels: `cmd` (bounded:
//! publishes and requests, so a fast publisher waits instead of growing memory) and
//! `ctl` (unbounded in type, bounded in practice: every item is tied to a delivery or a
//! subscription the application holds — acks, unsubscribes from `Drop` — or is a reply
//! to a broker `PINGREQ`).
//!
//! Per connection there are two threads, both on a plain blocking socket, so the
//! kernel wakes each one directly (no reactor thread in between: async-io has one
//! reactor per process, and a socket event could reach a client through whichever
//! thread was polling it, one wake-up more per message). The driver's thread writes:
//! it drains many commands per wake-up, encodes them into one buffer and writes it with
//! one call. A reader thread decodes every complete frame in its buffer before reading
//! again, matches answers to requests by request id and hands deliveries to
//! subscriptions by sid. It never waits on the application, except for an auto-ack
//! consumer's full buffer (see `deliver_run`). Neither may block on anything but the
//! socket, the channels and timers.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::Shutdown;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agora_protocol::bytes::{Bytes, BytesMut};
use agora_protocol::{
    decode_server_with, encode, encode_pub, AckMode, ClientFrame, Connect, Destination, Headers,
    Info, Limits, ReadSize, ServerFrame, Subscribe, PROTOCOL_VERSION,
};
use async_channel::{Receiver, Sender};
use async_net::TcpStream;
use futures_lite::{future, AsyncReadExt, AsyncWriteExt};

use crate::error::{Error, Result, ServerError};
use crate::inbox::{Inbox, Incoming, Pushed};
use crate::lock;
use crate::pubbuf::PubBuf;
use crate::Options;

/// Most deliveries handed to a subscription's inbox at once.
const RUN_MAX: usize = 512;
/// The writer stops draining commands into one buffer past this many bytes.
const BATCH_BYTES: usize = 256 * 1024;
/// The largest payload the client accepts from the broker, at least (a `STATS`
/// document of a busy broker can exceed the publish limit).
const MIN_READ_PAYLOAD: usize = 16 * 1024 * 1024;

/// State the application's handles and the driver share.
#[derive(Debug)]
pub(crate) struct Shared {
    /// Bumped on every (re)connect; deliveries remember the one they arrived on.
    pub generation: AtomicU64,
    /// The latest `INFO`.
    pub info: Mutex<Info>,
    /// Set once the driver has stopped for good.
    pub closed: AtomicBool,
    /// Subscription ids, unique per client (and so per connection).
    pub next_sid: AtomicU64,
    /// The largest payload the broker accepts, from `INFO`.
    pub server_max_payload: AtomicU64,
    /// Fire-and-forget publishes, encoded by the publishers.
    pub pubs: PubBuf,
}

/// What a request's answer carries.
#[derive(Debug)]
pub(crate) enum Answer {
    Ok,
    /// `filtered`: the destination's mutator chain dropped the message.
    PubAck {
        filtered: bool,
    },
    Body(Bytes),
}

pub(crate) type Reply = Sender<Result<Answer>>;

/// What a subscription is, as the driver keeps it across reconnects.
pub(crate) struct SubEntry {
    pub dest: Destination,
    /// `Some` for queue consumers.
    pub prefetch: Option<u32>,
    /// A queue consumer in the broker's auto-ack mode (`ack=auto`): the broker forgets a
    /// delivery once written, so a full buffer here holds the reader back (TCP
    /// backpressure) instead of giving anything back.
    pub auto_ack: bool,
    pub inbox: Arc<Inbox>,
    /// Topic messages dropped because the application did not keep up.
    pub dropped: Arc<AtomicU64>,
}

impl SubEntry {
    /// A queue consumer that acknowledges explicitly: its deliveries from a lost
    /// connection come again, so buffered ones are dropped on reconnect.
    fn manual_ack(&self) -> bool {
        self.prefetch.is_some() && !self.auto_ack
    }
}

impl Drop for SubEntry {
    /// The driver forgot the subscription: its stream ends once drained.
    fn drop(&mut self) {
        self.inbox.close();
    }
}

/// Requests from the application, in order.
pub(crate) enum Cmd {
    Publish {
        dest: Destination,
        headers: Headers,
        payload: Bytes,
        confirm: Option<Reply>,
    },
    Subscribe {
        sid: u64,
        entry: SubEntry,
        reply: Reply,
    },
    Unsubscribe {
        sid: u64,
        reply: Reply,
    },
    Ping {
        reply: Reply,
    },
    Stats {
        reply: Reply,
    },
    /// Any other request answered by `OK`, a `…RESP` or `ERR`: the frame is built once
    /// its request id is known.
    Request {
        frame: Box<dyn FnOnce(agora_protocol::RequestId) -> ClientFrame + Send>,
        reply: Reply,
    },
    Close {
        reply: Sender<()>,
    },
}

/// Small control messages that must never wait for room.
pub(crate) enum Ctl {
    Settle {
        did: u64,
        generation: u64,
        ack: bool,
    },
    Unsub {
        sid: u64,
    },
    Pong {
        rid: Option<u64>,
    },
    /// `close()` was called: stop reconnecting.
    Closing,
}

/// A connection that has done its handshake; the socket is a blocking one.
pub(crate) struct Established {
    pub stream: std::net::TcpStream,
    pub buf: BytesMut,
    pub info: Info,
}

/// Runs `f` with a deadline.
pub(crate) async fn timeout<T>(
    d: Duration,
    f: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    future::or(f, async {
        async_io::Timer::after(d).await;
        Err(Error::Timeout)
    })
    .await
}

fn read_limits(opts: &Options, info: Option<&Info>) -> Limits {
    let server = info.map_or(0, |i| i.max_payload as usize);
    Limits {
        max_line: agora_protocol::DEFAULT_MAX_LINE.max(info.map_or(0, |i| i.max_line as usize)),
        max_payload: opts.max_payload.max(server).max(MIN_READ_PAYLOAD),
    }
}

/// Reads until one frame is decoded.
async fn read_frame(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    limits: &Limits,
) -> Result<ServerFrame> {
    loop {
        match decode_server_with(buf, limits) {
            Ok(Some(f)) => return Ok(f),
            Ok(None) => {}
            Err(e) => return Err(Error::Protocol(e)),
        }
        let len = buf.len();
        buf.resize(len + ReadSize::MIN, 0);
        let n = stream.read(&mut buf[len..]).await?;
        buf.truncate(len + n);
        if n == 0 {
            return Err(Error::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
    }
}

/// Connects, reads `INFO`, sends `CONNECT` and waits for its `OK`, within the connect
/// timeout.
pub(crate) async fn handshake(addr: &str, opts: &Options) -> Result<Established> {
    timeout(opts.connect_timeout, async {
        let mut stream = TcpStream::connect(addr).await?;
        let _ = stream.set_nodelay(true);
        let mut buf = BytesMut::with_capacity(ReadSize::MIN);
        let limits = read_limits(opts, None);
        let info = match read_frame(&mut stream, &mut buf, &limits).await? {
            ServerFrame::Info(i) => i,
            ServerFrame::Err(e) => {
                return Err(Error::Server {
                    code: e.code,
                    message: e.message,
                })
            }
            other => return Err(Error::UnexpectedFrame(other.command())),
        };
        let mut out = BytesMut::new();
        encode(
            &ClientFrame::Connect(Connect {
                rid: Some(0),
                name: opts.name.clone(),
                proto: Some(PROTOCOL_VERSION),
                confirm: None,
            }),
            &mut out,
        );
        stream.write_all(&out).await?;
        let limits = read_limits(opts, Some(&info));
        loop {
            match read_frame(&mut stream, &mut buf, &limits).await? {
                ServerFrame::Ok { rid: Some(0) } => break,
                ServerFrame::Err(e) => {
                    return Err(Error::Server {
                        code: e.code,
                        message: e.message,
                    })
                }
                ServerFrame::PingReq { rid } => {
                    let mut out = BytesMut::new();
                    encode(&ClientFrame::PingResp { rid }, &mut out);
                    stream.write_all(&out).await?;
                }
                ServerFrame::Shutdown { .. } => return Err(Error::Disconnected),
                other => return Err(Error::UnexpectedFrame(other.command())),
            }
        }
        Ok(Established {
            stream: into_blocking(stream)?,
            buf,
            info,
        })
    })
    .await
}

/// The handshake's socket as a plain blocking one, out of the reactor: from here on the
/// driver's thread writes it and a reader thread reads it, each woken by the kernel.
fn into_blocking(stream: TcpStream) -> Result<std::net::TcpStream> {
    let stream: Arc<async_io::Async<std::net::TcpStream>> = stream.into();
    let stream = Arc::try_unwrap(stream)
        .map_err(|_| Error::Io(std::io::Error::other("the handshake's socket is shared")))?;
    let stream = stream.into_inner()?;
    stream.set_nonblocking(false)?;
    Ok(stream)
}

/// A request waiting for its answer.
struct Pending {
    reply: Option<Reply>,
    /// For a `SUB`: the subscription to forget if the broker refuses it.
    sid: Option<u64>,
}

/// Why a connection ended.
enum End {
    /// The application closed the client (or dropped every handle).
    Closed,
    /// The connection failed.
    Lost(Error),
}

/// What the driver and its connection's reader thread share.
struct Core {
    addr: String,
    ctl_tx: Sender<Ctl>,
    errors: Sender<ServerError>,
    subs: Mutex<HashMap<u64, SubEntry>>,
    pending: Mutex<HashMap<u64, Pending>>,
    /// `close()` was called: the connection ending is not a loss.
    closing: AtomicBool,
}

pub(crate) struct Driver {
    core: Arc<Core>,
    opts: Options,
    shared: Arc<Shared>,
    cmd_rx: Receiver<Cmd>,
    ctl_rx: Receiver<Ctl>,
    next_rid: Cell<u64>,
    /// Publisher confirms as last set on this connection (`SETACK`).
    confirm: Cell<bool>,
    /// The `close()` caller waiting for the connection to finish.
    closing: RefCell<Option<Sender<()>>>,
}

impl Driver {
    pub(crate) fn new(
        addr: String,
        opts: Options,
        shared: Arc<Shared>,
        cmd_rx: Receiver<Cmd>,
        (ctl_tx, ctl_rx): (Sender<Ctl>, Receiver<Ctl>),
        errors: Sender<ServerError>,
    ) -> Driver {
        Driver {
            core: Arc::new(Core {
                addr,
                ctl_tx,
                errors,
                subs: Mutex::new(HashMap::new()),
                pending: Mutex::new(HashMap::new()),
                closing: AtomicBool::new(false),
            }),
            opts,
            shared,
            cmd_rx,
            ctl_rx,
            next_rid: Cell::new(1),
            confirm: Cell::new(false),
            closing: RefCell::new(None),
        }
    }

    /// Serves connection after connection until the client is closed or reconnecting
    /// gives up, then fails everything still waiting.
    pub(crate) async fn run(self, mut conn: Established) {
        let mut first = true;
        loop {
            let end = self.serve(conn, first).await;
            first = false;
            self.fail_pending(|| Error::Disconnected);
            match end {
                End::Closed => break,
                End::Lost(e) => {
                    if self.closing.borrow().is_some() {
                        break;
                    }
                    log::warn!("agora client: connection to {} lost: {e}", self.core.addr);
                    match self.reconnect().await {
                        Some(c) => conn = c,
                        None => break,
                    }
                }
            }
        }
        self.shared.closed.store(true, SeqCst);
        let lost = self.shared.pubs.close();
        if lost > 0 {
            log::warn!(
                "agora client: {lost} bytes of publishes to {} never written: the client stopped",
                self.core.addr
            );
        }
        self.cmd_rx.close();
        lock(&self.core.subs).clear();
        self.fail_pending(|| Error::Closed);
        while let Ok(cmd) = self.cmd_rx.try_recv() {
            fail_cmd(cmd, Error::Closed);
        }
        if let Some(c) = self.closing.borrow_mut().take() {
            let _ = c.try_send(());
        }
        log::debug!("agora client: driver for {} stopped", self.core.addr);
    }

    fn fail_pending(&self, e: impl Fn() -> Error) {
        for (_, p) in lock(&self.core.pending).drain() {
            if let Some(r) = p.reply {
                let _ = r.try_send(Err(e()));
            }
        }
    }

    /// Tries to connect again with exponential backoff; `None` when the policy gives
    /// up or the application closes the client meanwhile.
    async fn reconnect(&self) -> Option<Established> {
        let policy = self.opts.reconnect.clone()?;
        let mut delay = policy.initial_delay;
        let mut attempt = 0u32;
        loop {
            if policy.max_attempts.is_some_and(|m| attempt >= m) {
                log::warn!(
                    "agora client: giving up on {} after {attempt} attempts",
                    self.core.addr
                );
                return None;
            }
            attempt += 1;
            // Wait out the delay, meanwhile handling control messages: acks are stale
            // by now, unsubscribes just forget the subscription, a close stops us.
            let deadline = async_io::Timer::after(delay);
            let stop = future::or(
                async {
                    deadline.await;
                    false
                },
                async {
                    loop {
                        match self.ctl_rx.recv().await {
                            Ok(Ctl::Unsub { sid }) => {
                                lock(&self.core.subs).remove(&sid);
                            }
                            Ok(Ctl::Closing) | Err(_) => return true,
                            Ok(_) => {}
                        }
                    }
                },
            )
            .await;
            if stop || self.cmd_rx.is_closed() {
                return None;
            }
            match handshake(&self.core.addr, &self.opts).await {
                Ok(c) => {
                    log::info!(
                        "agora client: reconnected to {} (attempt {attempt})",
                        self.core.addr
                    );
                    return Some(c);
                }
                Err(e) => {
                    log::warn!(
                        "agora client: reconnect to {} failed (attempt {attempt}): {e}",
                        self.core.addr
                    );
                    delay = (delay * 2).min(policy.max_delay);
                }
            }
        }
    }

    /// Runs one connection: re-subscribes, then reads and writes until it ends.
    async fn serve(&self, conn: Established, first: bool) -> End {
        let Established { stream, buf, info } = conn;
        let limits = read_limits(&self.opts, Some(&info));
        self.shared
            .server_max_payload
            .store(info.max_payload, SeqCst);
        *lock(&self.shared.info) = info;
        // The first connection is generation 1 from `connect` on; a reconnect bumps it
        // before anything is read, so a delivery's generation is always its connection's.
        let generation = if first {
            self.shared.generation.load(SeqCst)
        } else {
            self.shared.generation.fetch_add(1, SeqCst) + 1
        };
        self.confirm.set(false);
        let mut out = BytesMut::new();
        if !first {
            self.resubscribe(&mut out);
        }
        // The reader thread reports how the connection ended on `done`; closing `stop`
        // ends its wait for room in a full inbox.
        let (done_tx, done_rx) = async_channel::bounded(1);
        let (stop_tx, stop_rx) = async_channel::bounded::<()>(1);
        let reader = match stream.try_clone() {
            Ok(s) => s,
            Err(e) => return End::Lost(Error::Io(e)),
        };
        let core = self.core.clone();
        let spawned = std::thread::Builder::new()
            .name("agora-client-reader".to_owned())
            .spawn(move || {
                let end = core.read(&reader, buf, generation, &limits, &stop_rx);
                // A writer blocked on a full socket fails now instead of waiting.
                let _ = reader.shutdown(Shutdown::Both);
                let _ = done_tx.try_send(end);
            });
        if let Err(e) = spawned {
            return End::Lost(Error::Io(e));
        }
        let end = future::or(self.writer(&stream, out, generation), async {
            done_rx
                .recv()
                .await
                .unwrap_or(End::Lost(Error::Disconnected))
        })
        .await;
        let _ = stream.shutdown(Shutdown::Both);
        drop(stop_tx);
        // The shutdown ends the reader's read: wait for it, so that nothing read on
        // this connection reaches a subscription after the next connection's deliveries.
        let _ = done_rx.recv().await;
        end
    }

    /// Subscribes again, with the same sids, to everything the application still
    /// holds; a queue consumer's deliveries from the lost connection are dropped from
    /// its buffer (the broker gives them back, redelivered).
    fn resubscribe(&self, out: &mut BytesMut) {
        let subs = lock(&self.core.subs);
        for (&sid, e) in subs.iter() {
            if e.manual_ack() {
                let n = e.inbox.clear();
                if n > 0 {
                    log::debug!("agora client: dropped {n} stale deliveries of {}", e.dest);
                }
            }
            let rid = self.register(None, Some(sid));
            encode(&sub_frame(rid, sid, e), out);
        }
    }

    fn register(&self, reply: Option<Reply>, sid: Option<u64>) -> Option<u64> {
        let rid = self.next_rid.get();
        self.next_rid.set(rid + 1);
        lock(&self.core.pending).insert(rid, Pending { reply, sid });
        Some(rid)
    }

    /// Writes on the (blocking) socket from the driver's thread: a full socket holds up
    /// this thread, which has nothing else to do meanwhile.
    async fn writer(
        &self,
        mut stream: &std::net::TcpStream,
        mut out: BytesMut,
        generation: u64,
    ) -> End {
        enum Next {
            Cmd(Cmd),
            Ctl(Ctl),
            Published,
            Gone,
        }
        loop {
            if !out.is_empty() {
                if let Err(e) = stream.write_all(&out) {
                    return End::Lost(Error::Io(e));
                }
                out.clear();
                if self.closing.borrow().is_some() {
                    // Everything is written, DISCONNECT last: the broker answers what
                    // came before it, then closes; the reader sees that and ends. A broker
                    // that never closes gets the request timeout.
                    async_io::Timer::after(self.opts.request_timeout).await;
                    return End::Closed;
                }
            }
            let next = future::or(
                async { self.ctl_rx.recv().await.map_or(Next::Gone, Next::Ctl) },
                future::or(
                    async { self.cmd_rx.recv().await.map_or(Next::Gone, Next::Cmd) },
                    async {
                        self.shared.pubs.filled().await;
                        Next::Published
                    },
                ),
            )
            .await;
            match next {
                Next::Ctl(c) => self.on_ctl(c, generation, &mut out),
                Next::Cmd(c) => self.on_cmd(c, &mut out),
                Next::Published => {
                    self.take_published(&mut out);
                }
                Next::Gone => {
                    self.take_published(&mut out);
                    encode(&ClientFrame::Disconnect, &mut out);
                    let _ = stream.write_all(&out);
                    return End::Closed;
                }
            }
            // Batch: take everything else that is waiting, up to a bound.
            while out.len() < BATCH_BYTES && self.closing.borrow().is_none() {
                if let Ok(c) = self.ctl_rx.try_recv() {
                    self.on_ctl(c, generation, &mut out);
                } else if let Ok(c) = self.cmd_rx.try_recv() {
                    self.on_cmd(c, &mut out);
                } else {
                    break;
                }
            }
            if self.closing.borrow().is_none() {
                self.take_published(&mut out);
            }
        }
    }

    /// Moves the publishers' encoded fire-and-forget publishes into `out`, switching
    /// confirms off first if the last publish written was a confirmed one.
    fn take_published(&self, out: &mut BytesMut) -> bool {
        if self.confirm.get() && !self.shared.pubs.is_empty() {
            encode(
                &ClientFrame::SetAck {
                    rid: None,
                    on: false,
                },
                out,
            );
            self.confirm.set(false);
        }
        self.shared.pubs.take_into(out)
    }

    fn on_ctl(&self, c: Ctl, generation: u64, out: &mut BytesMut) {
        match c {
            Ctl::Settle {
                did,
                generation: g,
                ack,
            } => {
                if g != generation {
                    log::debug!("agora client: dropping settle of stale delivery {did}");
                } else if ack {
                    encode(&ClientFrame::Ack { rid: None, did }, out);
                } else {
                    encode(&ClientFrame::Nack { rid: None, did }, out);
                }
            }
            Ctl::Unsub { sid } => {
                if lock(&self.core.subs).remove(&sid).is_some() {
                    encode(&ClientFrame::Unsub { rid: None, sid }, out);
                }
            }
            Ctl::Pong { rid } => encode(&ClientFrame::PingResp { rid }, out),
            Ctl::Closing => {}
        }
    }

    fn on_cmd(&self, c: Cmd, out: &mut BytesMut) {
        // Publishes made before this command was queued go out before it.
        self.take_published(out);
        match c {
            Cmd::Publish {
                dest,
                headers,
                payload,
                confirm,
            } => {
                // Confirms are switched per connection, so switch them only when the
                // kind of publish changes: the broker applies SETACK in order.
                let want = confirm.is_some();
                if want != self.confirm.get() {
                    encode(
                        &ClientFrame::SetAck {
                            rid: None,
                            on: want,
                        },
                        out,
                    );
                    self.confirm.set(want);
                }
                let rid = confirm.and_then(|r| self.register(Some(r), None));
                encode_pub(rid, &dest, &headers, &payload, out);
            }
            Cmd::Subscribe { sid, entry, reply } => {
                let rid = self.register(Some(reply), Some(sid));
                encode(&sub_frame(rid, sid, &entry), out);
                lock(&self.core.subs).insert(sid, entry);
            }
            Cmd::Unsubscribe { sid, reply } => {
                let removed = lock(&self.core.subs).remove(&sid).is_some();
                if removed {
                    let rid = self.register(Some(reply), None);
                    encode(&ClientFrame::Unsub { rid, sid }, out);
                } else {
                    let _ = reply.try_send(Ok(Answer::Ok));
                }
            }
            Cmd::Ping { reply } => {
                let rid = self.register(Some(reply), None);
                encode(&ClientFrame::PingReq { rid }, out);
            }
            Cmd::Stats { reply } => {
                let rid = self.register(Some(reply), None);
                encode(&ClientFrame::Stats { rid }, out);
            }
            Cmd::Request { frame, reply } => {
                let rid = self.register(Some(reply), None);
                encode(&frame(rid), out);
            }
            Cmd::Close { reply } => {
                encode(&ClientFrame::Disconnect, out);
                *self.closing.borrow_mut() = Some(reply);
                self.core.closing.store(true, SeqCst);
            }
        }
    }
}

impl Core {
    /// The reader thread: reads the (blocking) socket until the connection ends.
    fn read(
        &self,
        mut stream: &std::net::TcpStream,
        mut buf: BytesMut,
        generation: u64,
        limits: &Limits,
        stop: &Receiver<()>,
    ) -> End {
        let mut run: Vec<Incoming> = Vec::new();
        let mut run_sid = 0;
        let mut read_size = ReadSize::default();
        loop {
            loop {
                let frame = decode_server_with(&mut buf, limits);
                // Deliveries to one subscription in a row go to it together (one lock
                // of its inbox per run), before anything else is acted on.
                if let Ok(Some(ServerFrame::Msg(m))) = frame {
                    if !run.is_empty() && (m.sid != run_sid || run.len() >= RUN_MAX) {
                        self.deliver_run(run_sid, &mut run, generation, stop);
                    }
                    run_sid = m.sid;
                    run.push(Incoming { msg: m, generation });
                    continue;
                }
                if !run.is_empty() {
                    self.deliver_run(run_sid, &mut run, generation, stop);
                }
                match frame {
                    Ok(Some(f)) => self.on_frame(f),
                    Ok(None) => break,
                    Err(e) if e.is_fatal() => return End::Lost(Error::Protocol(e)),
                    Err(e) => log::warn!("agora client: skipped a frame from the broker: {e}"),
                }
            }
            let len = buf.len();
            buf.resize(len + read_size.get(), 0);
            match stream.read(&mut buf[len..]) {
                Ok(0) => {
                    if self.closing.load(SeqCst) {
                        return End::Closed;
                    }
                    return End::Lost(Error::Io(std::io::ErrorKind::UnexpectedEof.into()));
                }
                Ok(n) => {
                    buf.truncate(len + n);
                    read_size.after_read(n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => buf.truncate(len),
                Err(e) => {
                    if self.closing.load(SeqCst) {
                        return End::Closed;
                    }
                    return End::Lost(Error::Io(e));
                }
            }
        }
    }

    fn answer(&self, rid: Option<u64>, a: Result<Answer>) -> Option<Result<Answer>> {
        let p = rid.and_then(|r| lock(&self.pending).remove(&r));
        match p {
            Some(p) => {
                if a.is_err() {
                    if let Some(sid) = p.sid {
                        lock(&self.subs).remove(&sid);
                    }
                }
                match p.reply {
                    Some(r) => {
                        let _ = r.try_send(a);
                        None
                    }
                    // A re-subscribe after reconnect: nobody waits, errors go to the
                    // error stream.
                    None => Some(a),
                }
            }
            None => Some(a),
        }
    }

    fn report(&self, e: ServerError) {
        log::warn!("agora client: broker error: {e}");
        // Drop-oldest: an application that never reads errors() keeps a bounded list.
        let _ = self.errors.force_send(e);
    }

    /// Acts on one frame other than a delivery.
    fn on_frame(&self, f: ServerFrame) {
        match f {
            ServerFrame::Ok { rid } => {
                self.answer(rid, Ok(Answer::Ok));
            }
            ServerFrame::PubAck { rid, filtered } => {
                self.answer(rid, Ok(Answer::PubAck { filtered }));
            }
            ServerFrame::StatsResp { rid, json } => {
                self.answer(rid, Ok(Answer::Body(json)));
            }
            ServerFrame::HelpResp { rid, text } => {
                self.answer(rid, Ok(Answer::Body(text)));
            }
            ServerFrame::ChainResp { rid, chain, .. } => {
                self.answer(rid, Ok(Answer::Body(chain)));
            }
            ServerFrame::PingResp { rid } => {
                self.answer(rid, Ok(Answer::Ok));
            }
            ServerFrame::Err(e) => {
                let rid = e.rid;
                let err = Error::Server {
                    code: e.code,
                    message: e.message.clone(),
                };
                if self.answer(rid, Err(err)).is_some() {
                    self.report(ServerError {
                        code: e.code,
                        message: e.message,
                        request_id: rid,
                    });
                }
            }
            ServerFrame::Cancel { sid, code, message } => {
                let dest = lock(&self.subs).remove(&sid).map(|e| e.dest.clone());
                let what = dest.map_or_else(|| format!("subscription {sid}"), |d| d.to_string());
                self.report(ServerError {
                    code,
                    message: format!("{what} cancelled: {message}"),
                    request_id: None,
                });
            }
            ServerFrame::PingReq { rid } => {
                let _ = self.ctl_tx.try_send(Ctl::Pong { rid });
            }
            ServerFrame::Shutdown { message } => {
                log::info!(
                    "agora client: broker {} is shutting down: {message}",
                    self.addr
                );
            }
            other => log::debug!("agora client: ignored {} from the broker", other.command()),
        }
    }

    /// Hands a run of deliveries to one subscription (`sid`), emptying `run`:
    ///
    /// - Topic subscription full: drop its oldest buffered messages and count them
    ///   (`Subscription::dropped`), as the broker does for a slow subscriber.
    /// - Auto-ack consumer full: wait for room. This stops the reading of this
    ///   connection, and so the broker's sending (TCP backpressure); nothing is lost.
    /// - Acking consumer full: cannot happen while the broker keeps to the prefetch
    ///   (the buffer holds `prefetch` deliveries); if it does, the delivery is NACKed so
    ///   the broker gives it to someone, never dropped.
    ///
    /// A wait for room ends early when the connection is over (`stop` closed); the run
    /// is then dropped, as everything read on a lost connection but not yet handed over.
    fn deliver_run(&self, sid: u64, run: &mut Vec<Incoming>, generation: u64, stop: &Receiver<()>) {
        let (inbox, auto_ack, acking, dropped, dest) = {
            let subs = lock(&self.subs);
            let Some(e) = subs.get(&sid) else {
                // Ended locally; the broker takes back unacked deliveries on UNSUB.
                run.clear();
                return;
            };
            if Arc::strong_count(&e.inbox) <= 1 {
                // Nobody holds the stream (a subscribe whose caller gave up waiting,
                // say): end it at the broker too.
                let _ = self.ctl_tx.try_send(Ctl::Unsub { sid });
                run.clear();
                return;
            }
            (
                e.inbox.clone(),
                e.auto_ack,
                e.prefetch.is_some(),
                e.dropped.clone(),
                e.dest.clone(),
            )
        };
        if auto_ack {
            loop {
                if let Pushed::Closed = inbox.push_all(run, false) {
                    run.clear();
                    return;
                }
                if run.is_empty() {
                    return;
                }
                future::block_on(future::or(inbox.room(), async {
                    let _ = stop.recv().await;
                }));
                if stop.is_closed() {
                    run.clear();
                    return;
                }
            }
        }
        if !acking {
            if let Pushed::Ok { dropped: k } = inbox.push_all(run, true) {
                if k > 0 {
                    let before = dropped.fetch_add(k, SeqCst);
                    // Once per power of two passed.
                    let bits = |x: u64| 64 - x.leading_zeros();
                    if bits(before) != bits(before + k) {
                        log::warn!(
                            "agora client: subscription to {dest} is not drained; {} messages dropped so far",
                            before + k
                        );
                    }
                }
            }
            run.clear();
            return;
        }
        let _ = inbox.push_all(run, false);
        for item in run.drain(..) {
            log::warn!(
                "agora client: consumer of {dest} over its prefetch; giving delivery {} back",
                item.msg.did
            );
            let _ = self.ctl_tx.try_send(Ctl::Settle {
                did: item.msg.did,
                generation,
                ack: false,
            });
        }
    }
}

fn sub_frame(rid: Option<u64>, sid: u64, e: &SubEntry) -> ClientFrame {
    ClientFrame::Sub(Subscribe {
        rid,
        dest: e.dest.clone(),
        sid,
        prefetch: e.prefetch,
        ack: e.prefetch.map(|_| {
            if e.auto_ack {
                AckMode::Auto
            } else {
                AckMode::Manual
            }
        }),
    })
}

fn fail_cmd(cmd: Cmd, e: Error) {
    match cmd {
        Cmd::Publish { confirm, .. } => {
            if let Some(r) = confirm {
                let _ = r.try_send(Err(e));
            }
        }
        Cmd::Subscribe { reply, .. }
        | Cmd::Unsubscribe { reply, .. }
        | Cmd::Ping { reply }
        | Cmd::Stats { reply }
        | Cmd::Request { reply, .. } => {
            let _ = reply.try_send(Err(e));
        }
        Cmd::Close { reply } => {
            let _ = reply.try_send(());
        }
    }
}
