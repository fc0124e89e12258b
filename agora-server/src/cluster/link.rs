//! A link's two ends: the handshake over a TCP stream (either side), and the dialing
//! node's task per peer, which keeps its link up (again and again, with a back-off),
//! subscribes there to this node's interest, and publishes what comes back here.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering::*;
use std::sync::Arc;
use std::time::Duration;

use agora_protocol::bytes::{Bytes, BytesMut};
use agora_protocol::cluster::{self, Line};
use agora_protocol::{ClientFrame, Limits, ServerFrame, Subscribe};
use async_channel::Receiver;
use async_net::TcpStream;
use futures_lite::{future, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::handshake::{Acceptor, Dialer};
use super::{Cluster, Peer, HANDSHAKE_TIMEOUT};
use crate::conn::{Front, Input};
use crate::shipper::Writer;
use crate::Broker;

/// Waits between attempts to link: doubling from the first to the second.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(2));
/// Bytes of the pipe into the session that publishes what a link brings.
const PIPE: usize = 256 * 1024;
/// Chunks waiting for a link's writer (subscriptions, answers to pings, replies to
/// the peer's inboxes); a reply that finds it full is dropped and counted.
const REPLIES: usize = 1024;
/// How often a link compares its subscriptions with this node's bound queues (its
/// clients' subscriptions are followed as they change).
const RESYNC: Duration = Duration::from_secs(1);
/// The prefetch of a link's subscription to a replicated queue this node consumes from
/// its leader: the most of its deliveries on their way to, or waiting in, this node.
pub(crate) const QUEUE_PREFETCH: u32 = 256;

/// A link's halves once its handshake is done (a TCP stream's clones, or a TLS
/// stream's halves).
type ReadSide = Box<dyn AsyncRead + Unpin + Send>;
type WriteSide = Box<dyn AsyncWrite + Unpin + Send>;

/// Reads one handshake line, a byte at a time (nothing after it is taken: native
/// frames may follow).
async fn read_line(s: &mut (impl AsyncRead + Unpin)) -> Result<Line, String> {
    let mut buf = Vec::with_capacity(64);
    loop {
        let mut b = [0u8; 1];
        match s.read(&mut b).await {
            Ok(0) => return Err("the link closed during its handshake".to_owned()),
            Ok(_) => buf.push(b[0]),
            Err(e) => return Err(format!("reading the handshake: {e}")),
        }
        match cluster::decode(&buf) {
            Ok(Some((line, _))) => return Ok(line),
            Ok(None) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
}

async fn write_line(s: &mut (impl AsyncWrite + Unpin), line: &Line) -> Result<(), String> {
    s.write_all(&cluster::encode(line))
        .await
        .map_err(|e| format!("writing the handshake: {e}"))?;
    s.flush()
        .await
        .map_err(|e| format!("writing the handshake: {e}"))
}

async fn bounded<T>(f: impl std::future::Future<Output = Result<T, String>>) -> Result<T, String> {
    future::or(f, async {
        smol::Timer::after(HANDSHAKE_TIMEOUT).await;
        Err(format!("no handshake within {HANDSHAKE_TIMEOUT:?}"))
    })
    .await
}

/// The accepting side's handshake: the dialer's node id once it proved itself. A
/// refusal is told to the dialer (`ERR`) before the link is closed.
pub(super) async fn accept(
    c: &Cluster,
    s: &mut (impl AsyncRead + AsyncWrite + Unpin),
) -> Result<u64, String> {
    bounded(async {
        let mut a = Acceptor::new(c.me.clone());
        let hello = read_line(s).await?;
        let answer = match a.on_hello(hello) {
            Ok(l) => l,
            Err(why) => {
                let _ = write_line(s, &Line::Err(why.clone())).await;
                return Err(why);
            }
        };
        write_line(s, &answer).await?;
        let proof = read_line(s).await?;
        match a.on_proof(proof) {
            Ok(node) => {
                write_line(s, &Line::Welcome).await?;
                Ok(node)
            }
            Err(why) => {
                let _ = write_line(s, &Line::Err(why.clone())).await;
                Err(why)
            }
        }
    })
    .await
}

/// The dialer's half of the handshake over `s`.
async fn shake(
    c: &Cluster,
    peer: &Peer,
    s: &mut (impl AsyncRead + AsyncWrite + Unpin),
) -> Result<(), String> {
    let d = Dialer::new(c.me.clone(), peer.id);
    write_line(s, &d.hello()).await?;
    let proof = d.on_answer(read_line(s).await?)?;
    write_line(s, &proof).await?;
    Dialer::on_welcome(read_line(s).await?)
}

/// The dialing side: connects to `peer` (TLS first, when the links use it) and makes
/// the handshake; the socket and the link's two halves.
async fn dial(c: &Cluster, peer: &Peer) -> Result<(TcpStream, ReadSide, WriteSide), String> {
    bounded(async {
        let s = TcpStream::connect(peer.addr.as_str())
            .await
            .map_err(|e| format!("connecting to {}: {e}", peer.addr))?;
        let _ = s.set_nodelay(true);
        match &c.tls {
            None => {
                shake(c, peer, &mut s.clone()).await?;
                let (r, w): (ReadSide, WriteSide) = (Box::new(s.clone()), Box::new(s.clone()));
                Ok((s, r, w))
            }
            Some(t) => {
                let name = super::tls::server_name(&peer.addr)?;
                let mut tls = t
                    .connector
                    .connect(name, s.clone())
                    .await
                    .map_err(|e| format!("TLS to {}: {e}", peer.addr))?;
                shake(c, peer, &mut tls).await?;
                let (r, w) = futures_lite::io::split(tls);
                let (r, w): (ReadSide, WriteSide) = (Box::new(r), Box::new(w));
                Ok((s, r, w))
            }
        }
    })
    .await
}

/// Starts this node's link to every other node; they end when `stop` closes.
pub(crate) fn dial_all(broker: &Arc<Broker>, stop: &Receiver<()>) {
    let Some(c) = broker.cluster.clone() else {
        return;
    };
    for i in 0..c.peers.len() {
        let (b, c, stop) = (broker.clone(), c.clone(), stop.clone());
        broker
            .rt
            .spawn(async move {
                let stopped = stop.clone();
                future::or(keep_linked(&b, &c, i, stop), async {
                    let _ = stopped.recv().await;
                })
                .await;
                c.peers[i].mark_out(false);
            })
            .detach();
    }
}

/// Links to peer `i` again whenever the link ends or cannot be made.
async fn keep_linked(b: &Broker, c: &Cluster, i: usize, stop: Receiver<()>) {
    let peer = &c.peers[i];
    let mut wait = BACKOFF.0;
    let mut failures = 0u64;
    loop {
        match dial(c, peer).await {
            Ok(linked) => {
                wait = BACKOFF.0;
                failures = 0;
                peer.connects.fetch_add(1, Relaxed);
                peer.mark_out(true);
                log::info!("cluster: linked to node {} at {}", peer.id, peer.addr);
                let why = serve(b, c, peer, linked, stop.clone()).await;
                peer.mark_out(false);
                log::warn!("cluster: link to node {} ended: {why}", peer.id);
                peer.set_error(why);
            }
            Err(why) => {
                failures += 1;
                // Every failure is kept for STATS; the log has the first and then
                // one in a hundred (a node that is down is tried every 2 s).
                if failures == 1 || failures.is_multiple_of(100) {
                    log::warn!(
                        "cluster: cannot link to node {} ({failures} attempts): {why}",
                        peer.id
                    );
                }
                peer.set_error(why);
            }
        }
        smol::Timer::after(wait).await;
        wait = (wait * 2).min(BACKOFF.1);
    }
}

/// Serves one link until it ends; returns why it ended.
async fn serve(
    b: &Broker,
    c: &Cluster,
    peer: &Peer,
    (stream, reader, writer): (TcpStream, ReadSide, WriteSide),
    stop: Receiver<()>,
) -> String {
    // The session that publishes here what the link brings.
    let (session_in, to_session) = piper::pipe(PIPE);
    let (from_session, session_out) = piper::pipe(PIPE);
    let addr = stream
        .peer_addr()
        .unwrap_or_else(|_| std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    let session = crate::conn::serve_client(
        b,
        Input::Pipe(session_in, Some(c.user.clone()), Front::Link),
        Writer::Pipe(session_out),
        addr,
        stop,
    );
    // What goes to the session (publishes, answers to its pings), and to the peer
    // (subscriptions, answers to its pings).
    let (to_local, local_rx) = async_channel::bounded::<Bytes>(16);
    let (to_remote, remote_rx) = async_channel::bounded::<Bytes>(REPLIES);
    *peer.out.lock().unwrap_or_else(|e| e.into_inner()) = Some(to_remote.clone());
    // Subscriptions on the peer, by pattern; a cancelled one is forgotten (and made
    // again at the next comparison).
    let subs = std::sync::Mutex::new(BTreeMap::<String, u64>::new());
    let limits = Limits {
        max_line: b.config.max_line,
        max_payload: b.config.max_payload,
    };
    let work = async {
        let why = future::or(
            future::or(
                read_remote(b, peer, reader, &limits, &to_local, &to_remote, &subs),
                write_all(writer, remote_rx, "the peer"),
            ),
            future::or(
                follow_interest(b, c, peer, &to_remote, &subs),
                future::or(
                    write_all(to_session, local_rx, "this node's link session"),
                    read_session(from_session, &to_local),
                ),
            ),
        )
        .await;
        let _ = stream.shutdown(std::net::Shutdown::Both);
        why
    };
    // Dropping `work`'s futures closes the session's pipe: it ends too.
    let epoch = peer.connects.load(SeqCst);
    let why = future::zip(session, work).await.1;
    *peer.out.lock().unwrap_or_else(|e| e.into_inner()) = None;
    // What the peer delivered on it for this node's consumers went back with it.
    if let Some(g) = &b.replicated {
        g.link_ended(peer.id, epoch);
    }
    why
}

/// The most bytes of queued chunks [`write_all`] gathers into one write (one chunk
/// more when the last is larger).
const WRITE_BATCH: usize = 256 << 10;

/// Writes each chunk from `rx` to `w`, what queued meanwhile with it.
async fn write_all(
    mut w: impl futures_lite::AsyncWrite + Unpin,
    rx: async_channel::Receiver<Bytes>,
    what: &str,
) -> String {
    let mut batch = Vec::new();
    while let Ok(chunk) = rx.recv().await {
        // What queued meanwhile goes in the same write (up to `WRITE_BATCH` bytes): a
        // member's answers released by one sync, say, in one system call, not one each.
        let mut more = rx.try_recv().ok();
        let bytes: &[u8] = match more {
            None => &chunk,
            Some(_) => {
                batch.clear();
                batch.extend_from_slice(&chunk);
                while let Some(c) = more.take() {
                    batch.extend_from_slice(&c);
                    if batch.len() < WRITE_BATCH {
                        more = rx.try_recv().ok();
                    }
                }
                &batch
            }
        };
        // Flushed each time: a TLS stream holds what it was given until then.
        if let Err(e) = w.write_all(bytes).await.and(w.flush().await) {
            return format!("writing to {what}: {e}");
        }
        if batch.capacity() > 4 * WRITE_BATCH {
            batch = Vec::new();
        }
    }
    format!("{what}'s queue closed")
}

fn encode(f: &ClientFrame) -> Bytes {
    let mut b = BytesMut::new();
    agora_protocol::encode(f, &mut b);
    b.freeze()
}

/// Reads the peer's frames: deliveries of topics become publishes into this node's
/// link session (each read's worth in one write), deliveries of a replicated queue go
/// to its task here (for this node's consumers), pings are answered.
async fn read_remote(
    b: &Broker,
    peer: &Peer,
    mut s: ReadSide,
    limits: &Limits,
    to_local: &async_channel::Sender<Bytes>,
    to_remote: &async_channel::Sender<Bytes>,
    subs: &std::sync::Mutex<BTreeMap<String, u64>>,
) -> String {
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut chunk = vec![0u8; 64 * 1024];
    let epoch = peer.connects.load(SeqCst);
    loop {
        let n = match s.read(&mut chunk).await {
            Ok(0) => return "the peer closed the link".to_owned(),
            Ok(n) => n,
            Err(e) => return format!("reading from the peer: {e}"),
        };
        buf.extend_from_slice(&chunk[..n]);
        let mut publishes = BytesMut::new();
        loop {
            match agora_protocol::decode_server_with(&mut buf, limits) {
                Ok(Some(ServerFrame::Msg(m))) if m.dest.kind == agora_protocol::Kind::Queue => {
                    peer.messages_in.fetch_add(1, Relaxed);
                    let mut headers = m.headers;
                    let term = headers
                        .get(crate::replicated::TERM_HEADER)
                        .and_then(|t| t.parse().ok())
                        .unwrap_or(0);
                    headers.remove(crate::replicated::TERM_HEADER);
                    let r = crate::replicated::Remote {
                        from: peer.id,
                        epoch,
                        did: m.did,
                        count: m.count,
                        term,
                        headers,
                        payload: m.payload,
                    };
                    let taken = match &b.replicated {
                        Some(g) => g.remote(m.dest.name.as_str(), r).await,
                        None => false,
                    };
                    if !taken {
                        // No consumer of it here any more: back to the leader.
                        let nack = encode(&ClientFrame::Nack {
                            rid: None,
                            did: m.did,
                            how: agora_protocol::Nack::Requeue,
                        });
                        if to_remote.send(nack).await.is_err() {
                            return "the link's writer ended".to_owned();
                        }
                    }
                }
                Ok(Some(ServerFrame::Msg(m))) => {
                    peer.messages_in.fetch_add(1, Relaxed);
                    agora_protocol::encode_pub(
                        None,
                        &m.dest,
                        &m.headers,
                        &m.payload,
                        &mut publishes,
                    );
                }
                Ok(Some(ServerFrame::PingReq { rid })) => {
                    let pong = encode(&ClientFrame::PingResp { rid });
                    if to_remote.send(pong).await.is_err() {
                        return "the link's writer ended".to_owned();
                    }
                }
                Ok(Some(ServerFrame::Cancel { sid, code, message })) => {
                    log::warn!(
                        "cluster: node {} cancelled this node's subscription {sid} ({code}: {message}); subscribing again",
                        peer.id
                    );
                    let mut s = subs.lock().unwrap_or_else(|e| e.into_inner());
                    s.retain(|_, v| *v != sid);
                }
                Ok(Some(ServerFrame::Err(e))) => {
                    log::warn!(
                        "cluster: node {} answered {}: {}",
                        peer.id,
                        e.code,
                        e.message
                    )
                }
                Ok(Some(ServerFrame::Shutdown { .. })) => {
                    return format!("node {} is shutting down", peer.id)
                }
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) => return format!("node {} sent a malformed frame: {e}", peer.id),
            }
        }
        if !publishes.is_empty() && to_local.send(publishes.freeze()).await.is_err() {
            return "this node's link session ended".to_owned();
        }
    }
}

/// Reads what the link session answers: errors are logged, pings answered.
async fn read_session(mut r: piper::Reader, to_local: &async_channel::Sender<Bytes>) -> String {
    let mut buf = BytesMut::with_capacity(4096);
    let mut chunk = vec![0u8; 4096];
    loop {
        let n = match r.read(&mut chunk).await {
            Ok(0) | Err(_) => return "this node's link session ended".to_owned(),
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        loop {
            match agora_protocol::decode_server(&mut buf) {
                Ok(Some(ServerFrame::PingReq { rid })) => {
                    let _ = to_local.send(encode(&ClientFrame::PingResp { rid })).await;
                }
                Ok(Some(ServerFrame::Err(e))) => log::warn!(
                    "cluster: a message from another node was refused here ({}: {})",
                    e.code,
                    e.message
                ),
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) => return format!("this node's link session sent a malformed frame: {e}"),
            }
        }
    }
}

/// Keeps the link's subscriptions on the peer equal to this node's interest: its
/// clients' topic subscriptions (followed as they change), the replicated queues its
/// clients consume that the peer leads (followed as they change), and the patterns its
/// queues are bound to (compared every [`RESYNC`]).
async fn follow_interest(
    b: &Broker,
    c: &Cluster,
    peer: &Peer,
    to_remote: &async_channel::Sender<Bytes>,
    subs: &std::sync::Mutex<BTreeMap<String, u64>>,
) -> String {
    let mut next_sid = 1u64;
    loop {
        let listener = c.interest.listen();
        let consumed = b.replicated.as_ref().map(|g| g.listen());
        let (_, mut wanted) = c.interest.patterns();
        wanted.extend(b.wild.all_bound_patterns());
        if let Some(g) = &b.replicated {
            wanted.extend(g.consumed_from(peer.id));
        }
        let mut frames = BytesMut::new();
        {
            let mut s = subs.lock().unwrap_or_else(|e| e.into_inner());
            s.retain(|pattern, sid| {
                let keep = wanted.contains(pattern);
                if !keep {
                    agora_protocol::encode(
                        &ClientFrame::Unsub {
                            rid: None,
                            sid: *sid,
                        },
                        &mut frames,
                    );
                }
                keep
            });
            for pattern in wanted {
                if s.contains_key(&pattern) {
                    continue;
                }
                let sid = next_sid;
                let sub = if let Some(q) = pattern.strip_prefix("queue:") {
                    let Ok(dest) = agora_protocol::Destination::queue(q) else {
                        continue;
                    };
                    Subscribe {
                        rid: None,
                        dest,
                        sid,
                        prefetch: Some(QUEUE_PREFETCH),
                        ack: Some(agora_protocol::AckMode::Manual),
                    }
                } else {
                    let Some(dest) = crate::interest::topic(&pattern) else {
                        continue;
                    };
                    Subscribe {
                        rid: None,
                        dest,
                        sid,
                        prefetch: None,
                        ack: None,
                    }
                };
                next_sid += 1;
                let sub = ClientFrame::Sub(sub);
                agora_protocol::encode(&sub, &mut frames);
                s.insert(pattern, sid);
            }
        }
        if !frames.is_empty() && to_remote.send(frames.freeze()).await.is_err() {
            return "the link's writer ended".to_owned();
        }
        future::or(
            future::or(
                async {
                    listener.await;
                },
                async {
                    match consumed {
                        Some(l) => l.await,
                        None => future::pending().await,
                    }
                },
            ),
            async {
                smol::Timer::after(RESYNC).await;
            },
        )
        .await;
    }
}
