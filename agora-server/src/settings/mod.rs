//! The broker's settings table: every setting that has a flag is declared once, in
//! [`SETTINGS`] (its key, flag, environment variable, default, valid values, help line
//! and the function that checks and applies a value). The command line
//! ([`command`]), the config file's `[broker]` table and the Configuration chapter's
//! flags table and help text ([`book`]) are all made from it, and [`resolve`] gives
//! each setting its value: flag, else environment variable, else `[broker]` in the
//! config file, else the default.
//!
//! It owns where values come from and how they are checked; it never starts anything
//! (no threads, no logger, no sockets): the binary does that with what it returns.

pub mod book;
mod table;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Command};

use crate::config::Config;
use crate::config_file::{ConfigFile, ConfigFileError};

pub use table::SETTINGS;

/// One setting: everything the command line, the config file and the book say about
/// it, and how a value of it is checked and applied.
#[derive(Clone, Copy, Debug)]
pub struct Setting {
    /// The key under `[broker]` in the config file: the flag's name with `_` for `-`.
    pub key: &'static str,
    /// The long flag, without its `--`.
    pub flag: &'static str,
    /// The environment variable: `AGORA_` and the key in capitals.
    pub env: &'static str,
    /// The placeholder in the help text; `None` is the key in capitals.
    pub value_name: Option<&'static str>,
    /// How values are given.
    pub kind: Kind,
    /// The default as a value would be written (`1048576`, `30s`), shown in the help
    /// text; `None` for a setting that is off or computed until given.
    pub default: Option<&'static str>,
    /// What the book adds to the default (`1 MiB`), or says instead of it when there
    /// is none (`none (messages never expire)`).
    pub default_note: &'static str,
    /// The valid values, for the book's table.
    pub valid: &'static str,
    /// The help line (no final full stop: clap's style).
    pub doc: &'static str,
    /// For a setting that takes one of a few names: each name and its help line.
    pub choices: &'static [(&'static str, &'static str)],
    /// Left out of the help text and the book's table: switches for measurements.
    pub hidden: bool,
    /// Whether the config file's `[broker]` table may set it (not `config`, which names
    /// that file).
    pub in_file: bool,
    /// Checks one value and stores it; the error says what is wrong with the value
    /// (the caller says which setting and where it came from).
    pub apply: fn(&mut Settings, &OsStr) -> Result<(), String>,
}

/// How a setting's values are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// One value.
    Value,
    /// A file path; in the config file, relative to the file's directory.
    Path,
    /// A switch: the flag takes no value; the variable and the file say `true` or
    /// `false`.
    Switch,
    /// Several names, comma-separated (and the flag may be repeated; in the file, an
    /// array of strings or one comma-separated string).
    List,
}

/// The binary's data directory when none is given: under the working directory.
pub const DATA_DIR: &str = "agora-data";

/// What the table sets: the library's [`Config`], and what only the `agora` binary
/// uses (threads, profiling, logging, the config file's name).
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// The broker's settings.
    pub config: Config,
    /// Worker threads of the broker's executor; `None` leaves the choice to the binary.
    pub threads: Option<usize>,
    /// Record a CPU profile for the broker's life.
    pub profile: bool,
    /// Where the profile is written.
    pub profile_path: PathBuf,
    /// The logging configuration file; `None` is the built-in one.
    pub log_config: Option<PathBuf>,
    /// The config file that was read, if any.
    pub config_file: Option<PathBuf>,
    /// Where durable queues are kept (`--data-dir`), unless `memory_only`.
    pub data_dir: PathBuf,
    /// Keep every queue in memory only and write nothing (`--memory-only`).
    pub memory_only: bool,
}

impl Settings {
    /// The data directory the broker uses: `None` with `--memory-only`.
    pub fn storage(&self) -> Option<PathBuf> {
        (!self.memory_only).then(|| self.data_dir.clone())
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            config: Config::default(),
            threads: None,
            profile: false,
            profile_path: PathBuf::from("agora.pprof"),
            log_config: None,
            config_file: None,
            data_dir: PathBuf::from(DATA_DIR),
            memory_only: false,
        }
    }
}

/// Where a setting's value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The command line.
    Flag,
    /// Its environment variable.
    Env,
    /// `[broker]` in the config file.
    File,
}

