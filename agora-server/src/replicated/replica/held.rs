//! Messages held until a write is synced, sent once it is: a member's answers to its
//! leader's appends are cumulative ("I hold up to index N"), so of several waiting for
//! the same sync only the last one to each leader in each term goes; the others would
//! tell the leader nothing it does not learn from that one. Refusals (which carry a
//! hint where the logs differ) all go.

use raft::eraftpb::{Message, MessageType};

/// `held`, in order, less the accepting append answers a later one to the same member
/// in the same term supersedes.
pub(super) fn latest_answers(held: Vec<Message>) -> Vec<Message> {
    let accepting = |m: &Message| m.get_msg_type() == MessageType::MsgAppendResponse && !m.reject;
    let mut last = std::collections::HashMap::new();
    for (i, m) in held.iter().enumerate() {
        if accepting(m) {
            let l = last.entry((m.to, m.term)).or_insert((i, m.index));
            if m.index >= l.1 {
                *l = (i, m.index);
            }
        }
    }
    held.into_iter()
        .enumerate()
        .filter(|(i, m)| !accepting(m) || last.get(&(m.to, m.term)).is_some_and(|l| l.0 == *i))
        .map(|(_, m)| m)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(to: u64, term: u64, index: u64, reject: bool) -> Message {
        let mut m = Message::default();
        m.set_msg_type(MessageType::MsgAppendResponse);
        m.to = to;
        m.term = term;
        m.index = index;
        m.reject = reject;
        m
    }

    #[test]
    fn only_the_last_accepting_answer_to_a_leader_in_a_term_goes() {
        let mut vote = Message::default();
        vote.set_msg_type(MessageType::MsgRequestVoteResponse);
        vote.to = 3;
        let held = vec![
            answer(1, 5, 10, false),
            answer(1, 5, 12, false),
            answer(1, 5, 11, true),
            vote.clone(),
            answer(1, 6, 13, false),
            answer(1, 5, 14, false),
            answer(2, 5, 9, false),
        ];
        let sent: Vec<(u64, u64, u64, bool)> = latest_answers(held)
            .iter()
            .map(|m| (m.to, m.term, m.index, m.reject))
            .collect();
        assert_eq!(
            sent,
            vec![
                (1, 5, 11, true),
                (3, 0, 0, false),
                (1, 6, 13, false),
                (1, 5, 14, false),
                (2, 5, 9, false),
            ]
        );
        assert!(latest_answers(Vec::new()).is_empty());
    }
}
