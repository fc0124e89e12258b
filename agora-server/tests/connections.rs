//! Many clients, the connection cap, hostile input next to well-behaved clients, and
//! graceful shutdown (in-process and of the real binary).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};

use agora_protocol::{ErrorCode, ServerFrame};
use agora_server::Config;
use common::*;

#[test]
fn a_thousand_concurrent_connections_are_each_answered() {
    // 1,000 clients plus the broker's 1,000 ends need ~2,000 descriptors.
    let _ = rlimit::increase_nofile_limit(4096);
    let s = start();
    let mut clients: Vec<Raw> = (0..1000).map(|_| s.connect()).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        c.send(format!("PINGREQ #{i}\r\n").as_bytes());
    }
    for (i, c) in clients.iter_mut().enumerate() {
        assert_eq!(
            c.next(),
            ServerFrame::PingResp {
                rid: Some(i as u64)
            }
        );
    }
    assert_eq!(clients[0].stats()["clients"]["tcp"], 1000);
}

#[test]
fn connections_over_the_cap_are_refused_with_an_error() {
    let s = start_with(Config {
        max_connections: 3,
        ..Config::ephemeral()
    });
    let mut held: Vec<Raw> = (0..3).map(|_| s.connect()).collect();
    let mut extra = Raw::connect_bare(s.addr);
    let frames = extra.expect_closed();
    match &frames[..] {
        [ServerFrame::Err(e)] => {
            assert_eq!(e.code, ErrorCode::TooManyConnections);
            assert!(e.message.contains('3'), "{}", e.message);
        }
        f => panic!("{f:?}"),
    }
    // The others are unaffected, and a freed slot can be used again.
    assert!(held[0].sync(1).is_empty());
    drop(held.pop());
    wait_until("a slot frees up", || held[0].stats()["clients"]["tcp"] == 2);
    let mut again = s.connect();
    assert!(again.sync(2).is_empty());
}

#[test]
fn garbage_on_one_connection_does_not_disturb_another() {
    let s = start();
    let mut good_sub = s.connect();
    good_sub.send(b"SUB #1 queue:steady 1 ack=auto\r\n");
    assert_eq!(good_sub.next(), ServerFrame::Ok { rid: Some(1) });
    let mut good_pub = s.connect();
    let mut seed: u64 = 0x9e3779b97f4a7c15;
    for round in 0..50u64 {
        // A hostile client sends random bytes, then vanishes mid-frame.
        let mut bad = TcpStream::connect(s.addr).unwrap();
        let junk: Vec<u8> = (0..2048)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect();
        let _ = bad.write_all(&junk);
        let _ = bad.write_all(b"PUB queue:steady 100\r\nonly part of it");
        drop(bad);
        let body = round.to_string();
        publish(&mut good_pub, "queue:steady", body.as_bytes());
        match good_sub.next() {
            ServerFrame::Msg(m) => assert_eq!(&m.payload[..], body.as_bytes()),
            f => panic!("{f:?}"),
        }
    }
    let st = good_pub.stats();
    let q = dest_stats(&st, "queue", "steady").unwrap();
    assert_eq!(
        q["messages_in"], 50,
        "the half-sent publishes were never accepted"
    );
}

#[test]
fn a_client_that_vanishes_mid_payload_leaves_nothing_behind() {
    let s = start();
    let mut c = s.connect();
    c.send(b"SETACK on\r\nPUB #1 queue:half 10\r\nabc");
    assert_eq!(c.next(), ServerFrame::Ok { rid: None });
    drop(c);
    let mut d = s.connect();
    wait_until("the vanished client is gone", || {
        d.stats()["clients"]["tcp"] == 1
    });
    assert!(dest_stats(&d.stats(), "queue", "half").is_none());
}

#[test]
fn graceful_shutdown_tells_clients_and_returns() {
    let mut s = start();
    let mut clients: Vec<Raw> = (0..5).map(|_| s.connect()).collect();
    clients[0].send(b"SUB #1 topic:t 1\r\n");
    assert_eq!(clients[0].next(), ServerFrame::Ok { rid: Some(1) });
    s.shutdown().expect("serve returns Ok");
    for c in &mut clients {
        let frames = c.expect_closed();
        assert!(
            matches!(frames.last(), Some(ServerFrame::Shutdown { .. })),
            "{frames:?}"
        );
    }
}

#[test]
fn the_binary_prints_its_address_and_exits_0_on_sigterm() {
    for signal in ["-TERM", "-INT"] {
        let (mut child, port, _out) = spawn_agora(&[]);
        let mut c = Raw::connect(format!("127.0.0.1:{port}").parse().unwrap());
        assert!(c.sync(1).is_empty());
        let killed = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        let frames = c.expect_closed();
        assert!(
            matches!(frames.last(), Some(ServerFrame::Shutdown { .. })),
            "{frames:?}"
        );
        let st = wait_exit(&mut child);
        assert_eq!(st.code(), Some(0), "{signal}");
    }
}

