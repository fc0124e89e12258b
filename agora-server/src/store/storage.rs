//! Where the log's bytes go: the files of one directory, reached through [`Storage`] so
//! that tests can crash the disk. [`Disk`] is the real one (`std::fs`, `fdatasync`);
//! [`SimDisk`] keeps each file in memory with how much of it is synced, and on a crash
//! keeps the synced part and a torn remainder of the rest.
//!
//! Methods take `&self`: the log's writer appends while its sync thread syncs.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

/// A directory of files that can be appended to and synced.
pub trait Storage: Send + Sync {
    /// The names of the files in the directory.
    fn list(&self) -> io::Result<Vec<String>>;
    /// A file's whole content.
    fn read(&self, name: &str) -> io::Result<Vec<u8>>;
    /// `len` bytes of a file from byte `offset` (all of them, or an error).
    fn read_at(&self, name: &str, offset: u64, len: usize) -> io::Result<Vec<u8>>;
    /// Creates an empty file; its name is durable after the next [`sync_dir`].
    ///
    /// [`sync_dir`]: Storage::sync_dir
    fn create(&self, name: &str) -> io::Result<()>;
    /// Appends to a file (all of `bytes`, or an error).
    fn append(&self, name: &str, bytes: &[u8]) -> io::Result<()>;
    /// Makes what was appended to a file durable (`fdatasync`).
    fn sync(&self, name: &str) -> io::Result<()>;
    /// Makes the directory's list of names durable.
    fn sync_dir(&self) -> io::Result<()>;
    /// Cuts a file back to `len` bytes (durable after its next [`sync`]).
    ///
    /// [`sync`]: Storage::sync
    fn truncate(&self, name: &str, len: u64) -> io::Result<()>;
    /// Removes a file (durable after the next [`sync_dir`]).
    ///
    /// [`sync_dir`]: Storage::sync_dir
    fn remove(&self, name: &str) -> io::Result<()>;
    /// Bytes free for the log on the file system the directory is on.
    fn free_space(&self) -> io::Result<u64>;
    /// Moves the bytes of file `name` from `from` on out of the log's way, durably, into
    /// the directory's [`SET_ASIDE`] folder as `<name>.from-<from>` (all of it, and the
    /// file removed, when `from` is 0; else the file is cut back to `from`). Returns the
    /// path it went to. The repair at start uses it; nothing is deleted.
    fn set_aside(&self, name: &str, from: u64) -> io::Result<String>;
}

/// The folder of the data directory that a repair moves damaged parts into.
pub const SET_ASIDE: &str = "damaged";

/// The folder of the data directory where the MQTT front door keeps its retained
/// messages and persistent sessions (`crate::mqtt::state`), beside the log.
pub const MQTT_DIR: &str = "mqtt";
/// The directory of the data directory where replicated queues keep their Raft logs.
pub const RAFT_DIR: &str = "raft";

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The files of a real directory.
pub struct Disk {
    dir: PathBuf,
    /// Files open for appending (and syncing), by name.
    open: Mutex<HashMap<String, Arc<File>>>,
}

impl Disk {
    /// The directory `dir`, which must exist.
    pub fn new(dir: &Path) -> Disk {
        Disk {
            dir: dir.to_owned(),
            open: Mutex::new(HashMap::new()),
        }
    }

    fn file(&self, name: &str) -> io::Result<Arc<File>> {
        let mut open = lock(&self.open);
        if let Some(f) = open.get(name) {
            return Ok(f.clone());
        }
        let f = Arc::new(OpenOptions::new().append(true).open(self.dir.join(name))?);
        open.insert(name.to_owned(), f.clone());
        Ok(f)
    }
}

