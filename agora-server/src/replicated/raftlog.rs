//! A Raft member's log on disk: one append-only file per replicated queue, holding what
//! each `Ready` asked to be written (entries, and the hard state: term, vote, commit),
//! read back into a [`Disk`] when the node starts.
//!
//! ```text
//! file     = record*
//! record   = len:u32 crc:u32 body           ; little-endian; crc = CRC-32 (IEEE) of body
//! body     = form:u8 [snapshot] [term vote commit:u64] count:u32 entry*
//!            ; form 0: entries; 1: hard state, entries; 2: snapshot, hard state, entries
//! snapshot = index term:u64 voters:u32 u64* learners:u32 u64* data:bytes
//! entry    = kind:u8 term:u64 index:u64 data:bytes context:bytes   ; bytes = len:u32 byte*
//! ```
//!
//! Entries replace what the log held from their first index on, as raft-rs appends
//! them. A snapshot (the queue's state up to its index: a compaction, or a leader's
//! state given to a member that was behind) replaces the whole log, so a record with
//! one only ever starts a file: the file is then written anew beside the old one,
//! synced, and renamed over it ([`RaftLog::write`]), so that a crash leaves one or the
//! other, whole. A member's own compaction writes the new file (`<log>.compact`) on a
//! blocking thread while the log goes on taking appends ([`RaftLog::begin_rewrite`]),
//! then appends what the member holds after its snapshot by then, syncs, and renames
//! ([`RaftLog::finish_rewrite`]); a rewrite left unfinished is removed at start. A write counts once [`RaftLog::sync`] returned (`fdatasync`): the member sends
//! its votes and acknowledgements only then. A crash can leave the last record cut short
//! or half written: that tail was never synced, so it is cut off at start. A bad record
//! with more after it is damage, not a crash, and the node refuses to start (a member
//! that forgot what it acknowledged would break Raft's promise).

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;

use std::path::PathBuf;

use raft::eraftpb::{ConfState, Entry, EntryType, Snapshot};

use super::replica::{Disk, Writes};

/// A log written anew is synced every this many bytes as it is written (see
/// [`RaftLog::begin_rewrite`]).
const REWRITE_PIECE: usize = 8 << 20;

const FRAME: usize = 8;
/// The longest record (its length is a `u32`): a snapshot is a queue's messages.
const MAX_RECORD: usize = u32::MAX as usize;

/// A member's log file, open for appending.
pub(crate) struct RaftLog {
    path: PathBuf,
    file: File,
    buf: Vec<u8>,
}

fn bad(path: &Path, at: u64, why: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{}: {why} at byte {at}", path.display()),
    )
}

