//! Raft messages between the nodes of a cluster, in Agora's own binary form: the fields
//! of raft-rs's `eraftpb::Message` that Agora's replicated queues use, plain, so that no
//! protobuf parser ever reads what the network brings (see the architecture chapter).
//! The broker maps them to and from raft-rs's types; this module only frames them.
//!
//! ```text
//! frame   = version:u8(1|2) group stamp message [chunk]   ; chunk in version 2 only
//! group   = len:u8 name                    ; the replicated queue's name, 1..=255 bytes
//! stamp   = sent_at:u64 has_echo:u8 echo:u64
//! message = kind:u8 to from term log_term index commit commit_term:u64
//!           reject:u8 reject_hint request_snapshot:u64 priority:i64
//!           context:bytes count:u32 entry*
//! entry   = kind:u8 term index:u64 data:bytes context:bytes
//! chunk   = index term:u64 voters:u32 u64* learners:u32 u64* total offset:u64 data:bytes
//! bytes   = len:u32 byte*
//! ```
//!
//! A snapshot (a queue's state, as large as its messages) travels in chunks, each in a
//! frame of its own with the message it belongs to ([`SnapshotChunk`]); a frame
//! without one is written as version 1, which every node reads. Integers are
//! little-endian. A frame is at most [`MAX_FRAME`] bytes; anything short,
//! long, of another version, or with a kind raft-rs does not have, is refused with the
//! reason, never a panic.

/// The longest frame.
pub const MAX_FRAME: usize = 64 << 20;
/// The version of frames without a snapshot chunk (what the first clustered brokers
/// read and write).
pub const VERSION: u8 = 1;
/// The version of frames with a snapshot chunk.
pub const VERSION_CHUNK: u8 = 2;
/// The highest message kind (raft-rs's `MsgRequestPreVoteResponse`).
pub const MAX_MESSAGE_KIND: u8 = 18;
/// The highest entry kind (raft-rs's `EntryConfChangeV2`).
pub const MAX_ENTRY_KIND: u8 = 2;

/// One Raft message for the group of a replicated queue, with its lease stamp.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RaftFrame {
    /// The replicated queue (its name, without `queue:`).
    pub group: String,
    /// The sender's clock when it left.
    pub sent_at: u64,
    /// The latest reading of the receiver's clock the sender had from it.
    pub echo: Option<u64>,
    /// The message itself.
    pub message: RaftMessage,
}

/// raft-rs's `Message`; its snapshot, when it has one, in chunks.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[allow(missing_docs)]
pub struct RaftMessage {
    /// raft-rs's `MessageType`, as its number.
    pub kind: u8,
    pub to: u64,
    pub from: u64,
    pub term: u64,
    pub log_term: u64,
    pub index: u64,
    pub commit: u64,
    pub commit_term: u64,
    pub reject: bool,
    pub reject_hint: u64,
    pub request_snapshot: u64,
    pub priority: i64,
    pub context: Vec<u8>,
    pub entries: Vec<RaftEntry>,
    /// A piece of the snapshot the message carries.
    pub chunk: Option<SnapshotChunk>,
}

/// A piece of a snapshot: `data` is its bytes from `offset` on, of `total` in all.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[allow(missing_docs)]
pub struct SnapshotChunk {
    /// The snapshot's index and term, and the group's members.
    pub index: u64,
    pub term: u64,
    pub voters: Vec<u64>,
    pub learners: Vec<u64>,
    pub total: u64,
    pub offset: u64,
    pub data: Vec<u8>,
}

/// raft-rs's `Entry`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[allow(missing_docs)]
pub struct RaftEntry {
    /// raft-rs's `EntryType`, as its number.
    pub kind: u8,
    pub term: u64,
    pub index: u64,
    pub data: Vec<u8>,
    pub context: Vec<u8>,
}

/// Why a frame was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RaftFrameError {
    /// It ends before its fields do.
    Short,
    /// Bytes left after its last entry.
    Trailing(usize),
    /// Longer than [`MAX_FRAME`].
    TooLong(usize),
    /// A field out of its range: which, and why.
    Bad(&'static str),
}

impl std::fmt::Display for RaftFrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RaftFrameError::Short => write!(f, "a Raft frame ends before its fields"),
            RaftFrameError::Trailing(n) => write!(f, "a Raft frame with {n} bytes after it"),
            RaftFrameError::TooLong(n) => {
                write!(f, "a Raft frame of {n} bytes (at most {MAX_FRAME})")
            }
            RaftFrameError::Bad(why) => write!(f, "a Raft frame with {why}"),
        }
    }
}

impl std::error::Error for RaftFrameError {}

fn bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