impl Storage for Disk {
    fn list(&self) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for e in std::fs::read_dir(&self.dir)? {
            names.push(e?.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        Ok(names)
    }

    fn read(&self, name: &str) -> io::Result<Vec<u8>> {
        let mut v = Vec::new();
        File::open(self.dir.join(name))?.read_to_end(&mut v)?;
        Ok(v)
    }

    fn read_at(&self, name: &str, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        use std::os::unix::fs::FileExt;
        let mut v = vec![0; len];
        File::open(self.dir.join(name))?.read_exact_at(&mut v, offset)?;
        Ok(v)
    }

    fn create(&self, name: &str) -> io::Result<()> {
        let f = OpenOptions::new()
            .append(true)
            .create_new(true)
            .open(self.dir.join(name))?;
        lock(&self.open).insert(name.to_owned(), Arc::new(f));
        Ok(())
    }

    fn append(&self, name: &str, bytes: &[u8]) -> io::Result<()> {
        (&*self.file(name)?).write_all(bytes)
    }

    fn sync(&self, name: &str) -> io::Result<()> {
        self.file(name)?.sync_data()
    }

    fn sync_dir(&self) -> io::Result<()> {
        File::open(&self.dir)?.sync_all()
    }

    fn truncate(&self, name: &str, len: u64) -> io::Result<()> {
        self.file(name)?.set_len(len)
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        lock(&self.open).remove(name);
        std::fs::remove_file(self.dir.join(name))
    }

    fn free_space(&self) -> io::Result<u64> {
        let st = rustix::fs::statvfs(&self.dir)?;
        Ok(st.f_bavail.saturating_mul(st.f_frsize))
    }

    fn set_aside(&self, name: &str, from: u64) -> io::Result<String> {
        let aside = self.dir.join(SET_ASIDE);
        std::fs::create_dir_all(&aside)?;
        let data = self.read(name)?;
        let to = aside.join(format!("{name}.from-{from}"));
        {
            let mut f = File::create(&to)?;
            std::io::Write::write_all(&mut f, data.get(from as usize..).unwrap_or_default())?;
            f.sync_all()?;
        }
        File::open(&aside)?.sync_all()?;
        if from == 0 {
            self.remove(name)?;
        } else {
            self.truncate(name, from)?;
            self.sync(name)?;
        }
        self.sync_dir()?;
        Ok(to.display().to_string())
    }
}

/// One file of a [`SimDisk`].
#[derive(Clone, Default)]
struct SimFile {
    data: Vec<u8>,
    /// How many of `data`'s bytes a crash keeps for certain.
    synced: usize,
}

#[derive(Default)]
struct SimState {
    files: BTreeMap<String, SimFile>,
    /// Names whose existence (or absence) a crash keeps for certain: the directory as
    /// of the last `sync_dir`, with each file's synced bytes as they are now.
    durable_names: Vec<String>,
    /// Removed since the last `sync_dir`, with what a crash could bring back.
    ghosts: BTreeMap<String, SimFile>,
    /// Bytes all files may hold; past it an append fails with `StorageFull`.
    space: Option<usize>,
    /// What a repair set aside, by where it went.
    set_aside: BTreeMap<String, Vec<u8>>,
    /// The next so many appends fail (an I/O error) and write nothing.
    fail_appends: u32,
    /// The next so many syncs fail.
    fail_syncs: u32,
    /// Appends, syncs and directory syncs done.
    ops: u64,
    /// File syncs done.
    syncs: u64,
    /// After this many operations the machine is dead: every call fails until
    /// [`SimDisk::crash`].
    dies_at: Option<u64>,
}

/// A disk in memory that knows what was synced. [`crash`](SimDisk::crash) keeps what a
/// real disk must keep (synced bytes; names as of the last directory sync) and, chosen
/// by the caller's seed, some or none of the rest, the last part of it possibly
/// garbled: a torn write. Writes and syncs can be made to fail, and space to run out.
#[derive(Clone, Default)]
pub struct SimDisk {
    state: Arc<Mutex<SimState>>,
    /// While true, syncs wait (a slow disk, on demand).
    gate: Arc<(Mutex<bool>, std::sync::Condvar)>,
}

impl SimDisk {
    /// An empty disk.
    pub fn new() -> SimDisk {
        SimDisk::default()
    }

