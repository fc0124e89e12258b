//! The bridge's persistent sessions: bound to a queue, taken up again, ended, expired.

use agora_protocol::mqtt::{Connect, Packet, Props, QoS, Reply, Version};
use agora_protocol::{ClientFrame, Destination, Headers, ServerFrame};

use super::tests::{connect, msg, retained, rids, step_broker, step_client, subscribe};
use super::*;

/// Connects a bridge numbered `n` as `c` asks; the broker's answers to what the
/// CONNECT's OK produced (their rids) are left to the test.
fn connect_as(n: u64, c: Connect, r: &MqttState) -> (Bridge, Out) {
    let mut b = Bridge::new(n);
    let out = step_client(&mut b, Packet::Connect(Box::new(c)), r);
    assert!(matches!(out.broker[..], [ClientFrame::Connect(_)]));
    let out = step_broker(&mut b, ServerFrame::Ok { rid: Some(1) }, r);
    (b, out)
}

fn persistent(version: Version) -> Connect {
    let mut c = connect(version);
    match version {
        Version::V311 => c.clean = false,
        Version::V5 => {
            c.clean = false;
            c.props.session_expiry = Some(600);
        }
    }
    c
}

const SESSION: &str = "$mqtt.session._.dev-1";

#[test]
fn a_persistent_session_binds_its_qos_1_filters_to_its_queue_and_comes_back_with_them() {
    let r = retained();
    let (mut b, out) = connect_as(1, persistent(Version::V311), &r);
    assert!(matches!(
        out.client[..],
        [Reply::ConnAck {
            session_present: false,
            code: 0,
            ..
        }]
    ));
    let Some(ClientFrame::Sub(queue)) = out.broker.first() else {
        panic!("{:?}", out.broker)
    };
    assert_eq!(queue.dest.to_string(), format!("queue:{SESSION}"));
    assert_eq!(queue.prefetch, Some(SESSION_PREFETCH));
    let session_sid = queue.sid;
    // QoS 1 binds the queue; QoS 0 is a plain subscription.
    let out = step_client(
        &mut b,
        subscribe(1, &[("a/+", QoS::AtLeastOnce), ("b", QoS::AtMostOnce)]),
        &r,
    );
    match &out.broker[..] {
        [ClientFrame::Bind { queue, topic, .. }, ClientFrame::Sub(s)] => {
            assert_eq!(queue.to_string(), format!("queue:{SESSION}"));
            assert_eq!(topic.to_string(), "topic:a.*");
            assert_eq!(s.dest.to_string(), "topic:b");
        }
        f => panic!("{f:?}"),
    }
    let mut acks = Vec::new();
    for rid in rids(&out) {
        acks.extend(step_broker(&mut b, ServerFrame::Ok { rid: Some(rid) }, &r).client);
    }
    assert!(matches!(&acks[..], [Reply::SubAck { codes, .. }] if codes == &[1, 0]));
    // What the queue holds goes to the topic it was published to, at QoS 1, and is
    // acknowledged to the queue when the client acknowledges it.
    let mut h = Headers::new();
    h.insert(agora_protocol::reply::TOPIC, "a.x").unwrap();
    let mut m = msg("unused", session_sid, "21", h);
    if let ServerFrame::Msg(d) = &mut m {
        d.dest = Destination::queue(SESSION).unwrap();
        d.did = 55;
        d.count = 2;
    }
    let out = step_broker(&mut b, m, &r);
    let Reply::Publish(p) = &out.client[0] else {
        panic!()
    };
    assert_eq!(
        (p.topic.as_str(), p.qos, p.dup),
        ("a/x", QoS::AtLeastOnce, true)
    );
    let out = step_client(&mut b, Packet::PubAck(p.pkid.unwrap(), 0), &r);
    assert!(matches!(out.broker[..], [ClientFrame::Ack { did: 55, .. }]));
    // The client goes; it comes back: the session is there, its QoS 0 filter is
    // subscribed again, its QoS 1 one is bound still.
    r.sessions.left(SESSION, 1);
    let (mut b, out) = connect_as(2, persistent(Version::V311), &r);
    assert!(matches!(
        out.client[..],
        [Reply::ConnAck {
            session_present: true,
            ..
        }]
    ));
    match &out.broker[..] {
        [ClientFrame::Sub(q), ClientFrame::Sub(s)] => {
            assert_eq!(q.dest.to_string(), format!("queue:{SESSION}"));
            assert_eq!(s.dest.to_string(), "topic:b");
        }
        f => panic!("{f:?}"),
    }
    let out = step_client(
        &mut b,
        Packet::Unsubscribe {
            pkid: 3,
            filters: vec!["a/+".into()],
        },
        &r,
    );
    assert!(
        matches!(&out.broker[..], [ClientFrame::Unbind { topic, .. }] if topic.to_string() == "topic:a.*")
    );
    // A clean start ends it: its queue is deleted.
    r.sessions.left(SESSION, 2);
    let (_, out) = connect_as(3, connect(Version::V311), &r);
    assert!(
        matches!(&out.broker[..], [ClientFrame::Delete { dest, .. }] if dest.to_string() == format!("queue:{SESSION}"))
    );
    assert!(!r.sessions.exists(SESSION));
}

