use super::*;

fn groups(nodes: Vec<u64>) -> Groups {
    let patterns = vec![
        Pattern::parse("queue:orders").unwrap(),
        Pattern::parse("queue:jobs.>").unwrap(),
    ];
    Groups::new(
        1,
        nodes,
        patterns,
        PathBuf::new(),
        Box::new(|_, _| true),
        Box::new(|_, _, _| Sent::Away),
    )
}

#[test]
fn every_group_of_a_node_ticks_at_the_same_instants() {
    let g = groups(vec![1, 2, 3]).ticking(Duration::from_millis(30));
    for _ in 0..3 {
        let before = Instant::now();
        let b = g.tick_boundary();
        // The first boundary from now: not past, less than a tick ahead, and a
        // whole number of ticks after the epoch.
        assert!(b >= before && b < Instant::now() + g.tick, "{b:?}");
        assert_eq!((b - g.epoch).as_nanos() % g.tick.as_nanos(), 0);
        std::thread::sleep(Duration::from_millis(7));
    }
}

#[test]
fn which_queues_are_replicated_and_on_which_nodes() {
    let g = groups(vec![3, 1, 2]);
    let q = |n: &str| Destination::queue(n).unwrap();
    assert!(g.replicates(&q("orders")));
    assert!(g.replicates(&q("jobs.eu.1")));
    assert!(!g.replicates(&q("jobs")));
    assert!(!g.replicates(&Destination::topic("orders").unwrap()));
    assert_eq!(g.members("orders"), (vec![1, 2, 3], vec![]));
    // Five nodes: three vote, chosen by the name, the same on every node.
    let g = groups(vec![1, 2, 3, 4, 5]);
    let mut spread = BTreeMap::new();
    for i in 0..100 {
        let (v, l) = g.members(&format!("q{i}"));
        assert_eq!((v.len(), l.len()), (3, 2));
        let mut all = [v.clone(), l].concat();
        all.sort();
        assert_eq!(all, vec![1, 2, 3, 4, 5]);
        assert_eq!(groups(vec![5, 4, 3, 2, 1]).members(&format!("q{i}")).0, v);
        for n in v {
            *spread.entry(n).or_insert(0) += 1;
        }
    }
    // Every node votes in some groups.
    assert!(spread.values().all(|&n| n > 30), "{spread:?}");
}

#[test]
fn a_raft_message_survives_its_frame() {
    let mut m = Message::default();
    m.set_msg_type(MessageType::MsgAppend);
    m.to = 2;
    m.from = 1;
    m.term = 4;
    m.index = 10;
    m.commit = 9;
    m.entries.push(Entry {
        term: 4,
        index: 11,
        data: b"x".to_vec().into(),
        ..Default::default()
    });
    let stamp = Stamp {
        sent_at: 7,
        echo: Some(3),
    };
    let f = to_frame("orders", m.clone(), stamp);
    let mut bytes = Vec::new();
    f.encode(&mut bytes).unwrap();
    let back = RaftFrame::decode(&bytes).unwrap();
    assert_eq!(from_frame(back), Some((m, stamp)));
    // The tables agree with raft-rs's numbers.
    for (i, k) in MESSAGE_KINDS.iter().enumerate() {
        assert_eq!(*k as usize, i);
    }
    for (i, k) in ENTRY_KINDS.iter().enumerate() {
        assert_eq!(*k as usize, i);
    }
}