impl RaftFrame {
    /// Appends the frame to `out`. Refuses a group name that is empty or longer than
    /// 255 bytes, and a frame that would be longer than [`MAX_FRAME`].
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), RaftFrameError> {
        let start = out.len();
        let g = self.group.as_bytes();
        if g.is_empty() || g.len() > 255 {
            return Err(RaftFrameError::Bad(
                "a group name of 0 or more than 255 bytes",
            ));
        }
        let m = &self.message;
        out.push(match m.chunk {
            Some(_) => VERSION_CHUNK,
            None => VERSION,
        });
        out.push(g.len() as u8);
        out.extend_from_slice(g);
        out.extend_from_slice(&self.sent_at.to_le_bytes());
        out.push(self.echo.is_some() as u8);
        out.extend_from_slice(&self.echo.unwrap_or(0).to_le_bytes());
        out.push(m.kind);
        for v in [
            m.to,
            m.from,
            m.term,
            m.log_term,
            m.index,
            m.commit,
            m.commit_term,
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.push(m.reject as u8);
        out.extend_from_slice(&m.reject_hint.to_le_bytes());
        out.extend_from_slice(&m.request_snapshot.to_le_bytes());
        out.extend_from_slice(&m.priority.to_le_bytes());
        bytes(out, &m.context);
        out.extend_from_slice(&(m.entries.len() as u32).to_le_bytes());
        for e in &m.entries {
            out.push(e.kind);
            out.extend_from_slice(&e.term.to_le_bytes());
            out.extend_from_slice(&e.index.to_le_bytes());
            bytes(out, &e.data);
            bytes(out, &e.context);
        }
        if let Some(c) = &m.chunk {
            out.extend_from_slice(&c.index.to_le_bytes());
            out.extend_from_slice(&c.term.to_le_bytes());
            for ids in [&c.voters, &c.learners] {
                out.extend_from_slice(&(ids.len() as u32).to_le_bytes());
                for id in ids {
                    out.extend_from_slice(&id.to_le_bytes());
                }
            }
            out.extend_from_slice(&c.total.to_le_bytes());
            out.extend_from_slice(&c.offset.to_le_bytes());
            bytes(out, &c.data);
        }
        let n = out.len() - start;
        if n > MAX_FRAME {
            out.truncate(start);
            return Err(RaftFrameError::TooLong(n));
        }
        Ok(())
    }

    /// Reads one whole frame.
    pub fn decode(buf: &[u8]) -> Result<RaftFrame, RaftFrameError> {
        if buf.len() > MAX_FRAME {
            return Err(RaftFrameError::TooLong(buf.len()));
        }
        let mut r = Reader { buf, at: 0 };
        let version = r.u8()?;
        if version != VERSION && version != VERSION_CHUNK {
            return Err(RaftFrameError::Bad("another version"));
        }
        let n = r.u8()? as usize;
        let group = std::str::from_utf8(r.take(n)?)
            .map_err(|_| RaftFrameError::Bad("a group name that is not UTF-8"))?
            .to_owned();
        if group.is_empty() {
            return Err(RaftFrameError::Bad("an empty group name"));
        }
        let sent_at = r.u64()?;
        let has_echo = r.flag("an echo flag other than 0 or 1")?;
        let echo = r.u64()?;
        let kind = r.u8()?;
        if kind > MAX_MESSAGE_KIND {
            return Err(RaftFrameError::Bad("an unknown message kind"));
        }
        let mut m = RaftMessage {
            kind,
            to: r.u64()?,
            from: r.u64()?,
            term: r.u64()?,
            log_term: r.u64()?,
            index: r.u64()?,
            commit: r.u64()?,
            commit_term: r.u64()?,
            reject: r.flag("a reject flag other than 0 or 1")?,
            reject_hint: r.u64()?,
            request_snapshot: r.u64()?,
            priority: r.u64()? as i64,
            context: r.bytes()?.to_vec(),
            entries: Vec::new(),
            chunk: None,
        };
        let count = r.u32()? as usize;
        // Each entry takes at least 25 bytes: a count beyond what is left is a lie.
        if count > (buf.len() - r.at) / 25 {
            return Err(RaftFrameError::Short);
        }
        m.entries.reserve(count);
        for _ in 0..count {
            let kind = r.u8()?;
            if kind > MAX_ENTRY_KIND {
                return Err(RaftFrameError::Bad("an unknown entry kind"));
            }
            m.entries.push(RaftEntry {
                kind,
                term: r.u64()?,
                index: r.u64()?,
                data: r.bytes()?.to_vec(),
                context: r.bytes()?.to_vec(),
            });
        }
        if version == VERSION_CHUNK {
            let (index, term) = (r.u64()?, r.u64()?);
            let mut ids = [Vec::new(), Vec::new()];
            for v in &mut ids {
                let n = r.u32()? as usize;
                if n > (buf.len() - r.at) / 8 {
                    return Err(RaftFrameError::Short);
                }
                for _ in 0..n {
                    v.push(r.u64()?);
                }
            }
            let [voters, learners] = ids;
            let (total, offset) = (r.u64()?, r.u64()?);
            let data = r.bytes()?.to_vec();
            if offset
                .checked_add(data.len() as u64)
                .is_none_or(|end| end > total)
            {
                return Err(RaftFrameError::Bad(
                    "a snapshot chunk past its snapshot's end",
                ));
            }
            m.chunk = Some(SnapshotChunk {
                index,
                term,
                voters,
                learners,
                total,
                offset,
                data,
            });
        }
        if r.at != buf.len() {
            return Err(RaftFrameError::Trailing(buf.len() - r.at));
        }
        Ok(RaftFrame {
            group,
            sent_at,
            echo: has_echo.then_some(echo),
            message: m,
        })
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], RaftFrameError> {
        let end = self.at.checked_add(n).ok_or(RaftFrameError::Short)?;
        let b = self.buf.get(self.at..end).ok_or(RaftFrameError::Short)?;
        self.at = end;
        Ok(b)
    }
    fn u8(&mut self) -> Result<u8, RaftFrameError> {
        Ok(self.take(1)?[0])
    }
    fn flag(&mut self, why: &'static str) -> Result<bool, RaftFrameError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(RaftFrameError::Bad(why)),
        }
    }
    fn u32(&mut self) -> Result<u32, RaftFrameError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4")))
    }
    fn u64(&mut self) -> Result<u64, RaftFrameError> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8")))
    }
    fn bytes(&mut self) -> Result<&'a [u8], RaftFrameError> {
        let n = self.u32()? as usize;
        self.take(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> RaftFrame {
        RaftFrame {
            group: "orders".into(),
            sent_at: 41,
            echo: Some(40),
            message: RaftMessage {
                kind: 3,
                to: 2,
                from: 1,
                term: 7,
                log_term: 6,
                index: 99,
                commit: 98,
                commit_term: 6,
                reject: true,
                reject_hint: 12,
                request_snapshot: 0,
                priority: -3,
                context: b"ctx".to_vec(),
                entries: vec![
                    RaftEntry {
                        kind: 0,
                        term: 7,
                        index: 100,
                        data: b"a message".to_vec(),
                        context: Vec::new(),
                    },
                    RaftEntry {
                        kind: 2,
                        term: 7,
                        index: 101,
                        data: Vec::new(),
                        context: b"c".to_vec(),
                    },
                ],
                chunk: None,
            },
        }
    }

    fn chunked() -> RaftFrame {
        let mut f = sample();
        f.message.kind = 7;
        f.message.entries.clear();
        f.message.chunk = Some(SnapshotChunk {
            index: 90,
            term: 6,
            voters: vec![1, 2, 3],
            learners: vec![4],
            total: 10,
            offset: 4,
            data: b"efgh".to_vec(),
        });
        f
    }

    #[test]
    fn a_frame_reads_back_as_written() {
        for f in [
            sample(),
            chunked(),
            RaftFrame {
                group: "q".into(),
                ..RaftFrame::default()
            },
        ] {
            let mut out = vec![0xAA];
            f.encode(&mut out).unwrap();
            assert_eq!(RaftFrame::decode(&out[1..]), Ok(f));
        }
    }

    #[test]
    fn every_cut_of_a_frame_is_refused_and_nothing_panics() {
        for f in [sample(), chunked()] {
            let mut out = Vec::new();
            f.encode(&mut out).unwrap();
            for n in 0..out.len() {
                assert!(RaftFrame::decode(&out[..n]).is_err(), "cut at {n}");
            }
            let mut long = out.clone();
            long.push(0);
            assert_eq!(RaftFrame::decode(&long), Err(RaftFrameError::Trailing(1)));
            // Every byte flipped: refused or read as something, never a panic.
            for i in 0..out.len() {
                let mut b = out.clone();
                b[i] ^= 0xFF;
                let _ = RaftFrame::decode(&b);
            }
        }
        // A chunk that would end past its snapshot's end is refused.
        let mut f = chunked();
        f.message.chunk.as_mut().unwrap().offset = 7;
        let mut out = Vec::new();
        f.encode(&mut out).unwrap();
        assert!(matches!(
            RaftFrame::decode(&out),
            Err(RaftFrameError::Bad(_))
        ));
        // Without a chunk a frame is version 1, as older nodes read.
        let mut out = Vec::new();
        sample().encode(&mut out).unwrap();
        assert_eq!(out[0], VERSION);
    }

    #[test]
    fn fields_out_of_range_are_named() {
        let mut out = Vec::new();
        sample().encode(&mut out).unwrap();
        let mut b = out.clone();
        b[0] = 3;
        assert_eq!(
            RaftFrame::decode(&b),
            Err(RaftFrameError::Bad("another version"))
        );
        // The message kind follows version, group (1 + 6), sent_at and the echo.
        let kind_at = 1 + 1 + 6 + 8 + 1 + 8;
        let mut b = out.clone();
        b[kind_at] = 19;
        assert_eq!(
            RaftFrame::decode(&b),
            Err(RaftFrameError::Bad("an unknown message kind"))
        );
        // An entry count far beyond what is there.
        let count_at = kind_at + 1 + 7 * 8 + 1 + 3 * 8 + 4 + 3;
        let mut b = out.clone();
        b[count_at..count_at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(RaftFrame::decode(&b), Err(RaftFrameError::Short));
        let f = RaftFrame {
            group: String::new(),
            ..sample()
        };
        assert!(f.encode(&mut Vec::new()).is_err());
    }
}
