//! Known answers, round trips, prefixes, cut streams and malformed input for the codec.

use std::collections::BTreeSet;
use std::time::Duration;

use agora_protocol::bytes::{Bytes, BytesMut};
use agora_protocol::*;
use proptest::prelude::*;

fn dest(s: &str) -> Destination {
    s.parse().unwrap()
}

fn enc<F: Frame>(f: &F) -> Vec<u8> {
    let mut b = BytesMut::new();
    encode(f, &mut b);
    b.to_vec()
}

/// Decodes every frame in `bytes`, asserting the buffer ends empty.
fn decode_all<F: Frame>(bytes: &[u8]) -> Vec<F> {
    let mut buf = BytesMut::from(bytes);
    let mut out = Vec::new();
    while let Some(f) = F::decode_with(&mut buf, &Limits::default()).unwrap() {
        out.push(f);
    }
    assert!(
        buf.is_empty(),
        "left over: {:?}",
        String::from_utf8_lossy(&buf)
    );
    out
}

/// Encodes `f` and decodes it again in its direction.
fn trip<F: Frame>(f: &F) -> Vec<F> {
    decode_all(&enc(f))
}

fn headers(pairs: &[(&str, &str)]) -> Headers {
    let mut h = Headers::new();
    for (k, v) in pairs {
        h.append(k, v).unwrap();
    }
    h
}

/// Every frame a client sends, with its exact wire form.
fn client_answers() -> Vec<(ClientFrame, &'static [u8])> {
    vec![
        (
            ClientFrame::Connect(Connect {
                rid: Some(1),
                name: Some("billing".into()),
                proto: Some(1),
                confirm: Some(true),
                token: None,
                user: None,
                password: None,
            }),
            b"CONNECT #1 name=billing proto=1 confirm=on\r\n",
        ),
        (
            ClientFrame::Connect(Connect {
                rid: Some(2),
                user: Some("alice".into()),
                password: Some(Password::new("p w=%é~")),
                ..Connect::default()
            }),
            b"CONNECT #2 user=alice password=p%20w%3D%25%C3%A9~\r\n",
        ),
        (
            ClientFrame::Connect(Connect {
                rid: None,
                token: Some("00ff00ff00ff00ff".into()),
                ..Connect::default()
            }),
            b"CONNECT token=00ff00ff00ff00ff\r\n",
        ),
        (ClientFrame::Connect(Connect::default()), b"CONNECT\r\n"),
        (
            ClientFrame::Pub(Publish {
                rid: None,
                dest: dest("topic:prices.eu-west"),
                headers: Headers::new(),
                payload: Bytes::from_static(b"hello"),
            }),
            b"PUB topic:prices.eu-west 5\r\nhello\r\n",
        ),
        (
            ClientFrame::Pub(Publish {
                rid: Some(7),
                dest: dest("queue:orders"),
                headers: headers(&[("Trace-Id", "ab")]),
                payload: Bytes::from_static(b"hi"),
            }),
            b"HPUB #7 queue:orders 16 18\r\nTrace-Id: ab\r\n\r\nhi\r\n",
        ),
        (
            ClientFrame::Pub(Publish {
                rid: None,
                dest: dest("queue:q"),
                headers: Headers::new(),
                payload: Bytes::new(),
            }),
            b"PUB queue:q 0\r\n\r\n",
        ),
        (
            ClientFrame::Sub(Subscribe {
                rid: Some(2),
                dest: dest("queue:orders"),
                sid: 1,
                prefetch: Some(64),
                ack: Some(AckMode::Manual),
            }),
            b"SUB #2 queue:orders 1 prefetch=64 ack=manual\r\n",
        ),
        (
            ClientFrame::Sub(Subscribe {
                rid: None,
                dest: dest("topic:t"),
                sid: 9,
                prefetch: None,
                ack: None,
            }),
            b"SUB topic:t 9\r\n",
        ),
        (
            ClientFrame::Sub(Subscribe {
                rid: None,
                dest: dest("queue:w"),
                sid: 3,
                prefetch: None,
                ack: Some(AckMode::Auto),
            }),
            b"SUB queue:w 3 ack=auto\r\n",
        ),
        (ClientFrame::Unsub { rid: None, sid: 1 }, b"UNSUB 1\r\n"),
        (ClientFrame::Hold { rid: None, sid: 1 }, b"HOLD 1\r\n"),
        (
            ClientFrame::Resume {
                rid: Some(2),
                sid: 1,
            },
            b"RESUME #2 1\r\n",
        ),
        (ClientFrame::Ack { rid: None, did: 42 }, b"ACK 42\r\n"),
        (
            ClientFrame::Ack {
                rid: Some(3),
                did: 42,
            },
            b"ACK #3 42\r\n",
        ),
        (
            ClientFrame::Nack {
                rid: None,
                did: 43,
                how: Nack::Requeue,
            },
            b"NACK 43\r\n",
        ),
        (
            ClientFrame::Nack {
                rid: Some(2),
                did: 44,
                how: Nack::Delay(Duration::from_secs(30)),
            },
            b"NACK #2 44 delay=30s\r\n",
        ),
        (
            ClientFrame::Nack {
                rid: None,
                did: 45,
                how: Nack::Delay(Duration::from_millis(1500)),
            },
            b"NACK 45 delay=1500ms\r\n",
        ),
        (
            ClientFrame::Nack {
                rid: None,
                did: 46,
                how: Nack::DeadLetter,
            },
            b"NACK 46 dlq\r\n",
        ),
        (
            ClientFrame::Nack {
                rid: None,
                did: 47,
                how: Nack::Unseen,
            },
            b"NACK 47 unseen\r\n",
        ),
        (
            ClientFrame::SetAck {
                rid: None,
                on: true,
            },
            b"SETACK on\r\n",
        ),
        (
            ClientFrame::SetAck {
                rid: Some(4),
                on: false,
            },
            b"SETACK #4 off\r\n",
        ),
        (
            ClientFrame::Stats {
                rid: None,
                page: StatsPage::default(),
            },
            b"STATS\r\n",
        ),
        (
            ClientFrame::Stats {
                rid: Some(3),
                page: StatsPage {
                    prefix: Some("sensors.".into()),
                    after: Some("queue:sensors.a".parse().unwrap()),
                    limit: Some(50),
                    ..StatsPage::default()
                },
            },
            b"STATS #3 prefix=sensors. after=queue:sensors.a limit=50\r\n",
        ),
        (
            ClientFrame::Stats {
                rid: Some(4),
                page: StatsPage {
                    connections: Some(100),
                    connections_after: Some(17),
                    ..StatsPage::default()
                },
            },
            b"STATS #4 connections=100 connections_after=17\r\n",
        ),
        (ClientFrame::Help { rid: Some(5) }, b"HELP #5\r\n"),
        (
            ClientFrame::Purge {
                rid: None,
                dest: dest("queue:orders"),
            },
            b"PURGE queue:orders\r\n",
        ),
        (
            ClientFrame::Delete {
                rid: Some(6),
                dest: dest("topic:t"),
            },
            b"DELETE #6 topic:t\r\n",
        ),
        (
            ClientFrame::Bind {
                rid: None,
                queue: dest("queue:q"),
                topic: Destination::topic_pattern("sensors.*.temp").unwrap(),
            },
            b"BIND queue:q topic:sensors.*.temp\r\n",
        ),
        (
            ClientFrame::Unbind {
                rid: Some(8),
                queue: dest("queue:q"),
                topic: Destination::topic_pattern("orders.>").unwrap(),
            },
            b"UNBIND #8 queue:q topic:orders.>\r\n",
        ),
        (
            ClientFrame::ChainGet {
                rid: None,
                dest: dest("topic:t"),
            },
            b"CHAIN GET topic:t\r\n",
        ),
        (
            ClientFrame::ChainSet {
                rid: Some(8),
                dest: dest("topic:t"),
                chain: Bytes::from_static(b"sample 10"),
            },
            b"CHAIN #8 SET topic:t 9\r\nsample 10\r\n",
        ),
        (
            ClientFrame::ChainClear {
                rid: None,
                dest: dest("queue:q"),
            },
            b"CHAIN CLEAR queue:q\r\n",
        ),
        (ClientFrame::Disconnect, b"DISCONNECT\r\n"),
        (ClientFrame::PingReq { rid: None }, b"PINGREQ\r\n"),
        (ClientFrame::PingResp { rid: Some(9) }, b"PINGRESP #9\r\n"),
    ]
}

