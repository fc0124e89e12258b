//! Reads a Seelog XML file into a [`LogConfig`]: the validated configuration types
//! and the rules that turn the element tree (read by `xml.rs`) into them. Owns
//! parsing and validation only: it opens no output (`outputs.rs` does, and reports an
//! unwritable path at the position this module recorded).

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::format::Format;
use super::xml::{check_attrs, no_children, read_tree, Elem};
use super::{Level, LevelSet};

/// The built-in configuration, used without `--log-config`; the same text as
/// `config/logconfig.xml`.
pub const DEFAULT_CONFIG: &str = include_str!("../../../config/logconfig.xml");

/// Seelog's format when an output names none.
const SEELOG_DEFAULT_FORMAT: &str = "%Ns [%Level] %Msg%n";

/// A bad log configuration: where, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file (or `<built-in>`).
    pub origin: String,
    /// Line and column, both from 1, where the problem is, when known.
    pub position: Option<(usize, usize)>,
    /// What is wrong.
    pub problem: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Some((line, col)) => write!(f, "{}:{line}:{col}: {}", self.origin, self.problem),
            None => write!(f, "{}: {}", self.origin, self.problem),
        }
    }
}

impl std::error::Error for ConfigError {}

/// How records travel from the `log` call to the outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoggerKind {
    /// `sync`: written and flushed by the logging thread itself.
    Sync,
    /// `asyncloop`: a writer thread writes records as they come, flushing whenever
    /// the channel is empty.
    AsyncLoop,
    /// `asynctimer`: a writer thread flushes at most once per interval
    /// (`asyncinterval`, nanoseconds).
    AsyncTimer(Duration),
}

/// Where an output writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputKind {
    /// `<console/>`: standard error (standard output carries the start-up line).
    Console,
    /// `<file path=…/>`: appended to.
    File(PathBuf),
    /// `<rollingfile type="size" filename=… maxsize=… maxrolls=…/>`.
    Rolling {
        /// The live file.
        filename: PathBuf,
        /// Bytes after which the file rolls.
        maxsize: u64,
        /// Rolled files kept (`None`: all of them).
        maxrolls: Option<usize>,
    },
}

/// One output with its format and the levels that reach it.
#[derive(Debug, Clone)]
pub struct OutputSpec {
    /// Where it writes.
    pub kind: OutputKind,
    /// How a record is written.
    pub format: Format,
    /// Levels that reach it (the logger's levels and every enclosing `<filter>`).
    pub levels: LevelSet,
    /// Line and column of the element, for errors found when it is opened.
    pub position: (usize, usize),
}

/// A parsed log configuration.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// Where it came from, for error messages.
    pub origin: String,
    /// `type` and `asyncinterval`.
    pub kind: LoggerKind,
    /// `minlevel`/`maxlevel`/`levels`.
    pub levels: LevelSet,
    /// Every output, filters flattened into each output's `levels`.
    pub outputs: Vec<OutputSpec>,
}

impl LogConfig {
    /// The built-in configuration ([`DEFAULT_CONFIG`]).
    pub fn builtin() -> LogConfig {
        LogConfig::parse(DEFAULT_CONFIG, "<built-in>").expect("the built-in log config is valid")
    }