    /// The machine loses power. `seed` picks, for each file, how much of what was not
    /// synced survives, and whether its last bytes are garbage; and whether files
    /// created or removed since the last directory sync are there.
    pub fn crash(&self, seed: u64) {
        let mut rng = crate::rng::Rng::new(seed);
        let mut s = lock(&self.state);
        let live = std::mem::take(&mut s.files);
        let ghosts = std::mem::take(&mut s.ghosts);
        let mut files = BTreeMap::new();
        // A file created since the last directory sync may be missing; one removed
        // since may be back.
        let settled: Vec<bool> = live.keys().map(|n| s.durable_names.contains(n)).collect();
        let candidates = live
            .into_iter()
            .zip(settled)
            .chain(ghosts.into_iter().map(|g| (g, false)));
        for ((name, mut f), settled) in candidates {
            if !settled && rng.below(2) == 0 {
                continue;
            }
            let extra = f.data.len() - f.synced;
            let keep = f.synced + rng.below(extra as u64 + 1) as usize;
            f.data.truncate(keep);
            if keep > f.synced && rng.below(3) == 0 {
                // A torn write: the tail of what survived is garbage.
                let from = f.synced + rng.below((keep - f.synced) as u64) as usize;
                for b in &mut f.data[from..] {
                    *b = rng.below(256) as u8;
                }
            }
            f.synced = f.data.len();
            files.insert(name, f);
        }
        s.files = files;
        s.durable_names = s.files.keys().cloned().collect();
        s.dies_at = None;
    }

    /// The machine dies after `ops` more appends, syncs or directory syncs: from then
    /// on every call fails, until [`crash`](SimDisk::crash) brings it back.
    pub fn die_after(&self, ops: u64) {
        let mut s = lock(&self.state);
        s.dies_at = Some(s.ops + ops);
    }

    /// A disk holding only what this one must keep whatever happens: each file's synced
    /// bytes, and only the names the last directory sync covered (as of now).
    pub fn synced_copy(&self) -> SimDisk {
        let s = lock(&self.state);
        let mut files = BTreeMap::new();
        for name in &s.durable_names {
            if let Some(f) = s.files.get(name) {
                let data = f.data[..f.synced].to_vec();
                let synced = data.len();
                files.insert(name.clone(), SimFile { data, synced });
            }
        }
        let copy = SimDisk::new();
        {
            let mut c = lock(&copy.state);
            c.durable_names = files.keys().cloned().collect();
            c.files = files;
        }
        copy
    }

    /// Holds every sync until released (`false`): a disk as slow as a test needs.
    pub fn hold_syncs(&self, hold: bool) {
        let (m, cv) = &*self.gate;
        *lock(m) = hold;
        cv.notify_all();
    }

    /// Syncs done so far.
    pub fn syncs(&self) -> u64 {
        lock(&self.state).syncs
    }

    /// Appends fail from now on once the files hold `bytes` in all (`None`: no limit).
    pub fn set_space(&self, bytes: Option<usize>) {
        lock(&self.state).space = bytes;
    }

    /// The next `n` appends fail.
    pub fn fail_appends(&self, n: u32) {
        lock(&self.state).fail_appends = n;
    }

    /// The next `n` syncs fail.
    pub fn fail_syncs(&self, n: u32) {
        lock(&self.state).fail_syncs = n;
    }

    /// Bytes held by all files.
    pub fn used(&self) -> usize {
        lock(&self.state).files.values().map(|f| f.data.len()).sum()
    }

    /// What a repair set aside, by where it went.
    pub fn set_aside_parts(&self) -> BTreeMap<String, Vec<u8>> {
        lock(&self.state).set_aside.clone()
    }

    /// Bytes in file `name` (0 when there is none).
    pub fn len_of(&self, name: &str) -> usize {
        lock(&self.state)
            .files
            .get(name)
            .map_or(0, |f| f.data.len())
    }

    /// Flips one byte of a file (damage a crash does not explain).
    pub fn flip(&self, name: &str, at: usize) {
        if let Some(f) = lock(&self.state).files.get_mut(name) {
            if let Some(b) = f.data.get_mut(at) {
                *b ^= 0x55;
            }
        }
    }

    /// Writes a file whole, synced, its name durable (a foreign file, say).
    pub fn put(&self, name: &str, data: &[u8]) {
        let mut s = lock(&self.state);
        s.files.insert(
            name.to_owned(),
            SimFile {
                data: data.to_vec(),
                synced: data.len(),
            },
        );
        s.durable_names.push(name.to_owned());
    }

    /// Counts an operation; an error once the machine is dead.
    fn step(s: &mut SimState) -> io::Result<()> {
        if s.dies_at.is_some_and(|d| s.ops >= d) {
            return Err(io::Error::other("the machine is dead (simulated)"));
        }
        s.ops += 1;
        Ok(())
    }

    fn not_found(name: &str) -> io::Error {
        io::Error::new(io::ErrorKind::NotFound, format!("{name}: no such file"))
    }
}

impl Storage for SimDisk {
    fn list(&self) -> io::Result<Vec<String>> {
        Ok(lock(&self.state).files.keys().cloned().collect())
    }

