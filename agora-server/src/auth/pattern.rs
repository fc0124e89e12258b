//! Permission patterns: `queue:jobs`, `topic:sensors.>`, `topic:sensors.*.temp`. A name
//! is dot-separated tokens; in a pattern `*` stands for exactly one token and `>` for
//! one or more trailing tokens (only as the last token); a wildcard is a whole token.
//! These are the rules the wildcard subscriptions of issue 21 use too.
//!
//! A wildcard never matches a first token that starts with `$` (the broker's reserved
//! names): `topic:>` does not name `topic:$sys.metrics`; only a pattern that spells the
//! `$` token out does.

use std::fmt;

use agora_protocol::{Destination, Kind};

/// One token of a pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Token {
    /// A token spelled out.
    Literal(String),
    /// `*`: exactly one token.
    One,
    /// `>`: one or more tokens, to the end.
    Rest,
}

/// A permission pattern: a kind and a name that may hold wildcards.
#[derive(Clone, PartialEq, Eq)]
pub struct Pattern {
    kind: Kind,
    tokens: Vec<Token>,
    text: String,
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Pattern {
    /// Parses `queue:<name>` or `topic:<name>`; the error says what is wrong.
    pub fn parse(text: &str) -> Result<Pattern, String> {
        let (kind, name) = match text.split_once(':') {
            Some(("queue", n)) => (Kind::Queue, n),
            Some(("topic", n)) => (Kind::Topic, n),
            _ => {
                return Err(format!(
                    "'{text}' must start with queue: or topic: (e.g. topic:sensors.>)"
                ))
            }
        };
        let tokens = tokens(name).map_err(|why| format!("'{text}': {why}"))?;
        Ok(Pattern {
            kind,
            tokens,
            text: text.to_owned(),
        })
    }

    /// The pattern that names exactly `dest` (a concrete destination, or a subscription
    /// that may itself hold wildcards once issue 21 lands).
    pub fn of(dest: &Destination) -> Pattern {
        let name = dest.name.as_str();
        Pattern {
            kind: dest.kind,
            tokens: tokens(name).unwrap_or_else(|_| vec![Token::Literal(name.to_owned())]),
            text: dest.to_string(),
        }
    }

    /// Its name's tokens.
    pub fn tokens(&self) -> &[Token] {
        &self.tokens
    }

    /// The kind of destination it names.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// Whether `dest` (a concrete name) is one this pattern names.
    pub fn matches(&self, dest: &Destination) -> bool {
        if dest.kind != self.kind {
            return false;
        }
        let mut names = dest.name.as_str().split('.');
        for (i, t) in self.tokens.iter().enumerate() {
            let Some(n) = names.next() else {
                return false;
            };
            let reserved = i == 0 && n.starts_with('$');
            match t {
                Token::Literal(l) if l == n => {}
                Token::Literal(_) => return false,
                Token::One if !reserved => {}
                Token::Rest => return !reserved,
                Token::One => return false,
            }
        }
        names.next().is_none()
    }

    /// Whether every name `other` can match is a name this pattern matches: a
    /// subscription with wildcards is allowed by a pattern that covers it.
    pub fn covers(&self, other: &Pattern) -> bool {
        if self.kind != other.kind {
            return false;
        }
        let mut theirs = other.tokens.iter();
        for (i, mine) in self.tokens.iter().enumerate() {
            let Some(t) = theirs.next() else {
                return false;
            };
            // A wildcard of ours never stands for a reserved first token, so it covers
            // theirs only when theirs is not one (a wildcard of theirs never is).
            let reserved = i == 0 && matches!(t, Token::Literal(l) if l.starts_with('$'));
            match (mine, t) {
                (Token::Rest, _) => return !reserved,
                (Token::One, Token::Literal(_) | Token::One) if !reserved => {}
                (Token::Literal(a), Token::Literal(b)) if a == b => {}
                _ => return false,
            }
        }
        theirs.next().is_none()
    }
}

/// A pattern's name as tokens; refuses empty tokens, partial wildcards (`sens*`), `>`
/// before the end, and characters no name may hold.
fn tokens(name: &str) -> Result<Vec<Token>, String> {
    if name.is_empty() {
        return Err("the name is empty".to_owned());
    }
    let parts: Vec<&str> = name.split('.').collect();
    let last = parts.len() - 1;
    parts
        .iter()
        .enumerate()
        .map(|(i, p)| match *p {
            "" => Err("a name has no empty token (a..b, or a dot at either end)".to_owned()),
            "*" => Ok(Token::One),
            ">" if i == last => Ok(Token::Rest),
            ">" => Err("> may only be the last token".to_owned()),
            p if p.contains(['*', '>']) => {
                Err(format!("'{p}': a wildcard is a whole token (* or >)"))
            }
            p => {
                let body = if i == 0 { p.strip_prefix('$').unwrap_or(p) } else { p };
                match !body.is_empty()
                    && body
                        .bytes()
                        .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
                {
                    true => Ok(Token::Literal(p.to_owned())),
                    false => Err(format!(
                        "'{p}': a token is letters, digits, '-' and '_' (a first token may start with $)"
                    )),
                }
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(t: &str) -> Pattern {
        Pattern::parse(t).unwrap()
    }

    fn d(t: &str) -> Destination {
        t.parse().unwrap()
    }

    #[test]
    fn exact_names_match_themselves_only() {
        let q = p("queue:jobs");
        assert!(q.matches(&d("queue:jobs")));
        assert!(!q.matches(&d("topic:jobs")), "the kind is part of it");
        assert!(!q.matches(&d("queue:jobs.x")));
        assert!(!q.matches(&d("queue:job")));
    }

    #[test]
    fn star_is_one_token_and_rest_is_one_or_more() {
        let s = p("topic:sensors.*.temp");
        assert!(s.matches(&d("topic:sensors.a.temp")));
        assert!(!s.matches(&d("topic:sensors.temp")));
        assert!(!s.matches(&d("topic:sensors.a.b.temp")));
        let r = p("topic:sensors.>");
        assert!(r.matches(&d("topic:sensors.a")));
        assert!(r.matches(&d("topic:sensors.a.b.c")));
        assert!(
            !r.matches(&d("topic:sensors")),
            "> needs at least one token"
        );
        assert!(!r.matches(&d("topic:sensorsx.a")));
        assert!(p("queue:>").matches(&d("queue:anything.at.all")));
    }

    #[test]
    fn wildcards_never_name_the_brokers_reserved_names() {
        assert!(!p("topic:>").matches(&d("topic:$sys.metrics")));
        assert!(!p("topic:*.metrics").matches(&d("topic:$sys.metrics")));
        assert!(p("topic:$sys.metrics").matches(&d("topic:$sys.metrics")));
        assert!(p("topic:$sys.>").matches(&d("topic:$sys.metrics")));
    }

    #[test]
    fn bad_patterns_are_refused_with_the_reason() {
        for (bad, why) in [
            ("jobs", "queue: or topic:"),
            ("stream:x", "queue: or topic:"),
            ("topic:", "empty"),
            ("topic:a..b", "empty token"),
            ("topic:.a", "empty token"),
            ("topic:a.", "empty token"),
            ("topic:sens*", "whole token"),
            ("topic:a.>.b", "last token"),
            ("topic:a b", "letters, digits"),
            ("topic:a.$b", "letters, digits"),
        ] {
            let e = Pattern::parse(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn a_pattern_covers_a_subscription_when_every_name_it_matches_is_allowed() {
        let allowed = p("topic:sensors.>");
        assert!(allowed.covers(&p("topic:sensors.>")));
        assert!(allowed.covers(&p("topic:sensors.*.temp")));
        assert!(allowed.covers(&p("topic:sensors.a")));
        assert!(!allowed.covers(&p("topic:>")), "names outside sensors");
        assert!(!allowed.covers(&p("topic:sensors")));
        assert!(!allowed.covers(&p("queue:sensors.a")));
        let one = p("topic:sensors.*");
        assert!(one.covers(&p("topic:sensors.*")));
        assert!(one.covers(&p("topic:sensors.x")));
        assert!(
            !one.covers(&p("topic:sensors.>")),
            "> reaches deeper than *"
        );
        assert!(!one.covers(&p("topic:sensors.a.b")));
        assert!(!p("topic:sensors.a").covers(&p("topic:sensors.*")));
        assert!(!p("topic:>").covers(&p("topic:$sys.>")));
        assert!(p("topic:>").covers(&p("topic:>")));
    }

    #[test]
    fn covers_agrees_with_matches_on_concrete_names() {
        let pats = [
            "topic:a",
            "topic:a.b",
            "topic:*",
            "topic:*.b",
            "topic:a.*",
            "topic:>",
            "topic:a.>",
            "topic:*.>",
            "topic:$s.>",
            "queue:a",
        ];
        let names = [
            "topic:a",
            "topic:b",
            "topic:a.b",
            "topic:a.c",
            "topic:x.b",
            "topic:a.b.c",
            "topic:$s.x",
            "topic:$s",
            "queue:a",
        ];
        for pt in pats {
            for n in names {
                let (pt, n) = (p(pt), d(n));
                assert_eq!(pt.covers(&Pattern::of(&n)), pt.matches(&n), "{pt} / {n}");
            }
        }
    }
}