/// Why the settings could not be resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SettingsError {
    /// A flag or an environment variable has a value its setting refuses.
    Value {
        /// The setting's flag, without `--`.
        flag: &'static str,
        /// The setting's environment variable.
        env: &'static str,
        /// Where the value came from: [`Source::Flag`] or [`Source::Env`].
        source: Source,
        /// The value, as given.
        value: String,
        /// What is wrong with it.
        problem: String,
    },
    /// The config file cannot be read, or an entry in it is refused (`[broker]` ones
    /// included).
    File(ConfigFileError),
}

impl fmt::Display for SettingsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SettingsError::Value {
                flag,
                env,
                source,
                value,
                problem,
            } => {
                write!(f, "invalid value '{value}' for '--{flag}'")?;
                if *source == Source::Env {
                    write!(f, " (from {env})")?;
                }
                write!(f, ": {problem}")
            }
            SettingsError::File(e) => write!(f, "bad config file {e}"),
        }
    }
}

impl std::error::Error for SettingsError {}

/// The setting whose `[broker]` key is `key`.
pub fn find(key: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| s.key == key)
}

/// The values given on the command line, by key; a repeated flag gives several.
pub type Flags = BTreeMap<&'static str, Vec<OsString>>;

/// The `agora` command line, built from the table: each setting's flag, with its
/// environment variable and default shown in the help text. Parsing with it checks
/// flags and environment variables with the table's own functions (a setting with
/// `choices`, a switch or a path: with clap's parser for exactly those values, which
/// the tests tie to the table's function), so a bad value stops the binary with clap's
/// `error: …` message and status 2 before [`resolve`] runs.
pub fn command() -> Command {
    build(true)
}

/// The command line, with or without its environment variables (clap reads them when
/// the command is built; tests leave them out so the caller's environment cannot
/// change what they see).
pub(crate) fn build(with_env: bool) -> Command {
    let mut cmd = Command::new("agora")
        .version(env!("CARGO_PKG_VERSION"))
        .about("Agora, a message broker: queues with acknowledgements and topics with fan-out")
        .after_help(
            "Also: `agora passwd` reads a password (from the terminal without echo, or a line of standard input) and prints its argon2id hash, for a user's `password` in the config file.",
        );
    for s in SETTINGS {
        let mut arg = Arg::new(s.key)
            .long(s.flag)
            .help(s.doc)
            .hide(s.hidden)
            .value_name(
                s.value_name
                    .map_or_else(|| s.key.to_uppercase(), str::to_owned),
            );
        if with_env {
            arg = arg.env(s.env);
        }
        if let Some(d) = s.default {
            arg = arg.default_value(d);
        }
        arg = match s.kind {
            Kind::Switch => arg.action(ArgAction::SetTrue),
            Kind::Path => arg.value_parser(clap::value_parser!(PathBuf)),
            Kind::Value | Kind::List if !s.choices.is_empty() => {
                arg.value_parser(PossibleValuesParser::new(
                    s.choices
                        .iter()
                        .map(|&(n, h)| PossibleValue::new(n).help(h)),
                ))
            }
            Kind::Value | Kind::List => arg.value_parser(Check(s)),
        };
        if s.kind == Kind::List {
            arg = arg.action(ArgAction::Append).value_delimiter(',');
        }
        cmd = cmd.arg(arg);
    }
    cmd
}

