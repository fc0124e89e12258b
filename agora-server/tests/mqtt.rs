//! The MQTT front door over real sockets, byte by byte: one message space with native
//! clients, QoS 0 and 1, wildcards, retained messages, wills, keep-alive, the broker's
//! users, and what is refused (QoS 2, malformed packets) without harm to anyone else.
//! Third-party clients (mosquitto's and paho's) are in `mqtt_peers.rs`.

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use agora_protocol::ServerFrame;
use agora_server::auth::{hash_password, Pattern, Rights, User};
use agora_server::Config;
use common::mqtt::{packet, publish as mqtt_publish, Hello, Mqtt};
use common::*;

fn with_mqtt() -> Config {
    Config {
        mqtt_port: Some(0),
        ..Config::ephemeral()
    }
}

fn mqtt_addr(s: &TestServer) -> std::net::SocketAddr {
    s.mqtt.expect("the MQTT port")
}

/// Subscribes a native client to `dest` as sid 1.
fn native_sub(s: &TestServer, dest: &str) -> Raw {
    let mut c = s.connect();
    c.send(format!("SUB #1 {dest} 1\r\n").as_bytes());
    assert_eq!(c.next(), ServerFrame::Ok { rid: Some(1) });
    c
}

#[test]
fn mqtt_and_native_clients_share_one_message_space() {
    let s = start_with(with_mqtt());
    let m = mqtt_addr(&s);
    for level in [4, 5] {
        let v5 = level == 5;
        let mut sub = Mqtt::open(
            m,
            &Hello {
                level,
                ..Hello::v311("sub")
            },
        );
        assert_eq!(sub.subscribe(1, "sensors/+/temp", 1), 1, "granted QoS 1");
        let mut native = native_sub(&s, "topic:sensors.>");
        // STATS counts the MQTT clients (the last round's may still be leaving).
        wait_until("STATS to count one MQTT client", || {
            native.stats()["clients"]["mqtt"] == 1
        });
        // Native to MQTT.
        publish(&mut s.connect(), "topic:sensors.kitchen.temp", b"21.5");
        let got = sub.received();
        assert_eq!(
            (got.topic.as_str(), &got.payload[..]),
            ("sensors/kitchen/temp", &b"21.5"[..])
        );
        assert_eq!(got.qos, 1);
        assert!(matches!(native.next(), ServerFrame::Msg(_)));
        // MQTT to native and MQTT, a level holding a space.
        let mut p = Mqtt::open(
            m,
            &Hello {
                level,
                ..Hello::v311("pub")
            },
        );
        assert_eq!(
            p.publish_confirmed("sensors/living room/temp", b"19", 7, false),
            0
        );
        let ServerFrame::Msg(d) = native.next() else {
            panic!("a delivery")
        };
        assert_eq!(d.dest.to_string(), "topic:sensors.living_20room.temp");
        assert_eq!(&d.payload[..], b"19");
        assert_eq!(sub.received().topic, "sensors/living room/temp");
        // QoS 0 too.
        p.send(&mqtt_publish(v5, "sensors/hall/temp", b"18", 0, 0, false));
        assert_eq!(sub.received().qos, 1, "delivered at the granted QoS");
    }
}

#[test]
fn a_hash_filter_matches_its_parent_level_too() {
    let s = start_with(with_mqtt());
    let mut sub = Mqtt::open(mqtt_addr(&s), &Hello::v311("sub"));
    assert_eq!(sub.subscribe(1, "orders/#", 0), 0);
    let mut p = Mqtt::open(mqtt_addr(&s), &Hello::v311("pub"));
    for t in ["orders", "orders/eu", "orders/eu/new", "other"] {
        p.publish_confirmed(t, t.as_bytes(), 1, false);
    }
    let topics: Vec<String> = (0..3).map(|_| sub.received().topic).collect();
    assert_eq!(topics, ["orders", "orders/eu", "orders/eu/new"]);
}

