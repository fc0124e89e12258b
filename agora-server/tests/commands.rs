//! Every command and every error code the core produces, over raw TCP bytes.

mod common;

use agora_protocol::{ErrorCode, ServerFrame};
use agora_server::Config;
use common::*;

#[test]
fn greeting_states_the_limits() {
    let s = start();
    let c = s.connect();
    let ServerFrame::Info(i) = &c.info else {
        unreachable!()
    };
    assert_eq!(i.server, "agora");
    assert_eq!(i.proto, agora_protocol::PROTOCOL_VERSION);
    assert_eq!(i.max_payload, 1024 * 1024);
    assert_eq!(i.max_line, 4096);
}

#[test]
fn control_commands_answer_with_their_request_ids() {
    let s = start();
    let mut c = s.connect();
    c.send(b"CONNECT #1 name=tester proto=1\r\nSETACK #2 on\r\nSETACK #3 off\r\nPINGREQ #4\r\nHELP #5\r\n");
    assert_eq!(c.next(), ServerFrame::Ok { rid: Some(1) });
    assert_eq!(c.next(), ServerFrame::Ok { rid: Some(2) });
    assert_eq!(c.next(), ServerFrame::Ok { rid: Some(3) });
    assert_eq!(c.next(), ServerFrame::PingResp { rid: Some(4) });
    match c.next() {
        ServerFrame::HelpResp { rid: Some(5), text } => {
            assert!(String::from_utf8_lossy(&text).contains("SUB [#id]"))
        }
        f => panic!("expected HELPRESP, got {f:?}"),
    }
    c.send(b"CONNECT #6 proto=9\r\n");
    assert!(c
        .expect_err(ErrorCode::BadArgs)
        .contains("protocol version 9"));
}

#[test]
fn typed_by_hand_lower_case_and_bare_lf() {
    let s = start();
    let mut c = s.connect();
    c.send(b"sub topic:t 1\nsetack on\npub topic:t 2\nhi\n");
    assert_eq!(c.next(), ServerFrame::Ok { rid: None });
    assert_eq!(c.next(), ServerFrame::Ok { rid: None });
    let mut got = [c.next(), c.next()];
    got.sort_by_key(|f| f.command());
    assert!(matches!(&got[0], ServerFrame::Msg(m) if &m.payload[..] == b"hi" && m.sid == 1));
    assert_eq!(
        got[1],
        ServerFrame::PubAck {
            rid: None,
            filtered: false
        }
    );
}

#[test]
fn publish_confirm_and_stats() {
    let s = start();
    let mut c = s.connect();
    c.send(b"SETACK on\r\nPUB #7 queue:orders 5\r\nhello\r\nHPUB #8 queue:orders 14 16\r\nk: v\r\nx: y\r\n\r\nhi\r\n");
    assert_eq!(c.next(), ServerFrame::Ok { rid: None });
    assert_eq!(
        c.next(),
        ServerFrame::PubAck {
            rid: Some(7),
            filtered: false
        }
    );
    assert_eq!(
        c.next(),
        ServerFrame::PubAck {
            rid: Some(8),
            filtered: false
        }
    );
    let st = c.stats();
    assert_eq!(st["server"], "agora");
    assert_eq!(st["clients"]["tcp"], 1);
    let q = dest_stats(&st, "queue", "orders").expect("queue in STATS");
    // Counted from the reservation: in STATS once the PUBACK is sent.
    assert_eq!(q["depth"], 2, "{q}");
    assert_eq!(q["consumers"], 0);
    // Counted by the queue's task as it takes them in, which may be a moment after the
    // PUBACK (under load, 1 run in 100 read 0 here at once).
    wait_until("the queue's task counted both publishes", || {
        let st = c.stats();
        dest_stats(&st, "queue", "orders").expect("queue in STATS")["messages_in"] == 2
    });
}