    fn read(&self, name: &str) -> io::Result<Vec<u8>> {
        let s = lock(&self.state);
        s.files
            .get(name)
            .map(|f| f.data.clone())
            .ok_or_else(|| Self::not_found(name))
    }

    fn read_at(&self, name: &str, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let s = lock(&self.state);
        let f = s.files.get(name).ok_or_else(|| Self::not_found(name))?;
        let from = usize::try_from(offset).unwrap_or(usize::MAX);
        f.data
            .get(from..)
            .and_then(|rest| rest.get(..len))
            .map(<[u8]>::to_vec)
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "past the end"))
    }

    fn create(&self, name: &str) -> io::Result<()> {
        let mut s = lock(&self.state);
        Self::step(&mut s)?;
        if s.files.contains_key(name) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{name} exists"),
            ));
        }
        s.ghosts.remove(name);
        s.files.insert(name.to_owned(), SimFile::default());
        Ok(())
    }

    fn append(&self, name: &str, bytes: &[u8]) -> io::Result<()> {
        let mut s = lock(&self.state);
        Self::step(&mut s)?;
        if s.fail_appends > 0 {
            s.fail_appends -= 1;
            return Err(io::Error::other("simulated write error"));
        }
        let used: usize = s.files.values().map(|f| f.data.len()).sum();
        let room = s
            .space
            .map_or(usize::MAX, |space| space.saturating_sub(used));
        let f = s.files.get_mut(name).ok_or_else(|| Self::not_found(name))?;
        if bytes.len() > room {
            // As a real disk does: what fits is written, then the write fails.
            f.data.extend_from_slice(&bytes[..room]);
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                "no space left on device (simulated)",
            ));
        }
        f.data.extend_from_slice(bytes);
        Ok(())
    }

    fn sync(&self, name: &str) -> io::Result<()> {
        {
            let (m, cv) = &*self.gate;
            let mut held = lock(m);
            while *held {
                held = cv.wait(held).unwrap_or_else(|p| p.into_inner());
            }
        }
        let mut s = lock(&self.state);
        Self::step(&mut s)?;
        if s.fail_syncs > 0 {
            s.fail_syncs -= 1;
            // As `fdatasync` can fail on a full disk: the kind must not make it look
            // like a write that can be tried again.
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                "simulated sync error",
            ));
        }
        s.syncs += 1;
        let f = s.files.get_mut(name).ok_or_else(|| Self::not_found(name))?;
        f.synced = f.data.len();
        Ok(())
    }

    fn sync_dir(&self) -> io::Result<()> {
        let mut s = lock(&self.state);
        Self::step(&mut s)?;
        s.durable_names = s.files.keys().cloned().collect();
        s.ghosts.clear();
        Ok(())
    }

    fn truncate(&self, name: &str, len: u64) -> io::Result<()> {
        let mut s = lock(&self.state);
        Self::step(&mut s)?;
        let f = s.files.get_mut(name).ok_or_else(|| Self::not_found(name))?;
        f.data.truncate(len as usize);
        f.synced = f.synced.min(f.data.len());
        Ok(())
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        let mut s = lock(&self.state);
        Self::step(&mut s)?;
        let f = s.files.remove(name).ok_or_else(|| Self::not_found(name))?;
        if s.durable_names.iter().any(|n| n == name) {
            s.ghosts.insert(name.to_owned(), f);
        }
        Ok(())
    }

    fn free_space(&self) -> io::Result<u64> {
        let s = lock(&self.state);
        let used: usize = s.files.values().map(|f| f.data.len()).sum();
        Ok(s.space
            .map_or(u64::MAX, |space| space.saturating_sub(used) as u64))
    }

    fn set_aside(&self, name: &str, from: u64) -> io::Result<String> {
        let to = format!("{SET_ASIDE}/{name}.from-{from}");
        let mut s = lock(&self.state);
        let f = s.files.get_mut(name).ok_or_else(|| Self::not_found(name))?;
        let moved = f.data.split_off((from as usize).min(f.data.len()));
        f.synced = f.synced.min(f.data.len());
        if from == 0 {
            s.files.remove(name);
            s.durable_names.retain(|n| n != name);
        }
        s.set_aside.insert(to.clone(), moved);
        Ok(to)
    }
}
