//! The cluster handshake as plain values (the lines are `agora_protocol::cluster`'s):
//! each side sends a random nonce and proves it holds the cluster's secret with an
//! HMAC-SHA256 over its role, the cluster, its node id and both nonces. The secret never
//! crosses the link, a proof made for one link is worth nothing on another (fresh
//! nonces), and an acceptor's proof cannot be played back as a dialer's (the role).
//!
//! Each side also says which nodes its `--peers` lists (a digest of their ids). A node
//! of a cluster with replicated queues links only to nodes that list the same ones: a
//! queue's voters follow from that list, and two nodes that chose them from different
//! lists could each count a different majority (membership changes are not built).

use agora_protocol::cluster::{peers_digest, Line};
use ring::hmac;

/// What a node knows of its cluster for the handshake.
#[derive(Clone)]
pub(crate) struct Identity {
    pub cluster: String,
    pub node: u64,
    pub secret: String,
    /// Every node id of `--peers` (this one's included).
    pub peers: Vec<u64>,
    /// Whether a node must list the same `--peers` ids to link (this node replicates
    /// queues).
    pub same_peers: bool,
    /// This node's Raft tick in milliseconds (`--raft-tick`); a node that replicates
    /// queues links only to nodes that tick alike.
    pub tick_ms: u64,
}

/// The tick a node that does not say its own has (every earlier Agora's).
pub(crate) const DEFAULT_TICK_MS: u64 = 100;

/// Which side of the link a proof is made by.
#[derive(Clone, Copy)]
enum Role {
    Dialer,
    Acceptor,
}

/// 32 random hex digits.
pub(crate) fn nonce() -> String {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 16];
    // The system's random source; it does not fail on Linux once booted.
    let _ = ring::rand::SystemRandom::new().fill(&mut b);
    hex(&b)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

fn message(
    role: Role,
    cluster: &str,
    prover: u64,
    verifier_nonce: &str,
    prover_nonce: &str,
) -> String {
    let role = match role {
        Role::Dialer => "dialer",
        Role::Acceptor => "acceptor",
    };
    format!(
        "agora-cluster-1|{role}|{cluster}|{prover}|{}|{}",
        verifier_nonce.to_ascii_lowercase(),
        prover_nonce.to_ascii_lowercase()
    )
}

impl Identity {
    fn digest(&self) -> String {
        peers_digest(&self.peers)
    }

    /// The tick to say in a `HELLO`: unsaid when it is the default, so that nodes of
    /// an earlier version (which refuse the field) link to a node left at it.
    fn said_tick(&self) -> Option<u64> {
        (self.tick_ms != DEFAULT_TICK_MS).then_some(self.tick_ms)
    }

    fn key(&self) -> hmac::Key {
        hmac::Key::new(hmac::HMAC_SHA256, self.secret.as_bytes())
    }

    fn prove(&self, role: Role, verifier_nonce: &str, prover_nonce: &str) -> String {
        let m = message(role, &self.cluster, self.node, verifier_nonce, prover_nonce);
        hex(hmac::sign(&self.key(), m.as_bytes()).as_ref())
    }

    /// Whether `proof` is `prover`'s, made as `role` (compared in constant time).
    fn check(
        &self,
        role: Role,
        prover: u64,
        verifier_nonce: &str,
        prover_nonce: &str,
        proof: &str,
    ) -> bool {
        let m = message(role, &self.cluster, prover, verifier_nonce, prover_nonce);
        match unhex(proof) {
            Some(tag) => hmac::verify(&self.key(), m.as_bytes(), &tag).is_ok(),
            None => false,
        }
    }

