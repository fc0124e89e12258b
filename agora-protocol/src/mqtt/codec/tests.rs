use super::*;

const MAX: usize = 1 << 20;

/// A 3.1.1 CONNECT: client id "c1", clean, keepalive 30, user "u", password "p", a
/// will on "w/t" saying "bye" at QoS 1, retained.
fn connect_v311() -> Vec<u8> {
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 0b1110_1110, 0, 30];
    body.extend([0, 2, b'c', b'1']);
    body.extend([0, 3, b'w', b'/', b't', 0, 3, b'b', b'y', b'e']);
    body.extend([0, 1, b'u', 0, 1, b'p']);
    let mut p = vec![0x10, body.len() as u8];
    p.extend(body);
    p
}

fn one(bytes: &[u8], v: Option<Version>) -> Result<Option<Packet>, MqttError> {
    let mut b = BytesMut::from(bytes);
    let r = decode(&mut b, v, MAX);
    if let Ok(Some(_)) = r {
        assert!(b.is_empty(), "the packet was consumed whole");
    }
    r
}

#[test]
fn a_311_connect_with_a_will_and_credentials() {
    let Packet::Connect(c) = one(&connect_v311(), None).unwrap().unwrap() else {
        panic!()
    };
    assert_eq!(c.version, Version::V311);
    assert_eq!(c.client_id, "c1");
    assert!(c.clean);
    assert_eq!(c.keep_alive, 30);
    assert_eq!(c.user.as_deref(), Some("u"));
    assert_eq!(c.password.as_deref(), Some(&b"p"[..]));
    let w = c.will.unwrap();
    assert_eq!((w.topic.as_str(), &w.payload[..]), ("w/t", &b"bye"[..]));
    assert_eq!((w.qos, w.retain), (QoS::AtLeastOnce, true));
}

#[test]
fn a_partial_packet_consumes_nothing() {
    let whole = connect_v311();
    for cut in 0..whole.len() {
        let mut b = BytesMut::from(&whole[..cut]);
        assert_eq!(decode(&mut b, None, MAX), Ok(None), "cut at {cut}");
        assert_eq!(b.len(), cut);
    }
}

#[test]
fn a_packet_over_the_limit_is_refused_from_its_header() {
    // PUBLISH claiming 2 MiB, with only its fixed header here.
    let mut b = BytesMut::from(&[0x30, 0x80, 0x80, 0x80, 0x01][..]);
    assert_eq!(
        decode(&mut b, Some(Version::V311), MAX),
        Err(MqttError::TooLarge(2_097_157))
    );
    let mut b = BytesMut::from(&[0x30, 0xFF, 0xFF, 0xFF, 0xFF][..]);
    assert!(matches!(
        decode(&mut b, Some(Version::V311), MAX),
        Err(MqttError::Malformed(_))
    ));
}

#[test]
fn the_first_packet_must_be_connect_and_only_once() {
    assert!(matches!(
        one(&[0xC0, 0], None),
        Err(MqttError::ProtocolError(_))
    ));
    assert!(matches!(
        one(&connect_v311(), Some(Version::V311)),
        Err(MqttError::ProtocolError(_))
    ));
}

#[test]
fn other_protocol_levels_are_named() {
    let mut c = connect_v311();
    c[8] = 3;
    assert_eq!(one(&c, None), Err(MqttError::UnsupportedVersion(3)));
}

#[test]
fn publish_at_each_qos() {
    let v = Some(Version::V311);
    // QoS 0 to "a/b": "hi".
    let p = one(&[0x30, 7, 0, 3, b'a', b'/', b'b', b'h', b'i'], v).unwrap();
    let Some(Packet::Publish(p)) = p else {
        panic!()
    };
    assert_eq!(
        (p.qos, p.pkid, &p.payload[..]),
        (QoS::AtMostOnce, None, &b"hi"[..])
    );
    // QoS 1, retained, id 7.
    let p = one(&[0x33, 8, 0, 1, b't', 0, 7, b'x', b'y', b'z'], v).unwrap();
    let Some(Packet::Publish(p)) = p else {
        panic!()
    };
    assert_eq!((p.qos, p.pkid, p.retain), (QoS::AtLeastOnce, Some(7), true));
    assert_eq!(&p.payload[..], b"xyz");
    // QoS 1 with packet id 0, and QoS 3: malformed.
    assert!(one(&[0x32, 5, 0, 1, b't', 0, 0], v).is_err());
    assert!(one(&[0x36, 5, 0, 1, b't', 0, 1], v).is_err());
}

