//! The table's own tests: defaults, conventions, the command line it makes, and the
//! precedence of flag, variable, file and default.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;

use super::*;
use crate::config::SlowConsumerPolicy;

/// A fake environment.
fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> {
    let vars: HashMap<String, OsString> = vars
        .iter()
        .map(|&(k, v)| (k.to_owned(), v.into()))
        .collect();
    move |k| vars.get(k).cloned()
}

/// The flags given by `args`, parsed by the real command line (without reading the
/// environment).
fn flags_of(args: &[&str]) -> Flags {
    let m = build(false)
        .try_get_matches_from(std::iter::once("agora").chain(args.iter().copied()))
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    flags(&m)
}

fn file(text: &str) -> ConfigFile {
    ConfigFile::parse(Path::new("/etc/agora/agora.toml"), text).expect("parses")
}

fn resolved(
    args: &[&str],
    vars: &[(&str, &str)],
    text: Option<&str>,
) -> Result<Settings, SettingsError> {
    let file = text.map(file);
    resolve_with(
        &flags_of(args),
        &env(vars),
        file.as_ref(),
        Settings::default(),
    )
}

#[test]
fn each_default_in_the_table_is_the_default_of_config() {
    let mut s = Settings::default();
    for setting in SETTINGS {
        if let Some(d) = setting.default {
            (setting.apply)(&mut s, OsStr::new(d))
                .unwrap_or_else(|e| panic!("--{} default {d}: {e}", setting.flag));
        }
    }
    assert_eq!(s, Settings::default());
    // And the settings without a default are unset by default.
    let d = Settings::default();
    assert_eq!(
        (d.config.message_ttl, d.config.ack_timeout, &d.config.statsd),
        (None, None, &None)
    );
    assert_eq!((d.threads, d.profile, &d.log_config), (None, false, &None));
}

#[test]
fn each_setting_changes_the_settings() {
    // One valid value, not the default, per setting: applying it must change something,
    // so no entry is a no-op.
    let samples: HashMap<&str, &str> = [
        ("port", "4222"),
        ("bind", "::1"),
        ("tls_cert", "server.pem"),
        ("tls_key", "server.key"),
        ("tls_client_ca", "clients.pem"),
        ("tls_handshake_timeout", "3s"),
        ("auth_timeout", "3s"),
        ("allow_anonymous", "true"),
        ("udp_anonymous_publish", "topic:sensors.>,queue:readings"),
        ("data_dir", "/var/lib/agora"),
        ("memory_only", "true"),
        ("fsync", "every=200ms"),
        ("max_disk", "1048576"),
        ("repair", "true"),
        ("max_payload", "77"),
        ("max_connections", "3"),
        ("queue_max_messages", "3"),
        ("queue_max_bytes", "3"),
        ("durable_queue_max_messages", "3"),
        ("durable_queue_max_bytes", "3"),
        ("durable_queue_memory", "3"),
        ("default_prefetch", "3"),
        ("subscriber_buffer", "3"),
        ("slow_consumer", "disconnect"),
        ("idle_timeout", "3"),
        ("max_deliveries", "0"),
        ("message_ttl", "3s"),
        ("ack_timeout", "3s"),
        ("dedup_window", "3s"),
        ("mqtt_port", "1883"),
        ("ws_port", "8080"),
        ("mqtt_retained_bytes", "3"),
        ("mqtt_retained_topics", "3"),
        ("mqtt_session_expiry", "90s"),
        ("cluster_name", "eu-1"),
        ("node_id", "2"),
        ("cluster_listen", "127.0.0.1:7480"),
        ("peers", "1=127.0.0.1:7479,2=127.0.0.1:7480"),
        ("cluster_secret", "0123456789abcdef"),
        ("replicated_queues", "orders,jobs.>"),
        ("raft_compact_bytes", "8192"),
        ("raft_tick", "50ms"),
        ("cluster_ca", "/etc/agora/cluster-ca.pem"),
        ("cluster_cert", "/etc/agora/node.pem"),
        ("cluster_key", "/etc/agora/node.key"),
        ("http_port", "0"),
        ("http_max_connections", "9"),
        ("http_max_viewers", "3"),
        ("http_metrics_destinations", "50"),
        ("dedup_ids", "3"),
        ("max_destinations", "3"),
        ("memory_budget", "3"),
        ("max_output", "3"),
        ("read_budget", "3"),
        ("read_wait", "3s"),
        ("rss_limit", "3"),
        ("write_timeout", "3s"),
        ("max_subscriptions", "3"),
        ("ping_interval", "3s"),
        ("max_missed_pings", "3"),
        ("udp_idle_timeout", "3s"),
        ("udp_max_datagram", "300"),
        ("statsd", "localhost:8125"),
        ("statsd_prefix", "prod.agora"),
        ("statsd_interval", "3s"),
        ("profile", "true"),
        ("profile_path", "x.pprof"),
        ("threads", "3"),
        ("queue_channel", "3"),
        ("ablate", "no-batching,no-metrics"),
        ("log_config", "log.xml"),
        ("config", "agora.toml"),
    ]
    .into_iter()
    .collect();
    for s in SETTINGS {
        let v = samples
            .get(s.key)
            .unwrap_or_else(|| panic!("give {} a sample value here", s.key));
        let mut changed = Settings::default();
        (s.apply)(&mut changed, OsStr::new(v)).unwrap_or_else(|e| panic!("{}: {e}", s.key));
        assert_ne!(
            changed,
            Settings::default(),
            "{} = {v} changed nothing",
            s.key
        );
    }
    assert_eq!(samples.len(), SETTINGS.len());
}

