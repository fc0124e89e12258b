//! Seelog format strings (`%Date(...) [%LEVEL] %Msg%n`): the verb parser, compiled
//! once at start into a list of pieces, and the renderer that walks those pieces for
//! each [`Entry`] without parsing anything again. The dates inside are Go layouts
//! ([`Layout`], in `layout.rs`).
//!
//! Owns only text: it never touches a clock or an output. The time to render comes in
//! with the [`Entry`], so tests can fix it.

use std::fmt::Write as _;

use chrono::{DateTime, FixedOffset};

use super::layout::Layout;
use super::Level;

/// One log record, owned, so it can cross to the writer thread.
#[derive(Debug, Clone)]
pub struct Entry {
    /// When the record was made, in the local time zone (or the one a test chose).
    pub time: DateTime<FixedOffset>,
    /// Seelog level of the record.
    pub level: Level,
    /// The formatted message.
    pub msg: String,
    /// Source file as the `log` crate gives it (relative to the crate), if known.
    pub file: Option<String>,
    /// Source line, if known.
    pub line: Option<u32>,
}

/// A compiled Seelog format string.
#[derive(Debug, Clone)]
pub struct Format {
    pieces: Vec<Piece>,
}

#[derive(Debug, Clone)]
enum Piece {
    Lit(String),
    /// A Go layout rendered in the entry's own zone (`utc == false`) or in UTC.
    Date {
        layout: Layout,
        utc: bool,
    },
    Level(LevelStyle),
    Msg,
    /// Base name of the source file.
    File,
    /// The source path as the `log` crate gives it.
    RelFile,
    Line,
    /// Nanoseconds since the Unix epoch.
    Ns,
}

#[derive(Debug, Clone, Copy)]
enum LevelStyle {
    /// `Info`
    Level,
    /// `INFO`
    Upper,
    /// `Inf`
    Lev,
    /// `INF`
    LevUpper,
    /// `i`
    Letter,
}

/// Every verb this implementation knows, for longest-prefix matching as Seelog does.
const VERBS: &[&str] = &[
    "Date", "Time", "UTCDate", "UTCTime", "LEVEL", "Level", "Lev", "LEV", "l", "Msg", "n", "t",
    "r", "File", "RelFile", "Line", "Ns", "UTCNs", "EscM",
];

/// Seelog verbs that a `log::Record` cannot supply; naming them is a start-up error that
/// says why rather than "unknown verb".
const UNSUPPORTED_VERBS: &[(&str, &str)] = &[
    ("FuncShort", "log records carry no function name"),
    ("Func", "log records carry no function name"),
    (
        "FullPath",
        "log records carry the path relative to the crate, not a full path",
    ),
    ("CustomVerb", "custom formatters are not supported"),
];

impl Format {
    /// Compiles a Seelog format string. The error names the offending verb.
    pub fn compile(src: &str) -> Result<Format, String> {
        let mut pieces = Vec::new();
        let mut lit = String::new();
        let mut rest = src;
        while let Some(at) = rest.find('%') {
            lit.push_str(&rest[..at]);
            rest = &rest[at + 1..];
            if let Some(r) = rest.strip_prefix('%') {
                lit.push('%');
                rest = r;
                continue;
            }
            let letters_end = rest
                .find(|c: char| !c.is_alphabetic())
                .unwrap_or(rest.len());
            let letters = &rest[..letters_end];
            if letters.is_empty() {
                return Err(format!("'%' at the end or before {rest:?} starts no verb (write %% for a percent sign)"));
            }
            if let Some((name, why)) = UNSUPPORTED_VERBS
                .iter()
                .find(|(n, _)| letters.starts_with(n))
            {
                return Err(format!("unsupported verb %{name}: {why}"));
            }
            // Seelog takes the longest verb that prefixes the run of letters, so
            // `%Msgs` is `%Msg` then a literal `s`.
            let Some(verb) = (1..=letters.len())
                .rev()
                .map(|n| &letters[..n])
                .find(|v| VERBS.contains(v))
            else {
                return Err(format!("unknown verb %{letters}"));
            };
            rest = &rest[verb.len()..];
            let param = if let Some(r) = rest.strip_prefix('(') {
                let Some(close) = r.find(')') else {
                    return Err(format!("%{verb}( has no closing ')'"));
                };
                rest = &r[close + 1..];
                Some(&r[..close])
            } else {
                None
            };
            let takes_param = matches!(verb, "Date" | "UTCDate" | "EscM");
            if param.is_some() && !takes_param {
                return Err(format!("%{verb} takes no parameter"));
            }
            let piece = match verb {
                "Date" | "UTCDate" => Piece::Date {
                    layout: Layout::compile(param.unwrap_or("2006-01-02"), verb == "UTCDate")
                        .map_err(|e| format!("%{verb}: {e}"))?,
                    utc: verb == "UTCDate",
                },
                "Time" | "UTCTime" => Piece::Date {
                    layout: Layout::compile("15:04:05", true).expect("fixed layout"),
                    utc: verb == "UTCTime",
                },
                "LEVEL" => Piece::Level(LevelStyle::Upper),
                "Level" => Piece::Level(LevelStyle::Level),
                "Lev" => Piece::Level(LevelStyle::Lev),
                "LEV" => Piece::Level(LevelStyle::LevUpper),
                "l" => Piece::Level(LevelStyle::Letter),
                "Msg" => Piece::Msg,
                "n" => Piece::Lit("\n".into()),
                "t" => Piece::Lit("\t".into()),
                "r" => Piece::Lit("\r".into()),
                "File" => Piece::File,
                "RelFile" => Piece::RelFile,
                "Line" => Piece::Line,
                "Ns" | "UTCNs" => Piece::Ns,
                "EscM" => {
                    let codes = param.ok_or("%EscM needs a parameter, such as %EscM(36)")?;
                    if !codes.chars().all(|c| c.is_ascii_digit() || c == ';') {
                        return Err(format!("%EscM({codes}): expected digits and ';'"));
                    }
                    Piece::Lit(format!("\x1b[{codes}m"))
                }
                _ => unreachable!("every entry of VERBS is handled"),
            };
            if let Piece::Lit(s) = piece {
                lit.push_str(&s);
            } else {
                if !lit.is_empty() {
                    pieces.push(Piece::Lit(std::mem::take(&mut lit)));
                }
                pieces.push(piece);
            }
        }
        lit.push_str(rest);
        if !lit.is_empty() {
            pieces.push(Piece::Lit(lit));
        }
        Ok(Format { pieces })
    }

