//! Request-reply over raw sockets: the inbox each connection is given, the reply
//! address `agora-reply-to` a request carries to its delivery, replies to an inbox
//! address reaching its owner named by the full address, `no_responders` for a
//! request nobody listens to (topic or queue, confirms or not, nothing kept), the
//! checks on reply addresses, and the rights of users: a responder may answer into an
//! inbox whatever its publish rights, and only the owner may subscribe to an inbox.

mod common;

use agora_protocol::{ErrorCode, ServerFrame};
use agora_server::auth::{hash_password, Pattern, Rights, User};
use agora_server::Config;
use common::*;

/// The inbox a connection's INFO announced.
fn inbox(c: &Raw) -> String {
    match &c.info {
        ServerFrame::Info(i) => i.inbox.clone().expect("INFO names an inbox"),
        f => panic!("{f:?}"),
    }
}

fn msg(f: ServerFrame) -> agora_protocol::Delivery {
    match f {
        ServerFrame::Msg(m) => m,
        f => panic!("expected MSG, got {f:?}"),
    }
}

#[test]
fn each_connection_has_its_own_unguessable_inbox() {
    let s = start();
    let a = inbox(&s.connect());
    let b = inbox(&s.connect());
    assert_ne!(a, b);
    for i in [&a, &b] {
        let nonce = i.strip_prefix("$inbox.").expect(i);
        assert_eq!(nonce.len(), 22, "{i}");
        assert!(nonce.bytes().all(|c| c.is_ascii_alphanumeric()), "{i}");
    }
}

#[test]
fn a_request_reaches_a_responder_with_its_reply_address_and_the_reply_comes_back() {
    let s = start();
    let mut responder = s.connect();
    responder.send(b"SUB #1 topic:time 1\r\n");
    assert_eq!(responder.next(), ServerFrame::Ok { rid: Some(1) });
    let mut requester = s.connect();
    let me = inbox(&requester);
    requester.send(format!("SUB #2 topic:{me} 9\r\n").as_bytes());
    assert_eq!(requester.next(), ServerFrame::Ok { rid: Some(2) });
    let to = format!("topic:{me}.17");
    request(&mut requester, 3, "topic:time", &to, "now?");
    let req = msg(responder.next());
    assert_eq!(req.headers.get("agora-reply-to"), Some(to.as_str()));
    assert_eq!(&req.payload[..], b"now?");
    // The responder answers at the address: plain PUB, no rights asked.
    publish(&mut responder, &to, b"12:00");
    let reply = msg(requester.next());
    assert_eq!(reply.sid, 9);
    assert_eq!(reply.dest.to_string(), to, "the MSG names the full address");
    assert_eq!(&reply.payload[..], b"12:00");
    // With confirms on, the request is confirmed like any publish.
    requester.send(b"SETACK #4 on\r\n");
    assert_eq!(requester.next(), ServerFrame::Ok { rid: Some(4) });
    request(&mut requester, 5, "topic:time", &to, "again");
    assert_eq!(
        requester.next(),
        ServerFrame::PubAck {
            rid: Some(5),
            filtered: false
        }
    );
    assert_eq!(&msg(responder.next()).payload[..], b"again");
}

