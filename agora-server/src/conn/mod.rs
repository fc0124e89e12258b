//! The connection manager: the accept loop and one task per client.
//!
//! The accept loop does the minimum (count, spawn) and never waits on a client; when
//! `accept` fails (out of file descriptors, say) it backs off instead of spinning. A
//! client beyond [`Config::max_connections`](crate::Config::max_connections) is answered
//! `ERR too_many_connections` and closed. Each client's task reads into one buffer,
//! decodes every complete frame in it before reading again, and acts on each: publishes
//! go straight into the destination, control goes to the queue manager once per name.
//! Everything sent to the client goes through the connection's shipper.

mod accept;
mod admin;
mod auth;
mod bound;
mod input;
mod publish;
mod raft;
mod read;
mod resolve;
mod stored;
mod subscribe;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::*};
use std::sync::Arc;
use std::time::Instant;

use agora_protocol::bytes::{Bytes, BytesMut};
use agora_protocol::{
    decode_client_with, decode_pub_to, reply, ClientFrame, Destination, ErrorCode, Headers, Info,
    Kind, Limits, Publish, ReadSize, RequestId, ServerFrame, StatsPage, Subscribe,
    PROTOCOL_VERSION,
};
use async_channel::Receiver;
use async_net::{TcpListener, TcpStream};
use futures_lite::{future, AsyncReadExt, AsyncWriteExt};

pub(crate) use input::{Front, Input};

use crate::ask::ask;
use crate::manager::{Handle, ManagerCmd};
use crate::mutators::{Chain, Verdict};
use crate::queue::{Consumer, QueueCmd, QueueShared, Refused};
use crate::session::{
    Access, Ask, Effects, End, Limits as SessionLimits, PubMode, Refusal, Session, Step, SubHandle,
    SubPlan,
};
use crate::shipper::{self, Message, Outbound, Outbox, SubRx, Writer};
use crate::topic::{Subscriber, Topic, TopicRefused};
use crate::Broker;

pub(crate) use accept::{accept_each, accept_loop};

/// Destinations a connection remembers handles for; past this the cache starts over.
const HANDLE_CACHE: usize = 1024;

/// How long a closing connection may take to flush before it is dropped.
const FLUSH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// A subscription as its connection knows it.
enum Sub {
    Topic {
        topic: Arc<Topic>,
        sub: Arc<Subscriber>,
    },
    /// A wildcard topic subscription (in the broker's index).
    Wild {
        pattern: crate::auth::Pattern,
        sub: Arc<Subscriber>,
    },
    Queue {
        queue: Arc<QueueShared>,
        cid: u64,
        /// The delivery channel, to see whether the queue ended the subscription.
        tx: crate::deliveries::DeliveryTx,
        /// The broker's auto-ack mode: the queue forgets a delivery once written.
        auto_ack: bool,
    },
}

impl SubHandle for Sub {
    /// True once the broker ended it (`CANCEL`): its id may be used again.
    fn ended(&self) -> bool {
        match self {
            Sub::Topic { sub, .. } | Sub::Wild { sub, .. } => sub.tx.is_closed(),
            Sub::Queue { tx, .. } => tx.is_closed(),
        }
    }
}

/// What ended a wait for the client's next bytes.
enum Event {
    Read(std::io::Result<usize>),
    Stop,
    Silent,
    /// `--auth-timeout` passed and the client has not authenticated.
    AuthTimeout,
    /// The oldest confirmed publish waiting for the log heard (the outcome).
    Stored(Result<crate::store::Outcome, async_channel::RecvError>),
}

/// What acting on a frame gives: carry on, or end the connection, and why.
pub(super) type Flow = Result<(), End>;

/// Why a request was not carried out.
pub(super) enum Denied {
    /// Refused, with the code and message the client gets in an `ERR`.
    Refused(ErrorCode, String),
    /// The broker is stopping: the connection ends without an answer.
    Stopping,
}

