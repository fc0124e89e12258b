//! The session's rules, on the plain value: no socket, no task, no clock.

use std::time::{Duration, Instant};

use agora_protocol::{
    AckMode, ClientFrame, Connect, Destination, ErrorCode, ServerFrame, Subscribe,
};

use super::*;

fn limits() -> Limits {
    Limits {
        max_subscriptions: 2,
        default_prefetch: 8,
        max_prefetch: 100,
        ping_interval: Duration::from_secs(30),
        max_missed_pings: 2,
        publish_runs: true,
    }
}

fn dest(text: &str) -> Destination {
    text.parse().expect("a destination")
}

fn sub(text: &str, sid: u64) -> Subscribe {
    Subscribe {
        rid: None,
        dest: dest(text),
        sid,
        prefetch: None,
        ack: None,
    }
}

#[test]
fn connect_checks_the_version_and_keeps_name_and_confirms() {
    let mut s: Session<()> = Session::new(limits(), Instant::now());
    let bad = Connect {
        rid: None,
        name: Some("x".into()),
        proto: Some(99),
        confirm: Some(true),
        ..Connect::default()
    };
    let e = s.connect(bad).unwrap_err();
    assert_eq!(e.code, ErrorCode::BadArgs);
    assert!(e.message.contains("99"), "{}", e.message);
    assert_eq!(
        (s.confirm, s.name.as_deref()),
        (false, None),
        "a refused CONNECT changes nothing"
    );
    let good = Connect {
        rid: None,
        name: Some("billing".into()),
        proto: Some(agora_protocol::PROTOCOL_VERSION),
        confirm: Some(true),
        ..Connect::default()
    };
    s.connect(good).unwrap();
    assert_eq!((s.confirm, s.name.as_deref()), (true, Some("billing")));
}

#[test]
fn reserved_names_and_purge_rules() {
    let e = Session::<()>::check_reserved(&dest("queue:$x")).unwrap_err();
    assert_eq!(e.code, ErrorCode::NotPermitted);
    assert!(Session::<()>::check_reserved(&dest("queue:jobs")).is_ok());
    let e = Session::<()>::check_purge(&dest("topic:t")).unwrap_err();
    assert_eq!(e.code, ErrorCode::BadArgs);
    assert_eq!(
        Session::<()>::check_purge(&dest("queue:$x"))
            .unwrap_err()
            .code,
        ErrorCode::NotPermitted
    );
}

#[test]
fn subscribe_rules_slots_and_ended_subscriptions() {
    let mut s: Session<&str> = Session::new(limits(), Instant::now());
    // The broker's metrics topic may be read; other reserved names may not.
    assert_eq!(
        s.plan_subscribe(&sub("topic:$sys.metrics", 1)),
        Ok(SubPlan::Topic)
    );
    let e = s.plan_subscribe(&sub("topic:$other", 1)).unwrap_err();
    assert_eq!(e.code, ErrorCode::NotPermitted);
    // Queue options on a topic, a prefetch over the limit.
    let mut t = sub("topic:t", 1);
    t.prefetch = Some(5);
    assert_eq!(s.plan_subscribe(&t).unwrap_err().code, ErrorCode::BadArgs);
    let mut q = sub("queue:q", 2);
    q.prefetch = Some(101);
    assert!(s.plan_subscribe(&q).unwrap_err().message.contains("100"));
    // A queue subscription gets a slot; deliveries route back by it.
    q.prefetch = None;
    q.ack = Some(AckMode::Auto);
    let plan = s.plan_subscribe(&q).unwrap();
    let SubPlan::Queue {
        prefetch,
        auto_ack,
        slot,
    } = plan
    else {
        panic!("{plan:?}")
    };
    assert_eq!((prefetch, auto_ack), (8, true));
    s.add(2, plan, "queue q");
    assert_eq!(s.for_delivery((slot << SLOT_SHIFT) | 7), Some(&"queue q"));
    assert_eq!(s.for_delivery(((slot + 1) << SLOT_SHIFT) | 7), None);
    // Duplicate ids, then the per-connection limit.
    assert_eq!(
        s.plan_subscribe(&q).unwrap_err().code,
        ErrorCode::DuplicateSubscription
    );
    s.add(1, SubPlan::Topic, "topic t");
    let e = s.plan_subscribe(&sub("topic:u", 3)).unwrap_err();
    assert_eq!(e.code, ErrorCode::TooManySubscriptions);
    // One the broker ended frees its id, its place and its slot.
    assert_eq!(s.take_ended(|x| *x == "queue q"), vec!["queue q"]);
    assert_eq!(s.for_delivery((slot << SLOT_SHIFT) | 7), None);
    let again = s.plan_subscribe(&sub("queue:q", 2)).unwrap();
    assert!(
        matches!(again, SubPlan::Queue { slot: s2, .. } if s2 > slot),
        "slots are never reused"
    );
    assert_eq!(s.remove(1), Some("topic t"));
    assert_eq!(s.remove(1), None);
    assert!(s.drain().is_empty());
}

