//! Reads a Seelog XML file into a [`LogConfig`]. Owns parsing and validation only:
//! it opens no output (the writer does, and reports an unwritable path at the
//! position this module recorded).

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use quick_xml::events::{BytesStart, Event};
use quick_xml::{Reader, XmlVersion};

use super::format::Format;
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

/// An element of the file, read into a tree first so validation can look ahead
/// (formats are defined after the outputs that use them).
struct Elem {
    name: String,
    attrs: Vec<(String, String)>,
    pos: (usize, usize),
    children: Vec<Elem>,
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

impl Elem {
    fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
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

fn check_attrs(e: &Elem, allowed: &[&str]) -> Result<(), String> {
    for (k, _) in &e.attrs {
        if !allowed.contains(&k.as_str()) {
            return Err(format!(
                "unknown or unsupported attribute {k:?} on <{}>",
                e.name
            ));
        }
    }
    Ok(())
}

fn no_children(e: &Elem) -> Result<(), String> {
    match e.children.first() {
        Some(c) => Err(format!("<{}> cannot contain <{}>", e.name, c.name)),
        None => Ok(()),
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

/// Line and column (from 1, column in characters) of byte `offset` of `text`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..text.floor_char_boundary_compat(offset)];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    (line, col)
}

trait FloorCharBoundary {
    fn floor_char_boundary_compat(&self, i: usize) -> usize;
}

impl FloorCharBoundary for str {
    fn floor_char_boundary_compat(&self, mut i: usize) -> usize {
        while !self.is_char_boundary(i) {
            i -= 1;
        }
        i
    }
}

/// Reads the whole document into a tree of elements.
fn read_tree(text: &str) -> Result<Elem, ((usize, usize), String)> {
    let mut reader = Reader::from_str(text);
    reader.config_mut().trim_text(true);
    let mut stack: Vec<Elem> = Vec::new();
    let mut root = None;
    loop {
        // The event starts at the first non-blank byte after the current position.
        let at = reader.buffer_position() as usize;
        let start = at + text[at..].len() - text[at..].trim_start().len();
        let pos = line_col(text, start);
        let event = reader.read_event().map_err(|e| {
            (
                line_col(text, reader.error_position() as usize),
                format!("malformed XML: {e}"),
            )
        })?;
        match event {
            Event::Start(s) => stack.push(element(&s, pos)?),
            Event::Empty(s) => {
                let e = element(&s, pos)?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(e),
                    None if root.is_none() => root = Some(e),
                    None => return Err((pos, "more than one root element".into())),
                }
            }
            Event::End(_) => {
                let e = stack.pop().expect("quick-xml checks end tags");
                match stack.last_mut() {
                    Some(parent) => parent.children.push(e),
                    None if root.is_none() => root = Some(e),
                    None => return Err((pos, "more than one root element".into())),
                }
            }
            Event::Text(t) => {
                let t = String::from_utf8_lossy(&t);
                if !t.trim().is_empty() {
                    return Err((pos, format!("unexpected text {:?}", t.trim())));
                }
            }
            Event::CData(_) | Event::GeneralRef(_) => return Err((pos, "unexpected text".into())),
            Event::Eof => break,
            Event::Comment(_) | Event::Decl(_) | Event::PI(_) | Event::DocType(_) => {}
        }
    }
    if let Some(open) = stack.last() {
        return Err((
            open.pos,
            format!("malformed XML: <{}> is never closed", open.name),
        ));
    }
    root.ok_or(((1, 1), "malformed XML: no root element".into()))
}

fn element(s: &BytesStart<'_>, pos: (usize, usize)) -> Result<Elem, ((usize, usize), String)> {
    let name = String::from_utf8_lossy(s.name().as_ref()).into_owned();
    let mut attrs = Vec::new();
    for a in s.attributes() {
        let a = a.map_err(|e| (pos, format!("malformed XML: {e}")))?;
        let key = String::from_utf8_lossy(a.key.as_ref()).into_owned();
        let value = a
            .normalized_value(XmlVersion::Implicit1_0)
            .map_err(|e| (pos, format!("malformed XML in attribute {key:?}: {e}")))?
            .into_owned();
        if attrs.iter().any(|(k, _)| *k == key) {
            return Err((pos, format!("attribute {key:?} given twice")));
        }
        attrs.push((key, value));
    }
    Ok(Elem {
        name,
        attrs,
        pos,
        children: Vec::new(),
    })
}
