//! Raft messages between the nodes of a cluster, in Agora's own binary form: the fields
//! of raft-rs's `eraftpb::Message` that Agora's replicated queues use, plain, so that no
//! protobuf parser ever reads what the network brings (see the architecture chapter).
//! The broker maps them to and from raft-rs's types; this module only frames them.
//!
//! ```text
//! frame   = version:u8(1) group stamp message
//! group   = len:u8 name                    ; the replicated queue's name, 1..=255 bytes
//! stamp   = sent_at:u64 has_echo:u8 echo:u64
//! message = kind:u8 to from term log_term index commit commit_term:u64
//!           reject:u8 reject_hint request_snapshot:u64 priority:i64
//!           context:bytes count:u32 entry*
//! entry   = kind:u8 term index:u64 data:bytes context:bytes
//! bytes   = len:u32 byte*
//! ```
//!
//! Integers are little-endian. A frame is at most [`MAX_FRAME`] bytes; anything short,
//! long, of another version, or with a kind raft-rs does not have, is refused with the
//! reason, never a panic.

/// The longest frame.
pub const MAX_FRAME: usize = 64 << 20;
/// The version this module writes and reads.
pub const VERSION: u8 = 1;
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

/// raft-rs's `Message`, less the snapshot (Agora does not send snapshots yet).
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
        out.push(VERSION);
        out.push(g.len() as u8);
        out.extend_from_slice(g);
        out.extend_from_slice(&self.sent_at.to_le_bytes());
        out.push(self.echo.is_some() as u8);
        out.extend_from_slice(&self.echo.unwrap_or(0).to_le_bytes());
        let m = &self.message;
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
        if r.u8()? != VERSION {
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
            },
        }
    }

    #[test]
    fn a_frame_reads_back_as_written() {
        for f in [
            sample(),
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
        let mut out = Vec::new();
        sample().encode(&mut out).unwrap();
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

    #[test]
    fn fields_out_of_range_are_named() {
        let mut out = Vec::new();
        sample().encode(&mut out).unwrap();
        let mut b = out.clone();
        b[0] = 2;
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