/// What a publish is owed is fixed when it is read. Fire-and-forget publishes held
/// back in a run, then `SETACK on` in the same read: the run is handed over after the
/// session has taken the `SETACK`; when the budget cannot take the run whole, each is
/// tried alone — and none of them may be answered with a `PUBACK` (a client counting
/// confirms would take it for the next confirmed publish's).
#[test]
fn a_run_handed_over_after_setack_on_owes_no_confirms() {
    let s = start_with(Config {
        memory_budget: 1000,
        ..Config::ephemeral()
    });
    let mut sub = s.connect();
    sub.send(b"SUB #1 topic:t 1\r\n");
    assert_eq!(sub.next(), ServerFrame::Ok { rid: Some(1) });
    let mut c = s.connect();
    let mut bytes = Vec::new();
    for _ in 0..8 {
        bytes.extend_from_slice(b"PUB topic:t 300\r\n");
        bytes.extend_from_slice(&[b'x'; 300]);
        bytes.extend_from_slice(b"\r\n");
    }
    // Eight copies of 300 bytes cannot be taken whole by a budget of 1000 (and all of
    // it, under 4 KiB, is one write the broker reads at once).
    bytes.extend_from_slice(b"SETACK #9 on\r\nPUB #10 topic:t 1\r\nx\r\n");
    c.send(&bytes);
    for _ in 0..10 {
        match c.next() {
            ServerFrame::Ok { rid: Some(9) } => break,
            ServerFrame::Err(e) if e.rid.is_none() && e.code == ErrorCode::MemoryLimit => {}
            f => panic!("a fire-and-forget publish was answered with {f:?}"),
        }
    }
    // The publish after the SETACK is confirmed (or refused by the budget).
    match c.next() {
        ServerFrame::PubAck { rid: Some(10), .. } => {}
        ServerFrame::Err(e) if e.rid == Some(10) && e.code == ErrorCode::MemoryLimit => {}
        f => panic!("expected the answer to #10, got {f:?}"),
    }
}

#[test]
fn headers_travel_with_the_message() {
    let s = start();
    let mut c = s.connect();
    c.send(b"SUB #1 queue:h 1 ack=auto\r\n");
    assert_eq!(c.next(), ServerFrame::Ok { rid: Some(1) });
    c.send(b"HPUB queue:h 14 16\r\nk: v\r\nx: y\r\n\r\nhi\r\n");
    match c.next() {
        ServerFrame::Msg(m) => {
            assert_eq!(m.headers.get("k"), Some("v"));
            assert_eq!(m.headers.get("X"), Some("y"));
            assert_eq!(&m.payload[..], b"hi");
            assert_eq!(m.did, 0, "auto-ack deliveries expect no ack");
        }
        f => panic!("expected HMSG, got {f:?}"),
    }
}

#[test]
fn ack_nack_and_unknown_deliveries() {
    let s = start();
    let mut c = s.connect();
    publish(&mut c, "queue:w", b"job");
    c.send(b"SUB #1 queue:w 3 prefetch=1\r\n");
    assert_eq!(c.next(), ServerFrame::Ok { rid: Some(1) });
    let ServerFrame::Msg(m) = c.next() else {
        panic!()
    };
    assert_eq!((m.sid, m.count), (3, 1));
    assert!(m.did > 0);
    c.send(format!("NACK #2 {}\r\n", m.did).as_bytes());
    // The redelivery and the OK to the NACK come from different places (the queue's
    // dispatch, the connection's reply): the protocol leaves their order open.
    let (mut ok, mut again) = (None, None);
    for _ in 0..2 {
        match c.next() {
            ServerFrame::Ok { rid } => ok = Some(rid),
            ServerFrame::Msg(d) => again = Some(d),
            f => panic!("expected OK and MSG, got {f:?}"),
        }
    }
    assert_eq!(ok, Some(Some(2)));
    let again = again.expect("the message is redelivered");
    assert_eq!(&again.payload[..], b"job");
    assert_eq!(again.count, 2, "redelivered");
    assert_ne!(again.did, m.did, "delivery ids are never reused");
    c.send(
        format!(
            "ACK #3 {}\r\nACK #4 {}\r\nACK #5 {}\r\nACK #6 77\r\n",
            again.did, again.did, m.did
        )
        .as_bytes(),
    );
    assert_eq!(c.next(), ServerFrame::Ok { rid: Some(3) });
    c.expect_err(ErrorCode::UnknownDelivery);
    c.expect_err(ErrorCode::UnknownDelivery);
    match c.next() {
        ServerFrame::Err(e) => assert_eq!((e.rid, e.code), (Some(6), ErrorCode::UnknownDelivery)),
        f => panic!("{f:?}"),
    }
    let st = c.stats();
    let q = dest_stats(&st, "queue", "w").unwrap();
    assert_eq!(
        (q["depth"].as_u64(), q["unacked"].as_u64()),
        (Some(0), Some(0))
    );
    assert_eq!(q["redelivered"], 1);
}

