//! The chain syntax: one line, the same in the config file, the protocol and the CLI.
//!
//! ```text
//! chain      = *WSP [ step *( *WSP "|" *WSP step ) *WSP ]
//! step       = threshold / enrich / set / remove / sample
//! threshold  = "threshold" 1*WSP path 1*WSP test
//! test       = cmp 1*WSP number / "between" 1*WSP number 1*WSP ["and" 1*WSP] number
//! cmp        = ">=" / "<=" / ">" / "<" / "above" / "below"
//! enrich     = "enrich" 1*( 1*WSP option )
//! option     = 1*( ALPHA / DIGIT / "_" ) "=" value
//! set        = "set" 1*( 1*WSP path "=" value )
//! remove     = "remove" 1*( 1*WSP path )        ; not "."
//! sample     = "sample" 1*WSP ["1/"] 1*DIGIT    ; keep one in N, N >= 1
//! path       = "." / "header:" header-name / json-pointer
//! json-pointer = 1*( "/" *pchar )               ; RFC 6901; no WSP, "|" or "="
//! value      = quoted / *bchar
//! quoted     = DQUOTE *( qchar / "\" DQUOTE / "\\" ) DQUOTE
//! bchar      = any character but WSP and "|"
//! number     = a decimal number, e.g. 30, -4.5, 1e3
//! ```
//!
//! Keywords are case-insensitive. Each parser below is a function over `&str` built
//! from nom combinators; errors carry the column and what was expected there.

use nom::bytes::complete::{tag, tag_no_case, take_till, take_till1, take_while1};
use nom::character::complete::{digit1, space0, space1};
use nom::error::{ErrorKind, ParseError};
use nom::{IResult, Parser};

use super::path::{pointer_tokens, Path};
use super::threshold::Test;
use super::ChainError;
use agora_protocol::Headers;

/// One parsed step, before it is built into a mutator.
#[derive(Debug, Clone, PartialEq)]
pub enum Spec {
    /// `threshold <path> <test>`.
    Threshold {
        /// What is compared.
        path: Path,
        /// Kept when this holds.
        test: Test,
    },
    /// `enrich name=value…`: options checked when built.
    Enrich(Vec<(String, String)>),
    /// `set path=value…`.
    Set(Vec<(Path, SetValue)>),
    /// `remove path…`.
    Remove(Vec<Path>),
    /// `sample N`.
    Sample {
        /// Keep one in this many.
        every: u64,
    },
}

/// The right-hand side of `set`, as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetValue {
    /// The text (quotes and escapes removed).
    pub text: String,
    /// It was written in double quotes (so it is a string, never `now` or a number).
    pub quoted: bool,
}

#[derive(Debug)]
pub(crate) struct PErr<'a> {
    input: &'a str,
    expected: Option<String>,
}

impl<'a> ParseError<&'a str> for PErr<'a> {
    fn from_error_kind(input: &'a str, _: ErrorKind) -> Self {
        PErr {
            input,
            expected: None,
        }
    }
    fn append(_: &'a str, _: ErrorKind, other: Self) -> Self {
        other
    }
}

type Res<'a, O> = IResult<&'a str, O, PErr<'a>>;

fn fail<'a, O>(at: &'a str, what: impl Into<String>) -> Res<'a, O> {
    Err(nom::Err::Failure(PErr {
        input: at,
        expected: Some(what.into()),
    }))
}

/// Runs `p`; a plain error becomes a failure saying `what` was expected.
fn expect<'a, O>(
    what: &'static str,
    mut p: impl Parser<&'a str, Output = O, Error = PErr<'a>>,
) -> impl FnMut(&'a str) -> Res<'a, O> {
    move |i| match p.parse(i) {
        Err(nom::Err::Error(_)) => fail(i, format!("expected {what}")),
        other => other,
    }
}

/// Parses a chain into its steps, each with the 1-based column where it starts.
pub fn parse(text: &str) -> Result<Vec<(usize, Spec)>, ChainError> {
    let column = |rest: &str| text[..text.len() - rest.len()].chars().count() + 1;
    match chain(text) {
        Ok((_, steps)) => Ok(steps.into_iter().map(|(at, s)| (column(at), s)).collect()),
        Err(nom::Err::Error(e) | nom::Err::Failure(e)) => Err(ChainError {
            column: column(e.input),
            message: e.expected.unwrap_or_else(|| "syntax error".to_owned()),
        }),
        Err(nom::Err::Incomplete(_)) => Err(ChainError {
            column: column(""),
            message: "the chain ends too soon".to_owned(),
        }),
    }
}

/// `chain = *WSP [ step *( *WSP "|" *WSP step ) *WSP ]`
fn chain(i: &str) -> Res<'_, Vec<(&str, Spec)>> {
    let (mut i, _) = space0(i)?;
    let mut steps = Vec::new();
    if i.is_empty() {
        return Ok((i, steps));
    }
    loop {
        let (r, s) = step(i)?;
        steps.push((i, s));
        let (r, _) = space0(r)?;
        if r.is_empty() {
            return Ok((r, steps));
        }
        match r.strip_prefix('|') {
            Some(r) => {
                let (r, _) = space0(r)?;
                if r.is_empty() {
                    return fail(r, "expected a mutator after '|'");
                }
                i = r;
            }
            None => return fail(r, "expected '|' or the end of the chain"),
        }
    }
}