#[test]
fn names_follow_one_convention() {
    let mut keys = std::collections::BTreeSet::new();
    for s in SETTINGS {
        assert!(keys.insert(s.key), "{} twice", s.key);
        assert_eq!(s.flag, s.key.replace('_', "-"), "{}", s.key);
        assert_eq!(
            s.env,
            format!("AGORA_{}", s.key.to_uppercase()),
            "{}",
            s.key
        );
        assert!(
            !s.doc.ends_with('.'),
            "--{}: clap's help lines end without a full stop",
            s.flag
        );
        assert!(!s.valid.is_empty() && !s.doc.is_empty(), "{}", s.key);
        assert!(
            s.default.is_some() || !s.default_note.is_empty(),
            "--{} needs a default or a note saying what it is without one",
            s.flag
        );
    }
    build(true).debug_assert();
}

#[test]
fn every_choice_is_accepted_and_nothing_else() {
    for s in SETTINGS.iter().filter(|s| !s.choices.is_empty()) {
        for (name, _) in s.choices {
            (s.apply)(&mut Settings::default(), OsStr::new(name)).expect(name);
        }
        let e = (s.apply)(&mut Settings::default(), OsStr::new("sometimes")).unwrap_err();
        assert!(e.starts_with("possible values: "), "{e}");
    }
}

#[test]
fn values_are_checked_in_the_words_clap_used() {
    let bad = |key: &str, v: &str| {
        let s = find(key).unwrap();
        (s.apply)(&mut Settings::default(), OsStr::new(v)).unwrap_err()
    };
    assert_eq!(bad("port", "notaport"), "invalid digit found in string");
    assert_eq!(bad("port", "70000"), "70000 is not in 0..=65535");
    assert_eq!(bad("port", "-1"), "-1 is not in 0..=65535");
    assert_eq!(bad("bind", "localhost"), "invalid IP address syntax");
    assert_eq!(bad("max_payload", "0"), "0 is not in 1..=67108864");
    assert_eq!(
        bad("max_payload", ""),
        "cannot parse integer from empty string"
    );
    assert_eq!(
        bad("max_payload", "99999999999999999999999"),
        "number too large to fit in target type"
    );
    assert_eq!(
        bad("max_connections", "0"),
        "0 is not in 1..18446744073709551615"
    );
    assert_eq!(
        bad("default_prefetch", "65537"),
        "65537 is not in 1..=65536"
    );
    assert_eq!(bad("idle_timeout", "5s"), "invalid digit found in string");
    assert_eq!(
        bad("max_deliveries", "4294967296"),
        "4294967296 is not in 0..=4294967295"
    );
    assert_eq!(bad("max_missed_pings", "0"), "0 is not in 1..=4294967295");
    assert_eq!(bad("udp_max_datagram", "10"), "10 is not in 64..=65507");
    assert_eq!(bad("threads", "1025"), "1025 is not in 1..=1024");
    assert_eq!(bad("queue_channel", "0"), "0 is not in 1..=1000000");
    assert_eq!(bad("ack_timeout", "5"), "'5' needs a unit: ms, s, m or h");
    assert_eq!(bad("ping_interval", "0s"), "'0s' must be above zero");
    for t in ["10ms", "19ms", "2s"] {
        assert_eq!(
            bad("raft_tick", t),
            format!("'{t}' must be from 20ms to 1s")
        );
    }
    assert_eq!(
        bad("message_ttl", "3fortnights"),
        "unknown unit 'fortnights' in '3fortnights': use ms, s, m or h"
    );
    assert_eq!(
        bad("ping_interval", "9999999999999999h"),
        "'9999999999999999h' is too long"
    );
    assert_eq!(bad("profile", "yes"), "possible values: true, false");
    assert_eq!(bad("log_config", ""), "a value is required");
}

