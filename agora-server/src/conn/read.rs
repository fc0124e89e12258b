//! The read side of a connection: the TCP read loop (bulk reads, the ping timer) and
//! the UDP datagram loop (one datagram of whole frames at a time). Both decode every
//! complete frame before reading again and hand each to `Conn::handle`.

use super::*;
use crate::session::Liveness;

impl Conn<'_> {
    /// A TCP client (or a TLS one, over TCP): reads in bulk until it leaves, falls
    /// silent, or the broker stops. Generic, so each transport's reads are direct calls.
    pub(super) async fn read_loop<R: futures_lite::AsyncRead + Unpin>(
        &mut self,
        mut stream: R,
        stop: &Receiver<()>,
    ) -> End {
        let mut read_size = ReadSize::default();
        let mut buf = BytesMut::with_capacity(read_size.get());
        // The last read came back with all it asked for.
        let mut filled = false;
        // One timer for the connection's life, moved forward as the client is heard
        // from (registering a timer per read would cost a reactor round trip per read).
        let ping_every = self.broker.config.ping_interval;
        let no_pings = self.broker.config.ablation.no_defences;
        let mut ping_timer = smol::Timer::after(ping_every);
        // With users configured, until the client has authenticated.
        let mut auth_timer = self.auth_deadline.map(smol::Timer::at);
        loop {
            match self.act_on(&mut buf).await {
                Ok(Decoded::More) => {}
                Ok(Decoded::Fatal) => return End::Protocol,
                Err(end) => return end,
            }
            if buf.is_empty()
                && buf.capacity() > 4 * ReadSize::MAX
                && read_size == ReadSize::default()
            {
                // Give a big buffer back once the client has gone quiet.
                buf = BytesMut::with_capacity(ReadSize::MIN);
            }
            // What is left is part of a frame: charged to the read budget, and read
            // further only while there is room.
            self.broker
                .read_budget
                .set(&mut self.read_held, buf.len(), self.read_id);
            if self.read_held > 0
                && !self
                    .broker
                    .read_budget
                    .may_read(self.read_held, self.read_id)
            {
                if let Err(end) = self.wait_for_read_room(stop).await {
                    return end;
                }
            }
            let len = buf.len();
            // Room for a whole read (the buffer reused, or grown when nothing else
            // holds it); while payloads queued from it keep it alive, its tail is read
            // into before another buffer is taken.
            let ask = read_size.make_room(&mut buf, filled);
            buf.resize(len + ask, 0);
            if self.auth_deadline.is_none() {
                auth_timer = None;
            }
            let oldest = self.oldest_unstored();
            let event = future::or(
                async { Event::Read(stream.read(&mut buf[len..]).await) },
                future::or(
                    future::or(
                        async {
                            let _ = stop.recv().await;
                            Event::Stop
                        },
                        async {
                            match &oldest {
                                Some(rx) => Event::Stored(rx.recv().await),
                                None => future::pending().await,
                            }
                        },
                    ),
                    future::or(
                        async {
                            if no_pings {
                                future::pending::<()>().await;
                            }
                            (&mut ping_timer).await;
                            Event::Silent
                        },
                        async {
                            match auth_timer.as_mut() {
                                Some(t) => {
                                    t.await;
                                    Event::AuthTimeout
                                }
                                None => future::pending().await,
                            }
                        },
                    ),
                ),
            )
            .await;
            match event {
                Event::Read(Ok(n)) if n > 0 => {
                    buf.truncate(len + n);
                    self.read_at = std::time::Instant::now();
                    self.session.heard(self.read_at);
                    self.broker
                        .metrics
                        .bytes_in_tcp
                        .fetch_add(n as u64, Relaxed);
                    self.info.bytes_in.fetch_add(n as u64, Relaxed);
                    if ask == read_size.get() {
                        read_size.after_read(n);
                    }
                    filled = n == ask;
                }
                Event::Read(_) => return End::Gone, // EOF or error: the client is gone
                Event::Stored(outcome) => {
                    buf.truncate(len);
                    let answered = async {
                        self.answer_stored(outcome).await?;
                        self.settle_stored_now().await
                    };
                    if let Err(end) = answered.await {
                        return end;
                    }
                    continue;
                }
                // Authenticated since the timer was set (its frame was acted on after
                // the race began): the timer goes.
                Event::AuthTimeout if self.auth_deadline.is_none() => {
                    buf.truncate(len);
                    auth_timer = None;
                    continue;
                }
                Event::AuthTimeout => {
                    let _ = self.auth_timed_out().await;
                    return End::AuthTimeout;
                }
                Event::Stop => {
                    let _ = self
                        .reply(&ServerFrame::Shutdown {
                            message: "the broker is shutting down".to_owned(),
                        })
                        .await;
                    return End::Stopping;
                }
                Event::Silent => {
                    buf.truncate(len);
                    match self.session.ping_due(std::time::Instant::now()) {
                        // Heard from since the timer was set: look again later.
                        Liveness::Wait(left) => {
                            ping_timer.set_after(left);
                            continue;
                        }
                        Liveness::GiveUp(max) => {
                            log::debug!("client {} did not answer {max} pings", self.peer);
                            let why = format!("no answer to {max} pings; closing");
                            let _ = self.error(None, ErrorCode::Timeout, &why).await;
                            return End::Silent;
                        }
                        Liveness::Ping => {
                            ping_timer.set_after(ping_every);
                            let ping = ServerFrame::PingReq { rid: None };
                            if let Err(end) = self.reply(&ping).await {
                                return end;
                            }
                        }
                    }
                }
            }
            if self.outbox.is_closed() {
                return End::Gone;
            }
        }
    }

    /// Waits until the read budget has room for this connection's frame; past
    /// [`Config::read_wait`](crate::Config::read_wait) the connection is closed.
    async fn wait_for_read_room(&mut self, stop: &Receiver<()>) -> Result<(), End> {
        let budget = &self.broker.read_budget;
        let m = &self.broker.metrics;
        m.read_waits.fetch_add(1, Relaxed);
        let wait = self.broker.config.read_wait;
        let mut deadline = smol::Timer::after(wait);
        // Bounded: each turn waits for bytes given back, the deadline or the stop.
        loop {
            let room = budget.room.listen();
            if budget.may_read(self.read_held, self.read_id) {
                return Ok(());
            }
            let woke = future::or(
                async {
                    room.await;
                    Ok(())
                },
                future::or(
                    async {
                        (&mut deadline).await;
                        Err(End::Starved)
                    },
                    async {
                        let _ = stop.recv().await;
                        Err(End::Stopping)
                    },
                ),
            )
            .await;
            if let Err(end) = woke {
                if end == End::Starved {
                    m.read_closed.fetch_add(1, Relaxed);
                    log::warn!(
                        "client {} held {} bytes of a frame and found no room in the read budget for {wait:?}; closing",
                        self.peer,
                        self.read_held
                    );
                    let why =
                        format!("no room to read the rest of this frame for {wait:?}; closing");
                    let _ = self.error(None, ErrorCode::MemoryLimit, &why).await;
                }
                return Err(end);
            }
        }
    }

    /// A UDP client: each datagram holds whole frames. A client not heard from for
    /// [`Config::udp_idle_timeout`](crate::Config::udp_idle_timeout) is forgotten.
    pub(super) async fn datagram_loop(
        &mut self,
        datagrams: Receiver<Bytes>,
        source: Arc<shipper::UdpSource>,
        stop: &Receiver<()>,
    ) -> End {
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
                    return End::Silent;
                }
                Err(_) => {
                    // The stop signal, or the UDP loop letting go of this source's
                    // channel: it only does that once the task has ended, or when it is
                    // dropped because the broker is stopping — which this task may see
                    // before the stop signal is sent. Either way the broker is stopping.
                    // (A source that has not proved itself is sent nothing unasked.)
                    if source.is_verified() {
                        let _ = self
                            .reply(&ServerFrame::Shutdown {
                                message: "the broker is shutting down".to_owned(),
                            })
                            .await;
                    }
                    return End::Stopping;
                }
            };
            let m = &self.broker.metrics;
            m.bytes_in_udp.fetch_add(d.len() as u64, Relaxed);
            self.info.bytes_in.fetch_add(d.len() as u64, Relaxed);
            source.queued.fetch_sub(d.len(), Relaxed);
            m.udp_queued.fetch_sub(d.len(), Relaxed);
            source.received(d.len());
            self.read_at = std::time::Instant::now();
            self.session.heard(self.read_at);
            let mut buf = BytesMut::from(&d[..]);
            // Over UDP, a datagram's confirms are answered before the next is read.
            let acted = match self.act_on(&mut buf).await {
                Ok(d) => self.settle_stored().await.map(|()| d),
                Err(e) => Err(e),
            };
            if self.session.verified() && !source.is_verified() {
                source.verify();
            }
            match acted {
                Err(end) => return end,
                // The rest of this datagram is lost; the next one starts afresh.
                Ok(Decoded::Fatal) => {}
                Ok(Decoded::More) if buf.is_empty() => {}
                Ok(Decoded::More) => {
                    let why = format!(
                        "the datagram ends inside a frame ({} bytes left): over UDP a frame must fit in one datagram",
                        buf.len()
                    );
                    if let Err(end) = self.error(None, ErrorCode::BadFrame, &why).await {
                        return end;
                    }
                }
            }
        }
    }

    /// Decodes every complete frame in `buf` and acts on each, in order: the one
    /// decode-and-act loop of every transport. A run of publishes held back ends with
    /// the bytes decoded, or at an error. A decode error is answered with `ERR`; a
    /// fatal one (the stream cannot be resynchronised) stops the loop.
    async fn act_on(&mut self, buf: &mut BytesMut) -> Result<Decoded, End> {
        loop {
            // A plain PUB to the run's destination is read without splitting off its
            // name again, and joins the run without an `await`.
            let plain = match &self.run {
                Some(run) => decode_pub_to(buf, &run.dest, &self.limits),
                None => None,
            };
            if let Some(payload) = plain {
                let msg = Message {
                    received: self.read_at,
                    headers: Headers::new(),
                    payload,
                };
                if let Err((m, dest)) = self.join(msg) {
                    let p = Publish {
                        rid: None,
                        dest,
                        headers: m.headers,
                        payload: m.payload,
                    };
                    self.handle(ClientFrame::Pub(p)).await?;
                }
                continue;
            }
            let next = decode_client_with(buf, &self.limits);
            if !matches!(next, Ok(Some(_))) && self.session.bytes_done() {
                self.end_run().await?;
            }
            match next {
                Ok(Some(ClientFrame::Pub(p))) => {
                    if let Some(p) = self.join_run(p) {
                        self.handle(ClientFrame::Pub(p)).await?;
                    }
                }
                Ok(Some(f)) => self.handle(f).await?,
                Ok(None) => {
                    // Confirms whose records are stored already are sent now; the rest
                    // as they come (the read loop waits for them too).
                    self.settle_stored_now().await?;
                    return Ok(Decoded::More);
                }
                Err(e) => {
                    log::debug!("client {}: {e}", self.peer);
                    self.error(e.request_id(), e.code(), &e.to_string()).await?;
                    if e.is_fatal() {
                        return Ok(Decoded::Fatal);
                    }
                }
            }
        }
    }
}

/// How the bytes at hand ended.
enum Decoded {
    /// Every complete frame was acted on; what is left waits for more bytes.
    More,
    /// A fatal decode error, answered.
    Fatal,
}