#[test]
fn subscription_errors() {
    let s = start();
    let mut c = s.connect();
    c.send(b"SUB #1 topic:t 1\r\nSUB #2 topic:t 1\r\nUNSUB #3 9\r\nSUB #4 topic:u 2 prefetch=5\r\nSUB #5 queue:q 3 prefetch=999999999\r\nSUB #6 queue:$sys 4\r\nUNSUB #7 1\r\n");
    assert_eq!(c.next(), ServerFrame::Ok { rid: Some(1) });
    c.expect_err(ErrorCode::DuplicateSubscription);
    c.expect_err(ErrorCode::UnknownSubscription);
    assert!(c
        .expect_err(ErrorCode::BadArgs)
        .contains("queue subscriptions only"));
    assert!(c.expect_err(ErrorCode::BadArgs).contains("prefetch"));
    c.expect_err(ErrorCode::NotPermitted);
    assert_eq!(c.next(), ServerFrame::Ok { rid: Some(7) });
}

#[test]
fn recoverable_errors_keep_the_connection() {
    let s = start();
    let mut c = s.connect();
    c.send(b"FROB\r\n");
    assert!(c.expect_err(ErrorCode::UnknownCommand).contains("FROB"));
    c.send(b"SUB #2 topic:t\r\n");
    match c.next() {
        ServerFrame::Err(e) => assert_eq!((e.rid, e.code), (Some(2), ErrorCode::BadArgs)),
        f => panic!("{f:?}"),
    }
    c.send(b"PUB #3 orders 5\r\nhello\r\n");
    c.expect_err(ErrorCode::BadName);
    c.send(b"PUB #4 topic:bad/name 5\r\nhello\r\n");
    c.expect_err(ErrorCode::BadName);
    c.send(b"HPUB topic:t 7 8\r\nnocol\r\nx\r\n");
    c.expect_err(ErrorCode::BadFrame);
    c.send(b"PUB topic:$sys.metrics 1\r\nx\r\n");
    c.expect_err(ErrorCode::NotPermitted);
    c.send(b"MSG topic:t 1 0 1 1\r\nx\r\n");
    assert!(c
        .expect_err(ErrorCode::UnknownCommand)
        .contains("sent by the broker"));
    c.send(b"PURGE topic:t\r\n");
    c.expect_err(ErrorCode::BadArgs);
    c.send(b"DELETE queue:never-made\r\n");
    c.expect_err(ErrorCode::UnknownDestination);
    c.send(b"CHAIN SET queue:q 5\r\nbogus\r\n");
    c.expect_err(ErrorCode::BadChain);
    assert!(c.sync(99).is_empty(), "still serving");
}

#[test]
fn oversized_line_is_answered_then_closed() {
    let s = start();
    let mut c = s.connect();
    let mut line = b"PUB topic:t ".to_vec();
    line.extend(std::iter::repeat_n(b'9', 5000));
    c.send(&line);
    let frames = c.expect_closed();
    assert!(
        matches!(&frames[..], [ServerFrame::Err(e)] if e.code == ErrorCode::LineTooLong),
        "{frames:?}"
    );
    // The broker is still there for others.
    assert!(s.connect().sync(1).is_empty());
}

#[test]
fn oversized_payload_is_refused_before_it_arrives() {
    let s = start_with(Config {
        max_payload: 100,
        ..Config::ephemeral()
    });
    let mut c = s.connect();
    // Only the line is sent: the broker must not wait for 101 bytes.
    c.send(b"PUB #9 topic:t 101\r\n");
    let frames = c.expect_closed();
    match &frames[..] {
        [ServerFrame::Err(e)] => {
            assert_eq!((e.rid, e.code), (Some(9), ErrorCode::PayloadTooLarge));
            assert!(e.message.contains("101"), "{}", e.message);
        }
        f => panic!("{f:?}"),
    }
}

#[test]
fn payload_longer_than_declared_is_answered_then_closed() {
    let s = start();
    let mut c = s.connect();
    c.send(b"PUB topic:t 3\r\nhello\r\n");
    let frames = c.expect_closed();
    assert!(
        matches!(&frames[..], [ServerFrame::Err(e)] if e.code == ErrorCode::BadFrame),
        "{frames:?}"
    );
}

