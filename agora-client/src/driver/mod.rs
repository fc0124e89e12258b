//! The driver: the one task that owns the socket.
//!
//! It runs on one of the process's shared I/O threads (`pool`), or on a thread of its
//! own under `async_io::block_on` ([`Threads`](crate::Threads)), so the client needs no
//! executor from the application and works under smol, tokio-with-compat, or a plain
//! `block_on`. Application handles talk to it over two channels: `cmd` (bounded:
//! publishes and requests, so a fast publisher waits instead of growing memory) and
//! `ctl` (unbounded in type, bounded in practice: every item is tied to a delivery or a
//! subscription the application holds — acks, unsubscribes from `Drop` — or is a reply
//! to a broker `PINGREQ`).
//!
//! On the shared threads the reader is a second future of the driver's task, and the
//! socket stays in the reactor. On dedicated threads there are two threads per
//! connection, both on a plain blocking socket, so the kernel wakes each one directly
//! (no reactor thread in between: async-io has one reactor per process, and a socket
//! event could reach a client through whichever thread was polling it, one wake-up more
//! per message). A TLS connection keeps its one rustls stream on the reactor in both
//! modes, shared by the two halves (see `stream`). The driver writes:
//! it drains many commands per wake-up, encodes them into one buffer and writes it with
//! one call. The reader decodes every complete frame in its buffer before reading
//! again, matches answers to requests by request id and hands deliveries to
//! subscriptions by sid. It never waits on the application, except for an auto-ack
//! consumer's full buffer (see `deliver_run`). Neither may block on anything but the
//! socket, the channels and timers.
//!
//! Its parts: `cmd` is what the handles send the driver; `connect` makes a connection (the handshake, TLS's included, and the
//! reconnect back-off); `stream` cuts it into the two threads' halves, clear or TLS;
//! `writer` is the driver's loop, which turns commands into frames; `reader` is the
//! reader, which turns frames into answers and deliveries; `asks` keeps the requests
//! waiting for a reply, their deadlines, and the way a requester writes its own. This
//! file holds what they share and the loop over connections.

mod asks;
mod cmd;
mod connect;
mod reader;
mod resend;
mod stream;
mod woken;
mod writer;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};

use agora_protocol::bytes::{Bytes, BytesMut};
use agora_protocol::{Destination, Info};
use async_channel::{Receiver, Sender};
use futures_lite::future;

use crate::error::{Error, Result, ServerError};
use crate::events::Event;
use crate::inbox::Inbox;
use crate::lock;
use crate::options::{Options, Threads};
use crate::pubbuf::PubBuf;
use crate::tls::Connector;

pub(crate) use asks::Asker;
use asks::{Requests, Waiting};
pub(crate) use cmd::{Cmd, Ctl};
use connect::read_limits;
pub(crate) use connect::{handshake, timeout, Established};
pub(crate) use resend::{MsgIds, Resend};

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
    /// Request numbers, unique per client: request `n` is answered at
    /// `<inbox>.<n>`.
    pub next_request: AtomicU64,
    /// A connection is up (false while reconnecting, and once closed).
    pub connected: AtomicBool,
    /// Where the message ids of confirmed publishes come from (with a reconnect
    /// policy).
    pub msg_ids: MsgIds,
}

/// The subscription id of the connection's inbox, where replies to requests arrive
/// (application subscriptions count up from 1 and never reach it).
pub(crate) const INBOX_SID: u64 = u64::MAX;

/// What a request's answer carries.
#[derive(Debug)]
pub(crate) enum Answer {
    Ok,
    /// `filtered`: the destination's mutator chain dropped the message.
    PubAck {
        filtered: bool,
    },
    Body(Bytes),
    /// The reply to a request.
    Reply(agora_protocol::Delivery),
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

/// A request waiting for its answer.
struct Pending {
    reply: Option<Reply>,
    /// For a `SUB`: the subscription to forget if the broker refuses it.
    sid: Option<u64>,
    /// For a confirmed publish under a reconnect policy: what to publish again on the
    /// next connection if this one is lost before the answer.
    resend: Option<Resend>,
}

/// Why a connection ended.
enum End {
    /// The application closed the client (or dropped every handle).
    Closed,
    /// The connection failed.
    Lost(Error),
}

/// What the driver and its connection's reader share.
struct Core {
    /// The brokers to connect to, tried in turn.
    addrs: Vec<String>,
    /// Which of them the connection is (or was last) to.
    at: std::sync::atomic::AtomicUsize,
    ctl_tx: Sender<Ctl>,
    errors: Sender<ServerError>,
    events: Sender<Event>,
    subs: Mutex<HashMap<u64, SubEntry>>,
    pending: Mutex<HashMap<u64, Pending>>,
    /// Requests waiting for their reply, and when the driver's alarm is set for.
    requests: Mutex<Requests>,
    /// `close()` was called: the connection ending is not a loss.
    closing: AtomicBool,
    /// Request ids, unique per client (and so per connection): the driver's, and a
    /// requester's that writes its request itself.
    next_rid: AtomicU64,
}

impl Core {
    /// The broker the connection is (or was last) to.
    fn addr(&self) -> &str {
        &self.addrs[self.at.load(SeqCst) % self.addrs.len()]
    }