impl RaftLog {
    /// Opens (or creates) the log at `path` and reads it back. Returns it with what it
    /// holds, and how many bytes of a torn last record were cut off.
    pub fn open(path: &Path) -> io::Result<(RaftLog, Disk, u64)> {
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)?;
        // A rewrite a stop or a crash left unfinished: the log is the old file, whole.
        let _ = std::fs::remove_file(rewrite_path(path));
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let mut disk = Disk::default();
        let mut at = 0usize;
        let mut torn = 0u64;
        while at < bytes.len() {
            let rest = &bytes[at..];
            let whole = rest.len() >= FRAME && {
                let len = u32::from_le_bytes(rest[..4].try_into().expect("4")) as usize;
                len <= MAX_RECORD && rest.len() >= FRAME + len
            };
            if !whole {
                torn = rest.len() as u64;
                break;
            }
            let len = u32::from_le_bytes(rest[..4].try_into().expect("4")) as usize;
            let crc = u32::from_le_bytes(rest[4..FRAME].try_into().expect("4"));
            let body = &rest[FRAME..FRAME + len];
            let last = FRAME + len == rest.len();
            if crc32fast::hash(body) != crc {
                if last {
                    torn = rest.len() as u64;
                    break;
                }
                return Err(bad(path, at as u64, "a damaged record"));
            }
            read_body(body, &mut disk).map_err(|why| bad(path, at as u64, why))?;
            at += FRAME + len;
        }
        if torn > 0 {
            file.set_len(at as u64)?;
            file.sync_data()?;
        }
        file.seek(SeekFrom::End(0))?;
        let log = RaftLog {
            path: path.to_owned(),
            file,
            buf: Vec::new(),
        };
        Ok((log, disk, torn))
    }

    /// Writes what a `Ready` asked (or a compaction) as one record. Entries and a
    /// hard state are appended (not synced: [`sync`](RaftLog::sync)); with a snapshot,
    /// the file is written anew and is on disk once this returns.
    pub fn write(&mut self, w: &Writes) -> io::Result<()> {
        if w.is_empty() {
            return Ok(());
        }
        encode(&mut self.buf, w)?;
        let Some(_) = &w.snapshot else {
            return self.file.write_all(&self.buf);
        };
        let mut tmp = self.path.clone().into_os_string();
        tmp.push(".new");
        let tmp = PathBuf::from(tmp);
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        f.write_all(&self.buf)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            File::open(dir)?.sync_all()?;
        }
        self.file = OpenOptions::new().append(true).open(&self.path)?;
        // Its memory back: a snapshot is as large as the queue.
        self.buf = Vec::new();
        Ok(())
    }

    /// Everything written so far is on disk once this returns.
    pub fn sync(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }

    /// The log file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Starts writing the log at `path` anew beside it (`<path>.compact`), from a
    /// compaction's `w` (a snapshot, the entries after it, the hard state), synced; on
    /// any thread, while the log itself goes on taking appends. Nothing changes for
    /// the log until [`finish_rewrite`](RaftLog::finish_rewrite).
    pub fn begin_rewrite(path: &Path, w: &Writes) -> io::Result<Rewrite> {
        let tmp = rewrite_path(path);
        let mut buf = Vec::new();
        encode(&mut buf, w)?;
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        // Synced a piece at a time: the log's own syncs meanwhile (each confirm waits
        // for one) then wait behind at most a piece of it, not the whole file.
        for piece in buf.chunks(REWRITE_PIECE) {
            f.write_all(piece)?;
            f.sync_data()?;
        }
        f.sync_all()?;
        Ok(Rewrite { tmp })
    }

    /// Ends a rewrite: `rest` (every entry after the snapshot the member holds now, and
    /// its hard state: what was appended meanwhile, and anything since replaced) is
    /// appended to the new file, which is synced and renamed over the log, and is the
    /// log from then on. A crash before the rename leaves the old log, whole.
    pub fn finish_rewrite(&mut self, r: Rewrite, rest: &Writes) -> io::Result<Replaced> {
        encode(&mut self.buf, rest)?;
        let mut f = OpenOptions::new().append(true).open(&r.tmp)?;
        f.write_all(&self.buf)?;
        f.sync_data()?;
        std::fs::rename(&r.tmp, &self.path)?;
        let old = std::mem::replace(&mut self.file, f);
        if let Some(dir) = self.path.parent() {
            File::open(dir)?.sync_all()?;
        }
        Ok(Replaced(old))
    }
}

/// The log a rewrite replaced, renamed over and still open: closing it frees its
/// blocks, which for a large log takes long (about a second for 2 GB on ext4), so
/// its owner closes it where nothing waits ([`Replaced::close`]).
#[must_use = "closing it frees the old log's blocks; close it off the queue's task"]
pub(crate) struct Replaced(File);

impl Replaced {
    /// Closes it (frees its blocks).
    pub fn close(self) {
        drop(self.0);
    }
}

/// A log being written anew ([`RaftLog::begin_rewrite`]).
pub(crate) struct Rewrite {
    tmp: PathBuf,
}

impl Rewrite {
    /// Gives it up (the log changed under it): its file goes.
    pub fn abandon(self) {
        let _ = std::fs::remove_file(&self.tmp);
    }
}

/// Where the log at `path` is written anew.
fn rewrite_path(path: &Path) -> PathBuf {
    let mut tmp = path.to_owned().into_os_string();
    tmp.push(".compact");
    PathBuf::from(tmp)
}

