//! UDP on the broker's port: whole frames per datagram, replies and deliveries packed
//! into datagrams, many sources, idle sources forgotten, TCP untouched; a source proves
//! it receives before it may subscribe, and is answered no more than its allowance
//! until then.

mod common;

use std::net::UdpSocket;
use std::time::Duration;

use agora_protocol::bytes::BytesMut;
use agora_protocol::{decode_server, ErrorCode, ServerFrame};
use agora_server::Config;
use common::*;

/// A UDP client: sends datagrams to the broker, decodes the frames of what comes back.
struct Udp {
    sock: UdpSocket,
    frames: std::collections::VecDeque<ServerFrame>,
    datagram_sizes: Vec<usize>,
}

impl Udp {
    fn new(server: &TestServer) -> Udp {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.connect(server.addr).unwrap();
        Udp {
            sock,
            frames: Default::default(),
            datagram_sizes: Vec::new(),
        }
    }

    fn send(&self, d: &[u8]) {
        self.sock.send(d).unwrap();
    }

    /// The token in the next frame, which must be `ERR #rid unverified token=…`.
    fn token(&mut self, rid: u64) -> String {
        match self.next() {
            ServerFrame::Err(e) if e.code == ErrorCode::Unverified && e.rid == Some(rid) => e
                .message
                .strip_prefix("token=")
                .expect("token=…")
                .to_owned(),
            f => panic!("expected ERR #{rid} unverified, got {f:?}"),
        }
    }

    /// A client whose source has proved it receives: it asks for its token (a wrong
    /// one is answered with the right one) and echoes it.
    fn verified(server: &TestServer) -> Udp {
        let mut u = Udp::new(server);
        u.send(b"CONNECT #900 token=none\r\n");
        let token = u.token(900);
        u.send(format!("CONNECT #901 token={token}\r\n").as_bytes());
        assert_eq!(u.next(), ServerFrame::Ok { rid: Some(901) });
        u
    }

    /// The next frame (over UDP the broker sends no greeting).
    fn next(&mut self) -> ServerFrame {
        let end = std::time::Instant::now() + DEADLINE;
        loop {
            if let Some(f) = self.frames.pop_front() {
                return f;
            }
            let left = end.saturating_duration_since(std::time::Instant::now());
            assert!(
                !left.is_zero(),
                "no datagram from the broker within {DEADLINE:?}"
            );
            self.sock.set_read_timeout(Some(left)).unwrap();
            let mut b = [0u8; 65_536];
            let Ok(n) = self.sock.recv(&mut b) else {
                continue;
            };
            self.datagram_sizes.push(n);
            let mut buf = BytesMut::from(&b[..n]);
            while let Some(f) = decode_server(&mut buf).expect("whole frames in a datagram") {
                self.frames.push_back(f);
            }
            assert!(buf.is_empty(), "a datagram ended inside a frame");
        }
    }
}

#[test]
fn commands_and_errors_over_udp() {
    let s = start();
    let mut u = Udp::verified(&s);
    u.send(b"PINGREQ #1\r\nSTATS #2\r\nFROB\r\nPUB #3 nokind 1\r\nx\r\nSETACK #4 on\r\nPUB #5 queue:u 2\r\nhi\r\n");
    assert_eq!(u.next(), ServerFrame::PingResp { rid: Some(1) });
    // STATS does not fit a datagram: refused over UDP, never built.
    match u.next() {
        ServerFrame::Err(e) if e.rid == Some(2) => {
            assert_eq!(e.code, ErrorCode::NotPermitted);
            assert!(e.message.contains("TCP"), "{}", e.message);
        }
        f => panic!("{f:?}"),
    }
    assert!(matches!(u.next(), ServerFrame::Err(e) if e.code == ErrorCode::UnknownCommand));
    assert!(
        matches!(u.next(), ServerFrame::Err(e) if e.code == ErrorCode::BadName && e.rid == Some(3))
    );
    assert_eq!(u.next(), ServerFrame::Ok { rid: Some(4) });
    assert_eq!(
        u.next(),
        ServerFrame::PubAck {
            rid: Some(5),
            filtered: false
        }
    );
    let mut tcp = s.connect();
    tcp.send(b"SUB queue:u 1 ack=auto\r\n");
    assert_eq!(tcp.next(), ServerFrame::Ok { rid: None });
    assert!(matches!(tcp.next(), ServerFrame::Msg(m) if &m.payload[..] == b"hi"));
}

#[test]
fn a_frame_larger_than_its_datagram_is_refused() {
    let s = start();
    let mut u = Udp::verified(&s);
    u.send(b"PUB #1 topic:t 100\r\nonly ten b");
    match u.next() {
        ServerFrame::Err(e) => {
            assert_eq!(e.code, ErrorCode::BadFrame);
            assert!(e.message.contains("one datagram"), "{}", e.message);
        }
        f => panic!("{f:?}"),
    }
    // The next datagram starts afresh.
    u.send(b"PINGREQ #2\r\n");
    assert_eq!(u.next(), ServerFrame::PingResp { rid: Some(2) });
}