struct Conn<'a> {
    broker: &'a Broker,
    peer: SocketAddr,
    outbox: Outbox,
    limits: Limits,
    /// The connection's state and rules: confirms, name, subscriptions, liveness.
    session: Session<Sub>,
    /// Handles of destinations this client used, so a publish needs no manager trip.
    handles: HashMap<Destination, Handle>,
    /// The last destination used and its handle: a run of publishes to one name skips
    /// even the hash lookup.
    last: Option<(Destination, Handle)>,
    /// When the bytes being decoded were read: every message of one read shares it
    /// (one clock read per read, not per message).
    read_at: std::time::Instant,
    /// Fire-and-forget publishes to one destination decoded in a row, held back until
    /// the run ends (the session says when: another frame, the end of the bytes read,
    /// or 512 of them; or another destination)
    /// and then handed over together: fanned out at once to a
    /// topic's subscribers (`Topic::publish_all`), or sent to a queue's task as one
    /// command (their room in the queue is reserved as each is read).
    run: Option<Run>,
    /// The last run's vector, kept for the next one.
    spare: Vec<Message>,
    /// Bytes of a partly received frame charged to the read budget.
    read_held: usize,
    /// Who this connection is to the read budget (unique in the broker).
    read_id: u64,
    /// Confirmed publishes to durable queues whose records are not yet stored, in
    /// order: each `PUBACK` (or `ERR`) is sent once its record is where `--fsync` says,
    /// and before any later answer. The connection goes on reading meanwhile (TCP: the
    /// read loop also waits for the oldest of them), so the publishes of the next read
    /// go into the next sync while this one runs.
    unstored: std::sync::Mutex<std::collections::VecDeque<stored::Unstored>>,
    /// With users configured, until the client has authenticated: when it is closed
    /// for not having (`--auth-timeout` after it connected).
    auth_deadline: Option<Instant>,
    /// What the broker's connection registry shows of it.
    info: Arc<crate::conns::ConnInfo>,
    /// A cluster link (`crate::cluster`): its subscriptions are another node's
    /// interest, its publishes came from another node (no chain runs again, no link
    /// gets them).
    link: bool,
}

/// A run of fire-and-forget publishes held back (see `Conn::run`).
struct Run {
    /// The destination as the client named it, so that the next publish to it joins
    /// the run without a lookup.
    dest: Destination,
    handle: Handle,
    msgs: Vec<Message>,
}

