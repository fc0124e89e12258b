//! A leader whose link closed: its followers campaign as soon as its lease is surely
//! over, instead of at their randomized election timeouts.
//!
//! raft-rs calls an election when a follower has heard nothing from its leader for its
//! randomized timeout, `election` to `2 × election` ticks; a member votes only once
//! `election` ticks have passed since it last heard from the leader (check-quorum's
//! lease), and the leader's own lease (`lease` ticks, shorter) is over by then. When a
//! member's link to its leader closes (the leader's process is gone, or the connection
//! broke), it campaigns at `election` ticks instead: the earliest any member would vote
//! for it, so the leader's lease is over as surely as at the randomized timeout. Members
//! campaign in the order of their ids, two ticks apart (a member that hears from a new
//! leader meanwhile stops waiting), so two do not split the vote; a campaign that did
//! not win (a voter had heard from the leader later) is tried again two ticks later.
//! Hearing from the leader again ends the wait.

use raft::StateRole;

use super::Replica;

impl Replica {
    /// Its link to member `node` closed: when that member is its leader, it campaigns
    /// early (see the module).
    pub fn link_lost(&mut self, node: u64) {
        if node != 0 && node == self.node.raft.leader_id && !self.is_leader() {
            self.lost = Some(node);
        }
    }

    /// At each tick: campaigns when its leader's link closed and its turn came.
    pub(super) fn campaign_early(&mut self) {
        let Some(gone) = self.lost else { return };
        let raft = &self.node.raft;
        let waiting = match raft.state {
            StateRole::Follower => raft.leader_id == gone,
            // A campaign of its own that did not win yet.
            StateRole::PreCandidate | StateRole::Candidate => raft.leader_id == 0,
            StateRole::Leader => false,
        };
        let me = raft.id;
        let ids = raft.prs().conf().voters().ids();
        let mut others: Vec<u64> = ids.iter().filter(|&id| id != gone).collect();
        others.sort_unstable();
        let rank = others.iter().position(|&id| id == me);
        let (true, Some(rank)) = (waiting, rank) else {
            self.lost = None;
            return;
        };
        let turn = raft.election_timeout() + 2 * rank;
        let elapsed = raft.election_elapsed;
        if elapsed >= turn && (elapsed - turn).is_multiple_of(2) {
            let _ = self.node.campaign();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::tick_all;
    use super::super::Disk;
    use super::*;

    /// Three members (lease 5 ticks), member 1 elected first (its election timeout is
    /// 6 ticks), members 2 and 3 with timeouts of 8 to 18 ticks, drawn at 17 both.
    fn led_by_1() -> Vec<Replica> {
        let mut rs: Vec<Replica> = (1..=3)
            .map(|id| {
                let e = if id == 1 { (6, 1) } else { (8, 10) };
                Replica::drawn(id, &[1, 2, 3], &[], Disk::default(), e, 5).unwrap()
            })
            .collect();
        for _ in 0..30 {
            tick_all(&mut rs, None);
            if rs[0].serving() {
                break;
            }
        }
        assert!(rs[0].serving(), "member 1 leads");
        for r in &mut rs[1..] {
            r.node.raft.set_randomized_election_timeout(17);
        }
        rs
    }

    #[test]
    fn followers_whose_leader_s_link_closed_campaign_at_its_lease_end() {
        // Cut off, member 1 is not replaced before a follower's drawn timeout.
        let mut rs = led_by_1();
        for _ in 0..16 {
            tick_all(&mut rs, Some(0));
        }
        assert!(!rs[1].is_leader() && !rs[2].is_leader());
        // Told that member 1's link closed, member 2 (the first of the others) campaigns
        // at 8 ticks, the earliest member 3 votes: it leads, after the old leader's
        // lease ran out.
        let mut rs = led_by_1();
        rs[1].link_lost(1);
        rs[2].link_lost(1);
        rs[1].link_lost(3);
        for t in 1..=10 {
            tick_all(&mut rs, Some(0));
            if rs[1].serving() {
                assert!(t >= 8, "not before member 3 would vote: {t}");
                assert!(!rs[0].serving());
                assert!(!rs[2].is_leader());
                return;
            }
        }
        panic!("member 2 did not lead within 10 ticks");
    }

    #[test]
    fn hearing_from_the_leader_again_ends_the_wait() {
        let mut rs = led_by_1();
        rs[1].link_lost(1);
        rs[2].link_lost(1);
        for _ in 0..20 {
            tick_all(&mut rs, None);
        }
        assert!(rs[0].serving(), "the leader still heard leads");
        assert_eq!((rs[1].lost, rs[2].lost), (None, None));
    }
}