#[test]
fn datagrams_from_many_sources() {
    let s = start();
    let mut sub = s.connect();
    sub.send(b"SUB queue:many 1 ack=auto\r\n");
    assert_eq!(sub.next(), ServerFrame::Ok { rid: None });
    let clients: Vec<Udp> = (0..50).map(|_| Udp::new(&s)).collect();
    for (i, c) in clients.iter().enumerate() {
        let body = format!("from-{i}");
        c.send(format!("PUB queue:many {}\r\n{body}\r\n", body.len()).as_bytes());
    }
    let mut got: Vec<String> = (0..50)
        .map(|_| match sub.next() {
            ServerFrame::Msg(m) => String::from_utf8_lossy(&m.payload).into_owned(),
            f => panic!("{f:?}"),
        })
        .collect();
    got.sort();
    let mut want: Vec<String> = (0..50).map(|i| format!("from-{i}")).collect();
    want.sort();
    assert_eq!(got, want);
    assert_eq!(sub.stats()["clients"]["udp"], 50);
}

#[test]
fn a_udp_subscriber_gets_deliveries_packed_into_small_datagrams() {
    let s = start_with(Config {
        udp_max_datagram: 512,
        ..Config::ephemeral()
    });
    let mut u = Udp::verified(&s);
    u.send(b"SUB #1 topic:feed 9\r\n");
    assert_eq!(u.next(), ServerFrame::Ok { rid: Some(1) });
    let mut p = s.connect();
    let mut batch = Vec::new();
    for i in 0..100 {
        let body = format!("{i:04}");
        batch.extend_from_slice(format!("PUB topic:feed {}\r\n{body}\r\n", body.len()).as_bytes());
    }
    p.send(&batch);
    let got: Vec<String> = (0..100)
        .map(|_| match u.next() {
            ServerFrame::Msg(m) => {
                assert_eq!(m.sid, 9);
                String::from_utf8_lossy(&m.payload).into_owned()
            }
            f => panic!("{f:?}"),
        })
        .collect();
    assert_eq!(got, (0..100).map(|i| format!("{i:04}")).collect::<Vec<_>>());
    assert!(
        u.datagram_sizes.iter().all(|&n| n <= 512),
        "{:?}",
        u.datagram_sizes
    );
    assert!(
        u.datagram_sizes.len() < 100,
        "frames were packed: {:?}",
        u.datagram_sizes
    );
}

#[test]
fn idle_udp_clients_are_forgotten_and_their_queue_messages_return() {
    let s = start_with(Config {
        udp_idle_timeout: Duration::from_millis(300),
        ..Config::ephemeral()
    });
    let mut p = s.connect();
    publish(&mut p, "queue:udpq", b"job");
    let mut u = Udp::verified(&s);
    u.send(b"SUB #1 queue:udpq 1 prefetch=1\r\n");
    assert_eq!(u.next(), ServerFrame::Ok { rid: Some(1) });
    assert!(matches!(u.next(), ServerFrame::Msg(_)));
    // Never acked, never heard from again: forgotten, and the job goes back.
    wait_until("the UDP client is forgotten", || {
        p.stats()["clients"]["udp"] == 0
    });
    let mut tcp = s.connect();
    tcp.send(b"SUB queue:udpq 1 ack=auto\r\n");
    assert_eq!(tcp.next(), ServerFrame::Ok { rid: None });
    assert!(matches!(tcp.next(), ServerFrame::Msg(m) if m.redelivered()));
}

#[test]
fn udp_garbage_does_not_touch_tcp_clients() {
    let s = start();
    let mut tcp = s.connect();
    tcp.send(b"SUB #1 topic:calm 1\r\n");
    assert_eq!(tcp.next(), ServerFrame::Ok { rid: Some(1) });
    let junk = UdpSocket::bind("127.0.0.1:0").unwrap();
    for i in 0..200u32 {
        let d: Vec<u8> = (0..(i % 97 + 1)).map(|j| (i * 31 + j * 7) as u8).collect();
        junk.send_to(&d, s.addr).unwrap();
    }
    let mut p = s.connect();
    publish(&mut p, "topic:calm", b"still here");
    assert!(matches!(tcp.next(), ServerFrame::Msg(m) if &m.payload[..] == b"still here"));
}

#[test]
fn known_udp_clients_get_shutdown_on_every_graceful_stop() {
    // The protocol chapter promises it; it used to come in only some stops (the client's
    // task saw its datagram channel close before the stop signal, and left silently).
    for round in 0..100 {
        let mut s = start();
        let mut u = Udp::verified(&s);
        u.send(b"PINGREQ #1\r\n");
        assert_eq!(u.next(), ServerFrame::PingResp { rid: Some(1) });
        s.shutdown().unwrap();
        match u.next() {
            ServerFrame::Shutdown { .. } => {}
            f => panic!("round {round}: expected SHUTDOWN, got {f:?}"),
        }
    }
}