/// Every frame the broker sends, with its exact wire form.
fn server_answers() -> Vec<(ServerFrame, &'static [u8])> {
    vec![
        (ServerFrame::PingReq { rid: None }, b"PINGREQ\r\n"),
        (ServerFrame::PingResp { rid: Some(9) }, b"PINGRESP #9\r\n"),
        (
            ServerFrame::Info(Info {
                server: "agora".into(),
                version: "0.1.0".into(),
                proto: 1,
                max_payload: 1048576,
                max_line: 4096,
                auth_required: false,
                tls_required: false,
                inbox: None,
            }),
            b"INFO server=agora version=0.1.0 proto=1 max_payload=1048576 max_line=4096\r\n",
        ),
        (
            ServerFrame::Info(Info {
                server: "agora".into(),
                version: "0.1.0".into(),
                proto: 1,
                max_payload: 1048576,
                max_line: 4096,
                auth_required: true,
                tls_required: true,
                inbox: Some("$inbox.k3Yq".into()),
            }),
            b"INFO server=agora version=0.1.0 proto=1 max_payload=1048576 max_line=4096 auth_required=1 tls_required=1 inbox=$inbox.k3Yq\r\n",
        ),
        (
            ServerFrame::Msg(Delivery {
                dest: dest("queue:orders"),
                sid: 1,
                did: 42,
                count: 2,
                headers: Headers::new(),
                payload: Bytes::from_static(b"hi"),
            }),
            b"MSG queue:orders 1 42 2 2\r\nhi\r\n",
        ),
        (
            ServerFrame::Msg(Delivery {
                dest: dest("topic:t"),
                sid: 5,
                did: 0,
                count: 1,
                headers: headers(&[("a", "1"), ("b", "x y")]),
                payload: Bytes::from_static(b"z"),
            }),
            b"HMSG topic:t 5 0 1 16 17\r\na: 1\r\nb: x y\r\n\r\nz\r\n",
        ),
        (ServerFrame::Ok { rid: None }, b"OK\r\n"),
        (ServerFrame::Ok { rid: Some(10) }, b"OK #10\r\n"),
        (
            ServerFrame::PubAck {
                rid: Some(11),
                filtered: false,
            },
            b"PUBACK #11\r\n",
        ),
        (
            ServerFrame::PubAck {
                rid: None,
                filtered: true,
            },
            b"PUBACK filtered\r\n",
        ),
        (
            ServerFrame::Err(ErrorReply {
                rid: Some(7),
                code: ErrorCode::QueueFull,
                message: "queue 'orders' is full".into(),
            }),
            b"ERR #7 queue_full queue 'orders' is full\r\n",
        ),
        (
            ServerFrame::StatsResp {
                rid: None,
                json: Bytes::from_static(b"{}"),
            },
            b"STATSRESP 2\r\n{}\r\n",
        ),
        (
            ServerFrame::HelpResp {
                rid: Some(1),
                text: Bytes::from_static(b"PUB\r\nSUB"),
            },
            b"HELPRESP #1 8\r\nPUB\r\nSUB\r\n",
        ),
        (
            ServerFrame::ChainResp {
                rid: None,
                dest: dest("topic:t"),
                chain: Bytes::new(),
            },
            b"CHAINRESP topic:t 0\r\n\r\n",
        ),
        (
            ServerFrame::Cancel {
                sid: 3,
                code: ErrorCode::SlowConsumer,
                message: "fell 1000 behind".into(),
            },
            b"CANCEL 3 slow_consumer fell 1000 behind\r\n",
        ),
        (
            ServerFrame::Dropped { sid: 3, count: 42 },
            b"DROPPED 3 42\r\n",
        ),
        (
            ServerFrame::Shutdown {
                message: "broker is shutting down".into(),
            },
            b"SHUTDOWN broker is shutting down\r\n",
        ),
    ]
}

