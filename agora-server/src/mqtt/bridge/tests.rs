use agora_protocol::mqtt::{Connect, Filter, Packet, Props, Publish, QoS, Reply, Version, Will};
use agora_protocol::{
    ClientFrame, Delivery, Destination, ErrorCode, ErrorReply, Headers, ServerFrame,
};

use super::*;
use crate::mqtt::state::MqttState;

pub(super) fn retained() -> MqttState {
    MqttState::in_memory(1 << 20, 100, 3600)
}

pub(super) fn connect(version: Version) -> Connect {
    Connect {
        version,
        client_id: "dev-1".into(),
        clean: true,
        keep_alive: 30,
        user: None,
        password: None,
        will: None,
        props: Props::default(),
    }
}

/// A bridge past CONNECT and its CONNACK.
fn open(version: Version, r: &MqttState) -> Bridge {
    let mut b = Bridge::new(7);
    let mut out = Out::default();
    b.on_packet(Packet::Connect(Box::new(connect(version))), r, &mut out);
    b.on_frame(
        ServerFrame::Ok {
            rid: Some(CONNECT_RID),
        },
        r,
        &mut out,
    );
    assert!(matches!(out.client[..], [Reply::ConnAck { code: 0, .. }]));
    b
}

pub(super) fn step_client(b: &mut Bridge, p: Packet, r: &MqttState) -> Out {
    let mut out = Out::default();
    b.on_packet(p, r, &mut out);
    out
}

pub(super) fn step_broker(b: &mut Bridge, f: ServerFrame, r: &MqttState) -> Out {
    let mut out = Out::default();
    b.on_frame(f, r, &mut out);
    out
}

fn publish(topic: &str, qos: QoS, pkid: Option<u16>, payload: &'static str) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos,
        retain: false,
        topic: topic.into(),
        pkid,
        payload: Bytes::from_static(payload.as_bytes()),
        props: Props::default(),
    })
}

pub(super) fn subscribe(pkid: u16, filters: &[(&str, QoS)]) -> Packet {
    Packet::Subscribe {
        pkid,
        filters: filters
            .iter()
            .map(|(f, q)| Filter {
                filter: (*f).into(),
                qos: *q,
                no_local: false,
                retain_as_published: false,
                retain_handling: 0,
            })
            .collect(),
        props: Props::default(),
    }
}

fn err(rid: u64, code: ErrorCode) -> ServerFrame {
    ServerFrame::Err(ErrorReply {
        rid: Some(rid),
        code,
        message: "no".into(),
    })
}

pub(super) fn msg(dest: &str, sid: u64, payload: &'static str, headers: Headers) -> ServerFrame {
    ServerFrame::Msg(Delivery {
        dest: Destination::topic(dest).unwrap(),
        sid,
        did: 0,
        count: 1,
        headers,
        payload: Bytes::from_static(payload.as_bytes()),
    })
}

/// The broker's `OK` to the first native request `out` made.
fn ok_first(b: &mut Bridge, out: &Out, r: &MqttState) -> Out {
    step_broker(
        b,
        ServerFrame::Ok {
            rid: Some(rids(out)[0]),
        },
        r,
    )
}

/// The rids of the native frames that carry one.
pub(super) fn rids(out: &Out) -> Vec<u64> {
    out.broker.iter().filter_map(|f| f.request_id()).collect()
}

#[test]
fn connect_becomes_a_native_connect_and_its_ok_a_connack() {
    let r = retained();
    let mut b = Bridge::new(7);
    let mut c = connect(Version::V311);
    c.user = Some("ann".into());
    c.password = Some(Bytes::from_static(b"secret"));
    let out = step_client(&mut b, Packet::Connect(Box::new(c)), &r);
    let ClientFrame::Connect(n) = &out.broker[0] else {
        panic!("{out:?}")
    };
    assert_eq!(n.name.as_deref(), Some("mqtt:dev-1"));
    assert_eq!(n.user.as_deref(), Some("ann"));
    assert_eq!(n.password.as_ref().map(|p| p.expose()), Some("secret"));
    assert_eq!(n.confirm, Some(true));
    assert!(
        out.client.is_empty(),
        "no CONNACK before the session answers"
    );
    let out = step_broker(&mut b, ServerFrame::Ok { rid: Some(1) }, &r);
    assert_eq!(
        out.client,
        [Reply::ConnAck {
            session_present: false,
            code: 0,
            props: Props::default()
        }]
    );
}