/// Checks a flag's (or its variable's) value with the setting's own function, so the
/// command line refuses exactly what the table refuses, in clap's words.
#[derive(Clone)]
struct Check(&'static Setting);

impl TypedValueParser for Check {
    type Value = String;

    fn parse_ref(
        &self,
        cmd: &Command,
        arg: Option<&Arg>,
        value: &OsStr,
    ) -> Result<String, clap::Error> {
        let apply = self.0.apply;
        let check =
            move |v: &str| apply(&mut Settings::default(), OsStr::new(v)).map(|()| v.to_owned());
        check.parse_ref(cmd, arg, value)
    }
}

/// The values of `matches` that were given on the command line (not taken from the
/// environment or a default: [`resolve`] reads those itself).
pub fn flags(matches: &ArgMatches) -> Flags {
    let mut flags = Flags::new();
    for s in SETTINGS {
        if matches.value_source(s.key) != Some(ValueSource::CommandLine) {
            continue;
        }
        let values = match s.kind {
            Kind::Switch => vec![OsString::from("true")],
            _ => matches
                .get_raw(s.key)
                .into_iter()
                .flatten()
                .map(OsStr::to_owned)
                .collect(),
        };
        flags.insert(s.key, values);
    }
    flags
}

/// Gives every setting its value: the flag, else its environment variable (read with
/// `env`), else its key under `[broker]` in the config file (named by `--config` or
/// `AGORA_CONFIG`), else the default. Then the rest of the config file (databases,
/// queues, topics) is applied on top, so a queue's unset keys take the resolved
/// broker-wide values.
pub fn resolve(
    flags: &Flags,
    env: &dyn Fn(&str) -> Option<OsString>,
) -> Result<Settings, SettingsError> {
    let mut settings = Settings::default();
    let config = find("config").expect("the table has --config");
    if let Some((source, value)) = given(config, flags, env) {
        apply(config, &mut settings, source, &value)?;
    }
    let file = match &settings.config_file {
        Some(path) => Some(ConfigFile::read(path).map_err(SettingsError::File)?),
        None => None,
    };
    resolve_with(flags, env, file.as_ref(), settings)
}

/// [`resolve`] after the config file (if any) has been read.
pub(crate) fn resolve_with(
    flags: &Flags,
    env: &dyn Fn(&str) -> Option<OsString>,
    file: Option<&ConfigFile>,
    mut settings: Settings,
) -> Result<Settings, SettingsError> {
    if let Some(file) = file {
        check_keys(file)?;
    }
    for s in SETTINGS.iter().filter(|s| s.key != "config") {
        if let Some((source, value)) = given(s, flags, env) {
            apply(s, &mut settings, source, &value)?;
        } else if let Some((file, v)) = file.and_then(|f| Some((f, f.broker().get(s.key)?))) {
            let value = file_value(s, file.dir(), v).map_err(|p| file_error(file, s, p))?;
            (s.apply)(&mut settings, &value).map_err(|p| file_error(file, s, p))?;
        }
    }
    if let Some(file) = file {
        let durable = settings.storage().is_some();
        file.apply(&mut settings.config, durable)
            .map_err(SettingsError::File)?;
    }
    Ok(settings)
}

/// The value of `s` from the command line or the environment, in that order.
fn given(
    s: &Setting,
    flags: &Flags,
    env: &dyn Fn(&str) -> Option<OsString>,
) -> Option<(Source, OsString)> {
    if let Some(values) = flags.get(s.key) {
        return Some((Source::Flag, values.join(OsStr::new(","))));
    }
    env(s.env).map(|v| (Source::Env, v))
}

fn apply(
    s: &'static Setting,
    settings: &mut Settings,
    source: Source,
    value: &OsStr,
) -> Result<(), SettingsError> {
    (s.apply)(settings, value).map_err(|problem| SettingsError::Value {
        flag: s.flag,
        env: s.env,
        source,
        value: value.to_string_lossy().into_owned(),
        problem,
    })
}

/// Refuses `[broker]` keys the table does not have, naming the key.
fn check_keys(file: &ConfigFile) -> Result<(), SettingsError> {
    for key in file.broker().keys() {
        let problem = match find(key) {
            Some(s) if s.in_file => continue,
            Some(s) => format!("--{} cannot be set in the config file", s.flag),
            None => match find(&key.replace('-', "_")) {
                Some(s) => format!("unknown key: the key of --{} is {}", s.flag, s.key),
                None => "unknown key: a [broker] key is a flag's name with '_' for '-' (see the Configuration chapter)".to_owned(),
            },
        };
        return Err(SettingsError::File(
            file.error(&format!("[broker] {key}"), problem),
        ));
    }
    Ok(())
}

fn file_error(file: &ConfigFile, s: &Setting, problem: String) -> SettingsError {
    SettingsError::File(file.error(&format!("[broker] {}", s.key), problem))
}

/// A `[broker]` value as the text a flag would take: strings as they are, whole
/// numbers and booleans written out, a list's array joined with commas; a path is
/// taken from the file's directory.
fn file_value(s: &Setting, dir: &Path, v: &toml::Value) -> Result<OsString, String> {
    let text = match v {
        toml::Value::String(t) => t.clone(),
        toml::Value::Integer(n) => n.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        toml::Value::Array(items) if s.kind == Kind::List => {
            let names: Option<Vec<&str>> = items.iter().map(toml::Value::as_str).collect();
            names.ok_or("expected an array of strings")?.join(",")
        }
        _ => {
            return Err(format!(
                "expected a string, a whole number or true/false, not {}",
                v.type_str()
            ))
        }
    };
    Ok(match s.kind {
        Kind::Path if !text.is_empty() => dir.join(text).into_os_string(),
        _ => text.into(),
    })
}

/// The value as UTF-8 text (every setting but a path needs it).
fn text(v: &OsStr) -> Result<&str, String> {
    v.to_str()
        .ok_or_else(|| format!("'{}' is not valid UTF-8", v.to_string_lossy()))
}

/// An integer in `lo..=hi`, read as clap's signed parsers read it (so `-1` is out of
/// range rather than malformed), in clap's words.
fn signed(v: &OsStr, lo: i64, hi: i64) -> Result<i64, String> {
    let n: i64 = text(v)?
        .parse()
        .map_err(|e: std::num::ParseIntError| e.to_string())?;
    if !(lo..=hi).contains(&n) {
        return Err(format!("{n} is not in {lo}..={hi}"));
    }
    Ok(n)
}

/// An unsigned integer from `lo` up to `hi` (`None`: below `u64::MAX`, as clap's
/// `range(lo..)` has it), in clap's words.
fn unsigned(v: &OsStr, lo: u64, hi: Option<u64>) -> Result<u64, String> {
    let n: u64 = text(v)?
        .parse()
        .map_err(|e: std::num::ParseIntError| e.to_string())?;
    match hi {
        Some(hi) if !(lo..=hi).contains(&n) => Err(format!("{n} is not in {lo}..={hi}")),
        None if !(lo..u64::MAX).contains(&n) => Err(format!("{n} is not in {lo}..{}", u64::MAX)),
        _ => Ok(n),
    }
}

/// A count that fits `usize` on 64-bit targets; larger ones saturate.
fn count(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// `duration = number ("ms" / "s" / "m" / "h")`, e.g. `250ms`, `30s`, `5m`; above 0.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("'{s}' needs a unit: ms, s, m or h"))?;
    let (n, unit) = s.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("'{s}' must start with a whole number"))?;
    let secs = |per: u64| {
        n.checked_mul(per)
            .map(Duration::from_secs)
            .ok_or_else(|| format!("'{s}' is too long"))
    };
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => secs(1)?,
        "m" => secs(60)?,
        "h" => secs(3600)?,
        _ => return Err(format!("unknown unit '{unit}' in '{s}': use ms, s, m or h")),
    };
    if d.is_zero() {
        return Err(format!("'{s}' must be above zero"));
    }
    Ok(d)
}