#[test]
fn a_5_session_expiry_is_granted_up_to_the_brokers_cap_and_0_keeps_nothing() {
    let r = retained(); // cap: 3600 s
    let mut c = persistent(Version::V5);
    c.props.session_expiry = Some(u32::MAX);
    let (_, out) = connect_as(1, c, &r);
    let Reply::ConnAck { props, .. } = &out.client[0] else {
        panic!()
    };
    assert_eq!(props.session_expiry, Some(3600));
    assert!(r.sessions.exists(SESSION));
    r.sessions.left(SESSION, 1);
    let mut c = connect(Version::V5);
    c.clean = false;
    let (_, out) = connect_as(2, c, &r);
    assert!(
        out.broker.is_empty(),
        "expiry 0 without clean start: no queue"
    );
    let Reply::ConnAck { props, .. } = &out.client[0] else {
        panic!()
    };
    assert_eq!(props.session_expiry, Some(0));
}

#[test]
fn a_5_disconnect_may_shorten_the_session_but_not_begin_one() {
    let r = retained();
    let (mut b, _) = connect_as(1, persistent(Version::V5), &r);
    let expiry = |e: u32| Props {
        session_expiry: Some(e),
        ..Props::default()
    };
    let out = step_client(&mut b, Packet::Disconnect(0, expiry(0)), &r);
    assert!(out.close.is_some());
    r.sessions.left(SESSION, 1);
    let now = super::super::persistent::now_secs();
    assert_eq!(
        r.sessions.expire(now, 3600),
        [SESSION],
        "it ends with the connection"
    );
    // With no session, a DISCONNECT may not ask for one.
    let mut c = connect(Version::V5);
    c.client_id = "other".into();
    let (mut b, _) = connect_as(2, c, &r);
    let out = step_client(&mut b, Packet::Disconnect(0, expiry(60)), &r);
    assert!(matches!(
        out.client[..],
        [Reply::Disconnect(reason::PROTOCOL_ERROR, _)]
    ));
}

#[test]
fn a_persistent_session_whose_queue_name_would_be_too_long_is_refused() {
    let r = retained();
    let mut b = Bridge::new(1);
    let mut c = persistent(Version::V311);
    c.client_id = "d".repeat(300);
    let out = step_client(&mut b, Packet::Connect(Box::new(c)), &r);
    assert!(out.broker.is_empty());
    assert!(matches!(out.client[..], [Reply::ConnAck { code: 2, .. }]));
    assert!(out.close.unwrap().contains("too long"));
}