#[test]
fn refused_credentials_get_each_versions_code_and_the_connection_ends() {
    let r = retained();
    for (v, code) in [(Version::V311, 4), (Version::V5, 0x86)] {
        let mut b = Bridge::new(1);
        step_client(&mut b, Packet::Connect(Box::new(connect(v))), &r);
        let out = step_broker(&mut b, err(1, ErrorCode::AuthFailed), &r);
        assert!(
            matches!(&out.client[..], [Reply::ConnAck { code: c, .. }] if *c == code),
            "{out:?}"
        );
        assert!(out.close.is_some());
    }
}

#[test]
fn a_v5_connack_says_what_is_not_supported_and_assigns_an_id() {
    let r = retained();
    let mut b = Bridge::new(42);
    let mut c = connect(Version::V5);
    c.client_id = String::new();
    c.clean = false;
    step_client(&mut b, Packet::Connect(Box::new(c)), &r);
    let out = step_broker(&mut b, ServerFrame::Ok { rid: Some(1) }, &r);
    let Reply::ConnAck { props, .. } = &out.client[0] else {
        panic!()
    };
    assert_eq!(props.assigned_client_id.as_deref(), Some("agora-42"));
    assert_eq!(
        props.session_expiry,
        Some(0),
        "no session outlives the connection"
    );
    assert!(props.flags.contains(&(0x24, 1)), "Maximum QoS 1");
    assert!(props.flags.contains(&(0x2A, 0)), "no shared subscriptions");
}

#[test]
fn qos_0_publishes_go_unconfirmed_and_qos_1_are_acked_once_the_broker_has_them() {
    let r = retained();
    let mut b = open(Version::V311, &r);
    let out = step_client(&mut b, publish("a/b c", QoS::AtMostOnce, None, "x"), &r);
    let ClientFrame::Pub(p) = &out.broker[0] else {
        panic!()
    };
    assert_eq!((p.rid, p.dest.to_string()), (None, "topic:a.b_20c".into()));
    let out = step_client(&mut b, publish("a", QoS::AtLeastOnce, Some(9), "y"), &r);
    let rid = rids(&out)[0];
    assert!(out.client.is_empty(), "no PUBACK before the broker's");
    let out = step_broker(
        &mut b,
        ServerFrame::PubAck {
            rid: Some(rid),
            filtered: false,
        },
        &r,
    );
    assert_eq!(out.client, [Reply::PubAck(9, 0)]);
}

#[test]
fn a_refused_qos_1_publish_is_a_reason_code_on_5_and_a_close_on_311() {
    let r = retained();
    let mut b = open(Version::V5, &r);
    let out = step_client(&mut b, publish("a", QoS::AtLeastOnce, Some(3), "y"), &r);
    let out = step_broker(&mut b, err(rids(&out)[0], ErrorCode::NotPermitted), &r);
    assert_eq!(out.client, [Reply::PubAck(3, reason::NOT_AUTHORIZED)]);
    assert!(out.close.is_none());
    let mut b = open(Version::V311, &r);
    let out = step_client(&mut b, publish("a", QoS::AtLeastOnce, Some(3), "y"), &r);
    let out = step_broker(&mut b, err(rids(&out)[0], ErrorCode::NotPermitted), &r);
    assert!(out.client.is_empty(), "3.1.1 has no negative PUBACK");
    assert!(out.close.is_some());
}

