use std::collections::VecDeque;

use super::*;
use crate::shipper::Outbox;

fn subscriber(topic: &Topic, sid: u64) -> crate::deliveries::DeliveryRx {
    let (tx, rx) = crate::deliveries::queue();
    let (outbox, _) = Outbox::new(64, usize::MAX, Default::default());
    assert!(topic.subscribe(Arc::new(Subscriber {
        sid,
        tx,
        cap: 100,
        outbox,
        dropped: Default::default(),
        pattern: None,
        link: None,
        interest: None,
    })));
    rx
}

fn run(payloads: &[&'static [u8]]) -> Vec<Message> {
    payloads
        .iter()
        .map(|p| Message {
            headers: Default::default(),
            payload: Bytes::from_static(p),
            received: std::time::Instant::now(),
        })
        .collect()
}

fn taken(rx: &crate::deliveries::DeliveryRx) -> Vec<Bytes> {
    let mut batch = VecDeque::new();
    rx.take(&mut batch);
    batch.into_iter().map(|d| d.msg.payload).collect()
}

#[test]
fn a_run_given_up_goes_to_the_last_subscriber_itself_and_copies_to_the_others() {
    let topic = Topic::new(
        Destination::topic("t").unwrap(),
        SlowConsumerPolicy::DropOldest,
        crate::budget::Budget::new(usize::MAX, true),
    );
    let (a, b) = (subscriber(&topic, 1), subscriber(&topic, 2));
    let mut msgs = run(&[b"one", b"two"]);
    assert!(topic.publish_run(&mut msgs, false).is_ok());
    // Given up: the run is empty, and both subscribers have both messages, in order.
    assert!(msgs.is_empty());
    let (got_a, got_b) = (taken(&a), taken(&b));
    assert_eq!(got_a, [&b"one"[..], b"two"]);
    assert_eq!(got_b, got_a);
    let c = topic.counts.as_ref();
    assert_eq!(c.messages_out.load(Relaxed), 4);
    assert_eq!(c.bytes_out.load(Relaxed), 12);
    // Borrowed (`publish_all`), the caller keeps its run.
    let msgs = run(&[b"three"]);
    assert!(topic.publish_all(&msgs).is_ok());
    assert_eq!(msgs.len(), 1);
    assert_eq!(taken(&b), [&b"three"[..]]);
    // With no subscriber, nothing is taken from the run either.
    let lone = Topic::new(
        Destination::topic("u").unwrap(),
        SlowConsumerPolicy::DropOldest,
        crate::budget::Budget::new(usize::MAX, true),
    );
    let mut msgs = run(&[b"four"]);
    assert!(lone.publish_run(&mut msgs, false).is_ok());
    assert_eq!(msgs.len(), 1);
}