#[test]
fn a_retained_message_reaches_later_subscribers_until_cleared() {
    let s = start_with(with_mqtt());
    let m = mqtt_addr(&s);
    let mut p = Mqtt::open(m, &Hello::v311("pub"));
    p.publish_confirmed("home/light", b"on", 1, true);
    p.publish_confirmed("home/door", b"shut", 2, true);
    let mut late = Mqtt::open(m, &Hello::v5("late"));
    assert_eq!(late.subscribe(1, "home/+", 1), 1);
    let mut got = vec![late.received(), late.received()];
    got.sort_by(|a, b| a.topic.cmp(&b.topic));
    assert_eq!(got[0].topic, "home/door");
    assert!(got.iter().all(|g| g.retain), "{got:?}");
    // Live messages are not flagged retained.
    p.publish_confirmed("home/light", b"off", 3, false);
    let live = late.received();
    assert_eq!((&live.payload[..], live.retain), (&b"off"[..], false));
    // An empty retained message clears the topic's.
    p.publish_confirmed("home/light", b"", 4, true);
    late.received();
    let mut later = Mqtt::open(m, &Hello::v311("later"));
    later.subscribe(1, "home/light", 1);
    later.send(&packet(0xC0, &[]));
    assert_eq!(
        later.next().unwrap().0,
        0xD0,
        "PINGRESP, and no retained message first"
    );
}

#[test]
fn the_will_is_published_when_a_client_vanishes_or_goes_silent_not_when_it_says_goodbye() {
    let s = start_with(with_mqtt());
    let m = mqtt_addr(&s);
    let mut watch = Mqtt::open(m, &Hello::v311("watch"));
    watch.subscribe(1, "status/#", 0);
    let will = |id| Hello {
        will: Some(("status/dev", "offline", 0)),
        ..Hello::v311(id)
    };
    // Says goodbye: no will.
    let mut polite = Mqtt::open(m, &will("polite"));
    polite.send(&packet(0xE0, &[]));
    assert!(polite.closed().is_empty());
    // Vanishes: the will.
    let gone = Mqtt::open(m, &will("gone"));
    drop(gone);
    let got = watch.received();
    assert_eq!(
        (got.topic.as_str(), &got.payload[..]),
        ("status/dev", &b"offline"[..])
    );
    // Silent past 1.5 times its keep-alive: closed, and the will.
    let mut silent = Mqtt::open(
        m,
        &Hello {
            keep_alive: 1,
            ..will("silent")
        },
    );
    assert!(silent.closed().is_empty(), "3.1.1 is just closed");
    assert_eq!(watch.received().payload, b"offline");
    // The watcher, which answered nothing but its own traffic, is still served.
    watch.send(&packet(0xC0, &[]));
    assert_eq!(watch.next().unwrap().0, 0xD0);
}

fn with_users() -> Config {
    let mut c = with_mqtt();
    let hash = hash_password("pw").unwrap();
    let p = |l: &[&str]| l.iter().map(|p| Pattern::parse(p).unwrap()).collect();
    let rights = Rights {
        publish: p(&["topic:sensors.>"]),
        subscribe: p(&["topic:sensors.>"]),
        admin: false,
    };
    c.users
        .insert(User::new("dev", Some(&hash), None, rights).unwrap())
        .unwrap();
    c
}

#[test]
fn mqtt_users_are_the_brokers_users_and_their_rights_hold() {
    let s = start_with(with_users());
    let m = mqtt_addr(&s);
    let login = |level, password| Hello {
        level,
        user: Some("dev"),
        password: Some(password),
        ..Hello::v311("dev-1")
    };
    assert_eq!(
        Mqtt::connect(m, &login(4, "wrong")).1,
        4,
        "bad user name or password"
    );
    assert_eq!(Mqtt::connect(m, &login(5, "wrong")).1, 0x86);
    assert_eq!(
        Mqtt::connect(m, &Hello::v311("anon")).1,
        5,
        "not authorized"
    );
    let mut v5 = Mqtt::open(m, &login(5, "pw"));
    assert_eq!(v5.publish_confirmed("sensors/a", b"1", 1, false), 0);
    assert_eq!(
        v5.publish_confirmed("other", b"1", 2, false),
        0x87,
        "not authorized"
    );
    assert_eq!(v5.subscribe(3, "other/#", 1), 0x87);
    assert_eq!(v5.subscribe(4, "sensors/#", 1), 1);
    // 3.1.1 has no negative PUBACK: a refused QoS 1 publish closes the connection.
    let mut v311 = Mqtt::open(m, &login(4, "pw"));
    v311.send(&mqtt_publish(false, "other", b"1", 1, 9, false));
    assert!(v311.closed().is_empty());
    assert_eq!(v311_subscribe_refused(m, &login(4, "pw")), 0x80);
}

