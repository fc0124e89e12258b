//! The HTTP port with tools this project did not write: a real Prometheus scrapes it
//! (and `promtool check metrics` reads its exposition), and Debian's Chromium, driven
//! by Playwright for Python, uses the console. `.ci/run` installs them; a missing one
//! fails the test, naming what to install.

mod common;

use std::path::Path;
use std::process::Command;

use agora_protocol::ServerFrame;
use agora_server::auth::{hash_password, Pattern, Rights, User};
use agora_server::Config;
use common::*;

fn with_http() -> Config {
    Config {
        http_port: Some(0),
        ..Config::ephemeral()
    }
}

fn script(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/peers")
        .join(name)
        .display()
        .to_string()
}

fn needs(check: &str, install: &str) {
    let found = Command::new("sh")
        .args(["-c", check])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(found, "`{check}` failed: {install}");
}

/// Runs a check script; what it printed (it must succeed).
fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("python3");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{said}");
    said
}

#[test]
fn prometheus_scrapes_the_queue_depth_and_promtool_accepts_the_exposition() {
    needs(
        "command -v prometheus && command -v promtool",
        "apt-get install --no-install-recommends prometheus",
    );
    let s = start_with(with_http());
    fill(&s, "jobs", 100);
    let said = run(Command::new("python3")
        .arg("-B")
        .arg(script("prometheus_check.py"))
        .args([&s.http.unwrap().to_string(), "jobs", "100"]));
    assert!(said.contains("prometheus check: ok"), "{said}");
    println!("{said}");
}

fn browser() {
    needs(
        "test -x /usr/bin/chromium",
        "apt-get install chromium (the test drives Debian's Chromium)",
    );
    needs(
        "python3 -c 'import playwright.sync_api'",
        "python3 -m pip install playwright (no `playwright install`: the system Chromium is used)",
    );
}

/// The console in a real browser: it loads without errors and asks nothing of other
/// hosts, shows the depth of a queue filled with 100 messages, and its purge empties
/// it. Screenshots for the book go to `AGORA_SCREENSHOTS` when it is set.
#[test]
fn the_console_in_chromium_shows_the_depth_and_purges() {
    browser();
    let s = start_with(with_http());
    fill(&s, "jobs", 100);
    let url = format!("http://{}/", s.http.unwrap());
    let mut cmd = Command::new("python3");
    cmd.arg("-B")
        .arg(script("console_check.py"))
        .args([url.as_str(), "admin"]);
    if let Ok(dir) = std::env::var("AGORA_SCREENSHOTS") {
        cmd.arg(dir);
    }
    let said = run(cmd.env("AGORA_EXPECT_DEPTH", "100"));
    assert!(said.contains("console check (admin): ok"), "{said}");
    // The delay from publishing to seeing is reported, not asserted.
    println!("{said}");
    wait_until("the purge emptied the queue", || {
        dest_stats(&s.connect().stats(), "queue", "jobs").is_some_and(|q| q["depth"] == 0)
    });
}

/// On a node of a cluster the console shows its links with the other nodes, and its
/// replicated queues with the node leading each.
#[test]
fn the_console_shows_a_cluster_node_s_links() {
    browser();
    let dir = tempfile::tempdir().unwrap();
    let node = |id: u64| Config {
        data_dir: Some(dir.path().join(format!("node{id}"))),
        replicated_queues: vec![Pattern::parse("queue:orders").unwrap()],
        ..cluster_node(id)
    };
    let one = Config {
        http_port: Some(0),
        ..node(1)
    };
    let (nodes, _) = start_cluster(vec![one, node(2)]);
    fill(&nodes[0], "jobs", 3);
    // The replicated queue's group, made by a publish (confirmed once it has a leader).
    let mut c = nodes[0].connect();
    c.send(b"SETACK #1 on\r\n");
    assert_eq!(c.next(), ServerFrame::Ok { rid: Some(1) });
    wait_until("a confirmed publish to queue:orders", || {
        c.send(b"PUB #2 queue:orders 1\r\nx\r\n");
        matches!(c.next(), ServerFrame::PubAck { .. })
    });
    let url = format!("http://{}/", nodes[0].http.unwrap());
    let said = run(Command::new("python3")
        .arg("-B")
        .arg(script("console_check.py"))
        .args([url.as_str(), "admin"])
        .env("AGORA_EXPECT_DEPTH", "3")
        .env("AGORA_EXPECT_CLUSTER_NODE", "2")
        .env("AGORA_EXPECT_REPLICATED", "orders"));
    assert!(said.contains("cluster: link to node 2 shown up"), "{said}");
    assert!(
        said.contains("cluster: replicated queue orders shown led by node"),
        "{said}"
    );
}

/// A user without admin rights is refused the console's actions, and nothing changes.
#[test]
fn the_console_refuses_an_action_to_a_user_without_admin_rights() {
    browser();
    let mut config = with_http();
    let hash = hash_password("pw").unwrap();
    let jobs = vec![Pattern::parse("queue:jobs").unwrap()];
    let root = Rights {
        publish: jobs.clone(),
        subscribe: jobs.clone(),
        admin: true,
    };
    let viewer = Rights {
        publish: vec![],
        subscribe: jobs,
        admin: false,
    };
    for (name, rights) in [("root", root), ("viewer", viewer)] {
        config
            .users
            .insert(User::new(name, Some(&hash), None, rights).unwrap())
            .unwrap();
    }
    let s = start_with(config);
    let mut c = s.connect();
    c.send(b"CONNECT #1 user=root password=pw\r\nSETACK #2 on\r\n");
    assert!(matches!(c.next(), ServerFrame::Ok { rid: Some(1) }));
    assert_eq!(c.next(), ServerFrame::Ok { rid: Some(2) });
    for _ in 0..5 {
        publish(&mut c, "queue:jobs", b"x");
        assert!(matches!(c.next(), ServerFrame::PubAck { .. }));
    }
    let url = format!("http://{}/", s.http.unwrap());
    let said = run(Command::new("python3")
        .arg("-B")
        .arg(script("console_check.py"))
        .args([url.as_str(), "viewer"])
        .env("AGORA_HTTP_USER", "viewer")
        .env("AGORA_HTTP_PASSWORD", "pw")
        .env("AGORA_EXPECT_DEPTH", "5"));
    assert!(said.contains("console check (viewer): ok"), "{said}");
    assert_eq!(
        dest_stats(&c.stats(), "queue", "jobs").unwrap()["depth"],
        5,
        "nothing purged"
    );
}