/// `w` as one record in `b`.
fn encode(b: &mut Vec<u8>, w: &Writes) -> io::Result<()> {
    b.clear();
    b.extend_from_slice(&[0; FRAME]);
    let state = w.state.as_ref();
    match (&w.snapshot, state) {
        (Some(snap), Some(hs)) => {
            b.push(2);
            let meta = snap.get_metadata();
            b.extend_from_slice(&meta.index.to_le_bytes());
            b.extend_from_slice(&meta.term.to_le_bytes());
            let cs = meta.get_conf_state();
            for ids in [&cs.voters, &cs.learners] {
                b.extend_from_slice(&(ids.len() as u32).to_le_bytes());
                for id in ids.iter() {
                    b.extend_from_slice(&id.to_le_bytes());
                }
            }
            let len = u32::try_from(snap.data.len()).map_err(|_| {
                io::Error::new(io::ErrorKind::InvalidInput, "a snapshot of 4 GiB or more")
            })?;
            b.extend_from_slice(&len.to_le_bytes());
            b.extend_from_slice(&snap.data);
            for v in [hs.term, hs.vote, hs.commit] {
                b.extend_from_slice(&v.to_le_bytes());
            }
        }
        (Some(_), None) => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a snapshot without its hard state",
            ))
        }
        (None, Some(hs)) => {
            b.push(1);
            for v in [hs.term, hs.vote, hs.commit] {
                b.extend_from_slice(&v.to_le_bytes());
            }
        }
        (None, None) => b.push(0),
    }
    let entries = &w.entries;
    b.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for e in entries {
        b.push(e.get_entry_type() as i32 as u8);
        b.extend_from_slice(&e.term.to_le_bytes());
        b.extend_from_slice(&e.index.to_le_bytes());
        for part in [&e.data[..], &e.context[..]] {
            b.extend_from_slice(&(part.len() as u32).to_le_bytes());
            b.extend_from_slice(part);
        }
    }
    let len = b.len() - FRAME;
    if len > MAX_RECORD {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("a Raft record of {len} bytes (at most {MAX_RECORD})"),
        ));
    }
    let crc = crc32fast::hash(&b[FRAME..]);
    b[..4].copy_from_slice(&(len as u32).to_le_bytes());
    b[4..FRAME].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