#[test]
fn qos_2_is_refused_honestly() {
    let r = retained();
    let mut b = open(Version::V5, &r);
    let out = step_client(&mut b, publish("a", QoS::ExactlyOnce, Some(1), "y"), &r);
    assert!(out.broker.is_empty());
    assert!(matches!(out.client[..], [Reply::Disconnect(0x9B, _)]));
    assert!(out.close.is_some());
    let mut b = open(Version::V311, &r);
    let out = step_client(&mut b, publish("a", QoS::ExactlyOnce, Some(1), "y"), &r);
    assert!(out.client.is_empty() && out.broker.is_empty());
    assert!(out.close.is_some());
    // A subscription asking QoS 2 is granted QoS 1.
    let mut b = open(Version::V311, &r);
    let out = step_client(&mut b, subscribe(1, &[("a", QoS::ExactlyOnce)]), &r);
    let out = ok_first(&mut b, &out, &r);
    assert_eq!(
        out.client,
        [Reply::SubAck {
            pkid: 1,
            codes: vec![1]
        }]
    );
}

#[test]
fn a_hash_filter_is_two_native_subscriptions_and_one_suback() {
    let r = retained();
    let mut b = open(Version::V311, &r);
    let out = step_client(
        &mut b,
        subscribe(
            5,
            &[("orders/#", QoS::AtLeastOnce), ("bad/#/x", QoS::AtMostOnce)],
        ),
        &r,
    );
    let dests: Vec<String> = out
        .broker
        .iter()
        .map(|f| match f {
            ClientFrame::Sub(s) => s.dest.to_string(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(dests, ["topic:orders", "topic:orders.>"]);
    let ids = rids(&out);
    assert!(
        step_broker(&mut b, ServerFrame::Ok { rid: Some(ids[0]) }, &r)
            .client
            .is_empty()
    );
    let out = step_broker(&mut b, ServerFrame::Ok { rid: Some(ids[1]) }, &r);
    assert_eq!(
        out.client,
        [Reply::SubAck {
            pkid: 5,
            codes: vec![1, 0x80]
        }]
    );
    // A delivery to either comes as a QoS 1 PUBLISH on the MQTT topic.
    let sid = *b.by_sid.keys().max().unwrap();
    let out = step_broker(&mut b, msg("orders.eu.new", sid, "o1", Headers::new()), &r);
    let [Reply::Publish(p)] = &out.client[..] else {
        panic!("{out:?}")
    };
    assert_eq!(
        (p.topic.as_str(), p.qos),
        ("orders/eu/new", QoS::AtLeastOnce)
    );
    let pkid = p.pkid.unwrap();
    assert!(b.inflight.contains(&pkid));
    step_client(&mut b, Packet::PubAck(pkid, 0), &r);
    assert!(b.inflight.is_empty());
}

#[test]
fn a_refused_subscription_fails_its_filter_only() {
    let r = retained();
    let mut b = open(Version::V5, &r);
    let out = step_client(
        &mut b,
        subscribe(2, &[("a", QoS::AtMostOnce), ("b", QoS::AtLeastOnce)]),
        &r,
    );
    let ids = rids(&out);
    step_broker(&mut b, err(ids[0], ErrorCode::NotPermitted), &r);
    let out = step_broker(&mut b, ServerFrame::Ok { rid: Some(ids[1]) }, &r);
    assert_eq!(
        out.client,
        [Reply::SubAck {
            pkid: 2,
            codes: vec![0x87, 1]
        }]
    );
    assert_eq!(b.subs.len(), 1);
}

#[test]
fn a_filter_refused_in_part_ends_the_part_that_was_not() {
    let r = retained();
    let mut b = open(Version::V311, &r);
    let out = step_client(&mut b, subscribe(2, &[("a/#", QoS::AtMostOnce)]), &r);
    let ids = rids(&out);
    step_broker(&mut b, ServerFrame::Ok { rid: Some(ids[0]) }, &r);
    let out = step_broker(&mut b, err(ids[1], ErrorCode::NotPermitted), &r);
    assert_eq!(
        out.client,
        [Reply::SubAck {
            pkid: 2,
            codes: vec![0x80]
        }]
    );
    assert!(matches!(out.broker[..], [ClientFrame::Unsub { .. }]));
    assert!(b.subs.is_empty() && b.by_sid.is_empty());
}

#[test]
fn unsubscribe_ends_the_native_subscriptions() {
    let r = retained();
    let mut b = open(Version::V5, &r);
    let out = step_client(&mut b, subscribe(2, &[("a/#", QoS::AtMostOnce)]), &r);
    for rid in rids(&out) {
        step_broker(&mut b, ServerFrame::Ok { rid: Some(rid) }, &r);
    }
    let out = step_client(
        &mut b,
        Packet::Unsubscribe {
            pkid: 3,
            filters: vec!["a/#".into(), "never".into()],
        },
        &r,
    );
    assert_eq!(
        out.broker
            .iter()
            .filter(|f| matches!(f, ClientFrame::Unsub { .. }))
            .count(),
        2
    );
    assert_eq!(
        out.client,
        [Reply::UnsubAck {
            pkid: 3,
            codes: vec![0, 0x11]
        }]
    );
    assert!(b.by_sid.is_empty());
}

fn with_will(version: Version, r: &MqttState) -> Bridge {
    let mut b = Bridge::new(1);
    let mut c = connect(version);
    c.will = Some(Will {
        topic: "status/dev-1".into(),
        payload: Bytes::from_static(b"offline"),
        qos: QoS::AtLeastOnce,
        retain: false,
        props: Props::default(),
    });
    step_client(&mut b, Packet::Connect(Box::new(c)), r);
    step_broker(&mut b, ServerFrame::Ok { rid: Some(1) }, r);
    b
}

#[test]
fn the_will_is_published_when_the_connection_is_lost_not_on_disconnect() {
    let r = retained();
    let mut b = with_will(Version::V311, &r);
    let mut out = Out::default();
    b.lost(&r, &mut out);
    let ClientFrame::Pub(p) = &out.broker[0] else {
        panic!()
    };
    assert_eq!(
        (p.dest.to_string(), &p.payload[..]),
        ("topic:status.dev-1".into(), &b"offline"[..])
    );
    let mut b = with_will(Version::V311, &r);
    let out = step_client(&mut b, Packet::Disconnect(0, Props::default()), &r);
    assert!(out.broker.is_empty() && out.close.is_some());
    // MQTT 5's "disconnect with will message".
    let mut b = with_will(Version::V5, &r);
    let out = step_client(&mut b, Packet::Disconnect(0x04, Props::default()), &r);
    assert_eq!(out.broker.len(), 1);
}

#[test]
fn retained_messages_are_kept_once_accepted_and_sent_after_the_suback() {
    let r = retained();
    let mut b = open(Version::V311, &r);
    let Packet::Publish(mut p) = publish("home/light", QoS::AtMostOnce, None, "on") else {
        unreachable!()
    };
    p.retain = true;
    let out = step_client(&mut b, Packet::Publish(p), &r);
    let rid = rids(&out)[0];
    assert!(
        r.retained.matching(&[">"]).is_empty(),
        "not before the broker took it"
    );
    let out = step_broker(
        &mut b,
        ServerFrame::PubAck {
            rid: Some(rid),
            filtered: false,
        },
        &r,
    );
    assert!(out.client.is_empty(), "QoS 0: nothing to acknowledge");
    assert_eq!(r.retained.matching(&[">"]).len(), 1);
    let mut s = open(Version::V311, &r);
    let out = step_client(&mut s, subscribe(1, &[("home/+", QoS::AtLeastOnce)]), &r);
    let out = ok_first(&mut s, &out, &r);
    let [Reply::SubAck { .. }, Reply::Publish(p)] = &out.client[..] else {
        panic!("{out:?}")
    };
    assert_eq!(
        (p.topic.as_str(), p.retain, p.qos),
        ("home/light", true, QoS::AtMostOnce)
    );
}

#[test]
fn v5_properties_travel_as_headers_and_back() {
    let r = retained();
    let mut b = open(Version::V5, &r);
    let Packet::Publish(mut p) = publish("req", QoS::AtMostOnce, None, "q") else {
        unreachable!()
    };
    p.props.user = vec![("trace".into(), "t-1".into())];
    p.props.response_topic = Some("replies/me".into());
    p.props.correlation = Some(Bytes::from_static(&[0xAB, 0x01]));
    p.props.content_type = Some("text/plain".into());
    let out = step_client(&mut b, Packet::Publish(p), &r);
    let ClientFrame::Pub(n) = &out.broker[0] else {
        panic!()
    };
    assert_eq!(n.headers.get("trace"), Some("t-1"));
    assert_eq!(n.headers.get("agora-reply-to"), Some("topic:replies.me"));
    assert_eq!(n.headers.get(CORRELATION), Some("ab01"));
    let back = props_of(&n.headers);
    assert_eq!(back.user, [("trace".to_owned(), "t-1".to_owned())]);
    assert_eq!(back.response_topic.as_deref(), Some("replies/me"));
    assert_eq!(back.correlation.as_deref(), Some(&[0xAB, 0x01][..]));
    assert_eq!(back.content_type.as_deref(), Some("text/plain"));
    // A user property Agora headers cannot hold is refused, not dropped.
    let Packet::Publish(mut p) = publish("x", QoS::AtLeastOnce, Some(4), "q") else {
        unreachable!()
    };
    p.props.user = vec![("has space".into(), "v".into())];
    let out = step_client(&mut b, Packet::Publish(p), &r);
    assert!(matches!(out.client[..], [Reply::PubAck(4, c)] if c >= 0x80));
}

#[test]
fn the_sessions_pings_are_answered_by_the_bridge() {
    let r = retained();
    let mut b = open(Version::V311, &r);
    let out = step_broker(&mut b, ServerFrame::PingReq { rid: Some(8) }, &r);
    assert_eq!(out.broker, [ClientFrame::PingResp { rid: Some(8) }]);
    let out = step_client(&mut b, Packet::PingReq, &r);
    assert_eq!(out.client, [Reply::PingResp]);
}

#[test]
fn past_the_inflight_limit_deliveries_go_at_qos_0() {
    let r = retained();
    let mut b = open(Version::V311, &r);
    let out = step_client(&mut b, subscribe(1, &[("t", QoS::AtLeastOnce)]), &r);
    ok_first(&mut b, &out, &r);
    let sid = *b.by_sid.keys().next().unwrap();
    let mut qos1 = 0;
    for _ in 0..MAX_INFLIGHT + 5 {
        let out = step_broker(&mut b, msg("t", sid, "m", Headers::new()), &r);
        if let [Reply::Publish(p)] = &out.client[..] {
            qos1 += usize::from(p.qos == QoS::AtLeastOnce);
        }
    }
    assert_eq!(qos1, MAX_INFLIGHT);
}

#[test]
fn a_hash_filter_stands_when_only_its_parent_level_is_not_permitted() {
    let r = retained();
    let mut b = open(Version::V5, &r);
    let out = step_client(&mut b, subscribe(2, &[("a/#", QoS::AtLeastOnce)]), &r);
    let ids = rids(&out);
    step_broker(&mut b, err(ids[0], ErrorCode::NotPermitted), &r);
    let out = step_broker(&mut b, ServerFrame::Ok { rid: Some(ids[1]) }, &r);
    assert_eq!(
        out.client,
        [Reply::SubAck {
            pkid: 2,
            codes: vec![1]
        }]
    );
    assert!(out.broker.is_empty());
    assert_eq!(b.by_sid.len(), 1);
}

#[test]
fn a_retained_will_is_kept_once_the_broker_took_it() {
    let r = retained();
    let mut b = Bridge::new(1);
    let mut c = connect(Version::V311);
    c.will = Some(Will {
        topic: "status/dev-1".into(),
        payload: Bytes::from_static(b"offline"),
        qos: QoS::AtLeastOnce,
        retain: true,
        props: Props::default(),
    });
    step_client(&mut b, Packet::Connect(Box::new(c)), &r);
    step_broker(&mut b, ServerFrame::Ok { rid: Some(1) }, &r);
    let mut out = Out::default();
    b.lost(&r, &mut out);
    let rid = rids(&out)[0];
    assert!(r.retained.matching(&[">"]).is_empty());
    step_broker(
        &mut b,
        ServerFrame::PubAck {
            rid: Some(rid),
            filtered: false,
        },
        &r,
    );
    let kept = r.retained.matching(&["status.>"]);
    assert_eq!(kept[0].1.payload, "offline");
}
