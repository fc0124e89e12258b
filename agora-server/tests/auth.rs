//! Users and permissions: nothing before authentication, wrong credentials closed and
//! slowed, each right allowed and refused, STATS filtered, the auth timeout, UDP's
//! anonymous publishes, the refusal to serve a public address without users, and
//! `agora passwd` through the binary.

mod common;

use std::io::{Read, Write};
use std::net::UdpSocket;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use agora_protocol::bytes::BytesMut;
use agora_protocol::{decode_server, ErrorCode, ServerFrame};
use agora_server::auth::{hash_password, Pattern, Rights, User};
use agora_server::{Config, Server};
use common::*;

fn rights(publish: &[&str], subscribe: &[&str], admin: bool) -> Rights {
    let p = |l: &[&str]| l.iter().map(|p| Pattern::parse(p).unwrap()).collect();
    Rights {
        publish: p(publish),
        subscribe: p(subscribe),
        admin,
    }
}

/// alice (jobs and sensors, no admin), ops (admin), both with the password `pw`.
fn with_users() -> Config {
    let mut c = Config::ephemeral();
    let hash = hash_password("pw").unwrap();
    let alice = rights(&["queue:jobs", "topic:sensors.>"], &["queue:jobs"], false);
    c.users
        .insert(User::new("alice", Some(&hash), None, alice).unwrap())
        .unwrap();
    let ops = rights(&["queue:>"], &["queue:>"], true);
    c.users
        .insert(User::new("ops", Some(&hash), None, ops).unwrap())
        .unwrap();
    c
}

/// Logs `raw` in; the `OK` must come back.
fn login(raw: &mut Raw, user: &str, password: &str) {
    raw.send(format!("CONNECT #77 user={user} password={password}\r\n").as_bytes());
    assert_eq!(raw.next(), ServerFrame::Ok { rid: Some(77) });
}

#[test]
fn before_authentication_only_connect_pings_help_and_disconnect_are_acted_on() {
    let s = start_with(with_users());
    let mut c = s.connect();
    match &c.info {
        ServerFrame::Info(i) => assert!(i.auth_required && !i.tls_required, "{i:?}"),
        f => panic!("{f:?}"),
    }
    let refused: &[&[u8]] = &[
        b"PUB #1 queue:jobs 2\r\nhi\r\n",
        b"HPUB #2 queue:jobs 8 10\r\na: b\r\n\r\nhi\r\n",
        b"SUB #3 queue:jobs 1\r\n",
        b"UNSUB #4 1\r\n",
        b"ACK #5 1\r\n",
        b"NACK #6 1\r\n",
        b"SETACK #7 on\r\n",
        b"STATS #8\r\n",
        b"PURGE #9 queue:jobs\r\n",
        b"DELETE #10 queue:jobs\r\n",
        b"CHAIN #11 GET queue:jobs\r\n",
        b"CHAIN #12 SET queue:jobs 4\r\ndrop\r\n",
        b"CHAIN #13 CLEAR queue:jobs\r\n",
        b"CONNECT #14 name=x\r\n",
    ];
    for (i, frame) in refused.iter().enumerate() {
        c.send(frame);
        match c.next() {
            ServerFrame::Err(e) => {
                assert_eq!(e.code, ErrorCode::NotAuthenticated, "{e:?}");
                assert_eq!(e.rid, Some(i as u64 + 1));
            }
            f => panic!("{}: {f:?}", String::from_utf8_lossy(frame)),
        }
    }
    // Acted on: pings and HELP.
    assert!(c.sync(20).is_empty());
    c.send(b"HELP #21\r\n");
    assert!(matches!(
        c.next(),
        ServerFrame::HelpResp { rid: Some(21), .. }
    ));
    // Nothing changed: no destination exists, as an admin sees.
    let mut admin = s.connect();
    login(&mut admin, "ops", "pw");
    let stats = admin.stats();
    assert_eq!(stats["page"]["total"], 0, "{stats}");
    // DISCONNECT is acted on.
    c.send(b"DISCONNECT\r\n");
    assert!(c.expect_closed().is_empty());
}

#[test]
fn wrong_credentials_are_refused_and_closed_and_right_ones_let_in() {
    let s = start_with(with_users());
    for bad in [
        "CONNECT #1 user=alice password=nope\r\n",
        "CONNECT #1 user=mallory password=pw\r\n",
    ] {
        let mut c = s.connect();
        c.send(bad.as_bytes());
        let msg = c.expect_err(ErrorCode::AuthFailed);
        assert!(!msg.contains("nope") && !msg.contains("mallory"), "{msg}");
        assert!(c.expect_closed().is_empty());
    }
    let mut c = s.connect();
    c.send(b"CONNECT #1 user=alice\r\n");
    assert!(c.expect_err(ErrorCode::BadArgs).contains("password"));
    login(&mut c, "alice", "pw");
    c.send(b"CONNECT #2 user=alice password=pw\r\n");
    assert!(c.expect_err(ErrorCode::BadArgs).contains("already"));
}

