//! The log: a directory of numbered segments, each a header and then records, written
//! by one writer and read back whole at start.
//!
//! ```text
//! segment = header *record               ; named <first record's number, 20 digits>.seg
//! header  = "AGORALOG" version:u32 first:u64 crc:u32   ; crc of the 20 bytes before it
//! ```
//!
//! What it promises: after [`sync`](Log::sync) returns, every record appended before
//! it comes back from [`Log::open`], in order, whatever happens to the process or the
//! machine. A segment is synced, and the next one created, synced and its name made
//! durable, before any record goes into the next one; so only the last segment can end
//! in a torn record, which opening cuts off (and reports). Anything else that is not
//! as written — a bad record before the end, a record after a bad one, a gap between
//! segments, a file that is not a segment — stops the opening with the file and the
//! offset, and nothing is changed on disk.
//!
//! Each segment starts with a `Declare` for every queue there is (and a `Chain` for each
//! chain set or cleared at run time), so the names of the
//! queues never depend on older segments.

use std::collections::BTreeMap;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agora_protocol::bytes::Bytes;
use agora_protocol::Headers;

use super::record::Record;
use super::storage::Storage;
use live::Liveness;

mod error;
mod live;
mod open;
mod read;

pub use error::LogError;
use error::{final_error, io_err, no_space};
pub use open::SetAside;

const MAGIC: &[u8; 8] = b"AGORALOG";
const VERSION: u32 = 1;
/// A segment's header: magic, version, first record's number, checksum.
pub const HEADER: usize = 24;
/// The lock file beside the segments (the broker's, not the log's).
pub const LOCK_FILE: &str = "LOCK";

/// How the log is laid out.
#[derive(Debug, Clone, Copy)]
pub struct LogOptions {
    /// A segment past this many bytes is closed and the next one started.
    pub segment_bytes: u64,
    /// A segment holding a message with an `agora-msg-id` is kept at least this long
    /// after the last such record was appended to it (or after the log was opened),
    /// so that the queues' windows of message ids are read back whole after a restart
    /// (`--dedup-window`). Zero keeps nothing for them.
    pub keep_ids: Duration,
}

impl Default for LogOptions {
    fn default() -> LogOptions {
        LogOptions {
            segment_bytes: 64 * 1024 * 1024,
            keep_ids: Duration::ZERO,
        }
    }
}

/// A message the log holds, as [`Log::open`] finds it: what its queue keeps of it
/// until it reads it back ([`Log::read`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kept {
    /// The broker-wide id it was given when published.
    pub id: u64,
    /// Deliveries logged so far.
    pub count: u32,
    /// What it counts against byte limits: its payload and its headers' encoded length
    /// (`Message::size`).
    pub size: usize,
}

/// A message as the log has it, read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// The broker-wide id it was given when published.
    pub id: u64,
    /// Deliveries logged so far.
    pub count: u32,
    /// Its headers.
    pub headers: Headers,
    /// Its payload.
    pub payload: Bytes,
}

/// A torn end cut off at opening.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cut {
    /// The segment.
    pub file: String,
    /// Where it now ends.
    pub at: u64,
    /// Bytes cut off.
    pub bytes: u64,
    /// What was wrong with the first of them.
    pub why: String,
}

/// What [`Log::open`] found.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Each queue's messages, in id order, by name (their payloads stay on disk until
    /// read back with [`Log::read`]).
    pub queues: BTreeMap<String, Vec<Kept>>,
    /// The id the next published message gets.
    pub next_id: u64,
    /// Records read.
    pub records: u64,
    /// Bytes read.
    pub bytes: u64,
    /// Segments read.
    pub segments: usize,
    /// The torn end cut off, if there was one.
    pub cut: Option<Cut>,
    /// Chains set (or, empty, cleared) at run time, by destination.
    pub chains: BTreeMap<String, String>,
    /// Queues' bindings as last changed at run time, by queue name (patterns separated
    /// by spaces; empty: none).
    pub bindings: BTreeMap<String, String>,
    /// The message ids (`agora-msg-id`) of every message the log still holds a record
    /// of, acknowledged or not, by queue name, in the order they were published.
    pub seen: BTreeMap<String, Vec<String>>,
}

/// The log, open for appending.
pub struct Log<S: Storage> {
    storage: Arc<S>,
    opts: LogOptions,
    /// Segment names, oldest first; the last is the one appended to.
    segments: Vec<String>,
    /// Bytes in the last segment, written or waiting in `buf`.
    active_len: u64,
    /// Records encoded but not yet written.
    buf: Vec<u8>,
    /// The number the next record gets (counted from 1 across all segments).
    next_seq: u64,
    /// Queue numbers by name, for `Declare`s at each segment's start.
    numbers: BTreeMap<String, u32>,
    /// Chains set or cleared at run time, by destination, for each segment's start.
    chains: BTreeMap<String, String>,
    /// Queues' bindings as last changed at run time, for each segment's start.
    bindings: BTreeMap<String, String>,
    /// The size of each segment before the last, by its first record's number.
    sealed: BTreeMap<u64, u64>,
    /// The next queue number to give.
    next_number: u32,
    /// What each segment still holds.
    live: Liveness,
    /// The first record number of the last segment (its name's number).
    active_first: u64,
    /// Segments kept for the message ids in them, by first record number: until when
    /// ([`LogOptions::keep_ids`]).
    pins: BTreeMap<u64, Instant>,
    /// The time as last told ([`set_clock`](Log::set_clock)).
    now: Instant,
}