#[test]
fn a_v5_publish_carries_its_properties() {
    let mut props = vec![0x08, 0, 2, b'r', b't', 0x09, 0, 1, 9];
    props.extend([0x26, 0, 1, b'k', 0, 1, b'v', 0x01, 1]);
    let mut body = vec![0, 1, b't', 0, 5, props.len() as u8];
    body.extend(props);
    body.extend(b"payload");
    let mut p = vec![0x32, body.len() as u8];
    p.extend(body);
    let Some(Packet::Publish(p)) = one(&p, Some(Version::V5)).unwrap() else {
        panic!()
    };
    assert_eq!(p.props.response_topic.as_deref(), Some("rt"));
    assert_eq!(p.props.correlation.as_deref(), Some(&[9u8][..]));
    assert_eq!(p.props.user, [("k".to_owned(), "v".to_owned())]);
    assert_eq!(p.props.payload_format, Some(1));
    assert_eq!(&p.payload[..], b"payload");
}

#[test]
fn subscribe_and_unsubscribe() {
    let v = Some(Version::V311);
    let p = one(&[0x82, 9, 0, 1, 0, 3, b'a', b'/', b'#', 1, 0][..9 + 2], v);
    assert!(p.is_err(), "a second filter cut short");
    let p = one(&[0x82, 8, 0, 1, 0, 3, b'a', b'/', b'#', 1], v).unwrap();
    let Some(Packet::Subscribe { pkid, filters, .. }) = p else {
        panic!()
    };
    assert_eq!(pkid, 1);
    assert_eq!(
        (filters[0].filter.as_str(), filters[0].qos),
        ("a/#", QoS::AtLeastOnce)
    );
    // Reserved flags, and option bits reserved in 3.1.1.
    assert!(one(&[0x80, 8, 0, 1, 0, 3, b'a', b'/', b'#', 1], v).is_err());
    assert!(one(&[0x82, 8, 0, 1, 0, 3, b'a', b'/', b'#', 5], v).is_err());
    let p = one(&[0xA2, 5, 0, 2, 0, 1, b'x'], v).unwrap();
    assert_eq!(
        p,
        Some(Packet::Unsubscribe {
            pkid: 2,
            filters: vec!["x".into()]
        })
    );
}

#[test]
fn ping_disconnect_and_acks() {
    let v = Some(Version::V311);
    assert_eq!(one(&[0xC0, 0], v).unwrap(), Some(Packet::PingReq));
    assert_eq!(
        one(&[0xE0, 0], v).unwrap(),
        Some(Packet::Disconnect(0, Props::default()))
    );
    assert_eq!(
        one(&[0x40, 2, 0, 9], v).unwrap(),
        Some(Packet::PubAck(9, 0))
    );
    assert!(one(&[0xC0, 1, 0], v).is_err(), "a PINGREQ with a body");
}

#[test]
fn strings_must_be_utf8() {
    assert!(matches!(
        one(&[0x30, 5, 0, 2, 0xC3, 0x28, b'x'], Some(Version::V311)),
        Err(MqttError::Malformed(_))
    ));
}

#[test]
fn replies_encode_per_version() {
    let mut out = BytesMut::new();
    let ack = Reply::ConnAck {
        session_present: false,
        code: 0,
        props: Props::default(),
    };
    encode(&ack, Version::V311, &mut out);
    assert_eq!(&out[..], [0x20, 2, 0, 0]);
    out.clear();
    encode(&ack, Version::V5, &mut out);
    assert_eq!(&out[..], [0x20, 3, 0, 0, 0]);
    out.clear();
    encode(
        &Reply::SubAck {
            pkid: 5,
            codes: vec![1, 0x80],
        },
        Version::V311,
        &mut out,
    );
    assert_eq!(&out[..], [0x90, 4, 0, 5, 1, 0x80]);
    out.clear();
    let p = Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: "a/b".into(),
        pkid: Some(3),
        payload: Bytes::from_static(b"hi"),
        props: Props::default(),
    };
    encode(&Reply::Publish(p.clone()), Version::V311, &mut out);
    assert_eq!(
        &out[..],
        [0x32, 9, 0, 3, b'a', b'/', b'b', 0, 3, b'h', b'i']
    );
    // What the broker writes, a client-side decode reads back (the same layout).
    let back = one(&out, Some(Version::V311)).unwrap();
    assert_eq!(back, Some(Packet::Publish(p)));
    out.clear();
    encode(&Reply::PingResp, Version::V311, &mut out);
    assert_eq!(&out[..], [0xD0, 0]);
}

#[test]
fn long_lengths_use_more_length_bytes() {
    let mut out = BytesMut::new();
    let p = Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        topic: "t".into(),
        pkid: None,
        payload: Bytes::from(vec![7u8; 20_000]),
        props: Props::default(),
    };
    encode(&Reply::Publish(p.clone()), Version::V5, &mut out);
    let back = one(&out, Some(Version::V5)).unwrap();
    assert_eq!(back, Some(Packet::Publish(p)));
}
