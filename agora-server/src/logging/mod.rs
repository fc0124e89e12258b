//! The broker's logger: a `log::Log` configured by a Seelog-style XML file.
//!
//! - `xml`: reads the XML (quick-xml) into a tree of elements, each with its line and
//!   column.
//! - `config`: validates that tree into a [`LogConfig`], with every error placed at its
//!   file, line and column.
//! - `format`: Seelog format verbs, compiled once, and the rendering of a record.
//! - `layout`: Go reference-time layouts for the date verbs, compiled once.
//! - `outputs`: the outputs (console, file, rolling file), each with its format and
//!   levels.
//! - `writer`: the [`Logger`] and, for the async types, its writer thread behind a
//!   bounded channel.
//!
//! Only the binary installs a logger ([`install`]); nothing in [`crate::run`] or
//! [`crate::Server`] does, so tests can start many servers in one process. This module
//! must never block a broker task on log I/O when the configured type is asynchronous.

mod config;
mod format;
mod layout;
mod outputs;
mod writer;
mod xml;

pub use config::{ConfigError, LogConfig, LoggerKind, OutputKind, OutputSpec, DEFAULT_CONFIG};
pub use format::{Entry, Format};
pub use layout::Layout;
pub use writer::{Logger, LoggerBuilder, DEFAULT_CAPACITY, DEFAULT_SHUTDOWN_GRACE};

/// A Seelog level. The `log` crate has no `critical`: a record is critical when it is
/// logged at `Error` with the target `"critical"`
/// (`log::error!(target: "critical", "…")`); every other `Error` record is `error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// `trace`, from `log::Level::Trace`.
    Trace,
    /// `debug`, from `log::Level::Debug`.
    Debug,
    /// `info`, from `log::Level::Info`.
    Info,
    /// `warn`, from `log::Level::Warn`.
    Warn,
    /// `error`, from `log::Level::Error`.
    Error,
    /// `critical`, from `log::Level::Error` with target `"critical"`.
    Critical,
}

/// The target that marks an `Error` record as Seelog's `critical`.
pub const CRITICAL_TARGET: &str = "critical";

impl Level {
    /// All levels, least severe first.
    pub const ALL: [Level; 6] = [
        Level::Trace,
        Level::Debug,
        Level::Info,
        Level::Warn,
        Level::Error,
        Level::Critical,
    ];

    /// The Seelog level of a `log` record's metadata.
    pub fn of(meta: &log::Metadata<'_>) -> Level {
        match meta.level() {
            log::Level::Trace => Level::Trace,
            log::Level::Debug => Level::Debug,
            log::Level::Info => Level::Info,
            log::Level::Warn => Level::Warn,
            log::Level::Error if meta.target() == CRITICAL_TARGET => Level::Critical,
            log::Level::Error => Level::Error,
        }
    }

    /// The `log` level whose records can carry this level.
    pub fn log_level(self) -> log::Level {
        match self {
            Level::Trace => log::Level::Trace,
            Level::Debug => log::Level::Debug,
            Level::Info => log::Level::Info,
            Level::Warn => log::Level::Warn,
            Level::Error | Level::Critical => log::Level::Error,
        }
    }

    /// The name Seelog's files use.
    pub fn name(self) -> &'static str {
        match self {
            Level::Trace => "trace",
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
            Level::Critical => "critical",
        }
    }
}

/// A set of [`Level`]s, as `minlevel`/`maxlevel` or `levels` describe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LevelSet(u8);

impl LevelSet {
    /// Every level.
    pub const ALL: LevelSet = LevelSet(0b11_1111);
    /// No level (`off`).
    pub const NONE: LevelSet = LevelSet(0);

    /// Levels from `min` to `max`, both included.
    pub fn range(min: Level, max: Level) -> LevelSet {
        let mut s = LevelSet::NONE;
        for l in Level::ALL {
            if l >= min && l <= max {
                s.insert(l);
            }
        }
        s
    }

    /// Adds `level`.
    pub fn insert(&mut self, level: Level) {
        self.0 |= 1 << level as u8;
    }

    /// Whether `level` is in the set.
    pub fn contains(self, level: Level) -> bool {
        self.0 & (1 << level as u8) != 0
    }

    /// Levels in both sets.
    pub fn and(self, other: LevelSet) -> LevelSet {
        LevelSet(self.0 & other.0)
    }

    /// Levels in either set.
    pub fn or(self, other: LevelSet) -> LevelSet {
        LevelSet(self.0 | other.0)
    }

    /// The most verbose `log` filter that lets every level of the set through, so
    /// disabled records cost one comparison in the `log` macros.
    pub fn max_filter(self) -> log::LevelFilter {
        Level::ALL
            .iter()
            .find(|l| self.contains(**l))
            .map_or(log::LevelFilter::Off, |l| l.log_level().to_level_filter())
    }
}

/// Installs `logger` as the process's logger and returns it with a `'static` lifetime,
/// so the caller can [`Logger::shutdown`] it after the broker stops. Fails if a logger
/// is already installed.
pub fn install(logger: Logger) -> Result<&'static Logger, log::SetLoggerError> {
    let logger: &'static Logger = Box::leak(Box::new(logger));
    log::set_logger(logger)?;
    log::set_max_level(logger.max_level());
    Ok(logger)
}