/// A source that has not proved it receives (its address may be forged) is sent no
/// greeting, may not subscribe (the refusal carries its token), and is answered in all
/// at most four times the bytes it sent; echoing the token lifts both.
#[test]
fn an_unverified_source_cannot_subscribe_or_amplify() {
    let s = start();
    let mut tcp = s.connect();
    let mut u = Udp::new(&s);
    // Asked nothing: answered nothing. A PING is answered (it is small).
    u.send(b"PINGREQ #1\r\n");
    assert_eq!(u.next(), ServerFrame::PingResp { rid: Some(1) });
    // A subscription does not take effect; the answer names the token.
    u.send(b"SUB #2 topic:t 1\r\n");
    let token = u.token(2);
    assert_eq!(token.len(), 16);
    let st = tcp.stats();
    assert_eq!(
        dest_stats(&st, "topic", "t").map(|d| d["consumers"].clone()),
        None
    );
    // A new source's 3-byte datagram of garbage: its ERR (far over 4 × 3 bytes) is
    // not sent; the PING after it is.
    let unanswered = st["broker"]["udp_unanswered"].as_u64().unwrap();
    let mut fresh = Udp::new(&s);
    fresh.send(b"X\r\n");
    fresh.send(b"PINGREQ #3\r\n");
    assert_eq!(fresh.next(), ServerFrame::PingResp { rid: Some(3) });
    assert_eq!(
        tcp.stats()["broker"]["udp_unanswered"].as_u64().unwrap(),
        unanswered + 1
    );
    // A wrong token changes nothing; the right one proves the source.
    u.send(b"CONNECT #4 token=0000000000000000\r\n");
    assert!(matches!(u.next(), ServerFrame::Err(e) if e.code == ErrorCode::Unverified));
    u.send(format!("CONNECT #5 token={token}\r\n").as_bytes());
    assert_eq!(u.next(), ServerFrame::Ok { rid: Some(5) });
    u.send(b"SUB #6 topic:t 1\r\n");
    assert_eq!(u.next(), ServerFrame::Ok { rid: Some(6) });
    publish(&mut tcp, "topic:t", b"now");
    assert!(matches!(u.next(), ServerFrame::Msg(m) if &m.payload[..] == b"now"));
    // Verified: every answer is sent, whatever its size.
    u.send(b"X\r\n");
    assert!(matches!(u.next(), ServerFrame::Err(e) if e.code == ErrorCode::UnknownCommand));
}

/// `STATS` over UDP is refused before anything is built: a 7-byte datagram from a new
/// source no longer makes the broker build (and keep) a document of every destination.
#[test]
fn udp_stats_builds_nothing() {
    let s = start();
    let mut tcp = s.connect();
    let mut b = Vec::new();
    for i in 0..300 {
        b.extend_from_slice(format!("PUB queue:q{i} 1\r\nx\r\n").as_bytes());
    }
    tcp.send(&b);
    assert!(tcp.sync(1).is_empty());
    for _ in 0..20 {
        let u = Udp::new(&s);
        u.send(b"STATS\r\n");
    }
    let mut u = Udp::new(&s);
    u.send(b"PINGREQ #1\r\n");
    assert_eq!(u.next(), ServerFrame::PingResp { rid: Some(1) });
    wait_until("the STATS datagrams to be handled", || {
        tcp.stats()["broker"]["bytes_in_udp"].as_u64().unwrap() >= 20 * 7 + 12
    });
    // Nothing queued for anyone (the observer's own last answer may be counted a
    // moment, so it is looked at until it is not).
    wait_until("nothing queued", || {
        tcp.stats()["broker"]["output_queued"] == 0
    });
    let st = tcp.stats();
    assert_eq!(st["broker"]["udp_queued"], 0, "{}", st["broker"]);
}

/// An answer too large for any datagram is replaced by a short `ERR` naming the limit
/// (and keeping the request id), never built into datagrams that cannot be sent.
#[test]
fn an_answer_larger_than_a_datagram_is_an_error() {
    let s = start();
    let mut tcp = s.connect();
    let long = format!("set /note={}", "n".repeat(70_000));
    tcp.send(format!("CHAIN #1 SET queue:big {}\r\n{long}\r\n", long.len()).as_bytes());
    assert_eq!(tcp.next(), ServerFrame::Ok { rid: Some(1) });
    let mut u = Udp::verified(&s);
    u.send(b"CHAIN #2 GET queue:big\r\n");
    match u.next() {
        ServerFrame::Err(e) => {
            assert_eq!((e.code, e.rid), (ErrorCode::PayloadTooLarge, Some(2)));
            assert!(e.message.contains("65507"), "{}", e.message);
        }
        f => panic!("{f:?}"),
    }
}
