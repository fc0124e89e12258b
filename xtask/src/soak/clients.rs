//! The soak's clients: the hostile mix and the normal pair, each a blocking loop on its
//! own thread until told to stop.

use super::*;

/// A connection that reads: lines and sized bodies.
pub(super) struct Conn {
    w: TcpStream,
    r: BufReader<TcpStream>,
}

impl Conn {
    fn connect(addr: SocketAddr) -> std::io::Result<Conn> {
        let w = TcpStream::connect(addr)?;
        w.set_read_timeout(Some(Duration::from_secs(2)))?;
        w.set_write_timeout(Some(Duration::from_secs(2)))?;
        let r = BufReader::with_capacity(1 << 16, w.try_clone()?);
        let mut c = Conn { w, r };
        c.line()?; // INFO
        Ok(c)
    }

    fn line(&mut self) -> std::io::Result<String> {
        let mut l = String::new();
        if self.r.read_line(&mut l)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        Ok(l)
    }

    /// Reads to the `PINGRESP #3` of a batch (answering the broker's pings, skipping
    /// refusals); false if the connection failed first.
    fn until_pong(&mut self) -> bool {
        // Bounded: a batch has at most a few hundred answers.
        for _ in 0..1000 {
            match self.line() {
                Ok(l) if l.starts_with("PINGRESP #3") => return true,
                Ok(l) if l.starts_with("PINGREQ") => {
                    let _ = self.w.write_all(b"PINGRESP\r\n");
                }
                Ok(_) => {}
                Err(_) => return false,
            }
        }
        false
    }

    fn body(&mut self, n: usize) -> std::io::Result<Vec<u8>> {
        let mut b = vec![0; n + 2];
        self.r.read_exact(&mut b)?;
        b.truncate(n);
        Ok(b)
    }
}

/// The admin connection the sampler asks `STATS` on (one destination per page: the
/// figures, not the list).
pub(super) struct Admin(Conn);

impl Admin {
    pub(super) fn connect(addr: SocketAddr) -> Result<Admin> {
        Ok(Admin(Conn::connect(addr)?))
    }

    pub(super) fn stats(&mut self) -> Result<String> {
        self.0.w.write_all(b"STATS #1 limit=1\r\n")?;
        // Bounded: the broker pings; answer and read on, a few lines at most.
        for _ in 0..100 {
            let l = self.0.line()?;
            if l.starts_with("PINGREQ") {
                self.0.w.write_all(b"PINGRESP\r\n")?;
                continue;
            }
            if let Some(n) = l.strip_prefix("STATSRESP #1 ") {
                let n: usize = n.trim().parse()?;
                return Ok(String::from_utf8_lossy(&self.0.body(n)?).into_owned());
            }
        }
        Err("no STATSRESP".into())
    }
}