/// Starts a client's task, TCP or UDP alike: it serves the client, then gives back its
/// place under the connection cap (counted by the front door that took it) and its
/// share of `alive`, which graceful shutdown waits on.
pub(crate) fn spawn_client(
    broker: &Arc<Broker>,
    input: Input,
    writer: Writer,
    peer: SocketAddr,
    stop: &Receiver<()>,
    alive: &async_channel::Sender<()>,
) {
    let (b, stop, alive) = (broker.clone(), stop.clone(), alive.clone());
    broker
        .rt
        .spawn(async move {
            let count = match input {
                Input::Tcp(_)
                | Input::Tls(..)
                | Input::Pipe(..)
                | Input::Link(..)
                | Input::LinkTls(..) => &b.clients_tcp,
                Input::Udp { .. } => &b.clients_udp,
            };
            serve_client(&b, input, writer, peer, stop).await;
            count.fetch_sub(1, SeqCst);
            drop(alive);
        })
        .detach();
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
    if let Input::Tcp(stream) | Input::Link(stream, _) = &input {
        let _ = stream.set_nodelay(true);
    }
    log::debug!("client {peer} connected");
    let (outbox, out_rx) = Outbox::new(
        broker.config.reply_buffer,
        broker.config.max_output,
        broker.metrics.clone(),
    );
    let batch = match broker.config.ablation.no_batching {
        true => 1,
        false => shipper::BATCH_BYTES,
    };
    let protocol = match &input {
        Input::Tcp(_) => "tcp",
        Input::Tls(..) => "tls",
        Input::Pipe(_, _, Front::Mqtt) => "mqtt",
        Input::Pipe(_, _, Front::WebSocket) => "ws",
        Input::Pipe(_, _, Front::Http) => "http",
        Input::Pipe(_, _, Front::Link) | Input::Link(..) | Input::LinkTls(..) => "cluster",
        Input::Udp { .. } => "udp",
    };
    let listed = Arc::new(crate::conns::ConnInfo::new(broker.id(), peer, protocol));
    if let Input::Tls(_, Some(u))
    | Input::Pipe(_, Some(u), _)
    | Input::Link(_, u)
    | Input::LinkTls(_, u) = &input
    {
        listed.set_who(None, Some(&u.name));
    }
    broker.conns.add(listed.clone());
    let shipper = broker.rt.spawn(shipper::run(
        writer,
        out_rx,
        broker.metrics.clone(),
        listed.clone(),
        batch,
        broker.config.write_timeout,
    ));
    let mut c = Conn {
        broker,
        peer,
        outbox: outbox.clone(),
        limits: Limits {
            max_line: broker.config.max_line,
            // A link carries Raft appends: up to MAX_APPEND bytes of entries and one
            // more entry, the largest message with its headers.
            max_payload: match input {
                Input::Link(..) | Input::LinkTls(..) | Input::Pipe(_, _, Front::Link) => {
                    broker.config.max_payload
                        + broker.config.max_line
                        + crate::replicated::replica::MAX_APPEND
                        + 4096
                }
                _ => broker.config.max_payload,
            },
        },
        session: {
            let s = Session::new(SessionLimits::of(&broker.config), Instant::now());
            // Over TCP a connection has an inbox for replies; a UDP source does not.
            let s = match &input {
                Input::Udp { .. } => s,
                _ => s.with_inbox(resolve::new_inbox(broker.config.node_id)),
            };
            let s = match &input {
                Input::Pipe(_, _, Front::Mqtt) => s.for_mqtt(),
                Input::Pipe(_, _, Front::Link) | Input::Link(..) | Input::LinkTls(..) => {
                    s.for_link()
                }
                _ => s,
            };
            let users = &broker.config.users;
            match &input {
                Input::Link(_, user)
                | Input::LinkTls(_, user)
                | Input::Pipe(_, Some(user), Front::Link) => {
                    s.with_access(Access::User(user.clone()))
                }
                _ if users.is_empty() => match &input {
                    Input::Udp { .. } => s.over_udp(broker.udp_token(peer)),
                    _ => s,
                },
                Input::Tcp(_) | Input::Tls(_, None) | Input::Pipe(_, None, _) => {
                    s.with_access(Access::Pending)
                }
                Input::Tls(_, Some(user)) | Input::Pipe(_, Some(user), _) => {
                    log::info!(
                        "client {peer} authenticated as {} by its certificate",
                        user.name
                    );
                    s.with_access(Access::User(user.clone()))
                }
                Input::Udp { .. } => {
                    s.over_udp(broker.udp_token(peer))
                        .with_access(Access::Anonymous(
                            broker.config.udp_anonymous_publish.clone().into(),
                        ))
                }
            }
        },
        auth_deadline: None,
        handles: HashMap::new(),
        last: None,
        read_at: std::time::Instant::now(),
        run: None,
        spare: Vec::new(),
        read_held: 0,
        read_id: broker.id(),
        unstored: Default::default(),
        info: listed.clone(),
        link: matches!(
            input,
            Input::Link(..) | Input::LinkTls(..) | Input::Pipe(_, _, Front::Link)
        ),
    };
    let info = ServerFrame::Info(Info {
        server: broker.config.server_name.clone(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        proto: PROTOCOL_VERSION,
        max_payload: broker.config.max_payload as u64,
        max_line: broker.config.max_line as u64,
        auth_required: !broker.config.users.is_empty(),
        tls_required: matches!(input, Input::Tls(..)),
        inbox: c.session.inbox().map(str::to_owned),
    });
    if matches!(c.session.access(), Access::Pending) {
        c.auth_deadline = Some(Instant::now() + broker.config.auth_timeout);
    }
    // A UDP source is sent nothing it did not ask for until it has proved it receives
    // (its address may be forged): no greeting.
    let greeted = match input {
        Input::Tcp(_) | Input::Tls(..) | Input::Pipe(..) | Input::Link(..) | Input::LinkTls(..) => {
            outbox.frame(&info).await
        }
        Input::Udp { .. } => true,
    };
    let end = match greeted {
        true => match input {
            Input::Tcp(stream) | Input::Link(stream, _) => c.read_loop(stream, &stop).await,
            Input::Tls(stream, _) | Input::LinkTls(stream, _) => c.read_loop(stream, &stop).await,
            Input::Pipe(stream, ..) => c.read_loop(stream, &stop).await,
            Input::Udp { datagrams, source } => c.datagram_loop(datagrams, source, &stop).await,
        },
        false => End::Gone,
    };
    c.teardown().await;
    broker.conns.remove(listed.id);
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
        "client {peer}{} disconnected ({})",
        c.session
            .name
            .as_deref()
            .map(|n| format!(" ({n})"))
            .unwrap_or_default(),
        end.reason()
    );
}