    /// Tells the application (bounded: the oldest goes when nobody reads).
    fn event(&self, e: Event) {
        let _ = self.events.force_send(e);
    }
}

pub(crate) struct Driver {
    core: Arc<Core>,
    opts: Options,
    /// TLS for each address's reconnects (`None`: clear TCP).
    tls: Vec<Option<Connector>>,
    shared: Arc<Shared>,
    cmd_rx: Receiver<Cmd>,
    ctl_rx: Receiver<Ctl>,
    /// Publisher confirms as last set on this connection (`SETACK`).
    confirm: Cell<bool>,
    /// A requester set the requests' alarm earlier ([`Ctl::Alarm`]).
    alarm_moved: Cell<bool>,
    /// The `close()` caller waiting for the connection to finish.
    closing: RefCell<Option<Sender<()>>>,
    /// The inbox subscribed on this connection (at its first request), if any.
    inbox: RefCell<Option<String>>,
    /// Confirmed publishes whose connection was lost before their answer, to publish
    /// again on the next one.
    resends: RefCell<Vec<(Reply, Resend)>>,
    /// `Client::drain`'s caller, waiting for the last consumer to go.
    drained: RefCell<Option<Reply>>,
}

impl Driver {
    pub(crate) fn new(
        (addrs, at): (Vec<String>, usize),
        opts: Options,
        tls: Vec<Option<Connector>>,
        shared: Arc<Shared>,
        cmd_rx: Receiver<Cmd>,
        (ctl_tx, ctl_rx): (Sender<Ctl>, Receiver<Ctl>),
        (errors, events): (Sender<ServerError>, Sender<Event>),
    ) -> Driver {
        Driver {
            core: Arc::new(Core {
                addrs,
                at: std::sync::atomic::AtomicUsize::new(at),
                ctl_tx,
                errors,
                events,
                subs: Mutex::new(HashMap::new()),
                pending: Mutex::new(HashMap::new()),
                requests: Mutex::new(Requests::default()),
                closing: AtomicBool::new(false),
                next_rid: AtomicU64::new(1),
            }),
            opts,
            tls,
            shared,
            cmd_rx,
            ctl_rx,
            confirm: Cell::new(false),
            alarm_moved: Cell::new(false),
            closing: RefCell::new(None),
            inbox: RefCell::new(None),
            resends: RefCell::new(Vec::new()),
            drained: RefCell::new(None),
        }
    }

    /// The requesters' way to write a request themselves.
    pub(crate) fn asker(&self) -> Asker {
        Asker(Arc::downgrade(&self.core))
    }

    /// Serves connection after connection until the client is closed or reconnecting
    /// gives up, then fails everything still waiting.
    pub(crate) async fn run(self, mut conn: Established) {
        let mut first = true;
        loop {
            self.shared.connected.store(true, SeqCst);
            let end = self.serve(conn, first).await;
            self.shared.pubs.disconnected();
            self.shared.connected.store(false, SeqCst);
            first = false;
            self.keep_resends();
            self.fail_pending(|| Error::Disconnected);
            match end {
                End::Closed => break,
                End::Lost(e) => {
                    if self.closing.borrow().is_some() {
                        break;
                    }
                    log::warn!("agora client: connection to {} lost: {e}", self.core.addr());
                    self.core.event(Event::Disconnected {
                        addr: self.core.addr().to_owned(),
                        reason: e.to_string(),
                    });
                    match self.reconnect().await {
                        Some(c) => {
                            // Its generation is the next one: `serve` bumps it first.
                            let generation = self.shared.generation.load(SeqCst) + 1;
                            self.core.event(Event::Reconnected {
                                addr: self.core.addr().to_owned(),
                                generation,
                            });
                            conn = c
                        }
                        None => break,
                    }
                }
            }
        }
        self.shared.closed.store(true, SeqCst);
        self.core.event(Event::Closed);
        let lost = self.shared.pubs.close();
        if lost > 0 {
            log::warn!(
                "agora client: {lost} bytes of publishes to {} never written: the client stopped",
                self.core.addr()
            );
        }
        self.cmd_rx.close();
        lock(&self.core.subs).clear();
        for (r, _) in self.resends.take() {
            let _ = r.try_send(Err(Error::Disconnected));
        }
        if let Some(r) = self.drained.take() {
            let _ = r.try_send(Err(Error::Closed));
        }
        self.fail_pending(|| Error::Closed);
        while let Ok(cmd) = self.cmd_rx.try_recv() {
            cmd.fail(Error::Closed);
        }
        if let Some(c) = self.closing.borrow_mut().take() {
            let _ = c.try_send(());
        }
        log::debug!("agora client: driver for {} stopped", self.core.addr());
    }