fn duration(v: &OsStr) -> Result<Duration, String> {
    parse_duration(text(v)?)
}

impl std::str::FromStr for crate::config::Fsync {
    type Err = String;

    /// `always`, `never`, or `every=<duration>` (`every=200ms`, `every=1s`).
    fn from_str(s: &str) -> Result<crate::config::Fsync, String> {
        use crate::config::Fsync;
        match s.trim() {
            "always" => Ok(Fsync::Always),
            "never" => Ok(Fsync::Never),
            t => match t.strip_prefix("every=") {
                Some(d) => parse_duration(d).map(Fsync::Every),
                None => Err(format!(
                    "'{t}' is not an fsync policy: always, never or every=<duration> (every=200ms)"
                )),
            },
        }
    }
}

/// One of a setting's `choices`, in the words of clap's refusal.
fn choice<'a>(v: &'a str, choices: &[(&str, &str)]) -> Result<&'a str, String> {
    if choices.iter().any(|&(n, _)| n == v) {
        return Ok(v);
    }
    let names: Vec<&str> = choices.iter().map(|&(n, _)| n).collect();
    Err(format!("possible values: {}", names.join(", ")))
}

/// A switch's value: `true` or `false`, as clap takes them for the variable.
fn switch(v: &OsStr) -> Result<bool, String> {
    match text(v)? {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err("possible values: true, false".to_owned()),
    }
}

/// A path; empty is refused, as clap refuses an empty path flag.
fn path(v: &OsStr) -> Result<PathBuf, String> {
    if v.is_empty() {
        return Err("a value is required".to_owned());
    }
    Ok(PathBuf::from(v))
}