fn read_body(body: &[u8], disk: &mut Disk) -> Result<(), &'static str> {
    let mut at = 0usize;
    let mut take = |n: usize| -> Result<&[u8], &'static str> {
        let b = body
            .get(at..at + n)
            .ok_or("a record shorter than its fields")?;
        at += n;
        Ok(b)
    };
    let u64_of = |b: &[u8]| u64::from_le_bytes(b.try_into().expect("8"));
    let form = take(1)?[0];
    if form > 2 {
        return Err("a record with an unknown form");
    }
    if form == 2 {
        let mut snap = Snapshot::default();
        let meta = snap.mut_metadata();
        meta.index = u64_of(take(8)?);
        meta.term = u64_of(take(8)?);
        let mut cs = ConfState::default();
        for learners in [false, true] {
            let n = u32::from_le_bytes(take(4)?.try_into().expect("4"));
            let mut ids = Vec::new();
            for _ in 0..n {
                ids.push(u64_of(take(8)?));
            }
            match learners {
                false => cs.voters = ids,
                true => cs.learners = ids,
            }
        }
        meta.set_conf_state(cs);
        let n = u32::from_le_bytes(take(4)?.try_into().expect("4")) as usize;
        snap.data = take(n)?.to_vec().into();
        disk.restore(snap);
    }
    if form >= 1 {
        disk.hard_state.term = u64_of(take(8)?);
        disk.hard_state.vote = u64_of(take(8)?);
        disk.hard_state.commit = u64_of(take(8)?);
    }
    let count = u32::from_le_bytes(take(4)?.try_into().expect("4"));
    let mut entries = Vec::new();
    for _ in 0..count {
        let kind = match take(1)?[0] {
            0 => EntryType::EntryNormal,
            1 => EntryType::EntryConfChange,
            2 => EntryType::EntryConfChangeV2,
            _ => return Err("an entry of an unknown kind"),
        };
        let mut e = Entry::default();
        e.set_entry_type(kind);
        e.term = u64_of(take(8)?);
        e.index = u64_of(take(8)?);
        let n = u32::from_le_bytes(take(4)?.try_into().expect("4")) as usize;
        e.data = take(n)?.to_vec().into();
        let n = u32::from_le_bytes(take(4)?.try_into().expect("4")) as usize;
        e.context = take(n)?.to_vec().into();
        entries.push(e);
    }
    if at != body.len() {
        return Err("a record longer than its fields");
    }
    if let Some(first) = entries.first() {
        let expected = disk.base() + disk.entries.len() as u64 + 1;
        if first.index == 0 || first.index > expected {
            return Err("entries that leave a gap in the log");
        }
    }
    disk.append(&entries);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::eraftpb::HardState;

    fn entry(term: u64, index: u64, data: &[u8]) -> Entry {
        Entry {
            term,
            index,
            data: data.to_vec().into(),
            ..Default::default()
        }
    }

    fn w(entries: &[Entry], state: Option<&HardState>) -> Writes {
        Writes {
            snapshot: None,
            entries: entries.to_vec(),
            state: state.cloned(),
        }
    }

    /// (term, index, data) of each entry on `disk`.
    fn terms_indexes_data(disk: &Disk) -> Vec<(u64, u64, Vec<u8>)> {
        disk.entries
            .iter()
            .map(|e| (e.term, e.index, e.data.to_vec()))
            .collect()
    }

    fn dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "agora-raftlog-{}-{}",
            std::process::id(),
            rand_suffix()
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn rand_suffix() -> u64 {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        N.fetch_add(1, Ordering::SeqCst)
    }

    #[test]
    fn what_was_written_reads_back_with_later_entries_replacing_a_suffix() {
        let d = dir();
        let path = d.join("orders.log");
        let (mut log, disk, torn) = RaftLog::open(&path).unwrap();
        assert!(disk.entries.is_empty() && torn == 0);
        let hs = HardState {
            term: 2,
            vote: 1,
            commit: 0,
            ..Default::default()
        };
        log.write(&w(
            &[entry(1, 1, b""), entry(2, 2, b"a"), entry(2, 3, b"b")],
            Some(&hs),
        ))
        .unwrap();
        // A new leader's entries replace index 3 on.
        log.write(&w(&[entry(3, 3, b"c"), entry(3, 4, b"d")], None))
            .unwrap();
        let hs2 = HardState {
            term: 3,
            vote: 2,
            commit: 4,
            ..Default::default()
        };
        log.write(&w(&[], Some(&hs2))).unwrap();
        log.sync().unwrap();
        drop(log);
        let (_, disk, torn) = RaftLog::open(&path).unwrap();
        assert_eq!(torn, 0);
        let got = terms_indexes_data(&disk);
        assert_eq!(
            got,
            vec![
                (1, 1, vec![]),
                (2, 2, b"a".to_vec()),
                (3, 3, b"c".to_vec()),
                (3, 4, b"d".to_vec())
            ]
        );
        assert_eq!(
            (
                disk.hard_state.term,
                disk.hard_state.vote,
                disk.hard_state.commit
            ),
            (3, 2, 4)
        );
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn a_log_written_anew_in_the_background_keeps_what_was_appended_meanwhile() {
        let d = dir();
        let path = d.join("q.log");
        let (mut log, ..) = RaftLog::open(&path).unwrap();
        let hs = |commit: u64| HardState {
            term: 2,
            vote: 1,
            commit,
            ..Default::default()
        };
        let first: Vec<Entry> = (1..=4).map(|i| entry(2, i, b"x")).collect();
        log.write(&w(&first, Some(&hs(4)))).unwrap();
        log.sync().unwrap();
        // Compacted at 3: the snapshot and entry 4, written beside the log.
        let mut snap = Snapshot::default();
        snap.mut_metadata().index = 3;
        snap.mut_metadata().term = 2;
        snap.data = b"state at 3".to_vec().into();
        let compaction = Writes {
            snapshot: Some(snap),
            entries: vec![entry(2, 4, b"x")],
            state: Some(hs(4)),
        };
        let _unfinished = RaftLog::begin_rewrite(&path, &compaction).unwrap();
        // Meanwhile the log takes 5 and 6, and a new leader's 6 replaces it.
        log.write(&w(&[entry(2, 5, b"y"), entry(2, 6, b"z")], Some(&hs(5))))
            .unwrap();
        log.write(&w(&[entry(3, 6, b"Z")], None)).unwrap();
        log.sync().unwrap();
        // A crash now: the old log, whole, and the unfinished rewrite gone.
        let (_, disk, _) = RaftLog::open(&path).unwrap();
        assert_eq!((disk.base(), disk.entries.len()), (0, 6));
        assert!(!rewrite_path(&path).exists());
        let (mut log, ..) = RaftLog::open(&path).unwrap();
        // Again, finished this time with what the member holds after its snapshot.
        let rewrite = RaftLog::begin_rewrite(&path, &compaction).unwrap();
        let now = Writes {
            snapshot: None,
            entries: vec![entry(2, 4, b"x"), entry(2, 5, b"y"), entry(3, 6, b"Z")],
            state: Some(hs(6)),
        };
        log.finish_rewrite(rewrite, &now).unwrap().close();
        // Appends go to the new file.
        log.write(&w(&[entry(3, 7, b"w")], None)).unwrap();
        log.sync().unwrap();
        drop(log);
        let (_, disk, torn) = RaftLog::open(&path).unwrap();
        assert_eq!((disk.base(), torn), (3, 0));
        assert_eq!(&disk.snapshot.data[..], b"state at 3");
        let got = terms_indexes_data(&disk);
        assert_eq!(
            got,
            vec![
                (2, 4, b"x".to_vec()),
                (2, 5, b"y".to_vec()),
                (3, 6, b"Z".to_vec()),
                (3, 7, b"w".to_vec())
            ]
        );
        assert_eq!(disk.hard_state.commit, 6);
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn a_log_written_anew_in_pieces_reads_back_whole() {
        let d = dir();
        let path = d.join("q.log");
        let (mut log, ..) = RaftLog::open(&path).unwrap();
        log.write(&w(&[entry(1, 1, b"a"), entry(1, 2, b"b")], None))
            .unwrap();
        log.sync().unwrap();
        // A snapshot of two and a half pieces, each byte telling where it is.
        let data: Vec<u8> = (0..REWRITE_PIECE * 5 / 2 + 3)
            .map(|i| (i % 251) as u8)
            .collect();
        let mut snap = Snapshot::default();
        snap.mut_metadata().index = 2;
        snap.mut_metadata().term = 1;
        snap.data = data.clone().into();
        let hs = HardState {
            term: 1,
            vote: 1,
            commit: 2,
            ..Default::default()
        };
        let compaction = Writes {
            snapshot: Some(snap),
            entries: Vec::new(),
            state: Some(hs),
        };
        let rewrite = RaftLog::begin_rewrite(&path, &compaction).unwrap();
        let rest = Writes {
            snapshot: None,
            entries: vec![entry(1, 3, b"c")],
            state: None,
        };
        let old = log.finish_rewrite(rewrite, &rest).unwrap();
        // The new log is in place before the old one is closed.
        log.write(&w(&[entry(1, 4, b"d")], None)).unwrap();
        log.sync().unwrap();
        old.close();
        drop(log);
        let (_, disk, torn) = RaftLog::open(&path).unwrap();
        assert_eq!((disk.base(), torn), (2, 0));
        assert!(disk.snapshot.data[..] == data[..], "the snapshot, whole");
        assert_eq!(
            terms_indexes_data(&disk),
            vec![(1, 3, b"c".to_vec()), (1, 4, b"d".to_vec())]
        );
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn a_torn_last_record_is_cut_off_and_damage_before_the_end_refuses() {
        let d = dir();
        let path = d.join("q.log");
        let (mut log, ..) = RaftLog::open(&path).unwrap();
        log.write(&w(&[entry(1, 1, b"kept")], None)).unwrap();
        log.write(&w(&[entry(1, 2, b"torn")], None)).unwrap();
        log.sync().unwrap();
        drop(log);
        let whole = std::fs::read(&path).unwrap();
        let first = FRAME + u32::from_le_bytes(whole[..4].try_into().unwrap()) as usize;
        // Every cut inside the second record, and a flipped byte in it: cut off.
        for cut in first + 1..whole.len() {
            std::fs::write(&path, &whole[..cut]).unwrap();
            let (_, disk, torn) = RaftLog::open(&path).unwrap();
            assert_eq!(disk.entries.len(), 1, "cut at {cut}");
            assert_eq!(torn, (cut - first) as u64);
            assert_eq!(std::fs::metadata(&path).unwrap().len(), first as u64);
        }
        let mut flipped = whole.clone();
        *flipped.last_mut().unwrap() ^= 1;
        std::fs::write(&path, &flipped).unwrap();
        let (mut log, disk, _) = RaftLog::open(&path).unwrap();
        assert_eq!(disk.entries.len(), 1);
        // Written after the cut, it reads back.
        log.write(&w(&[entry(1, 2, b"again")], None)).unwrap();
        log.sync().unwrap();
        drop(log);
        assert_eq!(RaftLog::open(&path).unwrap().1.entries.len(), 2);
        // Damage in the first record, with a whole one after it: refused, by name.
        let mut damaged = whole.clone();
        damaged[FRAME + 2] ^= 1;
        std::fs::write(&path, &damaged).unwrap();
        let e = RaftLog::open(&path).err().expect("refused");
        assert!(e.to_string().contains("a damaged record at byte 0"), "{e}");
        assert!(e.to_string().contains("q.log"), "{e}");
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn a_group_on_disk_comes_back_from_its_files() {
        use crate::replicated::replica::{Out, Replica};
        let d = dir();
        let open = |id: u64| RaftLog::open(&d.join(format!("{id}.log"))).unwrap();
        let mut logs: Vec<RaftLog> = (1..=3).map(|id| open(id).0).collect();
        let mut rs: Vec<Replica> = (1..=3)
            .map(|id| {
                Replica::new(id, &[1, 2, 3], Disk::default(), 4 + 3 * id as usize, 3).unwrap()
            })
            .collect();
        let mut applied = vec![0usize; 3];
        let mut run = |rs: &mut Vec<Replica>, logs: &mut Vec<RaftLog>| {
            rs.iter_mut().for_each(Replica::tick);
            for _ in 0..50 {
                let mut mail = Vec::new();
                for (i, r) in rs.iter_mut().enumerate() {
                    let mut out = r.ready();
                    logs[i].write(&r.take_writes()).unwrap();
                    logs[i].sync().unwrap();
                    out.extend(r.synced());
                    for o in out {
                        match o {
                            Out::Send(m, st) => mail.push((m, st)),
                            Out::Apply { .. } => applied[i] += 1,
                            Out::Restore { .. } => panic!("nothing was compacted"),
                        }
                    }
                }
                if mail.is_empty() {
                    break;
                }
                for (m, st) in mail {
                    rs[m.to as usize - 1].step(m, st);
                }
            }
        };
        for _ in 0..30 {
            run(&mut rs, &mut logs);
        }
        let l = (0..3).find(|&i| rs[i].is_leader()).expect("a leader");
        for v in 0..20u8 {
            rs[l].propose(vec![v]).unwrap();
        }
        for _ in 0..5 {
            run(&mut rs, &mut logs);
        }
        assert_eq!(applied, vec![20; 3]);
        let term = rs[l].term();
        drop((rs, logs));
        for id in 1..=3u64 {
            let (_, disk, torn) = open(id);
            assert_eq!(torn, 0);
            assert_eq!(disk.hard_state.term, term);
            let data: Vec<u8> = disk
                .entries
                .iter()
                .filter(|e| !e.data.is_empty())
                .map(|e| e.data[0])
                .collect();
            assert_eq!(data, (0..20).collect::<Vec<u8>>(), "member {id}");
            let again = Replica::new(id, &[1, 2, 3], disk, 7, 3).unwrap();
            assert_eq!(again.term(), term);
        }
        std::fs::remove_dir_all(d).unwrap();
    }
}
