//! The session's rules, on the plain value: no socket, no task, no clock.

use std::time::{Duration, Instant};

use agora_protocol::{AckMode, Connect, Destination, ErrorCode, Subscribe};

use super::*;

fn limits() -> Limits {
    Limits {
        max_subscriptions: 2,
        default_prefetch: 8,
        max_prefetch: 100,
        ping_interval: Duration::from_secs(30),
        max_missed_pings: 2,
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