fn first_of(name: &str) -> u64 {
    name.strip_suffix(".seg")
        .and_then(|s| s.parse().ok())
        .unwrap_or_default()
}

fn segment_name(first: u64) -> String {
    format!("{first:020}.seg")
}

fn header(first: u64) -> [u8; HEADER] {
    let mut h = [0u8; HEADER];
    h[..8].copy_from_slice(MAGIC);
    h[8..12].copy_from_slice(&VERSION.to_le_bytes());
    h[12..20].copy_from_slice(&first.to_le_bytes());
    let crc = crc32fast::hash(&h[..20]);
    h[20..].copy_from_slice(&crc.to_le_bytes());
    h
}

impl<S: Storage> Log<S> {
    /// The queue's number, declaring it (a record) the first time. (Named `Delete`d
    /// queues get a new number when declared again.)
    pub fn declare(&mut self, name: &str) -> u32 {
        if let Some(&n) = self.numbers.get(name) {
            return n;
        }
        let n = self.next_number;
        self.next_number += 1;
        self.numbers.insert(name.to_owned(), n);
        self.push(&Record::Declare {
            queue: n,
            name: name.to_owned(),
        });
        n
    }

    /// Appends a record (written by the next [`write`](Log::write) or
    /// [`sync`](Log::sync)). A `Delete` forgets the queue's number.
    pub fn append(&mut self, r: &Record) {
        match r {
            Record::Delete { queue } => self.numbers.retain(|_, n| n != queue),
            // A number given elsewhere (by whoever owns the queues once the log is
            // open): kept for the next segments' declarations.
            Record::Declare { queue, name } => {
                self.numbers.insert(name.clone(), *queue);
                self.next_number = self.next_number.max(queue + 1);
            }
            // Kept for the next segments' starts; a cleared chain stays cleared (it
            // overrides the config file's).
            Record::Chain { dest, text } => {
                self.chains.insert(dest.clone(), text.clone());
            }
            Record::Bindings { queue, patterns } => {
                self.bindings.insert(queue.clone(), patterns.clone());
            }
            _ => {}
        }
        self.push(r);
    }

    /// Each declared queue's number by name, and the next number free: for whoever
    /// gives numbers once the log is open (it then appends its own `Declare`s).
    pub fn numbers(&self) -> (&BTreeMap<String, u32>, u32) {
        (&self.numbers, self.next_number)
    }

    /// Tells the log the time, for the segments it keeps for their message ids.
    pub fn set_clock(&mut self, now: Instant) {
        self.now = now;
    }

    /// Whether the segment starting at `seg` is kept for the message ids in it.
    fn pinned(&self, seg: u64) -> bool {
        self.pins.get(&seg).is_some_and(|until| *until > self.now)
    }

    fn push(&mut self, r: &Record) {
        if let Record::Enqueue { headers, .. } = r {
            if !self.opts.keep_ids.is_zero() && agora_protocol::msg_id::msg_id(headers).is_some() {
                self.pins
                    .insert(self.active_first, self.now + self.opts.keep_ids);
            }
        }
        let before = self.buf.len();
        r.encode(&mut self.buf);
        let n = (self.buf.len() - before) as u64;
        self.live.track(self.active_first, self.active_len, r, n);
        self.active_len += n;
        self.next_seq += 1;
    }

    /// Whether the active segment has reached its size with what was appended: a
    /// [`write`](Log::write) now closes it and starts the next, so that one group of
    /// appends, however large, does not make a segment of its own size.
    pub fn is_full(&self) -> bool {
        self.active_len >= self.opts.segment_bytes
    }

    /// Writes what was appended; past the segment size, syncs the segment and starts
    /// the next one.
    ///
    /// Out of space (`ENOSPC`, or a quota), what was written of the appended bytes is cut
    /// off again and they stay appended, unwritten: the error says so
    /// ([`LogError::is_no_space`]), and a later `write` tries again.
    pub fn write(&mut self) -> Result<(), LogError> {
        let name = self.active().to_owned();
        if !self.buf.is_empty() {
            if let Err(e) = self.storage.append(&name, &self.buf) {
                if no_space(&e) {
                    let written = self.active_len - self.buf.len() as u64;
                    self.storage
                        .truncate(&name, written)
                        .map_err(io_err(&name))?;
                }
                return Err(io_err(&name)(e));
            }
            self.buf.clear();
        }
        if self.active_len >= self.opts.segment_bytes {
            // Not tried again, whatever the error: a sync that failed may have lost
            // pages, and a segment half started is not one to write into.
            self.storage
                .sync(&name)
                .map_err(|e| final_error(io_err(&name)(e)))?;
            self.start_segment().map_err(final_error)?;
        }
        Ok(())
    }