#[test]
fn queue_full_is_refused_and_nothing_accepted_is_lost() {
    let s = start_with(Config {
        queue_max_messages: 10,
        ..Config::ephemeral()
    });
    let mut c = s.connect();
    c.send(b"SETACK on\r\n");
    assert_eq!(c.next(), ServerFrame::Ok { rid: None });
    let mut accepted = Vec::new();
    for i in 0..15u32 {
        c.send(format!("PUB #{i} queue:small {}\r\n{i}\r\n", i.to_string().len()).as_bytes());
    }
    let mut refused = 0;
    for _ in 0..15 {
        match c.next() {
            ServerFrame::PubAck { rid: Some(r), .. } => accepted.push(r),
            ServerFrame::Err(e) => {
                assert_eq!(e.code, ErrorCode::QueueFull);
                assert!(e.message.contains("small"));
                refused += 1;
            }
            f => panic!("{f:?}"),
        }
    }
    assert_eq!((accepted.len(), refused), (10, 5));
    c.send(b"SUB queue:small 1 ack=auto\r\n");
    assert_eq!(c.next(), ServerFrame::Ok { rid: None });
    let mut got: Vec<u64> = (0..10)
        .map(|_| match c.next() {
            ServerFrame::Msg(m) => String::from_utf8_lossy(&m.payload).parse().unwrap(),
            f => panic!("{f:?}"),
        })
        .collect();
    got.sort_unstable();
    accepted.sort_unstable();
    assert_eq!(got, accepted, "every confirmed message is delivered");
}

#[test]
fn byte_limit_of_a_queue() {
    let s = start_with(Config {
        queue_max_bytes: 10,
        ..Config::ephemeral()
    });
    let mut c = s.connect();
    c.send(b"PUB #1 queue:b 8\r\n12345678\r\nPUB #2 queue:b 8\r\n12345678\r\n");
    assert!(c.expect_err(ErrorCode::QueueFull).contains("10 bytes"));
}

#[test]
fn purge_empties_a_queue() {
    let s = start();
    let mut c = s.connect();
    for _ in 0..5 {
        publish(&mut c, "queue:p", b"x");
    }
    c.send(b"PURGE #1 queue:p\r\n");
    assert_eq!(c.next(), ServerFrame::Ok { rid: Some(1) });
    let st = c.stats();
    assert_eq!(dest_stats(&st, "queue", "p").unwrap()["depth"], 0);
}

#[test]
fn pipelined_requests_get_matching_replies() {
    let s = start();
    let mut c = s.connect();
    let mut batch = Vec::new();
    batch.extend_from_slice(b"SETACK #1000 on\r\n");
    for i in 0..500u64 {
        match i % 4 {
            0 => batch.extend_from_slice(format!("PUB #{i} queue:pipe 1\r\nx\r\n").as_bytes()),
            1 => batch.extend_from_slice(format!("PINGREQ #{i}\r\n").as_bytes()),
            2 => batch.extend_from_slice(format!("SUB #{i} topic:pipe {i}\r\n").as_bytes()),
            _ => batch.extend_from_slice(format!("UNSUB #{i} 999999\r\n").as_bytes()),
        }
    }
    c.send(&batch);
    assert_eq!(c.next(), ServerFrame::Ok { rid: Some(1000) });
    for i in 0..500u64 {
        let f = c.next();
        assert_eq!(f.request_id(), Some(i), "{f:?}");
        let ok = match i % 4 {
            0 => matches!(f, ServerFrame::PubAck { .. }),
            1 => matches!(f, ServerFrame::PingResp { .. }),
            2 => matches!(f, ServerFrame::Ok { .. }),
            _ => matches!(f, ServerFrame::Err(ref e) if e.code == ErrorCode::UnknownSubscription),
        };
        assert!(ok, "{f:?}");
    }
}

#[test]
fn disconnect_closes_after_flushing() {
    let s = start();
    let mut c = s.connect();
    c.send(b"PINGREQ #1\r\nDISCONNECT\r\n");
    let frames = c.expect_closed();
    assert_eq!(frames, vec![ServerFrame::PingResp { rid: Some(1) }]);
}
