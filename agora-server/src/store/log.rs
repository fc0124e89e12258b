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
//! Each segment starts with a `Declare` for every queue there is, so the names of the
//! queues never depend on older segments.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::sync::Arc;

use agora_protocol::bytes::Bytes;
use agora_protocol::Headers;

use super::record::Record;
use super::storage::Storage;

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
}

impl Default for LogOptions {
    fn default() -> LogOptions {
        LogOptions {
            segment_bytes: 64 * 1024 * 1024,
        }
    }
}

/// Why the log could not be opened or written.
#[derive(Debug)]
pub enum LogError {
    /// The storage failed.
    Io {
        /// The file, or the directory (`.`).
        file: String,
        /// What failed.
        source: io::Error,
    },
    /// A file holds something other than what was written to it.
    Damaged {
        /// The file.
        file: String,
        /// Where the damage starts.
        offset: u64,
        /// What is wrong there.
        why: String,
    },
    /// A file in the directory is not one of the log's.
    Foreign {
        /// The file.
        file: String,
        /// Why it is not a segment.
        why: String,
    },
    /// Segments are missing between two that are there.
    Gap {
        /// The segment after the gap.
        file: String,
        /// The record number the segment before it ends at.
        expected: u64,
    },
}

impl std::fmt::Display for LogError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LogError::Io { file, source } => write!(f, "{file}: {source}"),
            LogError::Damaged { file, offset, why } => {
                write!(f, "{file}: damaged at byte {offset}: {why}")
            }
            LogError::Foreign { file, why } => write!(f, "{file}: not a segment of the log: {why}"),
            LogError::Gap { file, expected } => write!(
                f,
                "{file}: segments are missing before it (the one before ends at record {expected})"
            ),
        }
    }
}

impl std::error::Error for LogError {}

fn io_err(file: &str) -> impl FnOnce(io::Error) -> LogError + '_ {
    move |source| LogError::Io {
        file: file.to_owned(),
        source,
    }
}

/// A message as the log has it.
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
    /// Each queue's messages, in id order, by name.
    pub queues: BTreeMap<String, Vec<Stored>>,
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
}

/// One queue while the log is read back.
#[derive(Default)]
struct Replay {
    name: String,
    msgs: BTreeMap<u64, Stored>,
}

/// Where each live message's latest `Enqueue` is, and what each segment still holds:
/// what decides which segments can go.
#[derive(Default)]
struct Liveness {
    /// Per queue number, per message id: its segment (first record number), the size
    /// of its record, its delivery count as logged.
    msgs: HashMap<u32, HashMap<u64, LiveMsg, IdHash>>,
    /// Per segment (first record number): live messages and the bytes of their records.
    segs: BTreeMap<u64, (u64, u64)>,
}

/// Hashes message ids (a counter, never chosen by a client) with one multiplication
/// (Fibonacci hashing) instead of SipHash: tracking each record cost about 100 ns with
/// the default hasher, half the log's time per record (benches/store.rs).
#[derive(Default, Clone, Copy)]
struct IdHash;

impl std::hash::BuildHasher for IdHash {
    type Hasher = IdHasher;
    fn build_hasher(&self) -> IdHasher {
        IdHasher(0)
    }
}

struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

#[derive(Clone, Copy)]
struct LiveMsg {
    seg: u64,
    bytes: u64,
    count: u32,
}

impl Liveness {
    /// Takes note of a record of `bytes` bytes in the segment starting at `seg`.
    fn track(&mut self, seg: u64, r: &Record, bytes: u64) {
        match r {
            Record::Declare { .. } => {}
            Record::Enqueue {
                queue, id, count, ..
            } => {
                let prior = self.forget(*queue, *id);
                let count = prior.map_or(*count, |m| m.count.max(*count));
                self.msgs
                    .entry(*queue)
                    .or_default()
                    .insert(*id, LiveMsg { seg, bytes, count });
                let e = self.segs.entry(seg).or_default();
                e.0 += 1;
                e.1 += bytes;
            }
            Record::Deliver { queue, id, count } => {
                if let Some(m) = self.msgs.get_mut(queue).and_then(|q| q.get_mut(id)) {
                    m.count = m.count.max(*count);
                }
            }
            Record::Ack { queue, id } => {
                self.forget(*queue, *id);
            }
            Record::Purge { queue } | Record::Delete { queue } => {
                for (_, m) in self.msgs.remove(queue).unwrap_or_default() {
                    self.unlive(m);
                }
            }
        }
    }

    fn forget(&mut self, queue: u32, id: u64) -> Option<LiveMsg> {
        let m = self.msgs.get_mut(&queue)?.remove(&id)?;
        self.unlive(m);
        Some(m)
    }

    fn unlive(&mut self, m: LiveMsg) {
        if let Some(e) = self.segs.get_mut(&m.seg) {
            e.0 -= 1;
            e.1 -= m.bytes;
        }
    }

    /// Live messages and their bytes in the segment starting at `seg`.
    fn of(&self, seg: u64) -> (u64, u64) {
        self.segs.get(&seg).copied().unwrap_or_default()
    }

