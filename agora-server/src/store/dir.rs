//! The data directory: created when missing, and held by one broker at a time with an
//! advisory lock (`flock` on its `LOCK` file, through `std::fs::File::try_lock`). The
//! kernel lets go of the lock when the process ends, however it ends, so a lock left by a
//! killed broker never blocks a restart; a second broker on a directory in use is
//! refused at once, with a message saying so.

use std::fs::{File, OpenOptions, TryLockError};
use std::io;
use std::path::{Path, PathBuf};

use super::log::LOCK_FILE;

/// A data directory this process holds. Dropping it lets go of the lock.
#[derive(Debug)]
pub struct DataDir {
    path: PathBuf,
    /// Open for as long as the directory is held: closing it releases the lock.
    _lock: File,
}

/// Why a data directory cannot be used.
#[derive(Debug)]
pub enum DirError {
    /// It does not exist and cannot be created, or its lock file cannot be opened
    /// (not a directory, no permission, a read-only file system …).
    Unusable {
        /// The directory.
        path: PathBuf,
        /// What failed.
        source: io::Error,
    },
    /// Another process holds it.
    InUse {
        /// The directory.
        path: PathBuf,
    },
}

impl std::fmt::Display for DirError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DirError::Unusable { path, source } => {
                write!(f, "data directory {}: {source}", path.display())
            }
            DirError::InUse { path } => write!(
                f,
                "data directory {} is in use by another broker (its {LOCK_FILE} file is locked); \
                 give each broker its own --data-dir",
                path.display()
            ),
        }
    }
}

impl std::error::Error for DirError {}

impl DataDir {
    /// Creates `path` if it is missing and locks it for this process.
    pub fn lock(path: &Path) -> Result<DataDir, DirError> {
        let unusable = |source| DirError::Unusable {
            path: path.to_owned(),
            source,
        };
        std::fs::create_dir_all(path).map_err(unusable)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path.join(LOCK_FILE))
            .map_err(unusable)?;
        match file.try_lock() {
            Ok(()) => Ok(DataDir {
                path: path.to_owned(),
                _lock: file,
            }),
            Err(TryLockError::WouldBlock) => Err(DirError::InUse {
                path: path.to_owned(),
            }),
            Err(TryLockError::Error(e)) => Err(unusable(e)),
        }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_at_a_time_and_the_lock_goes_with_its_holder() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("agora-data");
        let held = DataDir::lock(&dir).expect("created and locked");
        assert!(dir.join(LOCK_FILE).is_file());
        // A second holder (another open file: flock is per open file, so this stands
        // for another process) is refused, saying why.
        let err = DataDir::lock(&dir).expect_err("in use");
        assert!(matches!(err, DirError::InUse { .. }), "{err}");
        assert!(
            err.to_string().contains("in use by another broker"),
            "{err}"
        );
        // The lock file left behind does not block the next holder once this one is
        // gone (the kernel releases the lock when the file is closed, as when a killed
        // process's files are).
        drop(held);
        let again = DataDir::lock(&dir).expect("free again");
        assert_eq!(again.path(), dir);
    }

    #[test]
    fn a_path_that_cannot_be_a_directory_is_refused_with_the_reason() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("a-file");
        std::fs::write(&file, b"x").unwrap();
        let err = DataDir::lock(&file.join("data")).expect_err("under a file");
        assert!(matches!(err, DirError::Unusable { .. }), "{err}");
        assert!(err.to_string().starts_with("data directory "), "{err}");
    }
}
