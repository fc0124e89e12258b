//! Durable queues' storage: a segmented, append-only log of checksummed records (what
//! each durable queue does: declare, enqueue, deliver, ack, purge, delete), written by
//! one writer, synced in groups, read back whole at start.
//!
//! - `record`: the records and their framing (length, CRC-32, body).
//! - `storage`: the [`Storage`] trait the log writes through; [`Disk`] (real files,
//!   `fdatasync`) and [`SimDisk`] (in memory; a crash keeps only what was synced, and
//!   tears the rest).
//! - `log`: segments, appending, syncing, and reading back into each queue's
//!   messages ([`Log::open`]), cutting off a torn end and refusing any other damage.
//! - `dir`: the data directory, created when missing and locked for one broker at a
//!   time.
//! - `writer`: the one writer thread, group commit, the [`Fsync`] policy; appends'
//!   senders hear when their records are stored.
//!
//! This module knows nothing of tasks or sockets: the broker's writer thread moves
//! records in and confirms out. It never drops a record it cannot read: it stops and
//! says where.

mod dir;
mod log;
mod record;
mod storage;
mod writer;

pub use dir::{DataDir, DirError};
pub use log::{
    Cut, Kept, Log, LogError, LogOptions, Recovered, SetAside, Stored, HEADER, LOCK_FILE,
};
pub use record::{Bad, Record, FRAME, MAX_RECORD};
pub use storage::{Disk, SimDisk, Storage, MQTT_DIR, RAFT_DIR, SET_ASIDE};
pub use writer::{
    spawn as spawn_writer, Append, Fsync, Read, Stored as Outcome, WriterHandle, WriterStats,
};

#[cfg(test)]
mod tests;