    /// Whether `node` may join: one of `--peers`, not this node, and (when this node
    /// replicates queues) listing the same nodes, its `peers` digest.
    fn admits(
        &self,
        cluster: &str,
        node: u64,
        peers: Option<&str>,
        tick: Option<u64>,
    ) -> Result<(), String> {
        if cluster != self.cluster {
            return Err(format!(
                "this node is of cluster {}, not {cluster}",
                self.cluster
            ));
        }
        if node == self.node {
            return Err(format!("node {node} is this node"));
        }
        if !self.peers.contains(&node) {
            return Err(format!("node {node} is not one of this node's --peers"));
        }
        if self.same_peers && peers != Some(self.digest().as_str()) {
            let mut ids = self.peers.clone();
            ids.sort_unstable();
            let ids: Vec<String> = ids.iter().map(u64::to_string).collect();
            let what = match peers {
                Some(_) => "lists other nodes in its --peers than",
                None => "does not say which nodes its --peers lists (an earlier Agora), unlike",
            };
            return Err(format!(
                "node {node} {what} this node ({}): in a cluster with replicated queues every \
                 node must list the same nodes (membership changes are not built)",
                ids.join(",")
            ));
        }
        let theirs = tick.unwrap_or(DEFAULT_TICK_MS);
        if self.same_peers && theirs != self.tick_ms {
            return Err(format!(
                "node {node} ticks every {theirs} ms and this node every {} ms (--raft-tick): \
                 in a cluster with replicated queues every node must tick alike (a leader's \
                 lease and its followers' wait before they vote are counted in ticks)",
                self.tick_ms
            ));
        }
        Ok(())
    }
}

/// The accepting side of one link.
pub(crate) struct Acceptor {
    me: Identity,
    nonce: String,
    /// The dialer, once its `HELLO` was taken: its id and nonce.
    dialer: Option<(u64, String)>,
}

impl Acceptor {
    pub fn new(me: Identity) -> Acceptor {
        Acceptor {
            me,
            nonce: nonce(),
            dialer: None,
        }
    }

    /// The dialer's first line: the answer to send (with this node's proof), or why
    /// it is refused (send `ERR` and close).
    pub fn on_hello(&mut self, line: Line) -> Result<Line, String> {
        let Line::Hello {
            cluster,
            node,
            nonce,
            proof: None,
            peers,
            tick,
        } = line
        else {
            return Err("expected HELLO <cluster> <node> <nonce>".to_owned());
        };
        self.me.admits(&cluster, node, peers.as_deref(), tick)?;
        let proof = self.me.prove(Role::Acceptor, &nonce, &self.nonce);
        self.dialer = Some((node, nonce));
        Ok(Line::Hello {
            cluster: self.me.cluster.clone(),
            node: self.me.node,
            nonce: self.nonce.clone(),
            proof: Some(proof),
            peers: Some(self.me.digest()),
            tick: self.me.said_tick(),
        })
    }

    /// The dialer's proof: its node id once it is right (send `WELCOME`).
    pub fn on_proof(&mut self, line: Line) -> Result<u64, String> {
        let (Some((node, their)), Line::Proof(proof)) = (&self.dialer, line) else {
            return Err("expected PROOF <proof>".to_owned());
        };
        match self
            .me
            .check(Role::Dialer, *node, &self.nonce, their, &proof)
        {
            true => Ok(*node),
            false => Err(format!(
                "node {node}'s proof is wrong: it was given another --cluster-secret"
            )),
        }
    }
}

/// The dialing side of one link, to node `to`.
pub(crate) struct Dialer {
    me: Identity,
    to: u64,
    nonce: String,
}

impl Dialer {
    pub fn new(me: Identity, to: u64) -> Dialer {
        Dialer {
            me,
            to,
            nonce: nonce(),
        }
    }

    /// The first line to send.
    pub fn hello(&self) -> Line {
        Line::Hello {
            cluster: self.me.cluster.clone(),
            node: self.me.node,
            nonce: self.nonce.clone(),
            proof: None,
            peers: Some(self.me.digest()),
            tick: self.me.said_tick(),
        }
    }

