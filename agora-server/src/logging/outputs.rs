//! The outputs a [`Logger`] writes to: console, file and size-rolling file, each with
//! its format and levels, opened from a [`LogConfig`]'s output specs.
//!
//! Owns the bytes on their way to a file descriptor and nothing about threads: the
//! writer (`writer.rs`) decides who calls [`Outputs::write`] and when to flush.
//!
//! [`Logger`]: super::Logger

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use super::config::{ConfigError, LogConfig, OutputKind};
use super::format::{Entry, Format};
use super::LevelSet;

/// Makes the writer a `<console/>` output writes to; tests capture it.
pub(super) type MakeConsole = Box<dyn FnMut() -> Box<dyn Write + Send>>;

/// A destination that bytes go to.
enum Sink {
    /// Console or, in tests, any writer.
    Stream(Box<dyn Write + Send>),
    File(BufWriter<File>),
    Rolling(Rolling),
}

impl Sink {
    fn write_all(&mut self, b: &[u8]) -> io::Result<()> {
        match self {
            Sink::Stream(w) => w.write_all(b),
            Sink::File(f) => f.write_all(b),
            Sink::Rolling(r) => r.write_all(b),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sink::Stream(w) => w.flush(),
            Sink::File(f) => f.flush(),
            Sink::Rolling(r) => r.file.flush(),
        }
    }
}

/// A file that is renamed to `<filename>.<n>` when the next record would take it past
/// `maxsize`, as Seelog's size-rolling writer does: the newest roll has the largest
/// `n`, and the oldest rolls are removed past `maxrolls`.
struct Rolling {
    path: PathBuf,
    maxsize: u64,
    maxrolls: Option<usize>,
    file: BufWriter<File>,
    /// Bytes in the live file.
    size: u64,
}

impl Rolling {
    fn open(path: &Path, maxsize: u64, maxrolls: Option<usize>) -> io::Result<Rolling> {
        let file = open_append(path)?;
        let size = file.metadata()?.len();
        Ok(Rolling {
            path: path.to_owned(),
            maxsize,
            maxrolls,
            file: BufWriter::new(file),
            size,
        })
    }

    fn write_all(&mut self, b: &[u8]) -> io::Result<()> {
        if self.size > 0 && self.size + b.len() as u64 > self.maxsize {
            self.roll()?;
        }
        self.file.write_all(b)?;
        self.size += b.len() as u64;
        Ok(())
    }

    /// Existing roll numbers, ascending.
    fn rolls(&self) -> Vec<u64> {
        let dir = match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
            _ => PathBuf::from("."),
        };
        let prefix = format!(
            "{}.",
            self.path.file_name().unwrap_or_default().to_string_lossy()
        );
        let mut n: Vec<u64> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.strip_prefix(&prefix)?.parse().ok())
            .collect();
        n.sort_unstable();
        n
    }

    fn roll_path(&self, n: u64) -> PathBuf {
        let mut p = self.path.clone().into_os_string();
        p.push(format!(".{n}"));
        PathBuf::from(p)
    }

    fn roll(&mut self) -> io::Result<()> {
        self.file.flush()?;
        let mut rolls = self.rolls();
        let next = rolls.last().map_or(1, |n| n + 1);
        std::fs::rename(&self.path, self.roll_path(next))?;
        rolls.push(next);
        if let Some(keep) = self.maxrolls {
            let excess = rolls.len().saturating_sub(keep);
            for n in &rolls[..excess] {
                let _ = std::fs::remove_file(self.roll_path(*n));
            }
        }
        self.file = BufWriter::new(
            OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(true)
                .open(&self.path)?,
        );
        self.size = 0;
        Ok(())
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    OpenOptions::new().create(true).append(true).open(path)
}

/// One output: a sink, its format, the levels that reach it.
struct Output {
    sink: Sink,
    format: Format,
    levels: LevelSet,
}

/// Every output, and a buffer reused for formatting.
pub(super) struct Outputs {
    list: Vec<Output>,
    line: String,
}

impl Outputs {
    /// Opens every output of `config` (an unwritable path is an error at the output's
    /// position). `console` makes the writer of `<console/>`; `None` means standard
    /// error.
    pub(super) fn open(
        config: &LogConfig,
        console: &mut Option<MakeConsole>,
    ) -> Result<Outputs, ConfigError> {
        let mut list = Vec::new();
        for spec in &config.outputs {
            let fail = |what: &Path, e: io::Error| ConfigError {
                origin: config.origin.clone(),
                position: Some(spec.position),
                problem: format!("cannot open {} for writing: {e}", what.display()),
            };
            let sink = match &spec.kind {
                OutputKind::Console => Sink::Stream(match console {
                    Some(make) => make(),
                    None => Box::new(BufWriter::new(io::stderr())),
                }),
                OutputKind::File(p) => {
                    Sink::File(BufWriter::new(open_append(p).map_err(|e| fail(p, e))?))
                }
                OutputKind::Rolling {
                    filename,
                    maxsize,
                    maxrolls,
                } => Sink::Rolling(
                    Rolling::open(filename, *maxsize, *maxrolls).map_err(|e| fail(filename, e))?,
                ),
            };
            list.push(Output {
                sink,
                format: spec.format.clone(),
                levels: spec.levels,
            });
        }
        Ok(Outputs {
            list,
            line: String::new(),
        })
    }

    /// Union of the levels that reach at least one output.
    pub(super) fn levels(&self) -> LevelSet {
        self.list
            .iter()
            .fold(LevelSet::NONE, |acc, o| acc.or(o.levels))
    }

    /// Writes `e` to each output whose levels include it. Write errors are ignored:
    /// there is nowhere left to report them, and logging must not stop the broker.
    pub(super) fn write(&mut self, e: &Entry) {
        for o in &mut self.list {
            if o.levels.contains(e.level) {
                self.line.clear();
                o.format.render(e, &mut self.line);
                let _ = o.sink.write_all(self.line.as_bytes());
            }
        }
    }

    pub(super) fn flush(&mut self) {
        for o in &mut self.list {
            let _ = o.sink.flush();
        }
    }
}