fn v311_subscribe_refused(m: std::net::SocketAddr, h: &Hello<'_>) -> u8 {
    Mqtt::open(m, h).subscribe(1, "other", 0)
}

#[test]
fn qos_2_and_bad_packets_are_refused_and_everyone_else_carries_on() {
    let s = start_with(with_mqtt());
    let m = mqtt_addr(&s);
    let mut bystander = Mqtt::open(m, &Hello::v311("bystander"));
    bystander.subscribe(1, "t", 1);
    // QoS 2 on 5: DISCONNECT "QoS not supported"; on 3.1.1: closed.
    let mut v5 = Mqtt::open(m, &Hello::v5("v5"));
    v5.send(&mqtt_publish(true, "t", b"x", 2, 1, false));
    let got = v5.closed();
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].0, got[0].1[0]), (0xE0, 0x9B));
    let mut v311 = Mqtt::open(m, &Hello::v311("v311"));
    v311.send(&mqtt_publish(false, "t", b"x", 2, 1, false));
    assert!(v311.closed().is_empty());
    // Malformed: a string that is not UTF-8; a reserved flag.
    let mut bad = Mqtt::open(m, &Hello::v5("bad"));
    bad.send(&packet(0x30, &[0, 2, 0xC3, 0x28, b'x']));
    let got = bad.closed();
    assert_eq!((got[0].0, got[0].1[0]), (0xE0, 0x81), "malformed packet");
    let mut bad = Mqtt::open(m, &Hello::v311("bad2"));
    bad.send(&packet(0x80, &[0, 1, 0, 1, b't', 0]));
    assert!(bad.closed().is_empty());
    // Not MQTT at all, and a protocol level the broker does not speak.
    let mut junk = std::net::TcpStream::connect(m).unwrap();
    junk.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    junk.set_read_timeout(Some(DEADLINE)).unwrap();
    assert_eq!(junk.read(&mut [0u8; 16]).unwrap_or(0), 0, "closed");
    let (_, code) = Mqtt::connect(
        m,
        &Hello {
            level: 3,
            ..Hello::v311("old")
        },
    );
    assert_eq!(code, 1, "unacceptable protocol version");
    // A packet past the size limit, refused from its header.
    let mut big = Mqtt::open(m, &Hello::v5("big"));
    big.send(&[0x30, 0xFF, 0xFF, 0xFF, 0x7F]);
    let got = big.closed();
    assert_eq!((got[0].0, got[0].1[0]), (0xE0, 0x95), "packet too large");
    // The bystander was served throughout.
    let mut p = Mqtt::open(m, &Hello::v311("p"));
    p.publish_confirmed("t", b"still here", 1, false);
    assert_eq!(bystander.received().payload, b"still here");
}

#[test]
fn the_first_packet_must_be_connect_and_come_in_time() {
    let mut c = Config {
        auth_timeout: Duration::from_millis(300),
        ..with_mqtt()
    };
    c.mqtt_port = Some(0);
    let s = start_with(c);
    let m = mqtt_addr(&s);
    let mut early = std::net::TcpStream::connect(m).unwrap();
    early
        .write_all(&mqtt_publish(false, "t", b"x", 0, 0, false))
        .unwrap();
    early.set_read_timeout(Some(DEADLINE)).unwrap();
    assert_eq!(early.read(&mut [0u8; 16]).unwrap_or(0), 0, "closed");
    let mut silent = std::net::TcpStream::connect(m).unwrap();
    silent.set_read_timeout(Some(DEADLINE)).unwrap();
    assert_eq!(
        silent.read(&mut [0u8; 16]).unwrap_or(0),
        0,
        "closed at the timeout"
    );
}