#[test]
fn a_request_nobody_listens_to_fails_at_once_and_is_not_kept() {
    let s = start();
    let mut c = s.connect();
    let to = format!("topic:{}.1", inbox(&c));
    // A topic without subscribers, a queue without consumers: confirms off, then on.
    for (rid, dest) in [(1, "topic:nobody"), (2, "queue:idle")] {
        request(&mut c, rid, dest, &to, "x");
        let why = c.expect_err(ErrorCode::NoResponders);
        assert!(why.contains(dest), "{why}");
    }
    c.send(b"SETACK #3 on\r\n");
    assert_eq!(c.next(), ServerFrame::Ok { rid: Some(3) });
    request(&mut c, 4, "queue:idle", &to, "x");
    c.expect_err(ErrorCode::NoResponders);
    // Nothing was kept: the queue is empty, so a consumer that comes now gets nothing
    // (a plain publish after it is the first delivery).
    let stats = c.stats();
    let q = dest_stats(&stats, "queue", "idle").expect("queue listed");
    assert_eq!(q["depth"], 0, "{q}");
    assert_eq!(q["messages_in"], 0, "{q}");
    // A wildcard subscription is someone listening.
    let mut w = s.connect();
    w.send(b"SUB #5 topic:nobody.> 1\r\n");
    assert_eq!(w.next(), ServerFrame::Ok { rid: Some(5) });
    request(&mut c, 6, "topic:nobody.here", &to, "y");
    assert_eq!(
        c.next(),
        ServerFrame::PubAck {
            rid: Some(6),
            filtered: false
        }
    );
    let got = msg(w.next());
    assert_eq!(got.dest.to_string(), "topic:nobody.here");
    // A queue with a consumer takes requests.
    let mut consumer = s.connect();
    consumer.send(b"SUB #7 queue:idle 2 prefetch=1\r\n");
    assert_eq!(consumer.next(), ServerFrame::Ok { rid: Some(7) });
    request(&mut c, 8, "queue:idle", &to, "z");
    assert_eq!(
        c.next(),
        ServerFrame::PubAck {
            rid: Some(8),
            filtered: false
        }
    );
    assert_eq!(&msg(consumer.next()).payload[..], b"z");
}

#[test]
fn a_reply_address_must_be_one_topic_and_an_inbox_only_its_own() {
    let s = start();
    let mut c = s.connect();
    let mut other = s.connect();
    let theirs = inbox(&other);
    let mut responder = s.connect();
    responder.send(b"SUB #1 topic:svc 1\r\n");
    assert_eq!(responder.next(), ServerFrame::Ok { rid: Some(1) });
    for (rid, to, code) in [
        (2, "queue:replies".to_owned(), ErrorCode::BadArgs),
        (3, "replies".to_owned(), ErrorCode::BadArgs),
        (4, "topic:replies.*".to_owned(), ErrorCode::BadArgs),
        (5, format!("topic:{theirs}.1"), ErrorCode::NotPermitted),
        (6, "topic:$sys.metrics".to_owned(), ErrorCode::NotPermitted),
    ] {
        request(&mut c, rid, "topic:svc", &to, "x");
        match c.next() {
            ServerFrame::Err(e) => {
                assert_eq!((e.rid, e.code), (Some(rid), code), "{to}: {e:?}")
            }
            f => panic!("{to}: {f:?}"),
        }
    }
    // None of them reached the responder; a plain topic as the reply address does.
    request(&mut c, 7, "topic:svc", "topic:replies.c", "ok");
    assert!(c.sync(8).is_empty());
    let got = msg(responder.next());
    assert_eq!(got.headers.get("agora-reply-to"), Some("topic:replies.c"));
    // Only the owner may subscribe to an inbox; a pattern over the inboxes is refused.
    c.send(format!("SUB #9 topic:{theirs} 1\r\n").as_bytes());
    c.expect_err(ErrorCode::NotPermitted);
    c.send(b"SUB #10 topic:$inbox.> 1\r\n");
    c.expect_err(ErrorCode::NotPermitted);
    other.send(format!("SUB #11 topic:{theirs} 1\r\n").as_bytes());
    assert_eq!(other.next(), ServerFrame::Ok { rid: Some(11) });
    // `>` at the root does not see replies.
    let mut all = s.connect();
    all.send(b"SUB #12 topic:> 1\r\n");
    assert_eq!(all.next(), ServerFrame::Ok { rid: Some(12) });
    publish(&mut c, &format!("topic:{theirs}.5"), b"r");
    assert_eq!(
        msg(other.next()).dest.to_string(),
        format!("topic:{theirs}.5")
    );
    assert!(all.sync(13).is_empty());
    // `$inbox` itself is no inbox: a reserved name like any other.
    publish(&mut c, "topic:$inbox", b"r");
    c.expect_err(ErrorCode::NotPermitted);
}

fn rights(publish: &[&str], subscribe: &[&str]) -> Rights {
    let p = |l: &[&str]| l.iter().map(|p| Pattern::parse(p).unwrap()).collect();
    Rights {
        publish: p(publish),
        subscribe: p(subscribe),
        admin: false,
    }
}