#[test]
fn bad_flags_exit_2_with_a_message() {
    for args in [
        &["--port", "notaport"][..],
        &["--max-payload", "0"],
        &["--slow-consumer", "sometimes"],
        &["--ack-timeout", "5"],
        &["--ping-interval", "0s"],
        &["--message-ttl", "3 fortnights"],
        &["--udp-max-datagram", "10"],
        &["--frobnicate"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_agora"))
            .env("AGORA_MEMORY_ONLY", "true")
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("error"), "{args:?}: {err}");
    }
}

#[test]
fn flags_can_come_from_the_environment() {
    let out = Command::new(env!("CARGO_BIN_EXE_agora"))
        .env("AGORA_MEMORY_ONLY", "true")
        .env("AGORA_MAX_PAYLOAD", "banana")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let (mut child, port, _out) = spawn_agora(&[]);
    drop(Raw::connect(format!("127.0.0.1:{port}").parse().unwrap()));
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    wait_exit(&mut child);
    let mut child = Command::new(env!("CARGO_BIN_EXE_agora"))
        .env("AGORA_MEMORY_ONLY", "true")
        .args(["--port", "0"])
        .env("AGORA_MAX_PAYLOAD", "77")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let port: u16 = line.trim().rsplit(':').next().unwrap().parse().unwrap();
    let c = Raw::connect(format!("127.0.0.1:{port}").parse().unwrap());
    assert!(matches!(&c.info, ServerFrame::Info(i) if i.max_payload == 77));
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    assert_eq!(wait_exit(&mut child).code(), Some(0));
}

/// Starts the binary with `args` and `env`, returns the `max_payload` its `INFO` says,
/// and stops it.
fn max_payload_of(args: &[&str], env: &[(&str, &str)]) -> usize {
    let mut child = Command::new(env!("CARGO_BIN_EXE_agora"))
        .env("AGORA_MEMORY_ONLY", "true")
        .args(["--port", "0"])
        .args(args)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let port: u16 = line
        .trim()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{args:?} {env:?}: start-up line {line:?}"));
    let c = Raw::connect(format!("127.0.0.1:{port}").parse().unwrap());
    let max = match &c.info {
        ServerFrame::Info(i) => i.max_payload,
        other => panic!("{other:?}"),
    };
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    assert_eq!(wait_exit(&mut child).code(), Some(0));
    max as usize
}

#[test]
fn broker_settings_come_from_flag_then_variable_then_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("agora.toml");
    std::fs::write(&file, "[broker]\nmax_payload = 77\n").unwrap();
    let config = ["--config", file.to_str().unwrap()];
    assert_eq!(
        max_payload_of(&config, &[]),
        77,
        "the file beats the default"
    );
    let var = [("AGORA_MAX_PAYLOAD", "88")];
    assert_eq!(
        max_payload_of(&config, &var),
        88,
        "the variable beats the file"
    );
    let flag = ["--config", file.to_str().unwrap(), "--max-payload", "99"];
    assert_eq!(max_payload_of(&flag, &var), 99, "the flag beats both");
}

/// A broker whose stdout is closed before it prints its start-up lines (a supervisor
/// that read nothing, or only the first line, then closed the pipe) keeps serving:
/// printing them must not panic it. (An xtask check that read the first line and let
/// go of the pipe made the broker die on the second, under load.)
#[test]
fn a_closed_stdout_does_not_stop_the_broker() {
    // A free port is the broker's to choose (`--port 0`); with its stdout closed, it
    // says which in its log on stderr. (Choosing one here and passing it raced with
    // the other tests' servers taking the same port: CI caught it once.)
    let mut child = Agora::from(
        std::process::Command::new(env!("CARGO_BIN_EXE_agora"))
            .env("AGORA_MEMORY_ONLY", "true")
            .args(["--port", "0"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start agora"),
    );
    drop(child.stdout.take());
    let mut log = BufReader::new(child.stderr.take().expect("stderr"));
    let mut addr = None;
    for _ in 0..64 {
        let mut line = String::new();
        if log.read_line(&mut line).expect("the broker's log") == 0 {
            break;
        }
        if let Some(rest) = line.split("listening on ").nth(1) {
            addr = rest.split_whitespace().next().and_then(|a| a.parse().ok());
            break;
        }
    }
    let addr: std::net::SocketAddr = addr.expect("the broker's address in its log");
    // The rest of its log is read (and dropped), so it never waits on a full pipe.
    let drain = std::thread::spawn(move || std::io::copy(&mut log, &mut std::io::sink()));
    let mut c = Raw::connect(addr);
    c.send(b"PINGREQ #1\r\n");
    assert_eq!(c.next(), ServerFrame::PingResp { rid: Some(1) });
    assert!(child.try_wait().unwrap().is_none(), "the broker died");
    drop(c);
    drop(child);
    let _ = drain.join();
}