    /// Appends `entry`, formatted, to `out`.
    pub fn render(&self, entry: &Entry, out: &mut String) {
        for piece in &self.pieces {
            match piece {
                Piece::Lit(s) => out.push_str(s),
                Piece::Date { layout, utc } => {
                    if *utc {
                        layout.render(
                            &entry.time.with_timezone(&FixedOffset::east_opt(0).unwrap()),
                            true,
                            out,
                        )
                    } else {
                        layout.render(&entry.time, false, out)
                    }
                }
                Piece::Level(style) => out.push_str(level_text(entry.level, *style)),
                Piece::Msg => out.push_str(&entry.msg),
                Piece::File => {
                    let f = entry.file.as_deref().unwrap_or("???");
                    out.push_str(f.rsplit(['/', '\\']).next().unwrap_or(f));
                }
                Piece::RelFile => out.push_str(entry.file.as_deref().unwrap_or("???")),
                Piece::Line => {
                    let _ = write!(out, "{}", entry.line.unwrap_or(0));
                }
                Piece::Ns => {
                    let ns = entry.time.timestamp_nanos_opt().unwrap_or(0);
                    let _ = write!(out, "{ns}");
                }
            }
        }
    }

    /// `entry` formatted into a new string.
    pub fn to_line(&self, entry: &Entry) -> String {
        let mut s = String::new();
        self.render(entry, &mut s);
        s
    }
}

fn level_text(level: Level, style: LevelStyle) -> &'static str {
    use Level::*;
    use LevelStyle as S;
    match (style, level) {
        (S::Level, Trace) => "Trace",
        (S::Level, Debug) => "Debug",
        (S::Level, Info) => "Info",
        (S::Level, Warn) => "Warn",
        (S::Level, Error) => "Error",
        (S::Level, Critical) => "Critical",
        (S::Upper, Trace) => "TRACE",
        (S::Upper, Debug) => "DEBUG",
        (S::Upper, Info) => "INFO",
        (S::Upper, Warn) => "WARN",
        (S::Upper, Error) => "ERROR",
        (S::Upper, Critical) => "CRITICAL",
        (S::Lev, Trace) => "Trc",
        (S::Lev, Debug) => "Dbg",
        (S::Lev, Info) => "Inf",
        (S::Lev, Warn) => "Wrn",
        (S::Lev, Error) => "Err",
        (S::Lev, Critical) => "Crt",
        (S::LevUpper, Trace) => "TRC",
        (S::LevUpper, Debug) => "DBG",
        (S::LevUpper, Info) => "INF",
        (S::LevUpper, Warn) => "WRN",
        (S::LevUpper, Error) => "ERR",
        (S::LevUpper, Critical) => "CRT",
        (S::Letter, Trace) => "t",
        (S::Letter, Debug) => "d",
        (S::Letter, Info) => "i",
        (S::Letter, Warn) => "w",
        (S::Letter, Error) => "e",
        (S::Letter, Critical) => "c",
    }
}
