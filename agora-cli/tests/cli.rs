//! `agora-cli` driven as a process against an in-process broker.

// The SDK tests' support (an in-process broker, a fake broker, certificates), shared.
#[path = "../../agora-client/tests/common/mod.rs"]
mod common;

use std::io::{Read, Write};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use agora_client::Client;
use agora_server::Config;
use common::fake::{connect_frame, fake_broker, Answer};
use common::pki::{tls_config, Pki};
use common::{start, start_with, wait_until, DEADLINE};

fn cli(server: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_agora-cli"));
    c.env_remove("AGORA_SERVER")
        .env_remove("AGORA_PASSWORD")
        .arg("--server")
        .arg(server)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// Waits for the process to exit, killing it and failing the test after the deadline.
fn finish(mut child: Child) -> Output {
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let o = std::thread::spawn(move || {
        let mut v = Vec::new();
        out.read_to_end(&mut v).unwrap();
        v
    });
    let e = std::thread::spawn(move || {
        let mut v = Vec::new();
        err.read_to_end(&mut v).unwrap();
        v
    });
    let end = Instant::now() + DEADLINE;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            panic!("agora-cli did not exit within {DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Output {
        status,
        stdout: o.join().unwrap(),
        stderr: e.join().unwrap(),
    }
}

fn run(cmd: &mut Command) -> Output {
    finish(cmd.spawn().expect("spawn agora-cli"))
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}, stderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout.clone()).unwrap()
}

async fn consumers(c: &Client, kind: &str, name: &str) -> u64 {
    let s = c.stats().await.unwrap();
    s.destinations
        .iter()
        .find(|d| d.kind == kind && d.name == name)
        .map_or(0, |d| d.consumers)
}

#[test]
fn ping_and_the_env_variable() {
    let server = start();
    let o = run(cli(&server.addr.to_string()).arg("ping"));
    assert!(ok(&o).starts_with("pong from agora"));
    // AGORA_SERVER stands in for --server
    let o = run(Command::new(env!("CARGO_BIN_EXE_agora-cli"))
        .env("AGORA_SERVER", server.addr.to_string())
        .arg("ping")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped()));
    assert!(ok(&o).starts_with("pong"));
}