    fn fail_pending(&self, e: impl Fn() -> Error) {
        // A request's reply would come to this connection's inbox, now gone.
        let mut requests = lock(&self.core.requests);
        requests.alarm = None;
        for (_, w) in requests.waiting.drain() {
            let _ = w.reply.try_send(Err(e()));
        }
        drop(requests);
        for (_, p) in lock(&self.core.pending).drain() {
            if let Some(r) = p.reply {
                let _ = r.try_send(Err(e()));
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
        // Publishers may write a clear socket on the shared threads themselves, when
        // the driver is idle (a copy of the socket: the same one, its own descriptor).
        let direct = match &stream {
            stream::Stream::Async(s) => direct_socket(s),
            _ => None,
        };
        self.shared.pubs.connected(generation, direct);
        self.confirm.set(false);
        *self.inbox.borrow_mut() = None;
        let mut out = BytesMut::new();
        if !first {
            self.resubscribe(&mut out);
            self.write_resends(&mut out);
        }
        // Closing `stop` ends the reader's wait for room in a full inbox.
        let (stop_tx, stop_rx) = async_channel::bounded::<()>(1);
        let (mut reader, mut writer) = match stream.split() {
            Ok(halves) => halves,
            Err(e) => return End::Lost(Error::Io(e)),
        };
        let core = self.core.clone();
        let read = async move {
            let end = core
                .read(&mut reader, buf, generation, &limits, &stop_rx)
                .await;
            // A writer blocked on a full socket fails now instead of waiting.
            reader.shutdown();
            end
        };
        if self.opts.threads == Threads::Shared {
            // The reader is a future of this task, polled beside the writer (each only
            // when its own waker fired); once either ends the other is dropped, and
            // nothing more is read.
            let end = woken::or_woken(self.writer(&mut writer, out, generation), read).await;
            writer.shutdown();
            drop(stop_tx);
            return end;
        }
        // The reader thread reports how the connection ended on `done`.
        let (done_tx, done_rx) = async_channel::bounded(1);
        let spawned = std::thread::Builder::new()
            .name("agora-client-reader".to_owned())
            .spawn(move || {
                let _ = done_tx.try_send(async_io::block_on(read));
            });
        if let Err(e) = spawned {
            return End::Lost(Error::Io(e));
        }
        let end = future::or(self.writer(&mut writer, out, generation), async {
            done_rx
                .recv()
                .await
                .unwrap_or(End::Lost(Error::Disconnected))
        })
        .await;
        writer.shutdown();
        drop(stop_tx);
        // The shutdown ends the reader's read: wait for it, so that nothing read on
        // this connection reaches a subscription after the next connection's deliveries.
        let _ = done_rx.recv().await;
        end
    }

    /// Switches the connection's confirms on or off (the `SETACK` is the caller's),
    /// telling the publish buffer too.
    fn set_confirm(&self, on: bool) {
        self.confirm.set(on);
        self.shared.pubs.set_confirm(on);
    }

    fn register(&self, reply: Option<Reply>, sid: Option<u64>) -> Option<u64> {
        self.register_resend(reply, sid, None)
    }

    fn register_resend(
        &self,
        reply: Option<Reply>,
        sid: Option<u64>,
        resend: Option<Resend>,
    ) -> Option<u64> {
        let rid = self.core.next_rid.fetch_add(1, SeqCst);
        lock(&self.core.pending).insert(rid, Pending { reply, sid, resend });
        Some(rid)
    }
}

/// A second descriptor of the connection's socket, for publishers' own writes; `None`
/// (everything goes through the driver) if the system refuses one.
fn direct_socket(s: &async_net::TcpStream) -> Option<std::net::TcpStream> {
    use std::os::fd::AsFd;
    match s.as_fd().try_clone_to_owned() {
        Ok(fd) => Some(std::net::TcpStream::from(fd)),
        Err(e) => {
            log::debug!("agora client: no second descriptor for direct writes: {e}");
            None
        }
    }
}
