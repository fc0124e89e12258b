//! Mutator chains through the broker over TCP: filtering, enrichment from a real SQLite
//! file, order, policies, runtime CHAIN commands while messages flow, configured chains.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering::*};
use std::sync::Arc;

use agora_protocol::bytes::Bytes;
use agora_protocol::{ClientFrame, Destination, ErrorCode, ServerFrame};
use agora_server::Config;
use common::*;
use serde_json::{json, Value};

fn topic(n: &str) -> Destination {
    Destination::topic(n).unwrap()
}

fn queue(n: &str) -> Destination {
    Destination::queue(n).unwrap()
}

/// Sends `CHAIN SET` and returns the answer.
fn chain_set(c: &mut Raw, dest: &Destination, text: &str) -> ServerFrame {
    c.send_frame(&ClientFrame::ChainSet {
        rid: Some(77),
        dest: dest.clone(),
        chain: Bytes::copy_from_slice(text.as_bytes()),
    });
    c.next()
}

fn set_ok(c: &mut Raw, dest: &Destination, text: &str) {
    assert_eq!(
        chain_set(c, dest, text),
        ServerFrame::Ok { rid: Some(77) },
        "{text}"
    );
}

fn chain_get(c: &mut Raw, dest: &Destination) -> String {
    c.send_frame(&ClientFrame::ChainGet {
        rid: Some(78),
        dest: dest.clone(),
    });
    match c.next() {
        ServerFrame::ChainResp {
            rid: Some(78),
            chain,
            ..
        } => String::from_utf8(chain.to_vec()).unwrap(),
        f => panic!("expected CHAINRESP, got {f:?}"),
    }
}

fn subscribe(s: &TestServer, dest: &str) -> Raw {
    let mut c = s.connect();
    c.send(format!("SUB #1 {dest} 1\r\n").as_bytes());
    assert_eq!(c.next(), ServerFrame::Ok { rid: Some(1) });
    c
}

/// Publishes with confirms and returns whether the broker said `filtered`.
fn publish_confirmed(c: &mut Raw, dest: &str, headers: &[(&str, &str)], payload: &str) -> bool {
    let mut h = String::new();
    for (k, v) in headers {
        h.push_str(&format!("{k}: {v}\r\n"));
    }
    if h.is_empty() {
        c.send(format!("PUB #5 {dest} {}\r\n{payload}\r\n", payload.len()).as_bytes());
    } else {
        h.push_str("\r\n");
        let total = h.len() + payload.len();
        c.send(format!("HPUB #5 {dest} {} {total}\r\n{h}{payload}\r\n", h.len()).as_bytes());
    }
    match c.next() {
        ServerFrame::PubAck {
            rid: Some(5),
            filtered,
        } => filtered,
        f => panic!("expected PUBACK, got {f:?}"),
    }
}

fn confirming(s: &TestServer) -> Raw {
    let mut c = s.connect();
    c.send(b"SETACK #2 on\r\n");
    assert_eq!(c.next(), ServerFrame::Ok { rid: Some(2) });
    c
}

fn next_msg(c: &mut Raw) -> agora_protocol::Delivery {
    match c.next() {
        ServerFrame::Msg(m) => m,
        f => panic!("expected MSG, got {f:?}"),
    }
}

fn json_of(m: &agora_protocol::Delivery) -> Value {
    serde_json::from_slice(&m.payload).unwrap_or_else(|_| panic!("JSON payload: {:?}", m.payload))
}

/// Nothing more is waiting for this subscriber (a round trip proves it).
fn assert_no_more(c: &mut Raw) {
    let rest = c.sync(999);
    assert!(rest.is_empty(), "unexpected: {rest:?}");
}