    /// Whether the record is the latest `Enqueue` of a live message in `seg`.
    fn is_live_in(&self, seg: u64, queue: u32, id: u64) -> Option<u32> {
        let m = self.msgs.get(&queue)?.get(&id)?;
        (m.seg == seg).then_some(m.count)
    }
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
    /// The next queue number to give.
    next_number: u32,
    /// What each segment still holds.
    live: Liveness,
    /// The first record number of the last segment (its name's number).
    active_first: u64,
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

/// The first record number a segment's header gives, or why it is not a segment.
fn read_header(name: &str, data: &[u8]) -> Result<u64, LogError> {
    let foreign = |why: &str| LogError::Foreign {
        file: name.to_owned(),
        why: why.to_owned(),
    };
    let stem = name
        .strip_suffix(".seg")
        .filter(|s| s.len() == 20 && s.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| foreign("its name is not <20 digits>.seg"))?;
    let h = data
        .get(..HEADER)
        .ok_or_else(|| foreign("shorter than a segment's header"))?;
    if &h[..8] != MAGIC {
        return Err(foreign("it does not start with AGORALOG"));
    }
    if crc32fast::hash(&h[..20]).to_le_bytes() != h[20..] {
        return Err(LogError::Damaged {
            file: name.to_owned(),
            offset: 0,
            why: "the header's checksum does not match".to_owned(),
        });
    }
    let version = u32::from_le_bytes(h[8..12].try_into().expect("4"));
    if version != VERSION {
        return Err(foreign(&format!(
            "format version {version}; this broker reads {VERSION}"
        )));
    }
    let first = u64::from_le_bytes(h[12..20].try_into().expect("8"));
    if stem.parse::<u64>().ok() != Some(first) {
        return Err(foreign("its name and its header disagree"));
    }
    Ok(first)
}

impl<S: Storage> Log<S> {
    /// Reads the log in `storage` back (cutting off a torn end), and opens it for
    /// appending; an empty directory starts an empty log.
    pub fn open(storage: Arc<S>, opts: LogOptions) -> Result<(Log<S>, Recovered), LogError> {
        let names = storage.list().map_err(io_err("."))?;
        let mut segments = Vec::new();
        for n in names {
            if n == LOCK_FILE {
                continue;
            }
            if !n.ends_with(".seg") {
                return Err(LogError::Foreign {
                    file: n,
                    why: "only segments (<20 digits>.seg) and LOCK belong here".to_owned(),
                });
            }
            segments.push(n);
        }
        segments.sort();
        let mut rec = Recovered {
            next_id: 1,
            ..Recovered::default()
        };
        let mut queues: BTreeMap<u32, Replay> = BTreeMap::new();
        let mut live = Liveness::default();
        let mut next_seq = 1;
        let mut active_len = 0;
        let last = segments.len().saturating_sub(1);
        let mut unfinished = false;
        for (i, name) in segments.iter().enumerate() {
            let data = storage.read(name).map_err(io_err(name))?;
            let first = match read_header(name, &data) {
                Ok(first) => first,
                // The last segment's header was never synced (the machine died while
                // starting it), so nothing in it was: it goes, as a torn end does.
                Err(e) if i == last && !any_record(data.get(HEADER..).unwrap_or_default()) => {
                    rec.cut = Some(Cut {
                        file: name.clone(),
                        at: 0,
                        bytes: data.len() as u64,
                        why: format!("a segment never finished: {e}"),
                    });
                    storage.remove(name).map_err(io_err(name))?;
                    storage.sync_dir().map_err(io_err("."))?;
                    unfinished = true;
                    break;
                }
                Err(e) => return Err(e),
            };
            if i > 0 && first != next_seq {
                return Err(LogError::Gap {
                    file: name.clone(),
                    expected: next_seq,
                });
            }
            next_seq = first;
            let mut at = HEADER;
            while at < data.len() {
                match Record::decode(&data[at..]) {
                    Ok((r, n)) => {
                        live.track(first, &r, n as u64);
                        replay(&mut queues, &mut rec, r).map_err(|why| LogError::Damaged {
                            file: name.clone(),
                            offset: at as u64,
                            why,
                        })?;
                        at += n;
                        next_seq += 1;
                        rec.records += 1;
                    }
                    Err(bad) => {
                        if i != last || whole_record_after(&data[at..]) {
                            return Err(LogError::Damaged {
                                file: name.clone(),
                                offset: at as u64,
                                why: bad.to_string(),
                            });
                        }
                        rec.cut = Some(Cut {
                            file: name.clone(),
                            at: at as u64,
                            bytes: (data.len() - at) as u64,
                            why: bad.to_string(),
                        });
                        storage.truncate(name, at as u64).map_err(io_err(name))?;
                        storage.sync(name).map_err(io_err(name))?;
                        break;
                    }
                }
            }
            rec.bytes += at as u64;
            rec.segments += 1;
            active_len = at as u64;
        }
        if unfinished {
            segments.pop();
        }
        let mut numbers = BTreeMap::new();
        let mut next_number = 1;
        for (n, q) in queues {
            numbers.insert(q.name.clone(), n);
            next_number = next_number.max(n + 1);
            rec.queues.insert(q.name, q.msgs.into_values().collect());
        }
        let mut log = Log {
            storage,
            opts,
            segments,
            active_len,
            buf: Vec::new(),
            next_seq,
            numbers,
            next_number,
            live,
            active_first: 0,
        };
        log.active_first = log.segments.last().map_or(0, |n| first_of(n));
        if log.segments.is_empty() {
            log.start_segment()?;
        }
        Ok((log, rec))
    }