#[test]
fn liveness_pings_a_silent_client_and_gives_up_after_the_limit() {
    let t0 = Instant::now();
    let mut s: Session<()> = Session::new(limits(), t0);
    let at = |secs| t0 + Duration::from_secs(secs);
    assert_eq!(s.ping_due(at(10)), Liveness::Wait(Duration::from_secs(20)));
    assert_eq!(s.ping_due(at(30)), Liveness::Ping);
    assert_eq!(s.ping_due(at(60)), Liveness::Ping);
    assert_eq!(s.ping_due(at(90)), Liveness::GiveUp(2));
    // Heard from: the count starts over.
    s.heard(at(95));
    assert_eq!(s.ping_due(at(100)), Liveness::Wait(Duration::from_secs(25)));
    assert_eq!(s.ping_due(at(125)), Liveness::Ping);
}

/// A subscription handle for the tests: ended when the flag says so.
#[derive(Debug, Clone, PartialEq, Eq)]
struct H(&'static str, bool);

impl SubHandle for H {
    fn ended(&self) -> bool {
        self.1
    }
}

fn frame(text: &str) -> ClientFrame {
    let mut b = agora_protocol::bytes::BytesMut::from(text);
    agora_protocol::decode_client(&mut b)
        .expect("decodes")
        .expect("a whole frame")
}

fn step(s: &mut Session<H>, text: &str) -> (bool, Step<H>) {
    let Effects { end_run, step } = s.on_frame(frame(text));
    (end_run, step)
}

#[test]
fn fire_and_forget_publishes_run_until_anything_else_and_confirms_never_wait() {
    let mut s: Session<H> = Session::new(limits(), Instant::now());
    for _ in 0..3 {
        let (end, st) = step(&mut s, "PUB queue:q 1\r\nx\r\n");
        assert!(!end);
        assert!(
            matches!(
                st,
                Step::Publish {
                    mode: PubMode::Held,
                    ..
                }
            ),
            "{st:?}"
        );
    }
    // Anything that is not a publish hands the run over first.
    let (end, st) = step(&mut s, "PING\r\n");
    assert!(end);
    assert!(matches!(st, Step::Reply(ServerFrame::PingResp { .. })));
    // Nothing held, nothing to hand over: the end of the bytes says so.
    assert!(!s.bytes_done());
    step(&mut s, "PUB queue:q 1\r\nx\r\n");
    assert!(s.bytes_done(), "a held run goes out with the bytes read");
    assert!(!s.bytes_done());
    // A run is handed over at its limit, and the next publish starts the next one.
    for i in 1..=PUBLISH_RUN + 1 {
        let (end, _) = step(&mut s, "PUB topic:t 1\r\nx\r\n");
        assert_eq!(end, i == PUBLISH_RUN + 1, "publish {i}");
    }
    // Confirms on: the SETACK ends the run; confirmed publishes are never held, and
    // are owed a PUBACK once placed. What a publish is owed is fixed when it is read:
    // one held back before the SETACK is handed over after it and owed nothing.
    assert!(step(&mut s, "SETACK on\r\n").0);
    let (end, st) = step(&mut s, "PUB #4 queue:q 1\r\nx\r\n");
    assert!(!end);
    let Step::Publish { mode, .. } = st else {
        panic!("{st:?}")
    };
    assert_eq!(mode, PubMode::Confirm);
    assert_eq!(
        mode.placed(Some(4), true),
        Some(ServerFrame::PubAck {
            rid: Some(4),
            filtered: true
        })
    );
    assert_eq!(PubMode::Held.placed(Some(4), false), None);
    assert_eq!(PubMode::Forget.placed(None, false), None);
    step(&mut s, "SETACK off\r\n");
    // A refused publish answers at once, after what was held.
    step(&mut s, "PUB queue:q 1\r\nx\r\n");
    let (end, st) = step(&mut s, "PUB #5 queue:$x 1\r\nx\r\n");
    assert!(end);
    assert!(
        matches!(&st, Step::Refuse(Some(5), r) if r.code == ErrorCode::NotPermitted),
        "{st:?}"
    );
}

#[test]
fn a_publish_joins_the_held_run_only_where_publish_rule_would_hold_it() {
    let mut s: Session<H> = Session::new(limits(), Instant::now());
    // Nothing held: nothing to join.
    assert!(!s.joins_run());
    step(&mut s, "PUB topic:t 1\r\nx\r\n");
    // Joining counts toward the run's limit exactly as publish_rule does.
    for _ in 1..PUBLISH_RUN {
        assert!(s.joins_run());
    }
    assert!(!s.joins_run(), "a full run is handed over first");
    let (end, _) = step(&mut s, "PUB topic:t 1\r\nx\r\n");
    assert!(end);
    assert!(s.joins_run());
    // Once handed over (the end of the bytes, any other frame), nothing is held.
    assert!(s.bytes_done());
    assert!(!s.joins_run());
    // Confirms on: never held, never joined.
    step(&mut s, "SETACK on\r\n");
    step(&mut s, "PUB #1 topic:t 1\r\nx\r\n");
    assert!(!s.joins_run());
}

#[test]
fn frames_become_steps_with_the_session_rules_applied() {
    let mut s: Session<H> = Session::new(limits(), Instant::now());
    // UNSUB and ACK of what this connection does not hold are refused here.
    let (_, st) = step(&mut s, "UNSUB #1 9\r\n");
    assert!(matches!(&st, Step::Refuse(Some(1), r) if r.code == ErrorCode::UnknownSubscription));
    let (_, st) = step(&mut s, "ACK #2 77\r\n");
    assert!(matches!(&st, Step::Refuse(Some(2), r) if r.code == ErrorCode::UnknownDelivery));
    // SUB: planned; the driver adds it once the broker took it.
    let (_, st) = step(&mut s, "SUB #3 queue:q 5\r\n");
    let Step::Subscribe {
        plan: Ok(plan @ SubPlan::Queue { slot, .. }),
        released,
        ..
    } = st
    else {
        panic!("{st:?}")
    };
    assert!(released.is_empty());
    s.add(5, plan, H("q", false));
    let did = (slot << SLOT_SHIFT) | 3;
    let (_, st) = step(&mut s, &format!("NACK #4 {did}\r\n"));
    assert!(matches!(
        st,
        Step::Settle {
            rid: Some(4),
            sid: 5,
            ack: false,
            ..
        }
    ));
    // Admin commands: the rules first, then the broker is asked.
    let (_, st) = step(&mut s, "PURGE #6 topic:t\r\n");
    assert!(matches!(&st, Step::Refuse(Some(6), r) if r.code == ErrorCode::BadArgs));
    let (_, st) = step(&mut s, "DELETE #7 queue:$x\r\n");
    assert!(matches!(&st, Step::Refuse(Some(7), r) if r.code == ErrorCode::NotPermitted));
    let (_, st) = step(&mut s, "STATS #8\r\n");
    assert!(matches!(st, Step::Ask(Ask::Stats { rid: Some(8), .. })));
    let (_, st) = step(&mut s, "PURGE #9 queue:q\r\n");
    assert!(matches!(st, Step::Ask(Ask::Purge { rid: Some(9), .. })));
    // A subscription the broker ended is released by the next SUB, even a refused one.
    s.add(6, SubPlan::Topic, H("t", true));
    let (_, st) = step(&mut s, "SUB #10 topic:$nope 7\r\n");
    let Step::Subscribe {
        plan: Err(r),
        released,
        ..
    } = st
    else {
        panic!("{st:?}")
    };
    assert_eq!(r.code, ErrorCode::NotPermitted);
    assert_eq!(released, vec![H("t", true)]);
    // UNSUB hands the subscription back; DISCONNECT ends the connection.
    let (_, st) = step(&mut s, "UNSUB #11 5\r\n");
    assert!(matches!(
        st,
        Step::Unsubscribe {
            sid: 5,
            sub: H("q", false),
            ..
        }
    ));
    assert!(s.is_idle());
    let (_, st) = step(&mut s, "DISCONNECT\r\n");
    assert!(matches!(st, Step::End(End::Disconnect)));
}

#[test]
fn a_udp_source_proves_it_receives_before_it_may_subscribe() {
    let mut s: Session<H> = Session::new(limits(), Instant::now()).over_udp("abc".into());
    assert!(!s.verified());
    // No subscription until the token is echoed; the refusal names it.
    let (_, st) = step(&mut s, "SUB #1 topic:t 1\r\n");
    assert!(
        matches!(&st, Step::Refuse(Some(1), r) if r.code == ErrorCode::Unverified && r.message == "token=abc"),
        "{st:?}"
    );
    // Large answers are refused over UDP, verified or not.
    let (_, st) = step(&mut s, "STATS #2\r\n");
    assert!(matches!(&st, Step::Refuse(Some(2), r) if r.code == ErrorCode::NotPermitted));
    let (_, st) = step(&mut s, "HELP #3\r\n");
    assert!(matches!(&st, Step::Refuse(Some(3), r) if r.code == ErrorCode::NotPermitted));
    // A wrong token changes nothing, not even the rest of the CONNECT.
    let (_, st) = step(&mut s, "CONNECT #4 token=abd confirm=on\r\n");
    assert!(matches!(&st, Step::Refuse(Some(4), r) if r.code == ErrorCode::Unverified));
    assert!(!s.verified() && !s.confirm);
    let (_, st) = step(&mut s, "CONNECT #5 token=abc\r\n");
    assert!(matches!(st, Step::Reply(ServerFrame::Ok { rid: Some(5) })));
    assert!(s.verified());
    let (_, st) = step(&mut s, "SUB #6 topic:t 1\r\n");
    assert!(
        matches!(
            st,
            Step::Subscribe {
                plan: Ok(SubPlan::Topic),
                ..
            }
        ),
        "{st:?}"
    );
    // Over TCP a token means nothing.
    let mut t: Session<H> = Session::new(limits(), Instant::now());
    assert!(t.verified());
    let (_, st) = step(&mut t, "CONNECT #7 token=whatever\r\n");
    assert!(matches!(st, Step::Reply(ServerFrame::Ok { rid: Some(7) })));
}

/// An `HPUB` of `dest` whose only header is `agora-reply-to: <to>`.
fn request(dest: &str, to: &str) -> String {
    let headers = format!("agora-reply-to: {to}\r\n\r\n");
    format!(
        "HPUB {dest} {} {}\r\n{headers}x\r\n",
        headers.len(),
        headers.len() + 1
    )
}

#[test]
fn requests_are_never_held_and_name_a_topic_the_client_may_read_or_its_own_inbox() {
    let mut s: Session<H> = Session::new(limits(), Instant::now()).with_inbox("$inbox.me".into());
    // A request ends the run held back and is placed at once, confirms or not.
    step(&mut s, "PUB topic:t 1\r\nx\r\n");
    let (end, st) = step(&mut s, &request("topic:t", "topic:$inbox.me.1"));
    assert!(end);
    let Step::Publish { mode, .. } = st else {
        panic!("{st:?}")
    };
    assert_eq!(mode, PubMode::Request { confirm: false });
    assert!(!mode.hold() && mode.placed(None, false).is_none());
    step(&mut s, "SETACK on\r\n");
    let (_, st) = step(&mut s, &request("queue:q", "topic:replies.a"));
    let Step::Publish { mode, .. } = st else {
        panic!("{st:?}")
    };
    assert!(mode.is_request() && mode.confirms());
    // Refused: another connection's inbox, a reserved name, a queue, a pattern.
    for (to, code) in [
        ("topic:$inbox.you.1", ErrorCode::NotPermitted),
        ("topic:$sys.metrics", ErrorCode::NotPermitted),
        ("queue:q", ErrorCode::BadArgs),
        ("topic:a.*", ErrorCode::BadArgs),
    ] {
        let (_, st) = step(&mut s, &request("topic:t", to));
        assert!(
            matches!(&st, Step::Refuse(_, r) if r.code == code),
            "{to}: {st:?}"
        );
    }
    // Replies: to any inbox address, never held; the bare prefix is no inbox.
    step(&mut s, "SETACK off\r\n");
    let (_, st) = step(&mut s, "PUB topic:$inbox.you.7 1\r\nx\r\n");
    assert!(
        matches!(
            st,
            Step::Publish {
                mode: PubMode::Forget,
                ..
            }
        ),
        "{st:?}"
    );
    let (_, st) = step(&mut s, "PUB topic:$inbox. 1\r\nx\r\n");
    assert!(
        matches!(&st, Step::Refuse(_, r) if r.code == ErrorCode::BadName),
        "{st:?}"
    );
    // Its own inbox it may subscribe to, nobody else's.
    assert!(s.plan_subscribe(&sub("topic:$inbox.me", 1)).is_ok());
    let e = s.plan_subscribe(&sub("topic:$inbox.you", 2)).unwrap_err();
    assert_eq!(e.code, ErrorCode::NotPermitted);
}