#[test]
fn durations() {
    for (text, d) in [
        ("250ms", Duration::from_millis(250)),
        ("30s", Duration::from_secs(30)),
        ("5m", Duration::from_secs(300)),
        ("1h", Duration::from_secs(3600)),
        (" 2s ", Duration::from_secs(2)),
    ] {
        assert_eq!(parse_duration(text), Ok(d), "{text}");
    }
    for text in [
        "",
        "s",
        "1.5s",
        "1 s",
        "0ms",
        "-1s",
        "1d",
        "99999999999999999999h",
    ] {
        assert!(parse_duration(text).is_err(), "{text}");
    }
}

#[test]
fn the_command_line_parses_into_the_table() {
    let f = flags_of(&[
        "--max-payload",
        "77",
        "--profile",
        "--ablate",
        "no-batching,copy-fanout",
        "--ablate",
        "no-metrics",
    ]);
    assert_eq!(f["max_payload"], [OsString::from("77")]);
    assert_eq!(f["profile"], [OsString::from("true")]);
    assert_eq!(f.len(), 3, "defaults are not flags: {f:?}");
    let s = resolve_with(&f, &env(&[]), None, Settings::default()).unwrap();
    assert_eq!(s.config.max_payload, 77);
    assert!(s.profile);
    let a = s.config.ablation;
    assert!(a.no_batching && a.copy_fanout && a.no_metrics && !a.no_defences);
    for bad in [
        &["--max-payload", "0"][..],
        &["--slow-consumer", "sometimes"],
        &["--ablate", "no-batching,nope"],
        &["--ack-timeout", "5"],
        &["--log-config="],
        &["--frobnicate"],
    ] {
        let e = build(false)
            .try_get_matches_from(std::iter::once("agora").chain(bad.iter().copied()))
            .err()
            .unwrap_or_else(|| panic!("{bad:?} accepted"));
        assert_eq!(e.exit_code(), 2, "{bad:?}");
    }
    let e = build(false)
        .try_get_matches_from(["agora", "--max-payload", "0"])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("invalid value '0' for '--max-payload <MAX_PAYLOAD>': 0 is not in 1..=67108864"),
        "{e}"
    );
}

// Precedence, one step at a time: flag > variable > [broker] > default.

#[test]
fn without_flag_variable_or_file_the_default_holds() {
    let s = resolved(&[], &[], None).unwrap();
    assert_eq!(s, Settings::default());
    let s = resolved(&[], &[], Some("[queues.jobs]\n")).unwrap();
    assert_eq!(s.config.max_payload, Config::default().max_payload);
}

#[test]
fn the_file_beats_the_default() {
    let s = resolved(
        &[],
        &[],
        Some("[broker]\nmax_payload = 4096\nping_interval = \"5s\"\nslow_consumer = \"disconnect\"\nprofile = true\nablate = [\"no-batching\", \"no-metrics\"]\n"),
    )
    .unwrap();
    assert_eq!(s.config.max_payload, 4096);
    assert_eq!(s.config.ping_interval, Duration::from_secs(5));
    assert_eq!(s.config.slow_consumer, SlowConsumerPolicy::Disconnect);
    assert!(s.profile);
    assert!(s.config.ablation.no_batching && s.config.ablation.no_metrics);
}