/// `step = threshold / enrich / set / remove / sample`
fn step(i: &str) -> Res<'_, Spec> {
    let (r, kw) = expect(
        "a mutator: threshold, enrich, set, remove or sample",
        take_while1(|c: char| c.is_ascii_alphanumeric() || c == '_'),
    )(i)?;
    match kw.to_ascii_lowercase().as_str() {
        "threshold" => threshold(r),
        "enrich" => enrich(r),
        "set" => set(r),
        "remove" => remove(r),
        "sample" => sample(r),
        _ => fail(
            i,
            format!("unknown mutator '{kw}' (known: threshold, enrich, set, remove, sample)"),
        ),
    }
}

fn ws1(i: &str) -> Res<'_, &str> {
    expect("a space", space1)(i)
}

/// True when a step's list of items is over: only spaces before `|` or the end.
fn at_step_end(i: &str) -> bool {
    let t = i.trim_start_matches([' ', '\t']);
    t.is_empty() || t.starts_with('|')
}

/// `number = a decimal number`
fn number(i: &str) -> Res<'_, f64> {
    let (r, n) = expect("a number", nom::number::complete::double)(i)?;
    if !n.is_finite() {
        return fail(i, "expected a finite number");
    }
    if !(r.is_empty() || r.starts_with([' ', '\t', '|'])) {
        return fail(i, "expected a number");
    }
    Ok((r, n))
}

/// `path = "." / "header:" header-name / json-pointer`
pub(crate) fn path(i: &str) -> Res<'_, Path> {
    const WHAT: &str = "a path: '.', header:NAME or a JSON pointer like /a/b";
    let (r, tok) = expect(
        WHAT,
        take_till1(|c: char| c.is_whitespace() || c == '|' || c == '='),
    )(i)?;
    if tok == "." {
        return Ok((r, Path::Payload));
    }
    if let Some(name) = strip_prefix_ci(tok, "header:") {
        if Headers::new().insert(name, "x").is_err() {
            return fail(i, format!("'{name}' is not a valid header name"));
        }
        return Ok((r, Path::Header(name.to_owned())));
    }
    match pointer_tokens(tok) {
        Some(t) => Ok((r, Path::Json(t))),
        None => fail(i, format!("expected {WHAT}, got '{tok}'")),
    }
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    (s.len() >= prefix.len() && s.is_char_boundary(prefix.len()))
        .then(|| s.split_at(prefix.len()))
        .filter(|(p, _)| p.eq_ignore_ascii_case(prefix))
        .map(|(_, rest)| rest)
}

/// `value = quoted / *bchar`
fn value(i: &str) -> Res<'_, SetValue> {
    if let Some(mut r) = i.strip_prefix('"') {
        let mut text = String::new();
        loop {
            let mut chars = r.chars();
            match chars.next() {
                None => return fail(i, "a quoted value needs its closing '\"'"),
                Some('"') => {
                    return Ok((chars.as_str(), SetValue { text, quoted: true }));
                }
                Some('\\') => match chars.next() {
                    Some(c @ ('"' | '\\')) => text.push(c),
                    _ => return fail(r, "in quotes, '\\' must be followed by '\"' or '\\'"),
                },
                Some(c) => text.push(c),
            }
            r = chars.as_str();
        }
    }
    let (r, v) = take_till(|c: char| c.is_whitespace() || c == '|')(i)?;
    Ok((
        r,
        SetValue {
            text: v.to_owned(),
            quoted: false,
        },
    ))
}

