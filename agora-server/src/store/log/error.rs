//! Why the log could not be opened or written, and the helpers that say so with the
//! file it was about.

use std::io;

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

impl LogError {
    /// The storage is out of space (or over a quota): nothing is lost, and the same
    /// write can be tried again once there is room ([`Log::write`]).
    pub fn is_no_space(&self) -> bool {
        matches!(self, LogError::Io { source, .. } if no_space(source))
    }
}

/// `e`, never to be tried again even if it was for want of space: a failed sync may
/// have lost pages the kernel will not write again (so a later sync that succeeds
/// proves nothing).
pub(super) fn final_error(e: LogError) -> LogError {
    match e {
        LogError::Io { file, source } if no_space(&source) => LogError::Io {
            file,
            source: io::Error::other(source.to_string()),
        },
        e => e,
    }
}

pub(super) fn no_space(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    )
}

pub(super) fn io_err(file: &str) -> impl FnOnce(io::Error) -> LogError + '_ {
    move |source| LogError::Io {
        file: file.to_owned(),
        source,
    }
}