#[test]
fn the_variable_beats_the_file() {
    let s = resolved(
        &[],
        &[("AGORA_MAX_PAYLOAD", "2048")],
        Some("[broker]\nmax_payload = 4096\nmax_connections = 7\n"),
    )
    .unwrap();
    assert_eq!(s.config.max_payload, 2048);
    assert_eq!(s.config.max_connections, 7, "the file still sets the rest");
}

#[test]
fn the_flag_beats_the_variable_and_the_file() {
    let s = resolved(
        &["--max-payload", "1024"],
        &[("AGORA_MAX_PAYLOAD", "2048")],
        Some("[broker]\nmax_payload = 4096\n"),
    )
    .unwrap();
    assert_eq!(s.config.max_payload, 1024);
    // A bad variable is not read when the flag is given, as clap had it.
    let s = resolved(
        &["--max-payload", "1024"],
        &[("AGORA_MAX_PAYLOAD", "banana")],
        None,
    )
    .unwrap();
    assert_eq!(s.config.max_payload, 1024);
}

#[test]
fn a_bad_variable_is_an_error_naming_it() {
    let e = resolved(&[], &[("AGORA_MAX_PAYLOAD", "banana")], None).unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid value 'banana' for '--max-payload' (from AGORA_MAX_PAYLOAD): invalid digit found in string"
    );
    let e = resolved(&[], &[("AGORA_MAX_PAYLOAD", "")], None).unwrap_err();
    assert!(
        matches!(
            e,
            SettingsError::Value {
                source: Source::Env,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn queue_entries_take_the_resolved_broker_defaults() {
    let file = "[broker]\nqueue_max_messages = 50\ndurable_queue_max_messages = 60\n\n\
                [queues.jobs]\nttl = \"1m\"\n\n[queues.temp]\ndurable = false\n";
    // Memory-only: every queue takes the memory-only limits.
    let s = resolved(&["--max-deliveries", "3", "--memory-only"], &[], Some(file)).unwrap();
    let q = &s.config.queues["jobs"];
    assert_eq!((q.max_messages, q.max_deliveries), (50, 3));
    // With a data directory, durable queues take the durable limits, and a queue that
    // says `durable = false` the memory-only ones.
    let s = resolved(&["--max-deliveries", "3"], &[], Some(file)).unwrap();
    let q = &s.config.queues["jobs"];
    assert_eq!((q.max_messages, q.max_deliveries), (60, 3));
    assert_eq!(s.config.queues["temp"].max_messages, 50);
}

#[test]
fn file_paths_are_relative_to_the_file() {
    let s = resolved(
        &["--profile-path", "here.pprof"],
        &[],
        Some("[broker]\nlog_config = \"log.xml\"\nprofile_path = \"p.pprof\"\n"),
    )
    .unwrap();
    assert_eq!(
        s.log_config.as_deref(),
        Some(Path::new("/etc/agora/log.xml"))
    );
    assert_eq!(
        s.profile_path,
        Path::new("here.pprof"),
        "flags are taken as given"
    );
    let s = resolved(&[], &[], Some("[broker]\nlog_config = \"/var/log.xml\"\n")).unwrap();
    assert_eq!(s.log_config.as_deref(), Some(Path::new("/var/log.xml")));
}

#[test]
fn bad_broker_entries_name_the_file_the_key_and_the_problem() {
    let cases = [
        (
            "[broker]\ncolour = 1\n",
            "[broker] colour: unknown key: a [broker] key is a flag's name",
        ),
        (
            "[broker]\nmax-payload = 1\n",
            "[broker] max-payload: unknown key: the key of --max-payload is max_payload",
        ),
        (
            "[broker]\nconfig = \"x.toml\"\n",
            "[broker] config: --config cannot be set in the config file",
        ),
        (
            "[broker]\nmax_payload = 0\n",
            "[broker] max_payload: 0 is not in 1..=67108864",
        ),
        (
            "[broker]\nmax_payload = 1.5\n",
            "[broker] max_payload: expected a string, a whole number or true/false, not float",
        ),
        (
            "[broker]\nack_timeout = \"5\"\n",
            "[broker] ack_timeout: '5' needs a unit: ms, s, m or h",
        ),
        (
            "[broker]\nslow_consumer = \"sometimes\"\n",
            "[broker] slow_consumer: possible values: drop-oldest, disconnect",
        ),
        (
            "[broker]\nablate = [1]\n",
            "[broker] ablate: expected an array of strings",
        ),
        (
            "[broker]\nprofile = \"yes\"\n",
            "[broker] profile: possible values: true, false",
        ),
    ];
    for (text, want) in cases {
        let e = resolved(&[], &[], Some(text)).unwrap_err().to_string();
        let want = format!("bad config file /etc/agora/agora.toml: {want}");
        assert!(e.starts_with(&want), "{text}\nwant: {want}\ngot:  {e}");
    }
    // Under a flag, the file's value is never read (like a variable under a flag).
    assert!(resolved(
        &["--max-payload", "5"],
        &[],
        Some("[broker]\nmax_payload = 0\n")
    )
    .is_ok());
    // But an unknown key is refused whatever the flags say.
    assert!(resolved(&["--port", "5"], &[], Some("[broker]\nprot = 1\n")).is_err());
}

#[test]
fn the_config_file_is_named_by_flag_or_variable() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.toml");
    let b = dir.path().join("b.toml");
    std::fs::write(&a, "[broker]\nport = 1111\n").unwrap();
    std::fs::write(&b, "[broker]\nport = 2222\n").unwrap();
    let by_flag = resolve(
        &flags_of(&["--config", a.to_str().unwrap()]),
        &env(&[("AGORA_CONFIG", b.to_str().unwrap())]),
    )
    .unwrap();
    assert_eq!(
        (by_flag.config.port, by_flag.config_file.as_deref()),
        (1111, Some(a.as_path()))
    );
    let by_env = resolve(
        &Flags::new(),
        &env(&[("AGORA_CONFIG", b.to_str().unwrap())]),
    )
    .unwrap();
    assert_eq!(by_env.config.port, 2222);
    let missing = dir.path().join("missing.toml");
    let e = resolve(
        &Flags::new(),
        &env(&[("AGORA_CONFIG", missing.to_str().unwrap())]),
    )
    .unwrap_err();
    assert!(e.to_string().contains("missing.toml: the file:"), "{e}");
}

#[test]
fn the_example_config_file_is_valid() {
    let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../config/agora.toml"));
    let f = ConfigFile::read(path).unwrap_or_else(|e| panic!("{e}"));
    let s = resolve_with(&Flags::new(), &env(&[]), Some(&f), Settings::default())
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!f.broker().is_empty(), "the example shows [broker]");
    assert_ne!(s.config, Config::default());
}

#[test]
fn cluster_settings_are_checked_one_by_one() {
    let s = resolved(
        &[
            "--node-id",
            "2",
            "--peers",
            " 1=10.0.0.1:7480, 2=node-b:7480 ",
        ],
        &[("AGORA_CLUSTER_SECRET", "sixteen chars ok")],
        None,
    )
    .unwrap();
    assert_eq!(s.config.node_id, Some(2));
    assert_eq!(
        s.config.peers,
        [
            (1, "10.0.0.1:7480".to_owned()),
            (2, "node-b:7480".to_owned())
        ]
    );
    // The secret never shows in a debug print.
    assert!(!format!("{:?}", s.config).contains("sixteen chars ok"));
    for (var, value, why) in [
        ("AGORA_PEERS", "1=a:1,1=b:2", "node 1 is listed twice"),
        ("AGORA_PEERS", "x=a:1", "'x' in 'x=a:1' is not a node id"),
        ("AGORA_PEERS", "1=a", "'a' in '1=a' is not HOST:PORT"),
        ("AGORA_PEERS", "1:a:1", "is not ID=HOST:PORT"),
        ("AGORA_PEERS", ",", "no node listed"),
        ("AGORA_CLUSTER_SECRET", "short", "at least 16 characters"),
        ("AGORA_CLUSTER_NAME", "a b", "is not 1 to 64 of"),
        (
            "AGORA_CLUSTER_LISTEN",
            "localhost:7480",
            "is not an IP address and port",
        ),
        ("AGORA_NODE_ID", "0", "0"),
    ] {
        let e = resolved(&[], &[(var, value)], None)
            .unwrap_err()
            .to_string();
        assert!(e.contains(why), "{var}={value}: {e}");
    }
}