#[test]
fn a_v5_client_is_told_when_the_broker_shuts_down() {
    let mut s = start_with(with_mqtt());
    let mut c = Mqtt::open(mqtt_addr(&s), &Hello::v5("c"));
    let stop = std::thread::spawn(move || s.shutdown());
    let got = c.closed();
    assert_eq!(
        (got[0].0, got[0].1[0]),
        (0xE0, 0x8B),
        "server shutting down"
    );
    stop.join().unwrap().unwrap();
}

#[test]
fn a_second_connection_with_a_client_id_takes_it_over() {
    let s = start_with(with_mqtt());
    let m = mqtt_addr(&s);
    let mut watch = Mqtt::open(m, &Hello::v311("watch"));
    watch.subscribe(1, "status/#", 0);
    let mut first = Mqtt::open(
        m,
        &Hello {
            will: Some(("status/dev", "gone", 0)),
            ..Hello::v5("dev")
        },
    );
    let mut second = Mqtt::open(m, &Hello::v5("dev"));
    let got = first.closed();
    assert_eq!((got[0].0, got[0].1[0]), (0xE0, 0x8E), "session taken over");
    assert_eq!(watch.received().payload, b"gone", "the first one's will");
    // The second one is served, and a third takes over from it in turn.
    second.send(&packet(0xC0, &[]));
    assert_eq!(second.next().unwrap().0, 0xD0);
    let _third = Mqtt::open(m, &Hello::v311("dev"));
    assert_eq!(second.closed()[0].1[0], 0x8E);
}

#[test]
fn a_topics_mutator_chain_runs_on_mqtt_publishes() {
    let mut c = with_mqtt();
    let t = agora_protocol::Destination::topic("sensors.temp").unwrap();
    // Readings over 5 pass; a header is set on those that do.
    c.chains
        .insert(t, "threshold . > 5 | set header:via=chain".to_owned());
    let s = start_with(c);
    let m = mqtt_addr(&s);
    let mut sub = Mqtt::open(m, &Hello::v5("sub"));
    sub.subscribe(1, "sensors/temp", 0);
    let mut native = native_sub(&s, "topic:sensors.temp");
    let mut p = Mqtt::open(m, &Hello::v311("pub"));
    for reading in ["3", "7"] {
        p.publish_confirmed("sensors/temp", reading.as_bytes(), 1, false);
    }
    assert_eq!(sub.received().payload, b"7", "3 was dropped by the chain");
    let ServerFrame::Msg(d) = native.next() else {
        panic!("a delivery")
    };
    assert_eq!(
        (&d.payload[..], d.headers.get("via")),
        (&b"7"[..], Some("chain"))
    );
}

/// A DISCONNECT, then the broker's closing.
fn goodbye(mut c: Mqtt) {
    c.send(&packet(0xE0, &[]));
    assert!(c.closed().is_empty());
}