    /// Writes what was appended and makes it durable; then gives back the space of
    /// segments nothing live is in (see [`reclaim`](Log::reclaim)).
    pub fn sync(&mut self) -> Result<(), LogError> {
        self.write()?;
        let name = self.active().to_owned();
        self.storage
            .sync(&name)
            .map_err(|e| final_error(io_err(&name)(e)))?;
        self.reclaim()
    }

    /// Gives disk space back, oldest segment first, one at a time, the directory synced
    /// after each removal (so a crash can leave at most the oldest one behind, and that
    /// one holds nothing live). A segment with no live message goes. A segment whose
    /// live messages' records are less than a quarter of a segment, with at least two
    /// newer ones, has them copied forward (appended again with their delivery counts,
    /// synced) and then goes: one old unacknowledged message cannot keep a whole
    /// segment of acknowledged ones on disk. A segment kept for its message ids
    /// ([`LogOptions::keep_ids`]) stays, and so do the newer ones.
    pub fn reclaim(&mut self) -> Result<(), LogError> {
        while self.segments.len() >= 2 {
            let name = self.segments[0].clone();
            let seg = first_of(&name);
            if self.pinned(seg) {
                break;
            }
            self.pins.remove(&seg);
            let (count, bytes) = self.live.of(seg);
            if count == 0 {
                self.storage.remove(&name).map_err(io_err(&name))?;
                self.storage.sync_dir().map_err(io_err("."))?;
                self.segments.remove(0);
                self.live.segs.remove(&seg);
                self.sealed.remove(&seg);
                continue;
            }
            if self.segments.len() < 3 || bytes * 4 >= self.opts.segment_bytes {
                break;
            }
            let data = self.storage.read(&name).map_err(io_err(&name))?;
            let mut at = HEADER;
            while let Ok((r, n)) = Record::decode(data.get(at..).unwrap_or_default()) {
                at += n;
                if let Record::Enqueue {
                    queue,
                    id,
                    headers,
                    payload,
                    ..
                } = r
                {
                    if let Some(count) = self.live.is_live_in(seg, queue, id) {
                        self.push(&Record::Enqueue {
                            queue,
                            id,
                            count,
                            headers,
                            payload,
                        });
                    }
                }
            }
            self.write()?;
            let active = self.active().to_owned();
            self.storage.sync(&active).map_err(io_err(&active))?;
            if self.live.of(seg).0 > 0 {
                // Not all found again (it cannot be, but never loop on it).
                break;
            }
        }
        Ok(())
    }

    /// Bytes the segments take, what is appended and not yet written included.
    pub fn disk_bytes(&self) -> u64 {
        self.sealed.values().sum::<u64>() + self.active_len
    }

    /// Bytes free for the log on its storage.
    pub fn free_space(&self) -> io::Result<u64> {
        self.storage.free_space()
    }

    /// A segment's size (see [`LogOptions::segment_bytes`]).
    pub fn segment_bytes(&self) -> u64 {
        self.opts.segment_bytes
    }

    /// Bytes of the live messages' records, and the segments' total on disk.
    pub fn usage(&self) -> (u64, usize) {
        let live = self.live.segs.values().map(|(_, b)| b).sum();
        (live, self.segments.len())
    }

    fn active(&self) -> &str {
        self.segments.last().map_or("", String::as_str)
    }

    /// Creates the next segment (its header and a `Declare` for each queue), synced,
    /// its name durable.
    fn start_segment(&mut self) -> Result<(), LogError> {
        if !self.segments.is_empty() {
            self.sealed.insert(self.active_first, self.active_len);
        }
        let name = segment_name(self.next_seq);
        self.storage.create(&name).map_err(io_err(&name))?;
        self.segments.push(name.clone());
        self.active_first = self.next_seq;
        let mut bytes = header(self.next_seq).to_vec();
        let declares: Vec<Record> = self
            .numbers
            .iter()
            .map(|(name, &queue)| Record::Declare {
                queue,
                name: name.clone(),
            })
            .collect();
        let chains = self.chains.iter().map(|(dest, text)| Record::Chain {
            dest: dest.clone(),
            text: text.clone(),
        });
        let bindings = self
            .bindings
            .iter()
            .map(|(queue, patterns)| Record::Bindings {
                queue: queue.clone(),
                patterns: patterns.clone(),
            });
        for r in declares.into_iter().chain(chains).chain(bindings) {
            r.encode(&mut bytes);
            self.next_seq += 1;
        }
        self.active_len = bytes.len() as u64;
        self.storage.append(&name, &bytes).map_err(io_err(&name))?;
        self.storage.sync(&name).map_err(io_err(&name))?;
        self.storage.sync_dir().map_err(io_err("."))
    }

    /// The segments, oldest first.
    pub fn segments(&self) -> &[String] {
        &self.segments
    }
}