impl Conn<'_> {
    /// Acts on one frame: carries out what the session says must happen.
    pub(super) async fn handle(&mut self, f: ClientFrame) -> Flow {
        // The hot path: the session's publish rule, without moving the message through
        // a `Step` (what `on_frame` would return for it, exactly).
        let f = match f {
            ClientFrame::Pub(p)
                if self.link && p.dest.name.as_str() == crate::replicated::RAFT_TOPIC =>
            {
                return self.raft_in(p.payload).await;
            }
            ClientFrame::Pub(p) => {
                return match self.session.publish_rule(&p.dest, &p.headers) {
                    Ok((end_run, mode)) => {
                        if end_run {
                            self.end_run().await?;
                        }
                        self.publish(p, mode).await
                    }
                    Err((end_run, r)) => {
                        if end_run {
                            self.end_run().await?;
                        }
                        self.refused(p.rid, r).await
                    }
                };
            }
            f => f,
        };
        let shown = matches!(
            f,
            ClientFrame::Connect(_) | ClientFrame::Sub(_) | ClientFrame::Unsub { .. }
        );
        let Effects { end_run, step } = self.session.on_frame(f);
        if end_run {
            // A held-back run of publishes goes out before anything else is acted on.
            self.end_run().await?;
        }
        if shown {
            // Before the reply goes out: a client that reads its OK and then lists the
            // connections sees what it just did (a SUB is shown again once added).
            self.show();
        }
        self.carry_out(step).await
    }

    /// Updates what the registry shows of this connection: its name, user and
    /// number of subscriptions.
    pub(super) fn show(&self) {
        let user = self.session.access().user().map(|u| u.name.clone());
        self.info
            .set_who(self.session.name.as_deref(), user.as_deref());
        self.info
            .subscriptions
            .store(self.session.subscriptions(), Relaxed);
    }

    async fn carry_out(&mut self, step: Step<Sub>) -> Flow {
        match step {
            Step::Nothing => Ok(()),
            Step::Reply(frame) => self.reply(&frame).await,
            Step::Refuse(rid, r) => self.refused(rid, r).await,
            Step::Publish { publish, mode } => self.publish(publish, mode).await,
            Step::Subscribe {
                request,
                plan,
                released,
            } => self.subscribe(request, plan, released).await,
            Step::Unsubscribe { rid, sid, sub } => {
                self.unsubscribe(sid, sub).await;
                self.reply(&ServerFrame::Ok { rid }).await
            }
            Step::Hold { rid, sid, on } => {
                self.hold_sub(sid, on).await;
                self.reply(&ServerFrame::Ok { rid }).await
            }
            Step::Settle {
                rid,
                sid,
                did,
                ack,
                how,
            } => self.ack(rid, sid, did, ack, how).await,
            Step::Ask(ask) => match ask {
                Ask::Stats { rid, page, only } => self.stats(rid, page, only).await,
                Ask::Purge { rid, dest } => self.purge(rid, dest).await,
                Ask::Delete { rid, dest } => self.delete(rid, dest).await,
                Ask::Bind {
                    rid,
                    queue,
                    topic,
                    on,
                } => self.bind(rid, queue, topic, on).await,
                Ask::ChainGet { rid, dest } => self.chain_get(rid, dest).await,
                Ask::ChainSet { rid, dest, chain } => self.chain_set(rid, dest, chain).await,
            },
            Step::Authenticate(c) => self.authenticate(c).await,
            Step::End(end) => Err(end),
        }
    }

    /// Answers a refused request, or ends the connection when the broker is stopping.
    pub(super) async fn refuse(&self, rid: RequestId, r: Denied) -> Flow {
        match r {
            Denied::Refused(code, why) => self.error(rid, code, &why).await,
            Denied::Stopping => Err(End::Stopping),
        }
    }

    /// Answers a request the session's rules refused.
    pub(super) async fn refused(&self, rid: RequestId, r: Refusal) -> Flow {
        self.error(rid, r.code, &r.message).await
    }

    /// Sends a reply; the connection ends if the client can no longer be written to.
    pub(super) async fn reply(&self, f: &ServerFrame) -> Flow {
        self.settle_stored().await?;
        match self.outbox.frame(f).await {
            true => Ok(()),
            false => Err(End::Gone),
        }
    }

    /// Sends `ERR <code> <message>`; as [`reply`](Conn::reply).
    pub(super) async fn error(&self, rid: RequestId, code: ErrorCode, message: &str) -> Flow {
        self.settle_stored().await?;
        match self.outbox.err(rid, code, message).await {
            true => Ok(()),
            false => Err(End::Gone),
        }
    }

    /// Gives back everything this connection held.
    pub(super) async fn teardown(&mut self) {
        self.broker
            .read_budget
            .set(&mut self.read_held, 0, self.read_id);
        // Publishes read before the client left are delivered all the same.
        let _ = self.end_run().await;
        // An auto-ack consumer's queue must hear of the end from the shipper, after its
        // last write report, as for an UNSUB. (Told here directly, the queue gave
        // deliveries the shipper was writing at that moment to another consumer too:
        // the lean bench client's queue-4 runs saw 2–5 duplicates in about one run in
        // five.) The others end here, and what their shippers hold is still written
        // before the connection closes.
        for (sid, s) in self.session.drain() {
            match s {
                s @ Sub::Queue { auto_ack: true, .. } => self.unsubscribe(sid, s).await,
                s => self.drop_sub(s).await,
            }
        }
    }
}