    /// Reads and parses `path`.
    pub fn from_file(path: &Path) -> Result<LogConfig, ConfigError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            origin: origin.clone(),
            position: None,
            problem: format!("cannot read: {e}"),
        })?;
        LogConfig::parse(&text, &origin)
    }

    /// Parses `text`; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<LogConfig, ConfigError> {
        let err = |pos: Option<(usize, usize)>, problem: String| ConfigError {
            origin: origin.to_owned(),
            position: pos,
            problem,
        };
        let root = read_tree(text).map_err(|(pos, p)| err(Some(pos), p))?;
        let at = |e: &Elem, p: String| err(Some(e.pos), p);
        if root.name != "seelog" {
            return Err(at(
                &root,
                format!("the root element is <{}>, expected <seelog>", root.name),
            ));
        }
        check_attrs(
            &root,
            &["type", "asyncinterval", "minlevel", "maxlevel", "levels"],
        )
        .map_err(|p| at(&root, p))?;
        let levels = levels_of(&root).map_err(|p| at(&root, p))?;
        let interval = root.attr("asyncinterval");
        let kind =
            match root.attr("type").unwrap_or("asyncloop") {
                "sync" => LoggerKind::Sync,
                "asyncloop" => LoggerKind::AsyncLoop,
                "asynctimer" => {
                    let ns = interval
                        .ok_or("type=\"asynctimer\" needs asyncinterval (nanoseconds)".to_owned())
                        .and_then(|v| {
                            v.parse::<u64>().ok().filter(|n| *n > 0).ok_or(format!(
                                "asyncinterval {v:?} is not a positive number of nanoseconds"
                            ))
                        })
                        .map_err(|p| at(&root, p))?;
                    LoggerKind::AsyncTimer(Duration::from_nanos(ns))
                }
                "adaptive" => return Err(at(
                    &root,
                    "logger type \"adaptive\" is not supported (use sync, asyncloop or asynctimer)"
                        .into(),
                )),
                other => {
                    return Err(at(
                        &root,
                        format!(
                        "unknown logger type {other:?} (expected sync, asyncloop or asynctimer)"
                    ),
                    ))
                }
            };
        if interval.is_some() && !matches!(kind, LoggerKind::AsyncTimer(_)) {
            return Err(at(
                &root,
                "asyncinterval is only for type=\"asynctimer\"".into(),
            ));
        }

        // Formats first: outputs refer to them by id.
        let mut formats: HashMap<&str, Format> = HashMap::new();
        let mut outputs_elem = None;
        for child in &root.children {
            match child.name.as_str() {
                "formats" => {
                    check_attrs(child, &[]).map_err(|p| at(child, p))?;
                    for f in &child.children {
                        if f.name != "format" {
                            return Err(at(
                                f,
                                format!(
                                    "unknown element <{}> in <formats> (expected <format>)",
                                    f.name
                                ),
                            ));
                        }
                        check_attrs(f, &["id", "format"]).map_err(|p| at(f, p))?;
                        let id = f
                            .attr("id")
                            .ok_or_else(|| at(f, "<format> needs an id".into()))?;
                        let src = f
                            .attr("format")
                            .ok_or_else(|| at(f, format!("<format id={id:?}> needs a format")))?;
                        let compiled = Format::compile(src)
                            .map_err(|p| at(f, format!("format {id:?}: {p}")))?;
                        if formats.insert(id, compiled).is_some() {
                            return Err(at(f, format!("format id {id:?} is defined twice")));
                        }
                        no_children(f).map_err(|p| at(f, p))?;
                    }
                }
                "outputs" => {
                    if outputs_elem.replace(child).is_some() {
                        return Err(at(child, "<outputs> appears twice".into()));
                    }
                }
                "exceptions" => return Err(at(
                    child,
                    "<exceptions> is not supported: log records carry no function name to match"
                        .into(),
                )),
                other => return Err(at(child, format!("unknown element <{other}> in <seelog>"))),
            }
        }
        let outputs_elem =
            outputs_elem.ok_or_else(|| at(&root, "<seelog> has no <outputs>".into()))?;
        let default_format = Format::compile(SEELOG_DEFAULT_FORMAT).expect("valid");
        let mut outputs = Vec::new();
        collect_outputs(
            outputs_elem,
            None,
            levels,
            &formats,
            &default_format,
            &mut outputs,
        )
        .map_err(|(pos, p)| err(Some(pos), p))?;
        if outputs.is_empty() {
            return Err(at(outputs_elem, "<outputs> has no output".into()));
        }
        Ok(LogConfig {
            origin: origin.to_owned(),
            kind,
            levels,
            outputs,
        })
    }
}

