//! `request-reply`: one responder answers requests from 1 requester in a loop (the
//! latency) or from 16 at once (requests per second), each requester with one request
//! outstanding on a connection of its own, as NATS's and Agora's request APIs do.
//!
//! The lean rows speak each broker's protocol on blocking sockets, buffered as the
//! other lean drivers are, for requesters and responder alike:
//! - nats-server: the requester subscribes to `_INBOX.<id>.*` and publishes
//!   `PUB <subject> _INBOX.<id>.<n> <size>`; the responder answers `PUB <reply> <size>`.
//! - Agora: the requester subscribes to the inbox its `INFO` names and publishes `HPUB`
//!   with `agora-reply-to: topic:<inbox>.<n>`; the responder answers `PUB` to it.
//!
//! The `agora` row does the same through the SDK (`Client::request`, `Message::respond`),
//! a client per requester: what an application sees.

use std::net::Shutdown;

use agora_protocol::{decode_server, encode_pub, Destination, Headers, ServerFrame};
use bytes::Bytes;

use super::*;
use crate::drivers::lean::{crlf, Deadline, Socket};

/// How long a requester waits for one reply before the run fails.
const REPLY_WAIT: Duration = Duration::from_secs(5);

/// Runs the scenario on `server` with `requesters` requesters for `duration`.
pub(super) fn run(
    server: &ServerView,
    payload: usize,
    duration: Duration,
    requesters: usize,
    name: &str,
) -> Result<Measured> {
    let proto = match server.system {
        System::AgoraLean => Proto::Agora,
        System::NatsLean => Proto::Nats,
        System::Agora | System::AgoraDedicated => {
            return sdk(server, payload, duration, requesters, name)
        }
        s => return Err(format!("{} has no request-reply run", s.name())),
    };
    let stop = AtomicBool::new(false);
    let subject = format!("{name}.svc");
    std::thread::scope(|scope| -> Result<Measured> {
        let mut responder = Lean::connect(proto, &server.addr)?;
        responder.subscribe(&subject, 1)?;
        let stop = &stop;
        let answering = scope.spawn(move || responder.respond_until(stop));
        let mut clients = Vec::new();
        for i in 0..requesters {
            let mut c = Lean::connect(proto, &server.addr)?;
            let inbox = c.inbox(i)?;
            c.subscribe(&format!("{inbox}{}", proto.inbox_sub()), 2)?;
            clients.push((c, inbox));
        }
        // A few requests each before the clock starts: connections, caches.
        for (c, inbox) in &mut clients {
            for n in 0..20 {
                c.ask(&subject, inbox, n, payload)?;
            }
        }
        let cpu0 = server.cpu();
        let ccpu0 = client_cpu();
        let t0 = Instant::now();
        let asking: Vec<_> = clients
            .into_iter()
            .map(|(mut c, inbox)| {
                let subject = &subject;
                scope.spawn(move || -> Result<(u64, Histogram<u64>)> {
                    let mut hist = wire::histogram();
                    let mut n = 1_000;
                    while t0.elapsed() < duration {
                        let t = Instant::now();
                        c.ask(subject, &inbox, n, payload)?;
                        let _ = hist.record((t.elapsed().as_nanos() as u64).max(1));
                        n += 1;
                    }
                    c.s.close(Shutdown::Both)?;
                    Ok((n - 1_000, hist))
                })
            })
            .collect();
        finish(server, t0, (cpu0, ccpu0), asking, stop, answering)
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Proto {
    Agora,
    Nats,
}

impl Proto {
    /// What a requester subscribes to under its inbox: NATS's replies come to
    /// `<inbox>.<n>` subjects, which `.*` covers; Agora's inbox takes every
    /// `<inbox>.<n>` itself.
    fn inbox_sub(self) -> &'static str {
        match self {
            Proto::Agora => "",
            Proto::Nats => ".*",
        }
    }
}

/// A message as the scenario needs it: where it was published (a reply's number is
/// its last token), where to answer it, and its payload.
struct Got {
    subject: String,
    reply_to: Option<String>,
    payload: Bytes,
}

/// A lean connection of either protocol.
struct Lean {
    proto: Proto,
    s: Socket,
    /// Agora's `INFO` inbox.
    inbox: Option<String>,
}

fn fail(e: impl std::fmt::Display) -> String {
    format!("request-reply: {e}")
}

impl Lean {
    fn connect(proto: Proto, addr: &str) -> Result<Lean> {
        let mut c = Lean {
            proto,
            s: Socket::connect(addr, "request-reply")?,
            inbox: None,
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        let info = loop {
            if let Some(end) = crlf(&c.s.inb) {
                break c.s.inb.split_to(end + 2);
            }
            if !c.s.fill(deadline)? {
                return Err(fail("no INFO within 5 s"));
            }
        };
        let info = String::from_utf8_lossy(&info).into_owned();
        match proto {
            Proto::Agora => {
                c.inbox = info
                    .split_whitespace()
                    .find_map(|t| t.strip_prefix("inbox="))
                    .map(str::to_owned);
            }
            Proto::Nats => {
                c.s.out.extend_from_slice(
                    b"CONNECT {\"verbose\":false,\"pedantic\":false,\"echo\":false,\
                      \"lang\":\"rust\",\"version\":\"agora-bench\",\"protocol\":1}\r\n",
                );
                c.sync()?;
            }
        }
        Ok(c)
    }

    /// Requester `i`'s inbox.
    fn inbox(&self, i: usize) -> Result<String> {
        match self.proto {
            Proto::Agora => self
                .inbox
                .clone()
                .ok_or_else(|| fail("the broker's INFO names no inbox")),
            Proto::Nats => Ok(format!("_INBOX.bench{i}x{}", std::process::id())),
        }
    }

    fn subscribe(&mut self, subject: &str, sid: u64) -> Result<()> {
        let line = match self.proto {
            Proto::Agora => format!("SUB topic:{subject} {sid}\r\n"),
            Proto::Nats => format!("SUB {subject} {sid}\r\n"),
        };
        self.s.out.extend_from_slice(line.as_bytes());
        self.sync()
    }

    /// A ping and its answer: the broker has handled everything sent before.
    fn sync(&mut self) -> Result<()> {
        let ping: &[u8] = match self.proto {
            Proto::Agora => b"PINGREQ #1\r\n",
            Proto::Nats => b"PING\r\n",
        };
        self.s.out.extend_from_slice(ping);
        let mut deadline = Deadline::after(Duration::from_secs(10));
        match self.next(&mut deadline)? {
            Some(Next::Pong) => Ok(()),
            Some(Next::Msg(_)) => Err(fail("a message while syncing")),
            None => Err(fail("no answer to a ping within 10 s")),
        }
    }

    /// Sends request `n` and waits for its reply.
    fn ask(&mut self, subject: &str, inbox: &str, n: u64, payload: usize) -> Result<()> {
        let body = vec![b'q'; payload];
        let to = format!("{inbox}.{n}");
        match self.proto {
            Proto::Agora => {
                let mut h = Headers::new();
                h.insert(agora_protocol::reply::REPLY_TO, &format!("topic:{to}"))
                    .map_err(|e| fail(format!("{e:?}")))?;
                let dest = Destination::topic(subject).map_err(fail)?;
                encode_pub(None, &dest, &h, &body, &mut self.s.out);
            }
            Proto::Nats => {
                use std::fmt::Write;
                write!(self.s.out, "PUB {subject} {to} {payload}\r\n").map_err(fail)?;
                self.s.out.extend_from_slice(&body);
                self.s.out.extend_from_slice(b"\r\n");
            }
        }
        let mut deadline = Deadline::after(REPLY_WAIT);
        loop {
            match self.next(&mut deadline)? {
                Some(Next::Msg(m)) if m.subject == to => return Ok(()),
                // A reply to an earlier request (none here: one at a time).
                Some(Next::Msg(_)) => {}
                Some(Next::Pong) => return Err(fail("an unasked-for ping answer")),
                None => return Err(fail(format!("no reply to {to} within {REPLY_WAIT:?}"))),
            }
        }
    }

    /// The responder: answers every request with its own payload until `stop`.
    fn respond_until(&mut self, stop: &AtomicBool) -> Result<()> {
        while !stop.load(SeqCst) {
            let mut deadline = Deadline::after(Duration::from_millis(100));
            // Every request already read is answered before the next read, which sends
            // the answers in one write.
            match self.next(&mut deadline)? {
                Some(Next::Msg(m)) => {
                    let to = m
                        .reply_to
                        .ok_or_else(|| fail("a request without reply address"))?;
                    match self.proto {
                        Proto::Agora => {
                            let dest =
                                Destination::parse(&to).map_err(|e| fail(format!("{e:?}")))?;
                            encode_pub(None, &dest, &Headers::new(), &m.payload, &mut self.s.out);
                        }
                        Proto::Nats => {
                            use std::fmt::Write;
                            write!(self.s.out, "PUB {to} {}\r\n", m.payload.len()).map_err(fail)?;
                            self.s.out.extend_from_slice(&m.payload);
                            self.s.out.extend_from_slice(b"\r\n");
                        }
                    }
                    self.s.wrote()?;
                }
                Some(Next::Pong) => {}
                None => {}
            }
        }
        self.s.close(Shutdown::Both)
    }

    /// The next message or ping answer, answering the server's pings; `None` if
    /// nothing came before `deadline`.
    fn next(&mut self, deadline: &mut Deadline) -> Result<Option<Next>> {
        loop {
            if let Some(n) = self.parse()? {
                return Ok(Some(n));
            }
            if !self.s.fill(deadline.get())? {
                return Ok(None);
            }
        }
    }

    fn parse(&mut self) -> Result<Option<Next>> {
        match self.proto {
            Proto::Agora => loop {
                match decode_server(&mut self.s.inb).map_err(fail)? {
                    None => return Ok(None),
                    Some(ServerFrame::PingReq { rid }) => {
                        agora_protocol::encode(
                            &agora_protocol::ClientFrame::PingResp { rid },
                            &mut self.s.out,
                        );
                    }
                    Some(ServerFrame::PingResp { .. }) => return Ok(Some(Next::Pong)),
                    Some(ServerFrame::Msg(m)) => {
                        return Ok(Some(Next::Msg(Got {
                            subject: m.dest.name.as_str().to_owned(),
                            reply_to: m
                                .headers
                                .get(agora_protocol::reply::REPLY_TO)
                                .map(str::to_owned),
                            payload: m.payload,
                        })))
                    }
                    Some(ServerFrame::Err(e)) => return Err(fail(format!("{e:?}"))),
                    Some(_) => {}
                }
            },
            Proto::Nats => loop {
                let Some(end) = crlf(&self.s.inb) else {
                    return Ok(None);
                };
                let line = &self.s.inb[..end];
                if line.starts_with(b"MSG ") {
                    // MSG <subject> <sid> [reply-to] <#bytes>
                    let text = String::from_utf8_lossy(line).into_owned();
                    let tokens: Vec<&str> = text.split(' ').collect();
                    let size: usize = tokens
                        .last()
                        .and_then(|s| s.parse().ok())
                        .ok_or_else(|| fail("a MSG line without a size"))?;
                    let body = end + 2;
                    if self.s.inb.len() < body + size + 2 {
                        return Ok(None);
                    }
                    let frame = self.s.inb.split_to(body + size + 2).freeze();
                    return Ok(Some(Next::Msg(Got {
                        subject: tokens[1].to_owned(),
                        reply_to: (tokens.len() == 5).then(|| tokens[3].to_owned()),
                        payload: frame.slice(body..body + size),
                    })));
                }
                let line = self.s.inb.split_to(end + 2);
                match &line[..end] {
                    b"PONG" => return Ok(Some(Next::Pong)),
                    b"PING" => self.s.out.extend_from_slice(b"PONG\r\n"),
                    b"+OK" => {}
                    l if l.starts_with(b"INFO ") => {}
                    l => return Err(fail(String::from_utf8_lossy(l))),
                }
            },
        }
    }
}

enum Next {
    Msg(Got),
    Pong,
}

/// The `agora` row: the same shape through the SDK.
fn sdk(
    server: &ServerView,
    payload: usize,
    duration: Duration,
    requesters: usize,
    name: &str,
) -> Result<Measured> {
    use futures_lite::future::block_on;
    use futures_lite::StreamExt;
    let e = |e: agora_client::Error| format!("agora: {e}");
    let subject = format!("{name}.svc");
    let connect = || {
        block_on(
            agora_client::Client::builder()
                .threads(server.system.sdk_threads())
                .connect(&server.addr),
        )
        .map_err(e)
    };
    let responder = connect()?;
    let mut requests = block_on(responder.subscribe(&subject)).map_err(e)?;
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| -> Result<Measured> {
        let answering = scope.spawn(|| -> Result<()> {
            block_on(async {
                // One timer, firing every 100 ms, to look at `stop`: a timer armed per
                // request would wake the SDK's I/O thread each time (see the agora
                // driver's `timeout`).
                let mut tick = async_io::Timer::interval(Duration::from_millis(100));
                while !stop.load(SeqCst) {
                    let next = futures_lite::future::or(async { requests.next().await }, async {
                        tick.next().await;
                        None
                    });
                    if let Some(req) = next.await {
                        let body = req.payload().clone();
                        req.respond(body).await.map_err(e)?;
                    }
                }
                Ok(())
            })
        });
        let clients: Vec<_> = (0..requesters).map(|_| connect()).collect::<Result<_>>()?;
        let body = Bytes::from(vec![b'q'; payload]);
        let dest = format!("topic:{subject}");
        for c in &clients {
            for _ in 0..20 {
                block_on(c.request(&dest, body.clone())).map_err(e)?;
            }
        }
        let cpu0 = server.cpu();
        let ccpu0 = client_cpu();
        let t0 = Instant::now();
        let asking: Vec<_> = clients
            .into_iter()
            .map(|c| {
                let (body, dest) = (body.clone(), dest.clone());
                scope.spawn(move || -> Result<(u64, Histogram<u64>)> {
                    let mut hist = wire::histogram();
                    let mut n = 0;
                    block_on(async {
                        while t0.elapsed() < duration {
                            let t = Instant::now();
                            c.request(&dest, body.clone()).await.map_err(e)?;
                            let _ = hist.record((t.elapsed().as_nanos() as u64).max(1));
                            n += 1;
                        }
                        let _ = c.close().await;
                        Ok((n, hist))
                    })
                })
            })
            .collect();
        let measured = finish(server, t0, (cpu0, ccpu0), asking, &stop, answering);
        let _ = block_on(responder.close());
        measured
    })
}

/// What a requester's thread ends with: the requests answered, and their latencies.
type Asked = Result<(u64, Histogram<u64>)>;

/// Ends a run: joins the requesters (the figures are taken once the last one is done),
/// stops and joins the responder, and says what was measured, or the first failure.
fn finish(
    server: &ServerView,
    t0: Instant,
    (cpu0, ccpu0): (f64, f64),
    asking: Vec<std::thread::ScopedJoinHandle<'_, Asked>>,
    stop: &AtomicBool,
    answering: std::thread::ScopedJoinHandle<'_, Result<()>>,
) -> Result<Measured> {
    let mut answered = 0;
    let mut hist = wire::histogram();
    let mut failure = None;
    for a in asking {
        match a.join().map_err(|_| "a requester panicked".to_owned()) {
            Ok(Ok((n, h))) => {
                answered += n;
                hist.add(&h).map_err(|e| e.to_string())?;
            }
            Ok(Err(e)) | Err(e) => failure = failure.or(Some(e)),
        }
    }
    let elapsed = t0.elapsed();
    let cpu1 = server.cpu();
    let ccpu1 = client_cpu();
    stop.store(true, SeqCst);
    let responded = answering
        .join()
        .map_err(|_| "the responder panicked".to_owned())?;
    if let Some(e) = failure {
        return Err(e);
    }
    responded?;
    Ok(Measured {
        messages: answered,
        published: answered,
        elapsed,
        latency: Some(hist),
        server_cpu_s: cpu1 - cpu0,
        client_cpu_s: ccpu1 - ccpu0,
        ..Measured::default()
    })
}
