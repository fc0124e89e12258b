//! Reading the log back at start: every segment in order, each record replayed into
//! its queue's messages and into what each segment still holds; a torn end cut off,
//! any other damage refused with the file and the offset.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::live::Liveness;
use super::*;

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
            if n == LOCK_FILE
                || n == super::super::storage::SET_ASIDE
                || n == super::super::storage::MQTT_DIR
                || n == super::super::storage::RAFT_DIR
            {
                continue;
            }
            if !n.ends_with(".seg") {
                return Err(LogError::Foreign {
                    file: n,
                    why: "only segments (<20 digits>.seg), LOCK, damaged/, mqtt/ and raft/ belong here"
                        .to_owned(),
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
        let mut sealed = BTreeMap::new();
        let last = segments.len().saturating_sub(1);
        let mut unfinished = false;
        // Segments holding message ids: kept a window from now (`LogOptions::keep_ids`).
        let mut with_ids = Vec::new();
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
                        live.track(first, at as u64, &r, n as u64);
                        if let Record::Enqueue { headers, .. } = &r {
                            if agora_protocol::msg_id::msg_id(headers).is_some() {
                                with_ids.push(first);
                            }
                        }
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
            sealed.insert(first, active_len);
        }
        if unfinished {
            segments.pop();
        }
        let mut numbers = BTreeMap::new();
        let mut next_number = 1;
        // A name declared under two numbers: the queue was deleted and made again, and
        // the machine stopped before the old one's `Delete` was stored (it comes after
        // the new `Declare` when the old queue's task is slower than the registry). The
        // newer number is the queue; the deletion of the older is finished here.
        let mut unfinished_deletes = Vec::new();
        for (n, q) in queues {
            next_number = next_number.max(n + 1);
            if q.deleted {
                continue;
            }
            if let Some(older) = numbers.insert(q.name.clone(), n) {
                unfinished_deletes.push(older);
            }
            if !q.seen.is_empty() {
                rec.seen.insert(q.name.clone(), q.seen);
            }
            rec.queues.insert(q.name, q.msgs.into_values().collect());
        }
        let now = Instant::now();
        let pins = match opts.keep_ids.is_zero() {
            true => BTreeMap::new(),
            false => with_ids
                .into_iter()
                .map(|seg| (seg, now + opts.keep_ids))
                .collect(),
        };
        let mut log = Log {
            pins,
            now,
            storage,
            opts,
            segments,
            active_len,
            buf: Vec::new(),
            next_seq,
            numbers,
            chains: rec.chains.clone(),
            bindings: rec.bindings.clone(),
            sealed,
            next_number,
            live,
            active_first: 0,
        };
        log.active_first = log.segments.last().map_or(0, |n| first_of(n));
        // The last segment is the one appended to, not a sealed one.
        log.sealed.remove(&log.active_first);
        if log.segments.is_empty() {
            log.start_segment()?;
        }
        for queue in unfinished_deletes {
            log.push(&Record::Delete { queue });
        }
        Ok((log, rec))
    }
}

/// What the repair at start set aside: the file moved (or cut), where it went, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetAside {
    /// The file.
    pub file: String,
    /// The offset from which its bytes were moved (0: all of it).
    pub from: u64,
    /// Where they are now.
    pub to: String,
    /// The damage that made the repair move them.
    pub why: String,
}

impl<S: Storage> Log<S> {
    /// [`Log::open`], setting aside instead of refusing: at the first damage (a bad
    /// record, a foreign file, a gap between segments), the rest of that file and every
    /// later segment are moved into the directory's `damaged` folder (nothing is
    /// deleted), and the log opens with what comes before. A foreign file is moved
    /// whole. Returns what was moved, for the operator.
    pub fn open_repairing(
        storage: Arc<S>,
        opts: LogOptions,
    ) -> Result<(Log<S>, Recovered, Vec<SetAside>), LogError> {
        let mut moved = Vec::new();
        // Each turn moves at least one file or part of one: bounded by the files.
        let most = storage.list().map_err(io_err("."))?.len() + 1;
        for _ in 0..=most {
            let e = match Log::open(storage.clone(), opts) {
                Ok((log, rec)) => return Ok((log, rec, moved)),
                Err(e) => e,
            };
            let (file, from, segments_after) = match &e {
                LogError::Damaged { file, offset, .. } => (file.clone(), *offset, true),
                LogError::Gap { file, .. } => (file.clone(), 0, true),
                LogError::Foreign { file, .. } => (file.clone(), 0, false),
                LogError::Io { .. } => return Err(e),
            };
            let why = e.to_string();
            let mut aside = vec![(file.clone(), from)];
            if segments_after {
                let names = storage.list().map_err(io_err("."))?;
                aside.extend(
                    names
                        .into_iter()
                        .filter(|n| n.ends_with(".seg") && *n > file)
                        .map(|n| (n, 0)),
                );
            }
            for (file, from) in aside {
                let to = storage.set_aside(&file, from).map_err(io_err(&file))?;
                moved.push(SetAside {
                    file,
                    from,
                    to,
                    why: why.clone(),
                });
            }
        }
        Err(LogError::Damaged {
            file: ".".to_owned(),
            offset: 0,
            why: "the repair did not converge".to_owned(),
        })
    }
}

/// One queue while the log is read back.
#[derive(Default)]
struct Replay {
    name: String,
    msgs: BTreeMap<u64, Kept>,
    /// Deleted: later `Deliver`s and `Ack`s of its messages (a dead-letter queue's
    /// record of a message moved out of it, appended after the deletion) change
    /// nothing; anything else naming it is damage.
    deleted: bool,
    /// The message ids of its `Enqueue`s, in order (a message copied forward appears
    /// twice).
    seen: Vec<String>,
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
    let undeclared =
        |q: u32| format!("a record for queue number {q}, never declared (or deleted before)");
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
            let q = queues
                .get_mut(&queue)
                .filter(|q| !q.deleted)
                .ok_or_else(|| undeclared(queue))?;
            rec.next_id = rec.next_id.max(id + 1);
            let count = q.msgs.get(&id).map_or(count, |m| m.count.max(count));
            if let Some(Ok(seen)) = agora_protocol::msg_id::msg_id(&headers) {
                q.seen.push(seen.to_owned());
            }
            let size = crate::message::Message::size_of(&headers, payload.len());
            q.msgs.insert(id, Kept { id, count, size });
        }
        Record::Deliver { queue, id, count } => {
            let q = queues.get_mut(&queue).ok_or_else(|| undeclared(queue))?;
            // The latest says (`NACK unseen` lowers a count).
            if let Some(m) = q.msgs.get_mut(&id) {
                m.count = count;
            }
        }
        Record::Ack { queue, id } => {
            let q = queues.get_mut(&queue).ok_or_else(|| undeclared(queue))?;
            q.msgs.remove(&id);
        }
        Record::Purge { queue } => {
            let q = queues
                .get_mut(&queue)
                .filter(|q| !q.deleted)
                .ok_or_else(|| undeclared(queue))?;
            q.msgs.clear();
        }
        Record::Chain { dest, text } => {
            rec.chains.insert(dest, text);
        }
        Record::Bindings { queue, patterns } => {
            rec.bindings.insert(queue, patterns);
        }
        Record::Delete { queue } => {
            let q = queues
                .get_mut(&queue)
                .filter(|q| !q.deleted)
                .ok_or_else(|| undeclared(queue))?;
            q.msgs.clear();
            q.seen.clear();
            q.deleted = true;
        }
    }
    Ok(())
}