    /// The queue's number, declaring it (a record) the first time.
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
        if let Record::Delete { queue } = r {
            self.numbers.retain(|_, n| n != queue);
        }
        self.push(r);
    }

    fn push(&mut self, r: &Record) {
        let before = self.buf.len();
        r.encode(&mut self.buf);
        let n = (self.buf.len() - before) as u64;
        self.active_len += n;
        self.next_seq += 1;
        self.live.track(self.active_first, r, n);
    }

    /// Writes what was appended; past the segment size, syncs the segment and starts
    /// the next one.
    pub fn write(&mut self) -> Result<(), LogError> {
        let name = self.active().to_owned();
        if !self.buf.is_empty() {
            self.storage
                .append(&name, &self.buf)
                .map_err(io_err(&name))?;
            self.buf.clear();
        }
        if self.active_len >= self.opts.segment_bytes {
            self.storage.sync(&name).map_err(io_err(&name))?;
            self.start_segment()?;
        }
        Ok(())
    }

    /// Writes what was appended and makes it durable; then gives back the space of
    /// segments nothing live is in (see [`reclaim`](Log::reclaim)).
    pub fn sync(&mut self) -> Result<(), LogError> {
        self.write()?;
        let name = self.active().to_owned();
        self.storage.sync(&name).map_err(io_err(&name))?;
        self.reclaim()
    }

    /// Gives disk space back, oldest segment first, one at a time, the directory synced
    /// after each removal (so a crash can leave at most the oldest one behind, and that
    /// one holds nothing live). A segment with no live message goes. A segment whose
    /// live messages' records are less than a quarter of a segment, with at least two
    /// newer ones, has them copied forward (appended again with their delivery counts,
    /// synced) and then goes: one old unacknowledged message cannot keep a whole
    /// segment of acknowledged ones on disk.
    pub fn reclaim(&mut self) -> Result<(), LogError> {
        while self.segments.len() >= 2 {
            let name = self.segments[0].clone();
            let seg = first_of(&name);
            let (count, bytes) = self.live.of(seg);
            if count == 0 {
                self.storage.remove(&name).map_err(io_err(&name))?;
                self.storage.sync_dir().map_err(io_err("."))?;
                self.segments.remove(0);
                self.live.segs.remove(&seg);
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
        for r in &declares {
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

/// Whether a whole, valid record starts anywhere in `rest` after its first byte: then
/// the bad bytes before it are not a torn end but damage.
fn whole_record_after(rest: &[u8]) -> bool {
    rest.len() > 1 && any_record(&rest[1..])
}

/// Whether a whole, valid record starts anywhere in `bytes`.
fn any_record(bytes: &[u8]) -> bool {
    (0..bytes.len()).any(|i| Record::decode(&bytes[i..]).is_ok())
}

/// Applies one record to the queues being rebuilt.
fn replay(
    queues: &mut BTreeMap<u32, Replay>,
    rec: &mut Recovered,
    r: Record,
) -> Result<(), String> {
    let undeclared = |q: u32| format!("a record for queue number {q}, never declared");
    match r {
        Record::Declare { queue, name } => {
            let q = queues.entry(queue).or_default();
            if !q.name.is_empty() && q.name != name {
                return Err(format!(
                    "queue number {queue} declared as '{}' and as '{name}'",
                    q.name
                ));
            }
            q.name = name;
        }
        Record::Enqueue {
            queue,
            id,
            count,
            headers,
            payload,
        } => {
            let q = queues.get_mut(&queue).ok_or_else(|| undeclared(queue))?;
            rec.next_id = rec.next_id.max(id + 1);
            let count = q.msgs.get(&id).map_or(count, |m| m.count.max(count));
            q.msgs.insert(
                id,
                Stored {
                    id,
                    count,
                    headers,
                    payload,
                },
            );
        }
        Record::Deliver { queue, id, count } => {
            let q = queues.get_mut(&queue).ok_or_else(|| undeclared(queue))?;
            if let Some(m) = q.msgs.get_mut(&id) {
                m.count = m.count.max(count);
            }
        }
        Record::Ack { queue, id } => {
            let q = queues.get_mut(&queue).ok_or_else(|| undeclared(queue))?;
            q.msgs.remove(&id);
        }
        Record::Purge { queue } => {
            let q = queues.get_mut(&queue).ok_or_else(|| undeclared(queue))?;
            q.msgs.clear();
        }
        Record::Delete { queue } => {
            queues.remove(&queue).ok_or_else(|| undeclared(queue))?;
        }
    }
    Ok(())
}