#[test]
fn any_password_can_be_sent_percent_encoded() {
    let mut config = Config::ephemeral();
    let odd = "p w=%é\u{1F600}";
    let hash = hash_password(odd).unwrap();
    config
        .users
        .insert(User::new("bob", Some(&hash), None, rights(&["queue:b"], &[], false)).unwrap())
        .unwrap();
    let s = start_with(config);
    let mut c = s.connect();
    c.send_frame(&agora_protocol::ClientFrame::Connect(
        agora_protocol::Connect {
            rid: Some(1),
            user: Some("bob".into()),
            password: Some(agora_protocol::Password::new(odd)),
            ..Default::default()
        },
    ));
    assert_eq!(c.next(), ServerFrame::Ok { rid: Some(1) });
}

#[test]
fn repeated_failures_from_one_address_are_slowed() {
    let s = start_with(with_users());
    for _ in 0..3 {
        let mut c = s.connect();
        c.send(b"CONNECT #1 user=alice password=nope\r\n");
        c.expect_err(ErrorCode::AuthFailed);
        c.expect_closed();
    }
    // Three failures: the next check waits 400 ms first, right password or not.
    let mut c = s.connect();
    let started = Instant::now();
    login(&mut c, "alice", "pw");
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn each_right_is_allowed_and_refused() {
    let s = start_with(with_users());
    let mut ops = s.connect();
    login(&mut ops, "ops", "pw");
    ops.send(b"SETACK #1 on\r\nPUB #2 queue:other 1\r\nx\r\nSUB #3 topic:$sys.metrics 9\r\n");
    assert_eq!(ops.next(), ServerFrame::Ok { rid: Some(1) });
    assert!(matches!(
        ops.next(),
        ServerFrame::PubAck { rid: Some(2), .. }
    ));
    assert_eq!(ops.next(), ServerFrame::Ok { rid: Some(3) });

    let mut a = s.connect();
    login(&mut a, "alice", "pw");
    a.send(b"SETACK #1 on\r\n");
    assert_eq!(a.next(), ServerFrame::Ok { rid: Some(1) });
    // Publish: allowed where a pattern names the destination.
    for (i, dest) in ["queue:jobs", "topic:sensors.a.temp", "topic:sensors.b"]
        .iter()
        .enumerate()
    {
        a.send(format!("PUB #{} {dest} 1\r\nx\r\n", i + 10).as_bytes());
        assert!(
            matches!(a.next(), ServerFrame::PubAck { rid: Some(r), .. } if r == i as u64 + 10),
            "{dest}"
        );
    }
    for dest in ["queue:other", "topic:sensors", "topic:jobs", "queue:jobs.x"] {
        a.send(format!("PUB #20 {dest} 1\r\nx\r\n").as_bytes());
        let why = a.expect_err(ErrorCode::NotPermitted);
        assert!(why.contains("alice") && why.contains(dest), "{why}");
    }
    // Subscribe.
    a.send(b"SUB #30 queue:jobs 1\r\n");
    assert_eq!(a.next(), ServerFrame::Ok { rid: Some(30) });
    assert!(matches!(a.next(), ServerFrame::Msg(m) if m.dest.to_string() == "queue:jobs"));
    for dest in ["topic:sensors.a", "queue:other", "topic:$sys.metrics"] {
        a.send(format!("SUB #31 {dest} 2\r\n").as_bytes());
        let why = a.expect_err(ErrorCode::NotPermitted);
        assert!(why.contains(dest), "{why}");
    }
    // Admin operations.
    for cmd in [
        "PURGE #40 queue:jobs",
        "DELETE #41 queue:jobs",
        "CHAIN #42 CLEAR queue:jobs",
    ] {
        a.send(format!("{cmd}\r\n").as_bytes());
        assert!(
            a.expect_err(ErrorCode::NotPermitted).contains("admin"),
            "{cmd}"
        );
    }
    a.send(b"CHAIN #43 SET queue:jobs 4\r\ndrop\r\n");
    assert!(a.expect_err(ErrorCode::NotPermitted).contains("admin"));
    a.send(b"CHAIN #44 GET queue:jobs\r\nCHAIN #45 GET queue:other\r\n");
    assert!(matches!(
        a.next(),
        ServerFrame::ChainResp { rid: Some(44), .. }
    ));
    a.expect_err(ErrorCode::NotPermitted);
    // STATS: alice sees what she may use, the admin everything.
    let names = |stats: serde_json::Value| -> Vec<String> {
        let list = stats["destinations"].as_array().unwrap().clone();
        list.iter()
            .map(|d| {
                format!(
                    "{}:{}",
                    d["kind"].as_str().unwrap(),
                    d["name"].as_str().unwrap()
                )
            })
            .collect()
    };
    let mine = names(a.stats());
    assert!(mine.contains(&"queue:jobs".to_owned()), "{mine:?}");
    assert!(!mine.iter().any(|n| n == "queue:other"), "{mine:?}");
    let all = names(ops.stats());
    assert!(all.contains(&"queue:other".to_owned()), "{all:?}");
    // The admin's rights.
    ops.send(b"PURGE #50 queue:jobs\r\nCHAIN #51 SET queue:jobs 8\r\nsample 2\r\nDELETE #52 queue:other\r\n");
    let answers: Vec<_> = (0..3).map(|_| ops.next()).collect();
    let oks = answers
        .iter()
        .filter(|f| matches!(f, ServerFrame::Ok { rid: Some(50..=52) }))
        .count();
    assert_eq!(oks, 3, "{answers:?}");
}

#[test]
fn a_client_that_does_not_authenticate_in_time_is_closed() {
    let mut config = with_users();
    // Long enough for the one that logs in to do it on a loaded machine.
    let timeout = Duration::from_secs(2);
    config.auth_timeout = timeout;
    let s = start_with(config);
    let mut ok = s.connect();
    login(&mut ok, "alice", "pw");
    let started = Instant::now();
    let mut idle = s.connect();
    // Busy but never authenticating: closed all the same.
    let mut busy = s.connect();
    busy.send(b"PINGREQ #1\r\n");
    assert_eq!(busy.next(), ServerFrame::PingResp { rid: Some(1) });
    for c in [&mut idle, &mut busy] {
        let frames = c.expect_closed();
        assert!(
            matches!(&frames[..], [ServerFrame::Err(e)] if e.code == ErrorCode::Timeout),
            "{frames:?}"
        );
    }
    assert!(started.elapsed() >= timeout);
    // The one that logged in stays.
    assert!(ok.sync(2).is_empty());
}

/// A UDP datagram client.
fn udp_next(sock: &UdpSocket) -> ServerFrame {
    sock.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut b = [0u8; 65_536];
    let n = sock.recv(&mut b).expect("a datagram within the deadline");
    let mut buf = BytesMut::from(&b[..n]);
    decode_server(&mut buf).unwrap().expect("a whole frame")
}

#[test]
fn udp_takes_only_anonymous_publishes_where_allowed() {
    let mut config = with_users();
    config.udp_anonymous_publish = vec![Pattern::parse("queue:readings").unwrap()];
    let s = start_with(config);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.connect(s.addr).unwrap();
    sock.send(b"PUB #1 queue:jobs 1\r\nx\r\n").unwrap();
    match udp_next(&sock) {
        ServerFrame::Err(e) => assert_eq!((e.rid, e.code), (Some(1), ErrorCode::NotPermitted)),
        f => panic!("{f:?}"),
    }
    for (rid, cmd) in [
        (2, "SUB #2 queue:readings 1"),
        (3, "PINGREQ #3"),
        (4, "CONNECT #4 user=alice password=pw"),
        (5, "CONNECT #5 confirm=on"),
    ] {
        sock.send(format!("{cmd}\r\n").as_bytes()).unwrap();
        match udp_next(&sock) {
            ServerFrame::Err(e) => {
                assert_eq!(
                    (e.rid, e.code),
                    (Some(rid), ErrorCode::NotPermitted),
                    "{cmd}"
                )
            }
            f => panic!("{cmd}: {f:?}"),
        }
    }
    sock.send(b"PUB queue:readings 2\r\n42\r\n").unwrap();
    // Delivered to a TCP user that may consume it.
    let mut ops = s.connect();
    login(&mut ops, "ops", "pw");
    ops.send(b"SUB #1 queue:readings 1 ack=auto\r\n");
    assert_eq!(ops.next(), ServerFrame::Ok { rid: Some(1) });
    match ops.next() {
        ServerFrame::Msg(m) => assert_eq!(&m.payload[..], b"42"),
        f => panic!("{f:?}"),
    }
}

#[test]
fn a_public_address_without_users_refuses_to_start_unless_told() {
    let mut c = Config::ephemeral();
    c.bind = "0.0.0.0".parse().unwrap();
    c.port = 0;
    let e = smol::block_on(Server::bind(c.clone()))
        .err()
        .expect("refused");
    assert!(e.to_string().contains("--allow-anonymous"), "{e}");
    // With users it starts, and with the flag too (bound, then dropped at once).
    let mut users = with_users();
    users.bind = c.bind;
    users.port = 0;
    drop(smol::block_on(Server::bind(users)).expect("starts with users"));
    c.allow_anonymous = true;
    drop(smol::block_on(Server::bind(c)).expect("starts with --allow-anonymous"));
    // The binary exits non-zero, naming the flag.
    let args = ["--port", "0", "--bind", "0.0.0.0"].map(std::ffi::OsStr::new);
    let (status, err) = agora_exit(&args, &[]);
    assert!(!status.success());
    assert!(err.contains("--allow-anonymous"), "{err}");
}

/// `agora passwd` hashes a password from standard input; the binary, given the hash
/// in its config file, lets that password in.
#[test]
fn agora_passwd_makes_a_hash_the_broker_takes() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_agora"))
        .arg("passwd")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"s3 cret\n").unwrap();
    let status = wait_exit(&mut child);
    let mut hash = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut hash)
        .unwrap();
    assert!(status.success());
    let hash = hash.trim();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("agora.toml");
    std::fs::write(
        &file,
        format!("[users.carol]\npassword = \"{hash}\"\npublish = [\"queue:c\"]\n"),
    )
    .unwrap();
    // Readable by others: a warning at start.
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let (mut agora, port, _out) = spawn_agora(&["--config", file.to_str().unwrap()]);
    let mut c = Raw::connect(([127, 0, 0, 1], port).into());
    c.send(
        b"CONNECT #1 user=carol password=s3%20cret\r\nPUB #2 queue:c 1\r\nx\r\nSETACK #3 on\r\n",
    );
    assert_eq!(c.next(), ServerFrame::Ok { rid: Some(1) });
    assert_eq!(c.next(), ServerFrame::Ok { rid: Some(3) });
    // Stopped by its PID; the log is flushed at shutdown.
    let term = Command::new("kill")
        .args(["-TERM", &agora.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    assert!(wait_exit(&mut agora).success());
    let mut log = String::new();
    agora
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    assert!(
        log.contains("[WARN]") && log.contains("readable by group or others (mode 644); chmod 600"),
        "{log}"
    );
    assert!(log.contains("authenticated as carol"), "{log}");
    assert!(
        !log.contains("s3 cret") && !log.contains("s3%20cret"),
        "{log}"
    );
}

/// A flood of logins waits on the password checkers' own threads: a client that is
/// already in is answered while most of them are still being checked.
#[test]
fn a_flood_of_logins_does_not_stall_other_clients() {
    let s = start_with(with_users());
    let mut ok = s.connect();
    login(&mut ok, "ops", "pw");
    // Each wrong login costs a full check (about 20 ms); 100 of them keep both checker
    // threads busy for about a second.
    let mut flood: Vec<Raw> = (0..100).map(|_| s.connect()).collect();
    for c in &mut flood {
        c.send(b"CONNECT #1 user=alice password=wrong\r\n");
    }
    assert!(ok.sync(1).is_empty());
    // Answered before the flood was: most logins are still waiting for a checker.
    let mut seen = Vec::new();
    for c in &mut flood {
        seen.push(c.closed_within(Duration::from_millis(1)).0);
    }
    let pending = seen.iter().filter(|got| got.is_empty()).count();
    assert!(
        pending > 50,
        "only {pending} of 100 logins were still waiting"
    );
    for (c, mut frames) in flood.iter_mut().zip(seen) {
        frames.extend(c.expect_closed());
        // Refused, or (its check delayed by the failures before it) out of time.
        assert!(
            frames.iter().any(|f| matches!(f, ServerFrame::Err(e)
                if e.code == ErrorCode::AuthFailed || e.code == ErrorCode::Timeout)),
            "{frames:?}"
        );
    }
}

/// A wildcard subscription is allowed when one of the user's patterns names every topic
/// it can match.
#[test]
fn a_wildcard_subscription_needs_a_pattern_that_covers_it() {
    let mut config = Config::ephemeral();
    let hash = hash_password("pw").unwrap();
    let r = rights(&[], &["topic:sensors.>", "topic:rooms.*"], false);
    config
        .users
        .insert(User::new("eve", Some(&hash), None, r).unwrap())
        .unwrap();
    let s = start_with(config);
    let mut c = s.connect();
    login(&mut c, "eve", "pw");
    for (sid, ok) in [
        ("topic:sensors.*.temp", true),
        ("topic:sensors.>", true),
        ("topic:rooms.*", true),
        ("topic:rooms.>", false),
        ("topic:>", false),
        ("topic:*.temp", false),
    ]
    .iter()
    .enumerate()
    .map(|(i, (p, ok))| ((i as u64 + 1, *p), *ok))
    {
        let (sid, pattern) = sid;
        c.send(format!("SUB #{sid} {pattern} {sid}\r\n").as_bytes());
        match ok {
            true => assert_eq!(c.next(), ServerFrame::Ok { rid: Some(sid) }, "{pattern}"),
            false => {
                let why = c.expect_err(ErrorCode::NotPermitted);
                assert!(why.contains(pattern), "{why}");
            }
        }
    }
}