    /// The acceptor's answer: this node's proof to send, or why the link is given up.
    pub fn on_answer(&self, line: Line) -> Result<Line, String> {
        let (cluster, node, nonce, proof, peers, tick) = match line {
            Line::Hello {
                cluster,
                node,
                nonce,
                proof: Some(p),
                peers,
                tick,
            } => (cluster, node, nonce, p, peers, tick),
            Line::Err(why) => return Err(format!("refused: {why}")),
            other => return Err(format!("expected HELLO with a proof, got {other:?}")),
        };
        self.me.admits(&cluster, node, peers.as_deref(), tick)?;
        if node != self.to {
            return Err(format!(
                "node {node} answered at node {}'s address",
                self.to
            ));
        }
        if !self
            .me
            .check(Role::Acceptor, node, &self.nonce, &nonce, &proof)
        {
            return Err(format!(
                "node {node}'s proof is wrong: it was given another --cluster-secret"
            ));
        }
        Ok(Line::Proof(self.me.prove(
            Role::Dialer,
            &nonce,
            &self.nonce,
        )))
    }

    /// The acceptor's last word.
    pub fn on_welcome(line: Line) -> Result<(), String> {
        match line {
            Line::Welcome => Ok(()),
            Line::Err(why) => Err(format!("refused: {why}")),
            other => Err(format!("expected WELCOME, got {other:?}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(n: u64, secret: &str) -> Identity {
        Identity {
            cluster: "eu".into(),
            node: n,
            secret: secret.into(),
            peers: vec![1, 2, 3],
            same_peers: true,
            tick_ms: DEFAULT_TICK_MS,
        }
    }

    /// A whole handshake between `dialer` and `acceptor`: the dialer's id as the
    /// acceptor took it, or the first refusal and which side refused.
    fn shake(dialer: Identity, to: u64, acceptor: Identity) -> Result<u64, (&'static str, String)> {
        let d = Dialer::new(dialer, to);
        let mut a = Acceptor::new(acceptor);
        let answer = a.on_hello(d.hello()).map_err(|e| ("acceptor", e))?;
        let proof = d.on_answer(answer).map_err(|e| ("dialer", e))?;
        let id = a.on_proof(proof).map_err(|e| ("acceptor", e))?;
        Dialer::on_welcome(Line::Welcome).map_err(|e| ("dialer", e))?;
        Ok(id)
    }

    const S: &str = "a shared secret, long enough";

    #[test]
    fn nodes_with_the_same_secret_link() {
        assert_eq!(shake(node(1, S), 2, node(2, S)), Ok(1));
    }

    #[test]
    fn a_wrong_secret_is_caught_by_both_sides() {
        // The acceptor's proof fails at the dialer first.
        let (side, why) = shake(node(1, "another secret, as long"), 2, node(2, S)).unwrap_err();
        assert_eq!(side, "dialer");
        assert!(why.contains("proof is wrong"), "{why}");
        // A dialer that ignores the acceptor's proof still cannot make its own.
        let d = Dialer::new(node(1, "another secret, as long"), 2);
        let mut a = Acceptor::new(node(2, S));
        let Line::Hello { nonce, .. } = a.on_hello(d.hello()).unwrap() else {
            panic!()
        };
        let forged = d.me.prove(Role::Dialer, &nonce, &d.nonce);
        let why = a.on_proof(Line::Proof(forged)).unwrap_err();
        assert!(why.contains("node 1's proof is wrong"), "{why}");
    }

    #[test]
    fn strangers_are_refused() {
        let mut stranger = node(9, S);
        stranger.peers.push(9);
        let (side, why) = shake(stranger, 2, node(2, S)).unwrap_err();
        assert_eq!(side, "acceptor");
        assert!(why.contains("node 9 is not one of"), "{why}");
        let mut other = node(1, S);
        other.cluster = "us".into();
        let (_, why) = shake(other, 2, node(2, S)).unwrap_err();
        assert!(why.contains("not us"), "{why}");
        // A node answering at another's address.
        let (side, why) = shake(node(1, S), 3, node(2, S)).unwrap_err();
        assert_eq!(side, "dialer");
        assert!(why.contains("answered at node 3's address"), "{why}");
    }

    #[test]
    fn nodes_of_a_replicating_cluster_must_list_the_same_peers() {
        // The same ids in another order, or repeated: the same nodes.
        let mut shuffled = node(1, S);
        shuffled.peers = vec![3, 1, 2, 3];
        assert_eq!(shake(shuffled, 2, node(2, S)), Ok(1));
        // A node that lists a fourth: refused by whichever side checks first, saying
        // which nodes this one lists.
        let mut grown = node(1, S);
        grown.peers.push(4);
        let (side, why) = shake(grown.clone(), 2, node(2, S)).unwrap_err();
        assert_eq!(side, "acceptor");
        assert!(
            why.contains("node 1 lists other nodes in its --peers than this node (1,2,3)"),
            "{why}"
        );
        let (side, why) = shake(node(2, S), 1, grown.clone()).unwrap_err();
        assert_eq!(side, "acceptor");
        assert!(why.contains("node 2 lists other nodes"), "{why}");
        // A dialer that does not replicate still hears it from the acceptor that does.
        grown.same_peers = false;
        let (side, _) = shake(grown.clone(), 2, node(2, S)).unwrap_err();
        assert_eq!(side, "acceptor");
        let mut loose = node(2, S);
        loose.same_peers = false;
        assert_eq!(shake(grown, 2, loose), Ok(1));
        // A HELLO without a digest (an earlier Agora): refused by a replicating node.
        let mut a = Acceptor::new(node(2, S));
        let why = a
            .on_hello(Line::Hello {
                cluster: "eu".into(),
                node: 1,
                nonce: nonce(),
                proof: None,
                peers: None,
                tick: None,
            })
            .unwrap_err();
        assert!(why.contains("an earlier Agora"), "{why}");
        assert_ne!(peers_digest(&[1, 2, 3]), peers_digest(&[1, 2, 4]));
        assert_eq!(peers_digest(&[2, 1]), peers_digest(&[1, 2]));
    }

    #[test]
    fn nodes_of_a_replicating_cluster_must_tick_alike() {
        let fast = |n| Identity {
            tick_ms: 25,
            ..node(n, S)
        };
        assert_eq!(shake(fast(1), 2, fast(2)), Ok(1));
        // Either side refuses the other; the default tick is left unsaid (an earlier
        // Agora's HELLO, which has none, is taken as ticking every 100 ms).
        let (side, why) = shake(fast(1), 2, node(2, S)).unwrap_err();
        assert_eq!(side, "acceptor");
        assert!(
            why.contains("node 1 ticks every 25 ms and this node every 100 ms (--raft-tick)"),
            "{why}"
        );
        let (side, why) = shake(node(1, S), 2, fast(2)).unwrap_err();
        assert_eq!(side, "acceptor");
        assert!(
            why.contains("node 1 ticks every 100 ms and this node every 25 ms"),
            "{why}"
        );
        assert_eq!(node(1, S).said_tick(), None);
        assert_eq!(fast(1).said_tick(), Some(25));
        // Nodes that replicate nothing need not.
        let loose = |i: Identity| Identity {
            same_peers: false,
            ..i
        };
        assert_eq!(shake(loose(fast(1)), 2, loose(node(2, S))), Ok(1));
    }

    #[test]
    fn a_proof_is_worth_nothing_on_another_link_or_in_the_other_role() {
        let d = Dialer::new(node(1, S), 2);
        let mut a = Acceptor::new(node(2, S));
        let answer = a.on_hello(d.hello()).unwrap();
        let proof = d.on_answer(answer.clone()).unwrap();
        // Played to another acceptor (another nonce): refused.
        let mut a2 = Acceptor::new(node(2, S));
        a2.on_hello(d.hello()).unwrap();
        assert!(a2.on_proof(proof.clone()).is_err());
        // The acceptor's own proof reflected back as the dialer's: refused.
        let Line::Hello { proof: Some(p), .. } = answer else {
            panic!()
        };
        assert!(a.on_proof(Line::Proof(p)).is_err());
        // The real one.
        assert_eq!(a.on_proof(proof), Ok(1));
    }
}