#[test]
fn a_responder_answers_into_an_inbox_whatever_its_publish_rights() {
    let mut config = Config::ephemeral();
    let hash = hash_password("pw").unwrap();
    // The client may ask the service; the service may only read its requests.
    let client = rights(&["queue:svc"], &["topic:replies.client"]);
    let service = rights(&[], &["queue:svc"]);
    for (name, r) in [("client", client), ("service", service)] {
        config
            .users
            .insert(User::new(name, Some(&hash), None, r).unwrap())
            .unwrap();
    }
    let s = start_with(config);
    let login = |c: &mut Raw, user: &str| {
        c.send(format!("CONNECT #77 user={user} password=pw\r\n").as_bytes());
        assert_eq!(c.next(), ServerFrame::Ok { rid: Some(77) });
    };
    let mut svc = s.connect();
    login(&mut svc, "service");
    svc.send(b"SUB #1 queue:svc 1 prefetch=4\r\n");
    assert_eq!(svc.next(), ServerFrame::Ok { rid: Some(1) });
    let mut cl = s.connect();
    login(&mut cl, "client");
    let me = inbox(&cl);
    cl.send(format!("SUB #2 topic:{me} 3\r\n").as_bytes());
    assert_eq!(cl.next(), ServerFrame::Ok { rid: Some(2) });
    let to = format!("topic:{me}.1");
    request(&mut cl, 3, "queue:svc", &to, "work");
    let req = msg(svc.next());
    publish(&mut svc, &to, b"done");
    svc.send(format!("ACK {}\r\n", req.did).as_bytes());
    assert!(
        svc.sync(4).is_empty(),
        "the reply and the ack were accepted"
    );
    assert_eq!(&msg(cl.next()).payload[..], b"done");
    // Outside inboxes the service's rights hold.
    publish(&mut svc, "topic:replies.client", b"no");
    svc.expect_err(ErrorCode::NotPermitted);
    // A reply address the client may not subscribe to is refused.
    request(&mut cl, 5, "queue:svc", "topic:replies.other", "x");
    let why = cl.expect_err(ErrorCode::NotPermitted);
    assert!(why.contains("agora-reply-to"), "{why}");
    request(&mut cl, 6, "queue:svc", "topic:replies.client", "y");
    assert!(cl.sync(7).is_empty());
}

#[test]
fn a_reply_to_an_inbox_nobody_holds_is_dropped_and_makes_nothing() {
    let s = start();
    let mut c = s.connect();
    c.send(b"SETACK #1 on\r\n");
    assert_eq!(c.next(), ServerFrame::Ok { rid: Some(1) });
    // A made-up address, and the inbox of a connection that never subscribed to it.
    let unheld = inbox(&s.connect());
    for (rid, to) in [
        (2, "$inbox.madeup.1".to_owned()),
        (3, format!("{unheld}.1")),
    ] {
        c.send(format!("PUB #{rid} topic:{to} 1\r\nx\r\n").as_bytes());
        assert_eq!(
            c.next(),
            ServerFrame::PubAck {
                rid: Some(rid),
                filtered: false
            }
        );
    }
    let stats = c.stats();
    assert_eq!(
        stats["page"]["total"], 0,
        "no destination was made: {stats}"
    );
}

#[test]
fn inboxes_do_not_count_toward_the_destination_limit() {
    let mut config = Config::ephemeral();
    config.max_destinations = 1;
    let s = start_with(config);
    let mut responder = s.connect();
    // The one destination the limit allows.
    responder.send(b"SUB #1 topic:svc 1\r\n");
    assert_eq!(responder.next(), ServerFrame::Ok { rid: Some(1) });
    // Every requester still gets its inbox, and its answer.
    for i in 0..3 {
        let mut c = s.connect();
        let me = inbox(&c);
        c.send(format!("SUB #2 topic:{me} 2\r\n").as_bytes());
        assert_eq!(c.next(), ServerFrame::Ok { rid: Some(2) }, "requester {i}");
        let to = format!("topic:{me}.1");
        request(&mut c, 3, "topic:svc", &to, "q");
        assert!(c.sync(4).is_empty());
        let req = msg(responder.next());
        let to = req.headers.get("agora-reply-to").unwrap().to_owned();
        publish(&mut responder, &to, b"a");
        assert_eq!(&msg(c.next()).payload[..], b"a");
    }
    // Other destinations are still refused.
    responder.send(b"SUB #5 topic:other 5\r\n");
    responder.expect_err(ErrorCode::TooManyDestinations);
}