/// Walks `<outputs>`, `<filter>` and `<splitter>`, giving each output the format id
/// nearest to it and the levels of every enclosing filter.
fn collect_outputs(
    e: &Elem,
    inherited_format: Option<&str>,
    levels: LevelSet,
    formats: &HashMap<&str, Format>,
    default_format: &Format,
    out: &mut Vec<OutputSpec>,
) -> Result<(), ((usize, usize), String)> {
    let at = |p: String| (e.pos, p);
    let formatid = e.attr("formatid").or(inherited_format);
    let resolve = || match formatid {
        Some(id) => formats
            .get(id)
            .cloned()
            .ok_or_else(|| at(format!("format id {id:?} is not defined in <formats>"))),
        None => Ok(default_format.clone()),
    };
    let num = |name: &str| -> Result<Option<u64>, ((usize, usize), String)> {
        e.attr(name)
            .map(|v| {
                v.parse::<u64>()
                    .map_err(|_| at(format!("{name} {v:?} is not a whole number")))
            })
            .transpose()
    };
    let path = |name: &str| -> Result<PathBuf, ((usize, usize), String)> {
        match e.attr(name) {
            Some(v) if !v.is_empty() => Ok(PathBuf::from(v)),
            _ => Err(at(format!("<{}> needs {name}", e.name))),
        }
    };
    let mut leaf = |kind: OutputKind| -> Result<(), ((usize, usize), String)> {
        no_children(e).map_err(at)?;
        out.push(OutputSpec {
            kind,
            format: resolve()?,
            levels,
            position: e.pos,
        });
        Ok(())
    };
    match e.name.as_str() {
        "outputs" | "splitter" | "filter" => {
            let mut levels = levels;
            if e.name == "filter" {
                check_attrs(e, &["levels", "formatid"]).map_err(at)?;
                let l = e.attr("levels").ok_or_else(|| at("<filter> needs levels".into()))?;
                levels = levels.and(parse_level_list(l).map_err(at)?);
            } else {
                check_attrs(e, &["formatid"]).map_err(at)?;
            }
            if formatid.is_some() {
                resolve()?; // an undefined id is an error even if every child overrides it
            }
            for c in &e.children {
                collect_outputs(c, formatid, levels, formats, default_format, out)?;
            }
            Ok(())
        }
        "console" => {
            check_attrs(e, &["formatid"]).map_err(at)?;
            leaf(OutputKind::Console)
        }
        "file" => {
            check_attrs(e, &["path", "formatid"]).map_err(at)?;
            let p = path("path")?;
            leaf(OutputKind::File(p))
        }
        "rollingfile" => {
            check_attrs(e, &["type", "filename", "maxsize", "maxrolls", "formatid"]).map_err(at)?;
            match e.attr("type") {
                Some("size") => {}
                Some(other) => {
                    return Err(at(format!("rollingfile type {other:?} is not supported (only \"size\")")))
                }
                None => return Err(at("<rollingfile> needs type=\"size\"".into())),
            }
            let filename = path("filename")?;
            let maxsize = num("maxsize")?.ok_or_else(|| at("<rollingfile> needs maxsize (bytes)".into()))?;
            if maxsize == 0 {
                return Err(at("maxsize must be at least 1 byte".into()));
            }
            let maxrolls = num("maxrolls")?.filter(|n| *n > 0).map(|n| n as usize);
            leaf(OutputKind::Rolling { filename, maxsize, maxrolls })
        }
        "buffered" | "smtp" | "conn" => Err(at(format!(
            "output <{}> is not supported (supported: console, file, rollingfile, filter, splitter)",
            e.name
        ))),
        other => Err(at(format!(
            "unknown output <{other}> (supported: console, file, rollingfile, filter, splitter)"
        ))),
    }
}

fn parse_level(s: &str) -> Result<Option<Level>, String> {
    let s = s.trim();
    Level::ALL
        .into_iter()
        .find(|l| l.name() == s)
        .map(Some)
        .or((s == "off").then_some(None))
        .ok_or_else(|| {
            format!(
                "unknown level {s:?} (expected trace, debug, info, warn, error, critical or off)"
            )
        })
}

fn parse_level_list(s: &str) -> Result<LevelSet, String> {
    let mut set = LevelSet::NONE;
    for part in s.split(',') {
        if let Some(l) = parse_level(part)? {
            set.insert(l);
        }
    }
    Ok(set)
}

/// The root's `minlevel`/`maxlevel` or `levels` (never both, as in Seelog).
fn levels_of(root: &Elem) -> Result<LevelSet, String> {
    let (min, max, list) = (
        root.attr("minlevel"),
        root.attr("maxlevel"),
        root.attr("levels"),
    );
    if list.is_some() && (min.is_some() || max.is_some()) {
        return Err("levels cannot be combined with minlevel or maxlevel".into());
    }
    if let Some(list) = list {
        return parse_level_list(list);
    }
    let min = min.map(parse_level).transpose()?;
    let max = max.map(parse_level).transpose()?;
    // `off` as the minimum lets nothing through; as the maximum, likewise.
    if matches!(min, Some(None)) || matches!(max, Some(None)) {
        return Ok(LevelSet::NONE);
    }
    Ok(LevelSet::range(
        min.flatten().unwrap_or(Level::Trace),
        max.flatten().unwrap_or(Level::Critical),
    ))
}