/// `threshold = "threshold" 1*WSP path 1*WSP test`
fn threshold(i: &str) -> Res<'_, Spec> {
    let (i, _) = ws1(i)?;
    let (i, path) = path(i)?;
    let (i, _) = ws1(i)?;
    let (r, op) = expect(
        "a comparison: >, >=, <, <=, above, below or between",
        nom::branch::alt((
            tag(">="),
            tag("<="),
            tag(">"),
            tag("<"),
            tag_no_case("above"),
            tag_no_case("below"),
            tag_no_case("between"),
        )),
    )(i)?;
    let (r, _) = ws1(r)?;
    let (r, a) = number(r)?;
    let test = match op.to_ascii_lowercase().as_str() {
        ">" | "above" => Test::Above(a),
        ">=" => Test::AtLeast(a),
        "<" | "below" => Test::Below(a),
        "<=" => Test::AtMost(a),
        _ => {
            let (r2, _) = ws1(r)?;
            let r2 = match tag_no_case::<_, _, PErr<'_>>("and").parse(r2) {
                Ok((r3, _)) => ws1(r3)?.0,
                Err(_) => r2,
            };
            let (r3, b) = number(r2)?;
            if b < a {
                return fail(
                    r2,
                    format!("between {a} and {b}: the upper bound is below the lower"),
                );
            }
            return Ok((
                r3,
                Spec::Threshold {
                    path,
                    test: Test::Between(a, b),
                },
            ));
        }
    };
    Ok((r, Spec::Threshold { path, test }))
}

/// `enrich = "enrich" 1*( 1*WSP option )`
fn enrich(mut i: &str) -> Res<'_, Spec> {
    let mut opts = Vec::new();
    loop {
        let (r, _) = ws1(i)?;
        let (r, name) = expect(
            "an option like db=NAME",
            take_while1(|c: char| c.is_ascii_alphanumeric() || c == '_'),
        )(r)?;
        let (r, _) = expect("'=' after the option's name", tag("="))(r)?;
        let (r, v) = value(r)?;
        opts.push((name.to_ascii_lowercase(), v.text));
        i = r;
        if at_step_end(i) {
            return Ok((i, Spec::Enrich(opts)));
        }
    }
}

/// `set = "set" 1*( 1*WSP path "=" value )`
fn set(mut i: &str) -> Res<'_, Spec> {
    let mut v = Vec::new();
    loop {
        let (r, _) = ws1(i)?;
        let (r, p) = path(r)?;
        let (r, _) = expect("'=' and a value after the path", tag("="))(r)?;
        let (r, val) = value(r)?;
        v.push((p, val));
        i = r;
        if at_step_end(i) {
            return Ok((i, Spec::Set(v)));
        }
    }
}

/// `remove = "remove" 1*( 1*WSP path )`
fn remove(mut i: &str) -> Res<'_, Spec> {
    let mut v = Vec::new();
    loop {
        let (r, _) = ws1(i)?;
        let (r2, p) = path(r)?;
        if p == Path::Payload {
            return fail(
                r,
                "the payload itself cannot be removed (use set .=… to replace it)",
            );
        }
        v.push(p);
        i = r2;
        if at_step_end(i) {
            return Ok((i, Spec::Remove(v)));
        }
    }
}