/// Subscribes to the busy topic, asks for `STATS` again and again, never reads.
pub(super) fn non_reader(addr: SocketAddr, i: u64, stop: &AtomicBool) {
    while !stop.load(SeqCst) {
        let Ok(mut s) = TcpStream::connect(addr) else {
            thread::sleep(Duration::from_millis(100));
            continue;
        };
        let _ = s.set_write_timeout(Some(Duration::from_millis(500)));
        let _ = s.write_all(format!("SUB topic:soak.fan {i}\r\n").as_bytes());
        // Until the broker stops reading it (a write times out) or closes it.
        while !stop.load(SeqCst) {
            if s.write_all(&b"STATS\r\n".repeat(20)).is_err() {
                break;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Announces a 1 MiB payload, sends half, then a byte every 100 ms.
pub(super) fn half_sender(addr: SocketAddr, stop: &AtomicBool) {
    let half = vec![b'h'; 512 * 1024];
    while !stop.load(SeqCst) {
        let Ok(mut s) = TcpStream::connect(addr) else {
            thread::sleep(Duration::from_millis(100));
            continue;
        };
        let _ = s.set_write_timeout(Some(Duration::from_millis(500)));
        let mut ok = s
            .write_all(b"PUB queue:soak.half 1048576\r\n")
            .and_then(|()| s.write_all(&half))
            .is_ok();
        while ok && !stop.load(SeqCst) {
            thread::sleep(Duration::from_millis(100));
            ok = s.write_all(b"h").is_ok();
        }
    }
}

/// A new source port for every datagram: `STATS`, a `SUB`, a publish.
pub(super) fn udp_rotator(addr: SocketAddr, stop: &AtomicBool) {
    while !stop.load(SeqCst) {
        if let Ok(u) = UdpSocket::bind("127.0.0.1:0") {
            let _ = u.send_to(
                b"STATS\r\nSUB topic:soak.fan 1\r\nPUB topic:soak.fan 5\r\nhello\r\n",
                addr,
            );
        }
        thread::sleep(Duration::from_millis(5));
    }
}

/// Publishes to ever new topic names, which the broker creates and then sweeps.
pub(super) fn name_churn(addr: SocketAddr, stop: &AtomicBool) {
    let mut n = 0u64;
    while !stop.load(SeqCst) {
        let Ok(mut c) = Conn::connect(addr) else {
            thread::sleep(Duration::from_millis(100));
            continue;
        };
        while !stop.load(SeqCst) {
            let mut b = Vec::new();
            for _ in 0..100 {
                n += 1;
                b.extend_from_slice(
                    format!("PUB topic:churn.{} 1\r\nx\r\n", n % 50_000).as_bytes(),
                );
            }
            b.extend_from_slice(b"PINGREQ #3\r\n");
            if c.w.write_all(&b).is_err() || !c.until_pong() {
                break;
            }
            thread::sleep(Duration::from_millis(100));
        }
    }
}

/// A consumer that takes its prefetch and never acknowledges, and a flood into its
/// queue (and onto the busy topic) that the budget refuses once full.
pub(super) fn unacked_flood(addr: SocketAddr, stop: &AtomicBool) {
    thread::scope(|scope| {
        scope.spawn(|| hold_without_acking(addr, stop));
        flood(addr, stop);
    });
}

/// Takes its prefetch of `queue:soak.flood` and never acknowledges.
pub(super) fn hold_without_acking(addr: SocketAddr, stop: &AtomicBool) {
    consume(
        addr,
        stop,
        "SUB queue:soak.flood 1 prefetch=1000",
        |_, _, _| true,
    );
}

/// Subscribes with `sub` (reconnecting whenever the connection fails) and hands each
/// delivery (the connection, its delivery id, its body) to `on_msg` until the stop;
/// `on_msg` returning false drops the connection. Answers the broker's pings.
pub(super) fn consume(
    addr: SocketAddr,
    stop: &AtomicBool,
    sub: &str,
    mut on_msg: impl FnMut(&mut Conn, &str, Vec<u8>) -> bool,
) {
    while !stop.load(SeqCst) {
        let Ok(mut c) = Conn::connect(addr) else {
            thread::sleep(Duration::from_millis(100));
            continue;
        };
        if c.w.write_all(format!("{sub}\r\n").as_bytes()).is_err() {
            continue;
        }
        while !stop.load(SeqCst) {
            match c.line() {
                Ok(l) if l.starts_with("MSG") => {
                    // MSG <dest> <sid> <did> <count> <n>
                    let f: Vec<&str> = l.split_whitespace().collect();
                    let (Some(did), Some(n)) =
                        (f.get(3), f.get(5).and_then(|n| n.parse::<usize>().ok()))
                    else {
                        break;
                    };
                    let Ok(body) = c.body(n) else { break };
                    if !on_msg(&mut c, did, body) {
                        break;
                    }
                }
                Ok(l) if l.starts_with("PINGREQ") => {
                    let _ = c.w.write_all(b"PINGRESP\r\n");
                }
                Ok(_) => {}
                Err(e) if timed_out(&e) => {}
                Err(_) => break,
            }
        }
    }
}

/// Publishes into `queue:soak.flood` and onto `topic:soak.fan` as fast as the broker
/// answers, refusals and all.
pub(super) fn flood(addr: SocketAddr, stop: &AtomicBool) {
    let body = vec![b'f'; 1000];
    let mut frame = Vec::new();
    for i in 0..64 {
        let dest = if i % 4 == 0 {
            "topic:soak.fan"
        } else {
            "queue:soak.flood"
        };
        frame.extend_from_slice(format!("PUB {dest} 1000\r\n").as_bytes());
        frame.extend_from_slice(&body);
        frame.extend_from_slice(b"\r\n");
    }
    frame.extend_from_slice(b"PINGREQ #3\r\n");
    while !stop.load(SeqCst) {
        let Ok(mut c) = Conn::connect(addr) else {
            thread::sleep(Duration::from_millis(100));
            continue;
        };
        while !stop.load(SeqCst) && c.w.write_all(&frame).is_ok() && c.until_pong() {}
    }
}

pub(super) fn timed_out(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

/// Publishes numbered messages with confirms; records the ones confirmed.
pub(super) fn publisher(addr: SocketAddr, stop: &AtomicBool, confirmed: &Mutex<Vec<u64>>) {
    let seq = AtomicU64::new(1);
    while !stop.load(SeqCst) {
        let Ok(mut c) = Conn::connect(addr) else {
            thread::sleep(Duration::from_millis(100));
            continue;
        };
        if c.w.write_all(b"SETACK on\r\n").is_err() {
            continue;
        }
        while !stop.load(SeqCst) {
            let n = seq.fetch_add(1, SeqCst);
            let body = format!("{n:020}");
            let f = format!("PUB #{n} queue:soak.work {}\r\n{body}\r\n", body.len());
            if c.w.write_all(f.as_bytes()).is_err() {
                break;
            }
            // Its answer: PUBACK (kept), or ERR (refused: not kept, not owed).
            let mut answered = false;
            for _ in 0..50 {
                match c.line() {
                    Ok(l) if l.starts_with(&format!("PUBACK #{n}")) => {
                        if let Ok(mut v) = confirmed.lock() {
                            v.push(n);
                        }
                        answered = true;
                        break;
                    }
                    Ok(l) if l.starts_with(&format!("ERR #{n}")) => {
                        answered = true;
                        break;
                    }
                    Ok(l) if l.starts_with("PINGREQ") => {
                        let _ = c.w.write_all(b"PINGRESP\r\n");
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            if !answered {
                break;
            }
            thread::sleep(Duration::from_millis(2));
        }
    }
}

/// Consumes `queue:soak.work`, acknowledging each message; records what it got.
pub(super) fn consumer(
    addr: SocketAddr,
    stop: &AtomicBool,
    received: &Mutex<std::collections::BTreeSet<u64>>,
) {
    consume(
        addr,
        stop,
        "SUB queue:soak.work 1 prefetch=100",
        |c, did, body| {
            if let Ok(seq) = String::from_utf8_lossy(&body).trim().parse::<u64>() {
                if let Ok(mut r) = received.lock() {
                    r.insert(seq);
                }
            }
            c.w.write_all(format!("ACK {did}\r\n").as_bytes()).is_ok()
        },
    );
}