#[test]
fn pub_and_sub_on_a_topic() {
    let server = start();
    let addr = server.addr.to_string();
    let sub = cli(&addr)
        .args(["sub", "--topic", "news", "--count", "3"])
        .spawn()
        .unwrap();
    smol::block_on(async {
        let c = Client::connect(server.addr).await.unwrap();
        wait_until("agora-cli subscribed", || async {
            consumers(&c, "topic", "news").await == 1
        })
        .await;
    });
    ok(&run(cli(&addr).args([
        "pub",
        "--topic",
        "news",
        "one",
        "two words",
    ])));
    // no MESSAGE: one per stdin line
    let mut p = cli(&addr)
        .args(["pub", "--topic", "news"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    p.stdin.take().unwrap().write_all(b"three\n").unwrap();
    ok(&finish(p));
    assert_eq!(ok(&finish(sub)), "one\ntwo words\nthree\n");
}

#[test]
fn queue_publish_from_stdin_confirmed_then_consume_and_stats() {
    let server = start();
    let addr = server.addr.to_string();
    let mut p = cli(&addr)
        .args(["pub", "--queue", "jobs", "--confirm"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    p.stdin.take().unwrap().write_all(b"a\nb\nc\nd\n").unwrap();
    ok(&finish(p));
    let o = run(cli(&addr).args([
        "consume",
        "--queue",
        "jobs",
        "--count",
        "3",
        "--prefetch",
        "2",
    ]));
    assert_eq!(ok(&o), "a\nb\nc\n");
    // The consumer's acks and its going away reach the queue's task after its
    // process ended: wait for the queue to show them before reading the table.
    futures_lite::future::block_on(async {
        let client = Client::connect(&addr).await.unwrap();
        wait_until("jobs shows depth 1, unacked 0", || async {
            let s = client.stats().await.unwrap();
            s.destinations
                .iter()
                .any(|d| d.name == "jobs" && (d.depth, d.unacked) == (1, 0))
        })
        .await;
    });

    let table = ok(&run(cli(&addr).arg("stats")));
    assert!(table.starts_with("agora "), "{table}");
    let row = table
        .lines()
        .find(|l| l.starts_with("queue:jobs"))
        .unwrap_or_else(|| panic!("no queue:jobs row in\n{table}"));
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(&cols[1..3], ["1", "0"], "depth 1, unacked 0: {row}");
    let json = ok(&run(cli(&addr).args(["stats", "--json"])));
    assert!(json.contains("\"destinations\""));
    assert_eq!(
        ok(&run(
            cli(&addr).args(["consume", "--queue", "jobs", "--count", "1"])
        )),
        "d\n"
    );
}

#[test]
fn a_refused_unconfirmed_publish_fails_the_command() {
    let server = start_with(Config {
        queue_max_messages: 1,
        ..Config::ephemeral()
    });
    let o = run(cli(&server.addr.to_string()).args(["pub", "--queue", "q", "1", "2"]));
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("queue_full"), "{err}");
}

#[test]
fn a_bad_server_address_fails_with_a_message() {
    let freed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    for server in [freed.to_string(), "no-such-host.invalid:1".to_owned()] {
        let o = run(cli(&server).arg("ping"));
        assert!(!o.status.success());
        assert!(o.stdout.is_empty());
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.starts_with("agora-cli: cannot connect to"), "{err}");
    }
    // usage errors are clap's: exit 2
    let o = run(cli("127.0.0.1:1").args(["pub", "--confirm", "--topic", "t"]));
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn udp_publish_then_list_purge_and_delete() {
    let server = start();
    let addr = server.addr.to_string();
    // Over UDP: no answer is read, so wait for the broker to have taken them.
    ok(&run(cli(&addr).args([
        "pub", "--udp", "--queue", "sensors", "1", "2", "3",
    ])));
    futures_lite::future::block_on(async {
        let client = Client::connect(&addr).await.unwrap();
        wait_until("the UDP publishes arrive", || async {
            let s = client.stats().await.unwrap();
            s.destinations
                .iter()
                .any(|d| d.name == "sensors" && d.depth == 3)
        })
        .await;
    });
    let list = ok(&run(cli(&addr).arg("list")));
    assert!(
        list.contains("queue:sensors depth=3 unacked=0 consumers=0"),
        "{list}"
    );
    let o = run(cli(&addr).args(["purge", "--queue", "sensors"]));
    ok(&o);
    assert!(String::from_utf8_lossy(&o.stderr).contains("purged queue:sensors"));
    assert!(ok(&run(cli(&addr).arg("list"))).contains("queue:sensors depth=0"));
    ok(&run(cli(&addr).args(["delete", "--queue", "sensors"])));
    assert!(!ok(&run(cli(&addr).arg("list"))).contains("queue:sensors"));
    // Deleting what is not there fails with the broker's reason.
    let o = run(cli(&addr).args(["delete", "--topic", "nothing"]));
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown_destination"));
    // --udp cannot confirm.
    let o = run(cli(&addr).args(["pub", "--udp", "--confirm", "--queue", "q", "x"]));
    assert_eq!(o.status.code(), Some(2));
}

fn failed(o: &Output) -> String {
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(o.stdout.is_empty());
    String::from_utf8(o.stderr.clone()).unwrap()
}

#[test]
fn tls_with_a_ca_file_and_refusals_naming_the_address() {
    let pki = Pki::new("test");
    let server = start_with(tls_config(&pki.issue("server"), None));
    let addr = server.addr.to_string();
    let ca = pki.ca_file();
    let tls = |args: &[&str]| {
        let mut c = cli(&addr);
        c.arg("--ca").arg(&ca).args(args);
        c
    };
    assert!(ok(&run(&mut tls(&["ping"]))).starts_with("pong from agora"));
    // The options go after the command too (they are global).
    let sub = cli(&addr)
        .args(["sub", "--topic", "news", "--count", "2", "--ca"])
        .arg(&ca)
        .spawn()
        .unwrap();
    smol::block_on(async {
        let c = Client::builder().ca_file(&ca).connect(&addr).await.unwrap();
        wait_until("agora-cli subscribed", || async {
            consumers(&c, "topic", "news").await == 1
        })
        .await;
    });
    ok(&run(&mut tls(&["pub", "--topic", "news", "one", "two"])));
    assert_eq!(ok(&finish(sub)), "one\ntwo\n");

    // Another CA's file, or the system's CAs: the broker's certificate is refused.
    let other = Pki::new("other");
    for trust in [vec!["--ca".into(), other.ca_file()], vec!["--tls".into()]] {
        let err = failed(&run(cli(&addr).args(&trust).arg("ping")));
        assert!(
            err.contains("certificate not trusted") || err.contains("no CA certificates"),
            "{err}"
        );
        assert!(err.contains(&addr), "{err}");
    }
    // A CA file that is not there is named.
    let err = failed(&run(cli(&addr).args(["--ca", "/no/such/ca.pem", "ping"])));
    assert!(err.contains("/no/such/ca.pem"), "{err}");
}

#[test]
fn tls_with_a_client_certificate() {
    let pki = Pki::new("broker");
    let clients = Pki::new("clients");
    let server = start_with(tls_config(&pki.issue("server"), Some(&clients.ca_file())));
    let addr = server.addr.to_string();
    let me = clients.issue("me");
    let o = run(cli(&addr)
        .arg("--ca")
        .arg(pki.ca_file())
        .arg("--cert")
        .arg(&me.cert)
        .arg("--key")
        .arg(&me.key)
        .arg("ping"));
    assert!(ok(&o).starts_with("pong from agora"));
    let err = failed(&run(cli(&addr).arg("--ca").arg(pki.ca_file()).arg("ping")));
    assert!(
        err.contains("tls with the broker at") && err.contains(&addr),
        "{err}"
    );
    // --cert needs --key: a usage error.
    let o = run(cli(&addr).arg("--cert").arg(&me.cert).arg("ping"));
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn credentials_from_the_environment_and_auth_failed() {
    let (addr, connects) = fake_broker(vec![Answer::AuthFailed]);
    let addr = addr.to_string();
    let err = failed(&run(cli(&addr)
        .env("AGORA_PASSWORD", "from env")
        .args(["--user", "alice", "ping"])));
    assert!(err.contains("auth_failed") && err.contains(&addr), "{err}");
    let c = connect_frame(&connects.recv_timeout(DEADLINE).unwrap());
    assert_eq!(c.user.as_deref(), Some("alice"));
    assert_eq!(c.password.as_ref().map(|p| p.expose()), Some("from env"));
    // --password alone is a usage error; --udp takes no credentials or TLS.
    let o = run(cli(&addr).args(["--password", "x", "ping"]));
    assert_eq!(o.status.code(), Some(2));
    let o = run(cli(&addr).args(["--tls", "pub", "--udp", "--topic", "t", "x"]));
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn request_and_reply_run_a_command_for_each_request() {
    let server = start();
    let addr = server.addr.to_string();
    // Nobody answers yet: at once, with the broker's reason.
    let o = run(cli(&addr).args(["request", "--topic", "upper", "x"]));
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("no_responders"), "{err}");
    for (kind, flag) in [("topic", "--topic"), ("queue", "--queue")] {
        let replier = cli(&addr)
            .args([
                "reply", flag, "upper", "--count", "2", "--", "tr", "a-z", "A-Z",
            ])
            .spawn()
            .unwrap();
        smol::block_on(async {
            let c = Client::connect(server.addr).await.unwrap();
            wait_until("agora-cli reply subscribed", || async {
                consumers(&c, kind, "upper").await == 1
            })
            .await;
        });
        let o = run(cli(&addr).args(["request", flag, "upper", "hello"]));
        assert_eq!(ok(&o), "HELLO\n", "{kind}");
        // The payload from stdin when no argument is given.
        let mut r = cli(&addr)
            .args(["request", flag, "upper", "--timeout", "5"])
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        r.stdin.take().unwrap().write_all(b"from stdin").unwrap();
        assert_eq!(ok(&finish(r)), "FROM STDIN\n", "{kind}");
        ok(&finish(replier));
    }
}

#[test]
fn reply_from_a_queue_skips_a_message_that_is_no_request_and_goes_on() {
    let server = start();
    let addr = server.addr.to_string();
    let replier = cli(&addr)
        .args(["reply", "--queue", "mixed", "--count", "2", "--", "cat"])
        .spawn()
        .unwrap();
    smol::block_on(async {
        let c = Client::connect(server.addr).await.unwrap();
        wait_until("agora-cli reply consumes", || async {
            consumers(&c, "queue", "mixed").await == 1
        })
        .await;
        c.queue("mixed")
            .unwrap()
            .publish_confirmed("plain")
            .await
            .unwrap();
    });
    let o = run(cli(&addr).args(["request", "--queue", "mixed", "echo me"]));
    assert_eq!(ok(&o), "echo me\n");
    let out = finish(replier);
    ok(&out);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a request"), "{err}");
}

fn run_cli(server: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_agora-cli"))
        .env_remove("AGORA_SERVER")
        .arg("--server")
        .arg(server)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run agora-cli")
}

#[test]
fn agora_cli_chain_get_set_clear() {
    let s = start();
    let server = s.addr.to_string();
    let o = run_cli(&server, &["chain", "get", "--topic", "t"]);
    assert!(o.status.success(), "{o:?}");
    assert!(o.stdout.is_empty(), "no chain: nothing printed");
    let chain = "threshold /temp > 30 | sample 10";
    let o = run_cli(&server, &["chain", "set", "--topic", "t", chain]);
    assert!(o.status.success(), "{o:?}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("chain of topic:t set"));
    let o = run_cli(&server, &["chain", "get", "--topic", "t"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), format!("{chain}\n"));
    let o = run_cli(&server, &["chain", "set", "--queue", "q", "frobnicate"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("bad_chain") && err.contains("unknown mutator"),
        "{err}"
    );
    let o = run_cli(&server, &["chain", "set", "--queue", "q"]);
    assert!(!o.status.success(), "set needs a chain");
    let o = run_cli(&server, &["chain", "clear", "--topic", "t"]);
    assert!(o.status.success(), "{o:?}");
    let o = run_cli(&server, &["chain", "get", "--topic", "t"]);
    assert!(o.stdout.is_empty());
    let o = run_cli(&server, &["chain", "get", "--topic", "t", "--queue", "q"]);
    assert_eq!(o.status.code(), Some(2), "one destination only");
}

#[test]
fn connections_lists_each_client_with_its_name_protocol_and_bytes() {
    let server = start();
    let addr = server.addr.to_string();
    futures_lite::future::block_on(async {
        let named = Client::builder()
            .name("worker-9")
            .connect(&addr)
            .await
            .unwrap();
        let _sub = named.subscribe("prices").await.unwrap();
        let out = ok(&run(cli(&addr).arg("connections")));
        let line = out
            .lines()
            .find(|l| l.contains("name=worker-9"))
            .unwrap_or_else(|| panic!("worker-9 in\n{out}"));
        let cols: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(cols[2], "tcp", "{line}");
        assert!(cols[1].starts_with("127.0.0.1:"), "{line}");
        assert!(line.contains(" subs=1 "), "{line}");
        // The CLI's own connection is listed too.
        assert!(out.lines().count() >= 2, "{out}");
        drop(named);
    });
}

/// Several brokers in `--server`, tried in turn; and a cluster: what `pub` sends on one
/// node, `sub` on another receives.
#[test]
fn several_servers_and_a_cluster() {
    let nodes = common::start_cluster(2);
    // A port nobody listens on (a listener bound and let go), then node 2.
    let gone = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let list = format!("{gone},{}", nodes[1].addr);
    let o = run(cli(&list).arg("ping"));
    assert!(ok(&o).starts_with("pong from agora"));
    let sub = cli(&nodes[1].addr.to_string())
        .args(["sub", "--topic", "cli.cluster", "--count", "1"])
        .spawn()
        .unwrap();
    smol::block_on(async {
        let c = Client::connect(nodes[0].addr).await.unwrap();
        wait_until("node 1 counts node 2's subscriber", || async {
            consumers(&c, "topic", "cli.cluster").await == 1
        })
        .await;
    });
    let o = run(cli(&nodes[0].addr.to_string()).args(["pub", "--topic", "cli.cluster", "across"]));
    ok(&o);
    let o = finish(sub);
    assert_eq!(ok(&o).trim(), "across");
}