#[test]
fn a_persistent_session_gets_what_was_published_while_it_was_away_across_a_restart_too() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        data_dir: Some(dir.path().to_owned()),
        ..with_mqtt()
    };
    let s = start_with(config.clone());
    let m = mqtt_addr(&s);
    let away = Hello {
        clean: false,
        ..Hello::v311("meter-7")
    };
    let mut c = Mqtt::open(m, &away);
    assert!(!c.present, "a new session");
    assert_eq!(c.subscribe(1, "meters/+/kwh", 1), 1);
    assert_eq!(c.subscribe(2, "alerts", 0), 0);
    goodbye(c);
    // While it is away: QoS 1 from MQTT and from a native client is kept for it; its
    // QoS 0 filter keeps nothing (as mosquitto by default).
    let mut p = Mqtt::open(m, &Hello::v311("pub"));
    p.publish_confirmed("meters/7/kwh", b"1", 1, false);
    let mut native = s.connect();
    native.send(b"SETACK #1 on\r\n");
    assert_eq!(native.next(), ServerFrame::Ok { rid: Some(1) });
    publish(&mut native, "topic:meters.8.kwh", b"2");
    assert!(matches!(native.next(), ServerFrame::PubAck { .. }));
    p.publish_confirmed("meters/7/kwh", b"3", 2, true);
    p.publish_confirmed("alerts", b"missed", 3, false);
    let mut c = Mqtt::open(m, &away);
    assert!(c.present, "the session was kept");
    let got: Vec<(String, Vec<u8>, u8)> = (0..3)
        .map(|_| c.received())
        .map(|g| (g.topic, g.payload, g.qos))
        .collect();
    assert_eq!(
        got,
        [
            ("meters/7/kwh".into(), b"1".to_vec(), 1),
            ("meters/8/kwh".into(), b"2".to_vec(), 1),
            ("meters/7/kwh".into(), b"3".to_vec(), 1),
        ]
    );
    // Both filters hold while it is here, without subscribing again.
    p.publish_confirmed("meters/9/kwh", b"4", 4, false);
    assert_eq!(c.received().payload, b"4");
    p.publish_confirmed("alerts", b"live", 5, false);
    let live = c.received();
    assert_eq!((&live.payload[..], live.qos), (&b"live"[..], 0));
    // Away again, and the broker restarts.
    goodbye(c);
    p.publish_confirmed("meters/7/kwh", b"5", 6, false);
    drop(p);
    drop(native);
    drop(s);
    let s = start_with(config);
    let m = mqtt_addr(&s);
    let mut c = Mqtt::open(m, &away);
    assert!(c.present, "the session outlived the restart");
    assert_eq!(c.received().payload, b"5");
    // The retained message did too.
    let mut late = Mqtt::open(m, &Hello::v311("late"));
    late.subscribe(1, "meters/7/kwh", 1);
    let r = late.received();
    assert_eq!((&r.payload[..], r.retain), (&b"3"[..], true));
    // A clean start ends the session: its queue is deleted.
    goodbye(c);
    let c = Mqtt::open(m, &Hello::v311("meter-7"));
    assert!(!c.present);
    let mut st = s.connect();
    wait_until("the session's queue is deleted", || {
        dest_stats(&st.stats(), "queue", "$mqtt.session._.meter-7").is_none()
    });
}

#[test]
fn a_persistent_session_expires_once_its_client_is_gone_longer_than_allowed() {
    let s = start_with(Config {
        mqtt_session_expiry: Duration::from_secs(1),
        ..with_mqtt()
    });
    let m = mqtt_addr(&s);
    let hello = Hello {
        clean: false,
        session_expiry: Some(3600),
        ..Hello::v5("brief")
    };
    let mut c = Mqtt::open(m, &hello);
    c.subscribe(1, "t", 1);
    let mut st = s.connect();
    assert!(dest_stats(&st.stats(), "queue", "$mqtt.session._.brief").is_some());
    goodbye(c);
    // Capped at one second: its queue goes, and it comes back to no session.
    wait_until("the expired session's queue is deleted", || {
        dest_stats(&st.stats(), "queue", "$mqtt.session._.brief").is_none()
    });
    assert!(!Mqtt::open(m, &hello).present);
}

/// MQTT 5: a DISCONNECT with a Session Expiry Interval of 0 ends the session with the
/// connection.
#[test]
fn a_5_disconnect_with_session_expiry_0_ends_the_session() {
    let s = start_with(with_mqtt());
    let m = mqtt_addr(&s);
    let hello = Hello {
        clean: false,
        session_expiry: Some(3600),
        ..Hello::v5("short")
    };
    let mut c = Mqtt::open(m, &hello);
    c.subscribe(1, "t", 1);
    let mut st = s.connect();
    assert!(dest_stats(&st.stats(), "queue", "$mqtt.session._.short").is_some());
    // Reason 0, properties: Session Expiry Interval (0x11) = 0.
    c.send(&packet(0xE0, &[0x00, 5, 0x11, 0, 0, 0, 0]));
    assert!(c.closed().is_empty());
    wait_until("the session's queue is deleted", || {
        dest_stats(&st.stats(), "queue", "$mqtt.session._.short").is_none()
    });
    assert!(!Mqtt::open(m, &hello).present);
}