fn check_known_answers<F: Frame>(answers: Vec<(F, &'static [u8])>) {
    for (frame, wire) in answers {
        assert_eq!(
            String::from_utf8_lossy(&enc(&frame)),
            String::from_utf8_lossy(wire),
            "encode {frame:?}"
        );
        assert_eq!(
            decode_all::<F>(wire),
            vec![frame.clone()],
            "decode {:?}",
            String::from_utf8_lossy(wire)
        );
    }
}

#[test]
fn every_frame_has_its_known_wire_form() {
    check_known_answers(client_answers());
    check_known_answers(server_answers());
}

#[test]
fn known_answers_cover_every_command_word() {
    let client: BTreeSet<_> = client_answers().iter().map(|(f, _)| f.command()).collect();
    let server: BTreeSet<_> = server_answers().iter().map(|(f, _)| f.command()).collect();
    for spec in COMMANDS {
        let w = spec.word;
        if spec.sent_by() != SentBy::Broker {
            assert!(client.contains(w), "no known answer for {w} from a client");
        }
        if spec.sent_by() != SentBy::Client {
            assert!(
                server.contains(w),
                "no known answer for {w} from the broker"
            );
        }
    }
    assert_eq!(
        COMMANDS.len(),
        32,
        "the protocol has 32 command words; a new one needs known answers"
    );
}

fn check_strict_prefixes<F: Frame>(answers: Vec<(F, &'static [u8])>) {
    for (_, wire) in answers {
        for cut in 0..wire.len() {
            let mut buf = BytesMut::from(&wire[..cut]);
            assert_eq!(
                F::decode_with(&mut buf, &Limits::default()).unwrap(),
                None,
                "prefix {:?}",
                String::from_utf8_lossy(&wire[..cut])
            );
            assert_eq!(&buf[..], &wire[..cut], "a prefix must not be consumed");
        }
    }
}

#[test]
fn every_strict_prefix_is_incomplete_and_consumes_nothing() {
    check_strict_prefixes(client_answers());
    check_strict_prefixes(server_answers());
}

/// Decodes `wire` followed by a `PINGREQ` in `F`'s direction: `Ok` with the frame, or
/// the error, after checking that the stream stays in step either way.
fn decode_then_ping<F: Frame>(wire: &[u8]) -> Result<F, ProtocolError> {
    let mut buf = BytesMut::from(wire);
    buf.extend_from_slice(b"PINGREQ #99\r\n");
    let first = F::decode_with(&mut buf, &Limits::default()).map(|f| f.expect("a whole frame"));
    let next = F::decode_with(&mut buf, &Limits::default()).unwrap();
    assert_eq!(
        next.map(|f| (f.command(), f.request_id())),
        Some(("PINGREQ", Some(99))),
        "after {:?}",
        String::from_utf8_lossy(wire)
    );
    assert!(buf.is_empty());
    first
}

#[test]
fn every_command_word_decodes_in_its_direction_and_is_refused_in_the_other() {
    for spec in COMMANDS {
        let show = String::from_utf8_lossy(spec.example);
        let as_client = decode_then_ping::<ClientFrame>(spec.example);
        let as_server = decode_then_ping::<ServerFrame>(spec.example);
        let (read, refused) = match spec.sent_by() {
            SentBy::Client => (as_client.map(|f| f.command()), Some(as_server.map(|_| ()))),
            SentBy::Broker => (as_server.map(|f| f.command()), Some(as_client.map(|_| ()))),
            SentBy::Either => {
                assert_eq!(as_server.map(|f| f.command()), Ok(spec.word), "{show}");
                (as_client.map(|f| f.command()), None)
            }
        };
        assert_eq!(read, Ok(spec.word), "{show}");
        if let Some(refused) = refused {
            let e = refused.expect_err(&show);
            assert_eq!(e.kind(), &ErrorKind::UnknownCommand, "{show}");
            assert_eq!(e.code(), ErrorCode::UnknownCommand, "{show}");
            assert!(!e.is_fatal(), "{show}");
            let (who, not) = match spec.sent_by() {
                SentBy::Broker => ("the broker", "clients"),
                _ => ("clients", "the broker"),
            };
            let want = format!("'{}' is sent by {who}, not by {not}", spec.word);
            assert!(e.to_string().contains(&want), "{e}");
        }
    }
}

#[test]
fn a_broker_refuses_msg_as_it_did_and_echoes_request_ids() {
    let mut buf =
        BytesMut::from(&b"MSG topic:t 1 0 1 1\r\nx\r\nOK #5\r\nSTATSRESP #6 2\r\n{}\r\n"[..]);
    let e = decode_client(&mut buf).unwrap_err();
    assert_eq!(
        e.to_string(),
        "unknown command: 'MSG' is sent by the broker, not by clients (at byte 0)"
    );
    assert_eq!(e.request_id(), None);
    let e = decode_client(&mut buf).unwrap_err();
    assert_eq!(
        (e.code(), e.request_id()),
        (ErrorCode::UnknownCommand, Some(5))
    );
    let e = decode_client(&mut buf).unwrap_err();
    assert_eq!(
        (e.code(), e.request_id()),
        (ErrorCode::UnknownCommand, Some(6))
    );
    assert!(buf.is_empty(), "the payload of STATSRESP is skipped");
}

#[test]
fn a_wrong_side_payload_frame_without_a_readable_size_is_fatal() {
    let (k, fatal, _) = kind_of(b"MSG topic:t 1 0 1 x\r\nhello\r\n");
    assert_eq!(k, ErrorKind::BadArgs);
    assert!(fatal, "the payload cannot be skipped");
}

#[test]
fn help_lists_every_client_command_and_only_those() {
    let help = help_text();
    for spec in COMMANDS {
        let listed = help.lines().any(|l| l.trim_start().starts_with(spec.word));
        match spec.sent_by() {
            SentBy::Broker => assert!(!listed, "{} is not the client's", spec.word),
            _ => assert!(listed, "HELP does not list {}", spec.word),
        }
        if spec.sent_by() != SentBy::Broker {
            assert!(help.contains(spec.help), "{}", spec.word);
        }
    }
}

#[test]
fn lenient_forms_are_accepted() {
    // Lower-case command, bare LF, extra blanks, blank lines, PING/PONG aliases.
    let frames = decode_all::<ClientFrame>(
        b"\r\n  \npub   topic:t 2\nhi\n\tsub topic:t 1  \r\nping\r\npong #2\r\n",
    );
    assert_eq!(frames.len(), 4);
    assert!(matches!(&frames[0], ClientFrame::Pub(p) if &p.payload[..] == b"hi"));
    assert!(matches!(&frames[1], ClientFrame::Sub(s) if s.sid == 1));
    assert_eq!(frames[2], ClientFrame::PingReq { rid: None });
    assert_eq!(frames[3], ClientFrame::PingResp { rid: Some(2) });
}

#[test]
fn payloads_are_binary_safe() {
    let payload: Vec<u8> = (0..=255u8)
        .chain(b"\r\n\r\nPUB x 1\r\n".iter().copied())
        .collect();
    let f = ClientFrame::Pub(Publish {
        rid: None,
        dest: dest("topic:bin"),
        headers: Headers::new(),
        payload: Bytes::from(payload.clone()),
    });
    assert_eq!(trip(&f), vec![f]);
}

#[test]
fn payload_is_split_off_without_copy() {
    let mut buf = BytesMut::from(&b"PUB topic:t 5\r\nhello\r\n"[..]);
    let base = buf.as_ptr() as usize;
    let Some(ClientFrame::Pub(p)) = decode_client(&mut buf).unwrap() else {
        panic!()
    };
    assert_eq!(
        p.payload.as_ptr() as usize,
        base + 15,
        "payload must point into the read buffer"
    );
}

#[test]
fn decode_pub_to_takes_only_a_whole_plain_pub_to_its_destination() {
    let d = dest("topic:t");
    let small = Limits {
        max_line: 14,
        max_payload: 4,
    };
    let take = |wire: &[u8], limits: &Limits| {
        let mut buf = BytesMut::from(wire);
        let got = decode_pub_to(&mut buf, &d, limits);
        (got, buf.len())
    };
    let (got, left) = take(b"PUB topic:t 2\r\nhi\r\nPING\r\n", &Limits::default());
    assert_eq!((got.as_deref(), left), (Some(&b"hi"[..]), 6));
    assert_eq!(
        take(b"PUB topic:t 2\nhi\n", &small).0.as_deref(),
        Some(&b"hi"[..])
    );
    // Everything else is left whole for the decoder, which says what is wrong.
    for wire in [
        &b"PUB topic:tt 2\r\nhi\r\n"[..], // another name
        b"PUB queue:t 2\r\nhi\r\n",       // another kind
        b"pub topic:t 2\r\nhi\r\n",       // lower case
        b"PUB #4 topic:t 2\r\nhi\r\n",    // a request id
        b"PUB  topic:t 2\r\nhi\r\n",      // two blanks
        b"HPUB topic:t 4 6\r\n\r\n\r\nhi\r\n",
        b"PUB topic:t 2\r\nhi", // not all here
        b"PUB topic:t 2\r\nhi\r",
        b"PUB topic:t 2",
        b"PUB topic:t 2\r\nhix\r\n", // longer than declared
        b"PUB topic:t -2\r\nhi\r\n",
        b"PUB topic:t 2 x\r\nhi\r\n",
        b"PUB topic:t 99999999999999999999999\r\n",
    ] {
        assert_eq!(
            take(wire, &Limits::default()),
            (None, wire.len()),
            "{wire:?}"
        );
    }
    // The limits hold as in the decoder: a longer line, a larger payload.
    let wire = b"PUB topic:t 5\r\nhello\r\n";
    assert_eq!(take(wire, &small), (None, wire.len()));
    let wire = b"PUB topic:t 0001\r\nh\r\n";
    assert_eq!(take(wire, &small), (None, wire.len()));
}

fn kind_of(input: &[u8]) -> (ErrorKind, bool, usize) {
    kind_of_as::<ClientFrame>(input)
}

fn kind_of_as<F: Frame>(input: &[u8]) -> (ErrorKind, bool, usize) {
    let mut buf = BytesMut::from(input);
    let e = F::decode_with(&mut buf, &Limits::default()).expect_err("must be an error");
    (e.kind().clone(), e.is_fatal(), buf.len())
}

#[test]
fn unknown_command_is_recoverable() {
    let mut buf = BytesMut::from(&b"FROB x y\r\nPINGREQ\r\n"[..]);
    let e = decode_client(&mut buf).unwrap_err();
    assert_eq!(e.kind(), &ErrorKind::UnknownCommand);
    assert_eq!(e.code(), ErrorCode::UnknownCommand);
    assert!(!e.is_fatal());
    assert!(e.to_string().contains("FROB"), "{e}");
    assert_eq!(
        decode_client(&mut buf).unwrap(),
        Some(ClientFrame::PingReq { rid: None })
    );
}

#[test]
fn bad_args_are_recoverable_and_echo_the_request_id() {
    for input in [
        &b"SUB #4 topic:t notanumber\r\n"[..],
        b"SUB #4\r\n",
        b"ACK #4 -1\r\n",
        b"ACK #4 1 2\r\n",
        b"SETACK #4 maybe\r\n",
        b"SUB #4 queue:q 1 prefetch=0\r\n",
        b"SUB #4 queue:q 1 color=blue\r\n",
        b"UNSUB #4 99999999999999999999999\r\n",
        b"CHAIN #4 FROB topic:t\r\n",
        b"STATS #4 limit=0\r\n",
        b"STATS #4 limt=5\r\n",
        b"STATS #4 after=orders\r\n",
    ] {
        let mut buf = BytesMut::from(input);
        let e = decode_client(&mut buf).unwrap_err();
        assert_eq!(
            e.kind(),
            &ErrorKind::BadArgs,
            "{:?}",
            String::from_utf8_lossy(input)
        );
        assert_eq!(
            e.request_id(),
            Some(4),
            "{:?}",
            String::from_utf8_lossy(input)
        );
        assert!(!e.is_fatal());
        assert!(buf.is_empty());
    }
}

#[test]
fn bad_names_are_recoverable() {
    for input in [
        &b"SUB orders 1\r\n"[..],
        b"SUB queue:has/slash 1\r\n",
        b"SUB queue: 1\r\n",
        b"SUB queue:$ 1\r\n",
    ] {
        let (k, fatal, left) = kind_of(input);
        assert!(
            matches!(k, ErrorKind::BadName(_)),
            "{:?}: {k:?}",
            String::from_utf8_lossy(input)
        );
        assert!(!fatal);
        assert_eq!(left, 0);
    }
    let long = format!("SUB topic:{} 1\r\n", "a".repeat(256));
    let (k, _, _) = kind_of(long.as_bytes());
    assert_eq!(k, ErrorKind::BadName(Some(NameError::TooLong(256))));
    let ok = format!("SUB topic:{} 1\r\n", "a".repeat(255));
    assert_eq!(decode_all::<ClientFrame>(ok.as_bytes()).len(), 1);
}

#[test]
fn bad_name_in_pub_skips_the_payload_and_keeps_the_stream() {
    let mut buf = BytesMut::from(&b"PUB #3 nokind 5\r\nhello\r\nPINGREQ\r\n"[..]);
    let e = decode_client(&mut buf).unwrap_err();
    assert!(matches!(e.kind(), ErrorKind::BadName(_)));
    assert_eq!(e.request_id(), Some(3));
    assert!(!e.is_fatal());
    assert_eq!(
        decode_client(&mut buf).unwrap(),
        Some(ClientFrame::PingReq { rid: None })
    );
}

#[test]
fn pub_without_readable_size_is_fatal() {
    let (k, fatal, _) = kind_of(b"PUB topic:t five\r\nhello\r\n");
    assert_eq!(k, ErrorKind::BadArgs);
    assert!(fatal);
    let (_, fatal, _) = kind_of(b"HPUB topic:t 10 5\r\n");
    assert!(fatal, "header size above total");
}

#[test]
fn line_too_long_is_fatal_and_found_before_the_line_ends() {
    let limits = Limits {
        max_line: 16,
        max_payload: 100,
    };
    // No LF at all, but more than max_line + 2 bytes: known to be too long already.
    let mut buf = BytesMut::from(&[b'x'; 18][..]);
    let e = decode_client_with(&mut buf, &limits).unwrap_err();
    assert_eq!(e.kind(), &ErrorKind::LineTooLong { max: 16 });
    assert!(e.is_fatal());
    assert_eq!(e.code(), ErrorCode::LineTooLong);
    // Exactly at the limit is fine.
    let mut buf = BytesMut::from(&b"PUB topic:abcd 0\r\n\r\n"[..]);
    assert!(decode_client_with(&mut buf, &limits).unwrap().is_some());
    // One over, with a LF.
    let mut buf = BytesMut::from(&b"PUB topic:abcde 0\r\n\r\n"[..]);
    assert!(decode_client_with(&mut buf, &limits)
        .unwrap_err()
        .is_fatal());
    // Still within the window without LF: incomplete.
    let mut buf = BytesMut::from(&[b'x'; 17][..]);
    assert_eq!(decode_client_with(&mut buf, &limits).unwrap(), None);
}

#[test]
fn payload_too_large_is_refused_before_buffering() {
    let limits = Limits {
        max_line: 4096,
        max_payload: 10,
    };
    // Only the line has arrived: the size is refused without waiting for the body.
    let mut buf = BytesMut::from(&b"PUB #1 topic:t 11\r\n"[..]);
    let e = decode_client_with(&mut buf, &limits).unwrap_err();
    assert_eq!(
        e.kind(),
        &ErrorKind::PayloadTooLarge {
            declared: 11,
            max: 10
        }
    );
    assert_eq!(e.request_id(), Some(1));
    assert!(e.is_fatal());
    assert_eq!(e.code(), ErrorCode::PayloadTooLarge);
    let mut buf = BytesMut::from(&b"PUB topic:t 10\r\n0123456789\r\n"[..]);
    assert!(decode_client_with(&mut buf, &limits).unwrap().is_some());
}

#[test]
fn payload_longer_or_shorter_than_declared_is_fatal() {
    let (k, fatal, _) = kind_of(b"PUB topic:t 3\r\nhello\r\n");
    assert_eq!(k, ErrorKind::PayloadSizeMismatch);
    assert!(fatal);
    // Shorter: the next line is taken as payload, and its end does not line up.
    let (k, _, _) = kind_of(b"PUB topic:t 8\r\nhi\r\nPINGREQ\r\n");
    assert_eq!(k, ErrorKind::PayloadSizeMismatch);
}

#[test]
fn malformed_headers_are_recoverable() {
    for input in [
        &b"HPUB topic:t 9 10\r\nnocolon\r\nx\r\n"[..],
        b"HPUB topic:t 6 8\r\nk: v\r\nxx\r\n",
        b"HPUB topic:t 10 10\r\nb@d: v\r\n\r\n\r\n",
    ] {
        let mut buf = BytesMut::from(input);
        let e = decode_client(&mut buf).unwrap_err();
        assert_eq!(
            e.kind(),
            &ErrorKind::BadHeaders,
            "{:?}",
            String::from_utf8_lossy(input)
        );
        assert_eq!(e.code(), ErrorCode::BadFrame);
        assert!(!e.is_fatal());
        assert!(buf.is_empty());
    }
}

#[test]
fn long_error_messages_survive_the_trip() {
    let message = "a message with many more than twelve words in it, as the broker's own error texts have: 'FROB' (send HELP for the list) (at byte 0)";
    let f = ServerFrame::Err(ErrorReply {
        rid: Some(1),
        code: ErrorCode::UnknownCommand,
        message: message.into(),
    });
    assert_eq!(trip(&f), vec![f]);
    let c = ServerFrame::Cancel {
        sid: 1,
        code: ErrorCode::SlowConsumer,
        message: message.into(),
    };
    assert_eq!(trip(&c), vec![c]);
}

#[test]
fn a_bad_payload_line_never_lets_its_payload_be_read_as_commands() {
    for input in [
        &b"PUB topic:t\x01 15\r\nSUB topic:x 1\r\n\r\nPINGREQ\r\n"[..],
        b"PUB a b c d e f g h i j k l m 15\r\nSUB topic:x 1\r\n\r\nPINGREQ\r\n",
    ] {
        let mut buf = BytesMut::from(input);
        let e = decode_client(&mut buf).unwrap_err();
        assert!(!e.is_fatal(), "{e}");
        assert_eq!(
            decode_client(&mut buf).unwrap(),
            Some(ClientFrame::PingReq { rid: None }),
            "{:?}",
            String::from_utf8_lossy(input)
        );
    }
}

#[test]
fn delivery_count_starts_at_one() {
    let (k, _, _) = kind_of_as::<ServerFrame>(b"MSG topic:t 1 0 0 1\r\nx\r\n");
    assert_eq!(k, ErrorKind::BadArgs);
}

#[test]
fn too_many_tokens_is_bad_args() {
    let (k, fatal, left) = kind_of(b"SUB topic:t 1 a=1 b=2 c=3 d=4 e=5 f=6 g=7 h=8 i=9 j=10\r\n");
    assert_eq!(k, ErrorKind::BadArgs);
    assert!(!fatal);
    assert_eq!(left, 0);
}

#[test]
fn control_bytes_in_a_line_are_bad_args() {
    let (k, fatal, _) = kind_of(b"PINGREQ \x01\r\n");
    assert_eq!(k, ErrorKind::BadArgs);
    assert!(!fatal);
}

#[test]
fn errors_name_their_position() {
    let mut buf = BytesMut::from(&b"SUB topic:t x\r\n"[..]);
    let e = decode_client(&mut buf).unwrap_err();
    assert_eq!(e.offset(), 12);
    assert!(e.to_string().contains("at byte 12"), "{e}");
}

#[test]
fn unknown_error_codes_and_info_keys_are_tolerated() {
    let f = decode_all::<ServerFrame>(b"ERR brand_new_code something\r\nINFO server=a version=1 proto=1 max_payload=5 max_line=6 shiny=yes\r\n");
    assert!(
        matches!(&f[0], ServerFrame::Err(e) if e.code == ErrorCode::Unrecognized && e.message == "something")
    );
    assert!(matches!(&f[1], ServerFrame::Info(i) if i.max_line == 6));
}

#[test]
fn error_codes_round_trip_as_tokens() {
    for c in ErrorCode::ALL {
        assert_eq!(ErrorCode::from_token(c.as_str().as_bytes()), c);
    }
}

#[test]
fn text_fields_cannot_break_framing() {
    let f = ServerFrame::Err(ErrorReply {
        rid: None,
        code: ErrorCode::Internal,
        message: "two\r\nlines".into(),
    });
    let frames = trip(&f);
    assert!(matches!(&frames[0], ServerFrame::Err(e) if e.message == "two  lines"));
    let c = ClientFrame::Connect(Connect {
        name: Some("has space".into()),
        ..Connect::default()
    });
    assert!(
        matches!(&trip(&c)[0], ClientFrame::Connect(c) if c.name.as_deref() == Some("has_space"))
    );
}

#[test]
fn a_password_is_never_shown_and_bad_escapes_are_refused() {
    let c = Connect {
        user: Some("alice".into()),
        password: Some(Password::new("hunter2")),
        ..Connect::default()
    };
    assert!(!format!("{c:?}").contains("hunter2"));
    for bad in [
        &b"CONNECT password=%zz\r\n"[..],
        b"CONNECT password=%4\r\n",
        b"CONNECT password=%ff%fe\r\n",
    ] {
        let mut buf = BytesMut::from(bad);
        let e = decode_client(&mut buf).unwrap_err();
        assert_eq!(
            e.code(),
            ErrorCode::BadArgs,
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
}

// ---- property tests ----

fn arb_dest() -> impl Strategy<Value = Destination> {
    (prop::bool::ANY, "[$]?[a-zA-Z0-9._-]{1,24}").prop_map(|(q, n)| Destination {
        kind: if q { Kind::Queue } else { Kind::Topic },
        name: Name::try_from(n.as_str()).unwrap(),
    })
}

fn arb_headers() -> impl Strategy<Value = Headers> {
    prop::collection::vec(
        ("[a-zA-Z0-9._-]{1,12}", "([!-~]([ -~]{0,10}[!-~])?)?"),
        0..4,
    )
    .prop_map(|kv| {
        let mut h = Headers::new();
        for (k, v) in kv {
            h.append(&k, &v).unwrap();
        }
        h
    })
}

fn arb_payload() -> impl Strategy<Value = Bytes> {
    prop::collection::vec(any::<u8>(), 0..300).prop_map(Bytes::from)
}

fn arb_text() -> impl Strategy<Value = String> {
    "([!-~]([ -~]{0,30}[!-~])?)?"
}

fn arb_token() -> impl Strategy<Value = String> {
    "[!-~]{1,16}"
}

fn arb_client() -> impl Strategy<Value = ClientFrame> {
    let rid = prop::option::of(any::<u64>());
    prop_oneof![
        (rid.clone(), arb_dest(), arb_headers(), arb_payload()).prop_map(
            |(rid, dest, headers, payload)| {
                ClientFrame::Pub(Publish {
                    rid,
                    dest,
                    headers,
                    payload,
                })
            }
        ),
        (
            rid.clone(),
            arb_dest(),
            any::<u64>(),
            prop::option::of(1u32..),
            prop::option::of(prop_oneof![Just(AckMode::Auto), Just(AckMode::Manual)])
        )
            .prop_map(
                |(rid, dest, sid, prefetch, ack)| ClientFrame::Sub(Subscribe {
                    rid,
                    dest,
                    sid,
                    prefetch,
                    ack
                })
            ),
        (rid.clone(), any::<u64>()).prop_map(|(rid, sid)| ClientFrame::Unsub { rid, sid }),
        (rid.clone(), any::<u64>()).prop_map(|(rid, sid)| ClientFrame::Hold { rid, sid }),
        (rid.clone(), any::<u64>()).prop_map(|(rid, sid)| ClientFrame::Resume { rid, sid }),
        (rid.clone(), any::<u64>()).prop_map(|(rid, did)| ClientFrame::Ack { rid, did }),
        (rid.clone(), any::<u64>(), 0u64..=3_600_002).prop_map(|(rid, did, ms)| {
            let how = match ms {
                0 => Nack::Requeue,
                3_600_001 => Nack::DeadLetter,
                3_600_002 => Nack::Unseen,
                ms => Nack::Delay(Duration::from_millis(ms)),
            };
            ClientFrame::Nack { rid, did, how }
        }),
        (rid.clone(), any::<bool>()).prop_map(|(rid, on)| ClientFrame::SetAck { rid, on }),
        (rid.clone(), proptest::option::of(1u32..5000)).prop_map(|(rid, limit)| {
            ClientFrame::Stats {
                rid,
                page: StatsPage {
                    limit,
                    ..StatsPage::default()
                },
            }
        }),
        rid.clone().prop_map(|rid| ClientFrame::Help { rid }),
        rid.clone().prop_map(|rid| ClientFrame::PingReq { rid }),
        rid.clone().prop_map(|rid| ClientFrame::PingResp { rid }),
        (rid.clone(), arb_dest()).prop_map(|(rid, dest)| ClientFrame::Purge { rid, dest }),
        (rid.clone(), arb_dest()).prop_map(|(rid, dest)| ClientFrame::Delete { rid, dest }),
        (rid.clone(), arb_dest(), arb_dest()).prop_map(|(rid, queue, topic)| ClientFrame::Bind {
            rid,
            queue,
            topic
        }),
        (rid.clone(), arb_dest(), arb_dest()).prop_map(|(rid, queue, topic)| ClientFrame::Unbind {
            rid,
            queue,
            topic
        }),
        (rid.clone(), arb_dest()).prop_map(|(rid, dest)| ClientFrame::ChainGet { rid, dest }),
        (rid.clone(), arb_dest()).prop_map(|(rid, dest)| ClientFrame::ChainClear { rid, dest }),
        (rid.clone(), arb_dest(), arb_payload())
            .prop_map(|(rid, dest, chain)| { ClientFrame::ChainSet { rid, dest, chain } }),
        Just(ClientFrame::Disconnect),
        (
            rid,
            prop::option::of("[!-~&&[^=]]{1,12}"),
            prop::option::of(any::<u32>()),
            prop::option::of(any::<bool>()),
            prop::option::of("[!-~&&[^=]]{1,12}"),
            prop::option::of(any::<String>()),
        )
            .prop_map(|(rid, name, proto, confirm, user, password)| {
                ClientFrame::Connect(Connect {
                    rid,
                    name,
                    proto,
                    confirm,
                    token: None,
                    user,
                    password: password.map(Password::new),
                })
            }),
    ]
}

fn arb_server() -> impl Strategy<Value = ServerFrame> {
    let rid = prop::option::of(any::<u64>());
    prop_oneof![
        (
            arb_dest(),
            any::<u64>(),
            any::<u64>(),
            1u32..,
            arb_headers(),
            arb_payload()
        )
            .prop_map(
                |(dest, sid, did, count, headers, payload)| ServerFrame::Msg(Delivery {
                    dest,
                    sid,
                    did,
                    count,
                    headers,
                    payload
                })
            ),
        rid.clone().prop_map(|rid| ServerFrame::PingReq { rid }),
        rid.clone().prop_map(|rid| ServerFrame::PingResp { rid }),
        rid.clone().prop_map(|rid| ServerFrame::Ok { rid }),
        (rid.clone(), any::<bool>())
            .prop_map(|(rid, filtered)| ServerFrame::PubAck { rid, filtered }),
        (rid.clone(), arb_dest(), arb_payload())
            .prop_map(|(rid, dest, chain)| { ServerFrame::ChainResp { rid, dest, chain } }),
        (rid.clone(), arb_payload()).prop_map(|(rid, json)| ServerFrame::StatsResp { rid, json }),
        (rid.clone(), arb_payload()).prop_map(|(rid, text)| ServerFrame::HelpResp { rid, text }),
        (
            rid,
            prop::sample::select(ErrorCode::ALL.to_vec()),
            arb_text()
        )
            .prop_map(|(rid, code, message)| ServerFrame::Err(ErrorReply {
                rid,
                code,
                message
            })),
        (
            any::<u64>(),
            prop::sample::select(ErrorCode::ALL.to_vec()),
            arb_text()
        )
            .prop_map(|(sid, code, message)| ServerFrame::Cancel { sid, code, message }),
        (any::<u64>(), any::<u64>()).prop_map(|(sid, count)| ServerFrame::Dropped { sid, count }),
        arb_text().prop_map(|message| ServerFrame::Shutdown { message }),
        (
            arb_token(),
            arb_token(),
            any::<u32>(),
            any::<u64>(),
            any::<u64>(),
            any::<bool>(),
            any::<bool>(),
            proptest::option::of(arb_token())
        )
            .prop_map(
                |(
                    server,
                    version,
                    proto,
                    max_payload,
                    max_line,
                    auth_required,
                    tls_required,
                    inbox,
                )| {
                    ServerFrame::Info(Info {
                        server,
                        version,
                        proto,
                        max_payload,
                        max_line,
                        auth_required,
                        tls_required,
                        inbox,
                    })
                }
            ),
    ]
}

/// Big enough for anything `arb_client` and `arb_server` make.
const BIG: Limits = Limits {
    max_line: 4096,
    max_payload: 1 << 20,
};

fn round_trip<F: Frame>(f: F) -> Result<(), TestCaseError> {
    let mut buf = BytesMut::new();
    encode(&f, &mut buf);
    let got = F::decode_with(&mut buf, &BIG).unwrap();
    prop_assert_eq!(got, Some(f));
    prop_assert!(buf.is_empty());
    Ok(())
}

fn cut_stream<F: Frame>(frames: Vec<F>, cuts: &[prop::sample::Index]) -> Result<(), TestCaseError> {
    let mut wire = BytesMut::new();
    for f in &frames {
        encode(f, &mut wire);
    }
    let wire = wire.freeze();
    let mut points: Vec<usize> = cuts.iter().map(|i| i.index(wire.len() + 1)).collect();
    points.push(wire.len());
    points.sort_unstable();
    let mut buf = BytesMut::new();
    let mut got = Vec::new();
    let mut at = 0;
    for p in points {
        buf.extend_from_slice(&wire[at..p]);
        at = p;
        while let Some(f) = F::decode_with(&mut buf, &BIG).unwrap() {
            got.push(f);
        }
    }
    prop_assert_eq!(got, frames);
    prop_assert!(buf.is_empty());
    Ok(())
}

/// Decodes until the bytes run out or a fatal error, in `F`'s direction.
fn never_panics<F: Frame>(bytes: &[u8]) {
    let mut buf = BytesMut::from(bytes);
    for _ in 0..600 {
        match F::decode_with(&mut buf, &Limits::default()) {
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(e) if e.is_fatal() => break,
            Err(_) => {}
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn encode_then_decode_is_identity_client(f in arb_client()) {
        round_trip(f)?;
    }

    #[test]
    fn encode_then_decode_is_identity_server(f in arb_server()) {
        round_trip(f)?;
    }

    #[test]
    fn a_client_stream_cut_anywhere_decodes_to_the_same_frames(
        frames in prop::collection::vec(arb_client(), 1..20),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..10),
    ) {
        cut_stream(frames, &cuts)?;
    }

    #[test]
    fn a_server_stream_cut_anywhere_decodes_to_the_same_frames(
        frames in prop::collection::vec(arb_server(), 1..20),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..10),
    ) {
        cut_stream(frames, &cuts)?;
    }

    #[test]
    fn no_input_makes_decode_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        never_panics::<ClientFrame>(&bytes);
        never_panics::<ServerFrame>(&bytes);
    }

    #[test]
    fn text_like_garbage_never_panics(s in "([A-Z]{1,8}( [#a-z:0-9=]{0,12}){0,6}\r?\n){1,8}") {
        never_panics::<ClientFrame>(s.as_bytes());
        never_panics::<ServerFrame>(s.as_bytes());
    }

    /// Runs of publishes, mostly to one name, some with request ids or headers, some
    /// bytes changed: `decode_pub_to` takes exactly what the decoder reads as a plain
    /// `PUB` to that name.
    #[test]
    fn decode_pub_to_agrees_with_the_decoder(
        frames in prop::collection::vec(
            (0..4usize, any::<bool>(), prop::option::of(any::<u64>()), arb_headers(), arb_payload()),
            1..20,
        ),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..3),
    ) {
        let names = ["topic:t", "topic:t", "queue:t", "topic:tt"];
        let mut wire = Vec::new();
        for (n, plain, rid, headers, payload) in frames {
            let (rid, headers) = if plain { (None, Headers::new()) } else { (rid, headers) };
            wire.extend(enc(&ClientFrame::Pub(Publish { rid, dest: dest(names[n]), headers, payload })));
        }
        for (at, b) in flips {
            let i = at.index(wire.len());
            wire[i] = b;
        }
        agora_protocol::testing::check_pub_to(&wire);
    }
}