/// `sample = "sample" 1*WSP ["1/"] 1*DIGIT`
fn sample(i: &str) -> Res<'_, Spec> {
    let (i, _) = ws1(i)?;
    let i = i.strip_prefix("1/").unwrap_or(i);
    let (r, n) = expect("a count N (keep one message in N)", digit1)(i)?;
    match n.parse::<u64>() {
        Ok(every) if every >= 1 => Ok((r, Spec::Sample { every })),
        _ => fail(i, "the count must be a whole number from 1 up"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> Vec<Spec> {
        parse(s)
            .unwrap_or_else(|e| panic!("{s}: {e}"))
            .into_iter()
            .map(|(_, s)| s)
            .collect()
    }

    fn err(s: &str) -> ChainError {
        parse(s).expect_err(s)
    }

    fn j(p: &str) -> Path {
        Path::Json(pointer_tokens(p).unwrap())
    }

    #[test]
    fn the_issue_example() {
        let v = parse(
            "threshold /temp > 30 | enrich db=sensors table=sites key=/site | set header:seen=now",
        )
        .unwrap();
        assert_eq!(v.len(), 3);
        assert_eq!(
            v[0],
            (
                1,
                Spec::Threshold {
                    path: j("/temp"),
                    test: Test::Above(30.0)
                }
            )
        );
        assert_eq!(v[1].0, 24);
        assert_eq!(
            v[1].1,
            Spec::Enrich(vec![
                ("db".into(), "sensors".into()),
                ("table".into(), "sites".into()),
                ("key".into(), "/site".into())
            ])
        );
        assert_eq!(
            v[2].1,
            Spec::Set(vec![(
                Path::Header("seen".into()),
                SetValue {
                    text: "now".into(),
                    quoted: false
                }
            )])
        );
    }

    #[test]
    fn empty_and_blank_chains_have_no_steps() {
        assert!(ok("").is_empty());
        assert!(ok(" \t ").is_empty());
    }

    #[test]
    fn every_comparison() {
        let t = |s: &str| match &ok(s)[0] {
            Spec::Threshold { test, .. } => *test,
            _ => unreachable!(),
        };
        assert_eq!(t("threshold . > 1"), Test::Above(1.0));
        assert_eq!(t("THRESHOLD . ABOVE 1"), Test::Above(1.0));
        assert_eq!(t("threshold . >= -1.5"), Test::AtLeast(-1.5));
        assert_eq!(t("threshold . < 1e3"), Test::Below(1000.0));
        assert_eq!(t("threshold . below 2"), Test::Below(2.0));
        assert_eq!(t("threshold . <= 0"), Test::AtMost(0.0));
        assert_eq!(t("threshold header:x between 1 5"), Test::Between(1.0, 5.0));
        assert_eq!(t("threshold /a between 1 and 5"), Test::Between(1.0, 5.0));
    }

    #[test]
    fn paths() {
        let p = |s: &str| match &ok(&format!("remove {s}"))[0] {
            Spec::Remove(v) => v[0].clone(),
            _ => unreachable!(),
        };
        assert_eq!(p("header:Trace-Id"), Path::Header("Trace-Id".into()));
        assert_eq!(p("HEADER:x"), Path::Header("x".into()));
        assert_eq!(p("/a/b~1c"), Path::Json(vec!["a".into(), "b/c".into()]));
    }

    #[test]
    fn set_values_and_quotes() {
        let v = ok(r#"set header:a=1 /b="x | y" /c=now /d="say \"hi\"" header:e="#);
        let Spec::Set(v) = &v[0] else { unreachable!() };
        assert_eq!(v.len(), 5);
        assert_eq!(
            v[1].1,
            SetValue {
                text: "x | y".into(),
                quoted: true
            }
        );
        assert_eq!(v[3].1.text, r#"say "hi""#);
        assert_eq!(
            v[4].1,
            SetValue {
                text: "".into(),
                quoted: false
            }
        );
    }

    #[test]
    fn sample_forms() {
        assert_eq!(ok("sample 10"), vec![Spec::Sample { every: 10 }]);
        assert_eq!(ok("sample 1/3"), vec![Spec::Sample { every: 3 }]);
    }

    #[test]
    fn errors_say_where_and_what() {
        let e = err("threshold /temp >> 30");
        assert_eq!(e.column, 18, "{e}");
        assert!(e.message.contains("space"), "{e}");
        let e = err("thresh /temp > 30");
        assert_eq!(e.column, 1);
        assert!(e.message.contains("unknown mutator 'thresh'"), "{e}");
        let e = err("sample 10 |");
        assert!(e.message.contains("after '|'"), "{e}");
        let e = err("sample 0");
        assert!(e.message.contains("from 1"), "{e}");
        let e = err("threshold temp > 1");
        assert_eq!(e.column, 11);
        assert!(e.message.contains("JSON pointer"), "{e}");
        let e = err("threshold /t between 5 1");
        assert!(e.message.contains("upper bound"), "{e}");
        let e = err("set header:a b");
        assert!(e.message.contains("'='"), "{e}");
        let e = err("set /a=\"open");
        assert!(e.message.contains("closing"), "{e}");
        let e = err("remove .");
        assert!(e.message.contains("cannot be removed"), "{e}");
        let e = err("set header:bad\u{7f}name=1");
        assert!(e.message.contains("header name"), "{e}");
        let e = err("threshold /t > 30 sample 2");
        assert!(e.message.contains("'|'"), "{e}");
        let e = err("threshold /t > 30x");
        assert!(e.message.contains("number"), "{e}");
        let e = err("enrich db");
        assert!(e.message.contains("'='"), "{e}");
    }
}
