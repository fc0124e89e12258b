//! The HTTP port over real sockets: health and readiness, Prometheus metrics, the JSON
//! API, the event stream, the console's actions and who may take them. A real
//! Prometheus and a real browser are in `http_peers.rs`.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;

use agora_protocol::ServerFrame;
use agora_server::auth::{hash_password, Pattern, Rights, User};
use agora_server::Config;
use common::http::{basic, get, request, CONSOLE};
use common::*;

fn with_http() -> Config {
    Config {
        http_port: Some(0),
        ..Config::ephemeral()
    }
}

fn web(s: &TestServer) -> SocketAddr {
    s.http.expect("the HTTP port")
}

#[test]
fn health_readiness_metrics_and_stats_answer() {
    let s = start_with(with_http());
    let w = web(&s);
    let h = get(w, "/healthz");
    assert_eq!((h.status, h.text().as_str()), (200, "ok\n"));
    assert_eq!(get(w, "/readyz").status, 200);
    fill(&s, "jobs", 3);
    // A memory-only queue's figures are those its task last published.
    wait_until("the metrics show the depth", || {
        get(w, "/metrics")
            .text()
            .contains("agora_queue_depth{queue=\"jobs\"} 3\n")
    });
    let m = get(w, "/metrics");
    assert!(m
        .header("content-type")
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    assert!(m
        .text()
        .contains("# TYPE agora_queue_messages_in_total counter\n"));
    let st = get(w, "/api/stats?prefix=jo&limit=5").json();
    assert_eq!(st["destinations"][0]["name"], "jobs");
    assert_eq!(st["destinations"][0]["depth"], 3);
    assert_eq!(st["page"]["limit"], 5);
    let bad = get(w, "/api/stats?limt=5");
    assert_eq!(
        (bad.status, bad.json()["error"]["code"].as_str()),
        (400, Some("bad_args"))
    );
    assert_eq!(get(w, "/nowhere").status, 404);
}

#[test]
fn connections_are_listed_with_their_name_protocol_and_bytes() {
    let s = start_with(with_http());
    let mut c = s.connect();
    c.send(b"CONNECT #1 name=worker-7\r\nSUB #2 topic:prices 1\r\n");
    assert_eq!(c.next(), ServerFrame::Ok { rid: Some(1) });
    assert_eq!(c.next(), ServerFrame::Ok { rid: Some(2) });
    let list = get(web(&s), "/api/connections").json();
    let me = list["connections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "worker-7")
        .unwrap_or_else(|| panic!("worker-7 in {list}"))
        .clone();
    assert_eq!(me["protocol"], "tcp");
    assert_eq!(me["subscriptions"], 1);
    assert!(me["bytes_in"].as_u64().unwrap() > 0, "{me}");
    assert!(me["bytes_out"].as_u64().unwrap() > 0, "INFO and OKs: {me}");
    assert!(me["address"].as_str().unwrap().starts_with("127.0.0.1:"));
    // Paged: one at a time.
    let first = get(web(&s), "/api/connections?limit=1").json();
    assert_eq!(first["page"]["listed"], 1);
    // STATS lists them too, paged the same way, when asked.
    let mut other = s.connect();
    let mut pages = Vec::new();
    let mut after = String::new();
    for rid in 10..20u64 {
        other.send(format!("STATS #{rid} connections=1{after}\r\n").as_bytes());
        let ServerFrame::StatsResp { json, .. } = other.next() else {
            panic!("STATSRESP")
        };
        let doc: serde_json::Value = serde_json::from_slice(&json).unwrap();
        let page = doc["connections"].clone();
        pages.push(page["connections"][0]["id"].as_u64().unwrap());
        match page["page"]["next"].as_u64() {
            Some(n) => after = format!(" connections_after={n}"),
            None => break,
        }
    }
    assert_eq!(pages.len(), 2, "worker-7 and this one: {pages:?}");
    other.send(b"STATS #30\r\n");
    let ServerFrame::StatsResp { json, .. } = other.next() else {
        panic!("STATSRESP")
    };
    let doc: serde_json::Value = serde_json::from_slice(&json).unwrap();
    assert!(doc.get("connections").is_none(), "not unless asked");
    drop(c);
    wait_until("the connection leaves the list", || {
        !get(web(&s), "/api/connections").text().contains("worker-7")
    });
}

#[test]
fn actions_need_the_console_header_and_a_same_site_origin() {
    let s = start_with(with_http());
    let w = web(&s);
    fill(&s, "jobs", 2);
    let purge =
        |headers: &[(&str, &str)]| request(w, "POST", "/api/queues/jobs/purge", headers, b"");
    let a = purge(&[]);
    assert_eq!(a.status, 403);
    assert!(a.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("X-Agora-Console"));
    let a = purge(&[CONSOLE, ("origin", "http://evil.example")]);
    assert_eq!(a.status, 403, "{}", a.text());
    let host = format!("http://{w}");
    let a = purge(&[CONSOLE, ("origin", host.as_str())]);
    assert_eq!((a.status, a.json()["purged"].as_u64()), (200, Some(2)));
    wait_until("the queue is empty", || {
        get(w, "/api/stats?prefix=jobs").json()["destinations"][0]["depth"] == 0
    });
    // A queue that is not there.
    let a = request(w, "DELETE", "/api/queues/nosuch", &[CONSOLE], b"");
    assert_eq!(a.status, 404, "{}", a.text());
}

#[test]
fn peek_publish_and_chains_from_the_console() {
    let s = start_with(with_http());
    let w = web(&s);
    fill(&s, "jobs", 2);
    let p = get(w, "/api/queues/jobs/peek?limit=5").json();
    let payloads: Vec<&str> = p["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["payload"].as_str().unwrap())
        .collect();
    assert_eq!(payloads, ["m0", "m1"]);
    // Peeking took nothing.
    assert_eq!(
        get(w, "/api/stats?prefix=jobs").json()["destinations"][0]["depth"],
        2
    );
    // A test message to a topic reaches its subscriber.
    let mut sub = s.connect();
    sub.send(b"SUB #1 topic:prices 1\r\n");
    assert_eq!(sub.next(), ServerFrame::Ok { rid: Some(1) });
    let a = request(w, "POST", "/api/publish/topic/prices", &[CONSOLE], b"101.5");
    assert_eq!(a.status, 200, "{}", a.text());
    let ServerFrame::Msg(m) = sub.next() else {
        panic!("a delivery")
    };
    assert_eq!(&m.payload[..], b"101.5");
    // A chain: set, read back, refused when it does not parse, cleared.
    let path = "/api/chain/topic/prices";
    let a = request(w, "PUT", path, &[CONSOLE], b"sample 2");
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(get(w, path).json()["chain"], "sample 2");
    let a = request(w, "PUT", path, &[CONSOLE], b"frobnicate 9");
    assert_eq!(a.status, 400, "{}", a.text());
    assert!(a.json()["error"]["code"].is_string());
    assert_eq!(request(w, "DELETE", path, &[CONSOLE], b"").status, 200);
    assert!(get(w, path).json()["chain"].is_null());
}

#[test]
fn the_event_stream_sends_figures_and_viewers_are_bounded() {
    let s = start_with(Config {
        http_max_viewers: 1,
        ..with_http()
    });
    let w = web(&s);
    let mut stream = std::net::TcpStream::connect(w).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    stream
        .write_all(format!("GET /api/events HTTP/1.1\r\nhost: {w}\r\n\r\n").as_bytes())
        .unwrap();
    let mut lines = BufReader::new(stream.try_clone().unwrap()).lines();
    let mut seen = Vec::new();
    while !seen.iter().any(|l: &String| l.starts_with("data: {")) {
        seen.push(
            lines
                .next()
                .expect("a line")
                .expect("read within the deadline"),
        );
    }
    assert!(
        seen.iter().any(|l| l.contains("text/event-stream")),
        "{seen:?}"
    );
    assert!(seen.iter().any(|l| l == "event: stats"), "{seen:?}");
    let data = seen.iter().find(|l| l.starts_with("data: {")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&data["data: ".len()..]).unwrap();
    assert!(v["stats"]["clients"].is_object() && v["connections"]["page"].is_object());
    // The one place is taken.
    let second = get(w, "/api/events");
    assert_eq!(second.status, 503, "{}", second.text());
    drop(lines);
    drop(stream);
}

fn with_users() -> Config {
    let mut c = with_http();
    let hash = hash_password("pw").unwrap();
    let p = |l: &[&str]| l.iter().map(|p| Pattern::parse(p).unwrap()).collect();
    let viewer = Rights {
        publish: p(&[]),
        subscribe: p(&["queue:jobs"]),
        admin: false,
    };
    // Admin is the right to manage; publishing is a right of its own.
    let admin = Rights {
        publish: p(&["queue:>"]),
        subscribe: p(&[]),
        admin: true,
    };
    for (name, rights) in [("viewer", viewer), ("root", admin)] {
        c.users
            .insert(User::new(name, Some(&hash), None, rights).unwrap())
            .unwrap();
    }
    c
}

#[test]
fn with_users_reads_need_credentials_and_actions_need_admin() {
    let s = start_with(with_users());
    let w = web(&s);
    // Health needs nothing.
    assert_eq!(get(w, "/healthz").status, 200);
    let a = get(w, "/api/stats");
    assert_eq!(a.status, 401);
    assert!(a.header("www-authenticate").unwrap().starts_with("Basic"));
    let wrong = basic("viewer", "nope");
    let a = request(
        w,
        "GET",
        "/api/stats",
        &[("authorization", wrong.as_str())],
        b"",
    );
    assert_eq!(a.status, 401);
    // Two queues; the viewer sees its own.
    let admin = basic("root", "pw");
    let viewer = basic("viewer", "pw");
    let as_admin = [("authorization", admin.as_str()), CONSOLE];
    let as_viewer = [("authorization", viewer.as_str()), CONSOLE];
    for q in ["jobs", "secret"] {
        let path = format!("/api/publish/queue/{q}");
        let a = request(w, "POST", &path, &as_admin, b"x");
        assert_eq!(a.status, 200, "{}", a.text());
    }
    let names = |auth: &[(&str, &str)]| -> Vec<String> {
        request(w, "GET", "/api/stats", auth, b"").json()["destinations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(names(&as_viewer), ["jobs"]);
    assert_eq!(names(&as_admin), ["jobs", "secret"]);
    let m = request(w, "GET", "/metrics", &as_viewer, b"").text();
    assert!(m.contains("queue=\"jobs\"") && !m.contains("secret"), "{m}");
    // The viewer may not act; the admin may.
    let a = request(w, "POST", "/api/queues/jobs/purge", &as_viewer, b"");
    assert_eq!(a.status, 403);
    assert_eq!(a.json()["error"]["code"], "not_permitted");
    let a = request(w, "POST", "/api/queues/jobs/purge", &as_admin, b"");
    assert_eq!(a.status, 200, "{}", a.text());
}

/// A connection that sends no request head (a new one, or one kept alive after a
/// request) is closed after the header timeout (10 s), so silent clients cannot hold
/// the port's places.
#[test]
fn silent_and_idle_connections_are_closed() {
    use std::io::Read;
    let s = start_with(with_http());
    let w = web(&s);
    let silent = std::net::TcpStream::connect(w).unwrap();
    let mut idle = std::net::TcpStream::connect(w).unwrap();
    idle.write_all(format!("GET /healthz HTTP/1.1\r\nhost: {w}\r\n\r\n").as_bytes())
        .unwrap();
    let closes = |mut c: std::net::TcpStream| {
        std::thread::spawn(move || {
            // Longer than the header timeout, bounded.
            c.set_read_timeout(Some(std::time::Duration::from_secs(30)))
                .unwrap();
            let mut all = Vec::new();
            c.read_to_end(&mut all).map(|_| all)
        })
    };
    let (a, b) = (closes(silent), closes(idle));
    assert_eq!(a.join().unwrap().expect("closed, not timed out"), b"");
    let answered = String::from_utf8(b.join().unwrap().expect("closed")).unwrap();
    assert!(answered.starts_with("HTTP/1.1 200 OK"), "{answered}");
}
