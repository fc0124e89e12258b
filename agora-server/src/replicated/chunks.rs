//! A snapshot between members, in chunks: a queue's state is as large as its messages,
//! and a cluster link's frames are at most an append's size, so a leader sends a
//! snapshot as [`CHUNK`]-byte pieces, each in a frame of its own with the message it
//! belongs to ([`Outgoing`], which its task sends a few at a time as the link takes
//! them), and the member it is for puts them together ([`Assembly`]) before raft-rs
//! sees the message. A link is ordered, so the pieces come in order; one out of order
//! (a link that broke meanwhile) drops what came so far, and the leader sends the
//! snapshot again once it reported the first sending failed.

use std::time::{Duration, Instant};

use agora_protocol::bytes::Bytes;
use agora_protocol::cluster::raft::{RaftFrame, SnapshotChunk};
use raft::eraftpb::Message;

use super::replica::{Stamp, MAX_APPEND};
use super::to_frame;

/// The bytes of a snapshot one frame carries.
pub(crate) const CHUNK: usize = MAX_APPEND;
/// The largest snapshot a member takes (its log file's bound too).
pub(crate) const MAX_SNAPSHOT: u64 = u32::MAX as u64;
/// How long a snapshot may take to leave before its sending is reported failed.
pub(crate) const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// A snapshot on its way to one member.
pub(crate) struct Outgoing {
    /// The message, without its snapshot's data.
    head: RaftFrame,
    chunk: SnapshotChunk,
    data: Bytes,
    offset: usize,
    done: bool,
    pub started: Instant,
}

impl Outgoing {
    /// The snapshot message `m` of group `group`, to send in pieces.
    pub fn new(group: &str, mut m: Message, stamp: Stamp) -> Outgoing {
        let snap = m.take_snapshot();
        let meta = snap.get_metadata();
        let cs = meta.get_conf_state();
        let chunk = SnapshotChunk {
            index: meta.index,
            term: meta.term,
            voters: cs.voters.clone(),
            learners: cs.learners.clone(),
            total: snap.data.len() as u64,
            offset: 0,
            data: Vec::new(),
        };
        Outgoing {
            head: to_frame(group, m, stamp),
            chunk,
            data: snap.data,
            offset: 0,
            done: false,
            started: Instant::now(),
        }
    }

    pub fn to(&self) -> u64 {
        self.head.message.to
    }

    /// The next piece's frame, none once every piece left.
    pub fn next(&self) -> Option<RaftFrame> {
        if self.done {
            return None;
        }
        let end = (self.offset + CHUNK).min(self.data.len());
        let mut f = self.head.clone();
        f.message.chunk = Some(SnapshotChunk {
            offset: self.offset as u64,
            data: self.data[self.offset..end].to_vec(),
            ..self.chunk.clone()
        });
        Some(f)
    }

    /// The piece [`next`](Outgoing::next) gave left; whether it was the last.
    pub fn sent(&mut self) -> bool {
        self.offset = (self.offset + CHUNK).min(self.data.len());
        // An empty snapshot is one empty piece.
        self.done = self.offset == self.data.len();
        self.done
    }
}

/// Which snapshot pieces belong to: (from, index, term, total).
type Key = (u64, u64, u64, u64);

/// The pieces of the snapshot a member is getting.
#[derive(Default)]
pub(crate) struct Assembly {
    /// The snapshot's key, and its bytes so far.
    at: Option<(Key, Vec<u8>)>,
}

impl Assembly {
    /// Takes a frame with a piece of a snapshot: the whole snapshot's frame once its
    /// last piece came (none before, or when the piece was not the next one expected,
    /// or the snapshot is larger than [`MAX_SNAPSHOT`]).
    pub fn take(&mut self, mut f: RaftFrame) -> Option<RaftFrame> {
        let c = f.message.chunk.take()?;
        let key = (f.message.from, c.index, c.term, c.total);
        if c.total > MAX_SNAPSHOT {
            self.at = None;
            return None;
        }
        if c.offset == 0 {
            let room = (c.total as usize).min(64 << 20);
            self.at = Some((key, Vec::with_capacity(room)));
        }
        let (k, buf) = self.at.as_mut()?;
        if *k != key || buf.len() as u64 != c.offset {
            self.at = None;
            return None;
        }
        buf.extend_from_slice(&c.data);
        if (buf.len() as u64) < c.total {
            return None;
        }
        let (_, data) = self.at.take()?;
        f.message.chunk = Some(SnapshotChunk {
            data,
            offset: 0,
            ..c
        });
        Some(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::eraftpb::{MessageType, Snapshot};

    fn snapshot_message(len: usize) -> Message {
        let mut m = Message::default();
        m.set_msg_type(MessageType::MsgSnapshot);
        m.from = 1;
        m.to = 3;
        m.term = 4;
        let mut s = Snapshot::default();
        s.mut_metadata().index = 77;
        s.mut_metadata().term = 4;
        s.mut_metadata().mut_conf_state().voters = vec![1, 2, 3];
        s.data = (0..len).map(|i| i as u8).collect::<Vec<u8>>().into();
        m.set_snapshot(s);
        m
    }

    /// Every piece of `o`, as the wire carries them.
    fn pieces(mut o: Outgoing) -> Vec<RaftFrame> {
        let mut v = Vec::new();
        while let Some(f) = o.next() {
            let mut bytes = Vec::new();
            f.encode(&mut bytes).expect("fits a frame");
            assert!(bytes.len() <= CHUNK + 4096, "{}", bytes.len());
            v.push(RaftFrame::decode(&bytes).unwrap());
            if o.sent() {
                break;
            }
        }
        assert!(o.next().is_none());
        v
    }

    #[test]
    fn a_snapshot_goes_in_pieces_and_comes_back_whole() {
        for len in [0, 1, CHUNK, 2 * CHUNK + 5] {
            let m = snapshot_message(len);
            let want = m.get_snapshot().clone();
            let frames = pieces(Outgoing::new("orders", m, Stamp::default()));
            assert_eq!(frames.len(), len.div_ceil(CHUNK).max(1), "{len}");
            let mut a = Assembly::default();
            let n = frames.len();
            for (i, f) in frames.into_iter().enumerate() {
                match a.take(f) {
                    Some(whole) => {
                        assert_eq!(i, n - 1);
                        let (m, _) = crate::replicated::from_frame(whole).unwrap();
                        assert_eq!(m.get_msg_type(), MessageType::MsgSnapshot);
                        assert_eq!(m.get_snapshot(), &want);
                        assert_eq!((m.from, m.to, m.term), (1, 3, 4));
                    }
                    None => assert!(i < n - 1, "{len}: piece {i} of {n}"),
                }
            }
        }
    }

    #[test]
    fn a_piece_out_of_order_drops_what_came() {
        let frames = pieces(Outgoing::new(
            "q",
            snapshot_message(3 * CHUNK),
            Stamp::default(),
        ));
        let mut a = Assembly::default();
        assert!(a.take(frames[0].clone()).is_none());
        // The second piece lost: the third is not the next one, and all is dropped.
        assert!(a.take(frames[2].clone()).is_none());
        assert!(a.take(frames[1].clone()).is_none());
        assert!(a.take(frames[2].clone()).is_none());
        // Sent again from the start, it comes whole.
        assert!(a.take(frames[0].clone()).is_none());
        assert!(a.take(frames[1].clone()).is_none());
        assert!(a.take(frames[2].clone()).is_some());
        // A frame without a piece is not one of these.
        let mut plain = frames[0].clone();
        plain.message.chunk = None;
        assert!(a.take(plain).is_none());
    }
}