#[test]
fn threshold_drops_exactly_the_out_of_range_messages() {
    let s = start();
    let mut sub = subscribe(&s, "topic:temps");
    let mut p = confirming(&s);
    set_ok(&mut p, &topic("temps"), "threshold /temp between 10 20");
    let mut filtered = Vec::new();
    for i in 0..30 {
        if publish_confirmed(&mut p, "topic:temps", &[], &format!(r#"{{"temp":{i}}}"#)) {
            filtered.push(i);
        }
    }
    let expected_filtered: Vec<i32> = (0..10).chain(21..30).collect();
    assert_eq!(filtered, expected_filtered);
    for i in 10..=20 {
        assert_eq!(json_of(&next_msg(&mut sub))["temp"], i);
    }
    assert_no_more(&mut sub);
    let st = p.stats();
    let d = dest_stats(&st, "topic", "temps").unwrap();
    assert_eq!(d["filtered"], 19);
    assert_eq!(d["messages_in"], 11);

    // A queue: filtered messages are never reserved, stored or delivered.
    set_ok(&mut p, &queue("q"), "threshold . > 5");
    for i in 0..10 {
        publish_confirmed(&mut p, "queue:q", &[], &i.to_string());
    }
    let st = p.stats();
    let d = dest_stats(&st, "queue", "q").unwrap();
    assert_eq!(
        (d["depth"].as_u64(), d["filtered"].as_u64()),
        (Some(4), Some(6))
    );
    let mut c = s.connect();
    c.send(b"SUB #1 queue:q 1 ack=auto\r\n");
    assert_eq!(c.next(), ServerFrame::Ok { rid: Some(1) });
    let got: Vec<String> = (0..4)
        .map(|_| String::from_utf8(next_msg(&mut c).payload.to_vec()).unwrap())
        .collect();
    assert_eq!(got, ["6", "7", "8", "9"]);
}

#[test]
fn without_confirms_filtered_publishes_get_no_reply() {
    let s = start();
    let mut p = s.connect();
    set_ok(&mut p, &topic("t"), "sample 2");
    for i in 0..10 {
        publish(&mut p, "topic:t", i.to_string().as_bytes());
    }
    assert!(p.sync(1).is_empty());
    let st = p.stats();
    assert_eq!(dest_stats(&st, "topic", "t").unwrap()["filtered"], 5);
}

#[test]
fn chain_get_set_clear_and_bad_chains_change_nothing() {
    let s = start();
    let mut c = s.connect();
    let t = topic("t");
    assert_eq!(chain_get(&mut c, &t), "", "no chain yet");
    set_ok(&mut c, &t, "  threshold . > 1 | sample 2 ");
    assert_eq!(chain_get(&mut c, &t), "threshold . > 1 | sample 2");
    for (bad, says) in [
        ("threshold . >> 1", "at column"),
        ("frobnicate", "unknown mutator"),
        (
            "enrich db=/etc/passwd table=t key=/k",
            "no database '/etc/passwd'",
        ),
        ("enrich db=sensors table=t key=/k", "none are declared"),
    ] {
        match chain_set(&mut c, &t, bad) {
            ServerFrame::Err(e) => {
                assert_eq!(e.code, ErrorCode::BadChain, "{bad}");
                assert!(e.message.contains(says), "{bad}: {}", e.message);
            }
            f => panic!("{bad}: expected ERR bad_chain, got {f:?}"),
        }
        assert_eq!(chain_get(&mut c, &t), "threshold . > 1 | sample 2");
    }
    c.send(b"CHAIN #9 CLEAR topic:t\r\n");
    assert_eq!(c.next(), ServerFrame::Ok { rid: Some(9) });
    assert_eq!(chain_get(&mut c, &t), "");
    // Blank text clears too.
    set_ok(&mut c, &t, "sample 3");
    set_ok(&mut c, &t, "   ");
    assert_eq!(chain_get(&mut c, &t), "");
    // The broker's own names are not for chains.
    c.send(b"CHAIN #4 SET topic:$sys.metrics 8\r\nsample 2\r\n");
    assert!(c.expect_err(ErrorCode::NotPermitted).contains("reserved"));
}

#[test]
fn runtime_attach_and_remove_while_messages_flow() {
    let s = start();
    let mut sub = subscribe(&s, "topic:flow");
    // The subscriber counts what it gets, in its own thread.
    let got = Arc::new(AtomicU64::new(0));
    let last = Arc::new(AtomicU64::new(u64::MAX));
    let reader = {
        let (got, last) = (got.clone(), last.clone());
        std::thread::spawn(move || loop {
            match sub.next() {
                ServerFrame::Msg(m) => {
                    let n: u64 = std::str::from_utf8(&m.payload).unwrap().parse().unwrap();
                    let before = last.swap(n, SeqCst);
                    assert!(
                        before == u64::MAX || n > before,
                        "out of order: {n} after {before}"
                    );
                    got.fetch_add(1, SeqCst);
                }
                ServerFrame::PingResp { rid: Some(1) } => return,
                f => panic!("unexpected {f:?}"),
            }
        })
    };
    // 0: flowing; 1: the chain is cleared, publish 500 more and stop.
    let phase = Arc::new(AtomicU8::new(0));
    let publisher = {
        let phase = phase.clone();
        let addr = s.addr;
        std::thread::spawn(move || {
            let mut p = Raw::connect(addr);
            let mut i = 0u64;
            let mut stop_at = u64::MAX;
            while i < stop_at {
                let mut batch = Vec::new();
                for _ in 0..50 {
                    let body = i.to_string();
                    batch.extend_from_slice(
                        format!("PUB topic:flow {}\r\n{body}\r\n", body.len()).as_bytes(),
                    );
                    i += 1;
                }
                p.send(&batch);
                assert!(p.sync(i).is_empty());
                if stop_at == u64::MAX && phase.load(SeqCst) == 1 {
                    stop_at = i + 500;
                }
            }
            i
        })
    };
    let mut ctl = s.connect();
    wait_until("messages flowing", || got.load(SeqCst) >= 500);
    set_ok(&mut ctl, &topic("flow"), "threshold . < 0");
    wait_until("messages filtered", || {
        dest_stats(&ctl.stats(), "topic", "flow").unwrap()["filtered"].as_u64() >= Some(500)
    });
    ctl.send(b"CHAIN #3 CLEAR topic:flow\r\n");
    assert_eq!(ctl.next(), ServerFrame::Ok { rid: Some(3) });
    phase.store(1, SeqCst);
    let published = publisher.join().unwrap();
    // Everything the publisher sent is in the topic now; a ping through the
    // subscriber's connection ends its reader after the last delivery.
    let st = ctl.stats();
    let d = dest_stats(&st, "topic", "flow").unwrap();
    let (filtered, dropped) = (
        d["filtered"].as_u64().unwrap(),
        d["dropped"].as_u64().unwrap(),
    );
    wait_until("every kept message delivered", || {
        got.load(SeqCst) + dropped + filtered == published
    });
    assert!(filtered >= 500);
    assert_eq!(
        last.load(SeqCst),
        published - 1,
        "messages after CLEAR pass again"
    );
    assert_eq!(d["messages_in"].as_u64().unwrap() + filtered, published);
    drop(reader);
}

/// A SQLite file with a `sites` table.
fn sensors_db(dir: &Path) -> PathBuf {
    let file = dir.join("sensors.db");
    let c = rusqlite::Connection::open(&file).unwrap();
    c.execute_batch(
        "CREATE TABLE sites (site TEXT PRIMARY KEY, city TEXT, alt INTEGER);
         INSERT INTO sites VALUES ('s1', 'Oslo', 23), ('s2', 'La Paz', 3640);",
    )
    .unwrap();
    file
}

fn with_db(dir: &Path) -> Config {
    let mut databases = HashMap::new();
    databases.insert("sensors".to_owned(), sensors_db(dir));
    databases.insert("gone".to_owned(), dir.join("no-such-file.db"));
    Config {
        databases,
        ..Config::ephemeral()
    }
}

#[test]
fn enrichment_adds_fields_from_a_real_sqlite_file() {
    let dir = tempfile::tempdir().unwrap();
    let s = start_with(with_db(dir.path()));
    let mut sub = subscribe(&s, "topic:readings");
    let mut p = confirming(&s);
    set_ok(
        &mut p,
        &topic("readings"),
        "enrich db=sensors table=sites key=/site",
    );
    for (site, temp) in [("s1", 1), ("s2", 2), ("s1", 3), ("nope", 4)] {
        assert!(!publish_confirmed(
            &mut p,
            "topic:readings",
            &[],
            &format!(r#"{{"site":"{site}","temp":{temp}}}"#)
        ));
    }
    assert_eq!(
        json_of(&next_msg(&mut sub)),
        json!({"site":"s1","temp":1,"city":"Oslo","alt":23})
    );
    assert_eq!(
        json_of(&next_msg(&mut sub)),
        json!({"site":"s2","temp":2,"city":"La Paz","alt":3640})
    );
    assert_eq!(
        json_of(&next_msg(&mut sub)),
        json!({"site":"s1","temp":3,"city":"Oslo","alt":23})
    );
    // No row: passed on unchanged (the default `missing=pass`).
    assert_eq!(
        &next_msg(&mut sub).payload[..],
        br#"{"site":"nope","temp":4}"#
    );

    // A header key, merged as headers.
    set_ok(
        &mut p,
        &topic("readings"),
        "enrich db=sensors table=sites key=header:site",
    );
    publish_confirmed(&mut p, "topic:readings", &[("site", "s2")], "raw");
    let m = next_msg(&mut sub);
    assert_eq!(&m.payload[..], b"raw");
    assert_eq!(m.headers.get("city"), Some("La Paz"));
    assert_eq!(m.headers.get("alt"), Some("3640"));
}

#[test]
fn filter_enrich_set_in_order_and_the_order_changes_the_result() {
    let dir = tempfile::tempdir().unwrap();
    let s = start_with(with_db(dir.path()));
    let mut sub = subscribe(&s, "topic:r");
    let mut p = confirming(&s);
    let t = topic("r");
    let payload =
        |site: &str, temp: i32| format!(r#"{{"site":"{site}","temp":{temp},"city":"?"}}"#);

    // filter → enrich → set: cold readings go; the set overwrites what enrich merged.
    set_ok(&mut p, &t, "threshold /temp > 30 | enrich db=sensors table=sites key=/site | set /city=unknown header:seen=now");
    assert!(publish_confirmed(
        &mut p,
        "topic:r",
        &[],
        &payload("s1", 10)
    ));
    assert!(!publish_confirmed(
        &mut p,
        "topic:r",
        &[],
        &payload("s1", 35)
    ));
    let m = next_msg(&mut sub);
    assert_eq!(
        json_of(&m),
        json!({"site":"s1","temp":35,"city":"unknown","alt":23})
    );
    let seen = m.headers.get("seen").expect("stamped");
    assert!(chrono::DateTime::parse_from_rfc3339(seen).is_ok(), "{seen}");

    // set → enrich → filter: enrich now overwrites the set, and the filter comes last.
    set_ok(&mut p, &t, "set /city=unknown header:seen=now | enrich db=sensors table=sites key=/site | threshold /temp > 30");
    assert!(publish_confirmed(
        &mut p,
        "topic:r",
        &[],
        &payload("s1", 10)
    ));
    assert!(!publish_confirmed(
        &mut p,
        "topic:r",
        &[],
        &payload("s1", 35)
    ));
    assert_eq!(
        json_of(&next_msg(&mut sub)),
        json!({"site":"s1","temp":35,"city":"Oslo","alt":23})
    );

    // A filter on an enriched field drops everything before enrichment, not after.
    set_ok(
        &mut p,
        &t,
        "threshold /alt > 1000 | enrich db=sensors table=sites key=/site",
    );
    assert!(publish_confirmed(&mut p, "topic:r", &[], &payload("s2", 1)));
    set_ok(
        &mut p,
        &t,
        "enrich db=sensors table=sites key=/site | threshold /alt > 1000",
    );
    assert!(publish_confirmed(&mut p, "topic:r", &[], &payload("s1", 1)));
    assert!(!publish_confirmed(
        &mut p,
        "topic:r",
        &[],
        &payload("s2", 2)
    ));
    assert_eq!(json_of(&next_msg(&mut sub))["city"], "La Paz");
    assert_no_more(&mut sub);
}

#[test]
fn bad_json_and_a_missing_database_follow_their_policies() {
    let dir = tempfile::tempdir().unwrap();
    let s = start_with(with_db(dir.path()));
    let mut sub = subscribe(&s, "topic:p");
    let mut p = confirming(&s);
    let t = topic("p");
    let good = r#"{"site":"s1"}"#;
    let cases: &[(&str, &str, bool)] = &[
        // threshold cannot show a bad payload is in range: dropped.
        ("threshold /temp > 0", "not json {", true),
        ("threshold /temp > 0", "42", true),
        // enrich: no key (bad JSON) is a missing row; default pass, or drop.
        (
            "enrich db=sensors table=sites key=/site",
            "not json {",
            false,
        ),
        (
            "enrich db=sensors table=sites key=/site missing=drop",
            "not json {",
            true,
        ),
        // set on a JSON field of a non-JSON payload: passes unchanged.
        ("set /x=1", "not json {", false),
        // The database file does not exist: the error policy, default pass.
        ("enrich db=gone table=sites key=/site", good, false),
        (
            "enrich db=gone table=sites key=/site error=drop",
            good,
            true,
        ),
    ];
    for (chain, payload, dropped) in cases {
        set_ok(&mut p, &t, chain);
        assert_eq!(
            publish_confirmed(&mut p, "topic:p", &[], payload),
            *dropped,
            "{chain} on {payload}"
        );
        if !dropped {
            assert_eq!(
                &next_msg(&mut sub).payload[..],
                payload.as_bytes(),
                "{chain}"
            );
        }
    }
    assert_no_more(&mut sub);
    // The broker never created the missing file.
    assert!(!dir.path().join("no-such-file.db").exists());
}

#[test]
fn configured_chains_are_attached_when_destinations_are_created() {
    let mut chains = HashMap::new();
    chains.insert(topic("hot"), "threshold . > 5".to_owned());
    chains.insert(queue("jobs"), "set header:via=agora".to_owned());
    let s = start_with(Config {
        chains,
        idle_timeout: std::time::Duration::from_millis(50),
        ..Config::ephemeral()
    });
    let mut c = s.connect();
    assert_eq!(chain_get(&mut c, &topic("hot")), "threshold . > 5");
    let mut sub = subscribe(&s, "topic:hot");
    for i in 0..10 {
        publish(&mut c, "topic:hot", i.to_string().as_bytes());
    }
    for i in 6..10 {
        assert_eq!(next_msg(&mut sub).payload, i.to_string().as_bytes());
    }
    publish(&mut c, "queue:jobs", b"x");
    let mut q = s.connect();
    q.send(b"SUB #1 queue:jobs 1 ack=auto\r\n");
    assert_eq!(q.next(), ServerFrame::Ok { rid: Some(1) });
    assert_eq!(next_msg(&mut q).headers.get("via"), Some("agora"));
    // A runtime chain outlives the destination's idle removal.
    set_ok(&mut c, &topic("idle"), "sample 1000");
    publish(&mut c, "topic:idle", b"1");
    wait_until("topic:idle removed", || {
        dest_stats(&c.stats(), "topic", "idle").is_none()
    });
    for _ in 0..3 {
        publish(&mut c, "topic:idle", b"1");
    }
    // The new topic has the same chain (its sampler kept counting: 1 kept in 1000).
    let st = c.stats();
    assert_eq!(dest_stats(&st, "topic", "idle").unwrap()["filtered"], 3);
}

#[test]
fn a_bad_configured_chain_is_refused_at_bind() {
    let mut chains = HashMap::new();
    chains.insert(topic("t"), "enrich db=nope table=t key=/k".to_owned());
    let e = smol::block_on(agora_server::Server::bind(Config {
        chains,
        ..Config::ephemeral()
    }))
    .err()
    .expect("refused");
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
    assert!(e.to_string().contains("topic:t"), "{e}");
}

/// Runs the binary with `--config`; it must refuse to start. Returns its stderr.
fn refused(file: &Path) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_agora"))
        .env("AGORA_MEMORY_ONLY", "true")
        .args(["--port", "0", "--config"])
        .arg(file)
        .output()
        .expect("run agora");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(out.stdout.is_empty(), "it never listened");
    String::from_utf8(out.stderr).unwrap()
}

#[test]
fn config_file_errors_stop_the_binary_naming_file_entry_and_problem() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("agora.toml");
    let cases = [
        (
            "[topics.t]\nchain = \"enrich db=nope table=t key=/k\"\n",
            "[topics.t] chain: at column 1: enrich: no database 'nope'",
        ),
        (
            "[topics.t]\nchain = \"threshold /x >> 1\"\n",
            "[topics.t] chain: at column",
        ),
        (
            "[queues.q]\nttl = \"soon\"\n",
            "[queues.q] ttl: 'soon' is not a duration",
        ),
        (
            "[queues.q]\nprefetch = 3\n",
            "line 2: unknown field `prefetch`",
        ),
        ("[queues.\"bad name\"]\n", "[queues.bad name]: bad name"),
        (
            "[broker]\nmax-payload = 5\n",
            "[broker] max-payload: unknown key: the key of --max-payload is max_payload",
        ),
        (
            "[broker]\nping_interval = \"0s\"\n",
            "[broker] ping_interval: '0s' must be above zero",
        ),
    ];
    for (text, says) in cases {
        std::fs::write(&file, text).unwrap();
        let err = refused(&file);
        let want = format!("agora: bad config file {}: {says}", file.display());
        assert!(err.contains(&want), "{text}\nwant: {want}\ngot: {err}");
    }
    let missing = dir.path().join("nope.toml");
    assert!(refused(&missing).contains(&format!("{}: the file:", missing.display())));
}

#[test]
fn config_file_declares_databases_chains_and_queue_settings() {
    let dir = tempfile::tempdir().unwrap();
    sensors_db(dir.path());
    let file = dir.path().join("agora.toml");
    std::fs::write(
        &file,
        r#"
[databases]
sensors = "sensors.db"     # next to this file

[topics.readings]
chain = "threshold /temp > 30 | enrich db=sensors table=sites key=/site | set header:seen=now"

[queues.small]
max_messages = 2
"#,
    )
    .unwrap();
    let (mut child, port, _out) = spawn_agora(&["--config", file.to_str().unwrap()]);
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let mut sub = Raw::connect(addr);
    sub.send(b"SUB #1 topic:readings 1\r\n");
    assert_eq!(sub.next(), ServerFrame::Ok { rid: Some(1) });
    let mut p = Raw::connect(addr);
    p.send(b"SETACK #2 on\r\n");
    assert_eq!(p.next(), ServerFrame::Ok { rid: Some(2) });
    assert_eq!(
        chain_get(&mut p, &topic("readings")),
        "threshold /temp > 30 | enrich db=sensors table=sites key=/site | set header:seen=now"
    );
    assert!(publish_confirmed(
        &mut p,
        "topic:readings",
        &[],
        r#"{"site":"s2","temp":3}"#
    ));
    assert!(!publish_confirmed(
        &mut p,
        "topic:readings",
        &[],
        r#"{"site":"s2","temp":33}"#
    ));
    let m = next_msg(&mut sub);
    assert_eq!(
        json_of(&m),
        json!({"site":"s2","temp":33,"city":"La Paz","alt":3640})
    );
    assert!(m.headers.get("seen").is_some());
    // At run time a client may use the declared database too, by name.
    set_ok(
        &mut p,
        &topic("other"),
        "enrich db=sensors table=sites key=header:site",
    );
    // The queue's settings: two messages at most.
    for _ in 0..2 {
        assert!(!publish_confirmed(&mut p, "queue:small", &[], "x"));
    }
    p.send(b"PUB #6 queue:small 1\r\nx\r\n");
    assert!(p.expect_err(ErrorCode::QueueFull).contains("2 messages"));
    child.kill().unwrap();
    wait_exit(&mut child);
}
