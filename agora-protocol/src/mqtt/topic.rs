//! One message space: MQTT topics and topic filters as Agora topic names and patterns,
//! and back.
//!
//! - Levels: `/` separates MQTT levels, `.` Agora tokens; level *n* is token *n*.
//! - Characters: letters, digits, `-` and `_` stay as they are. Any other byte of a
//!   level (its UTF-8 included) is written `_HH`, two upper-case hex digits: `.` is
//!   `_2E`, a space `_20`, `é` `_C3_A9`. An `_` that would read as such an escape (it is
//!   followed by two upper-case hex digits, or is a whole level) is itself written
//!   `_5F`.
//! - An empty level (`a//b`, a leading or trailing `/`) is the token `_`.
//! - A leading `$` stays (both reserve `$` names for the broker).
//! - Filters: `+` is `*`; `#` is `>`, and since MQTT's `a/#` also matches `a` itself, a
//!   filter ending in `/#` is two Agora patterns, `a` and `a.>`.
//!
//! Every MQTT topic maps to one Agora name and back, up to Agora's 255 bytes; a longer
//! one is refused. A native Agora name maps to MQTT by the reverse rules; one holding
//! `_` followed by two upper-case hex digits reads as that escape.

use crate::name::{validate_name, validate_pattern, MAX_NAME_LEN};

/// Why an MQTT topic or filter has no Agora name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicError {
    /// Empty, or it holds a NUL.
    Invalid,
    /// A topic name (not a filter) holds `+` or `#`.
    Wildcard,
    /// A filter's `+` or `#` is not a whole level, or `#` is not the last one.
    BadFilter,
    /// Its Agora name would be this many bytes, over the limit.
    TooLong(usize),
}

impl std::fmt::Display for TopicError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TopicError::Invalid => f.write_str("the topic is empty or holds a NUL"),
            TopicError::Wildcard => f.write_str("a topic name may not hold + or #"),
            TopicError::BadFilter => {
                f.write_str("a filter's + and # must each be a whole level, and # the last one")
            }
            TopicError::TooLong(n) => write!(
                f,
                "the topic is {n} bytes as an Agora name, the limit is {MAX_NAME_LEN}"
            ),
        }
    }
}

impl std::error::Error for TopicError {}

fn is_hex(b: u8) -> bool {
    b.is_ascii_digit() || (b'A'..=b'F').contains(&b)
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

fn escape(b: u8, out: &mut String) {
    out.push('_');
    out.push(HEX[(b >> 4) as usize] as char);
    out.push(HEX[(b & 15) as usize] as char);
}

/// Writes one level as a token.
fn level(l: &[u8], out: &mut String) {
    if l.is_empty() {
        out.push('_');
        return;
    }
    for (i, &b) in l.iter().enumerate() {
        let keep = b.is_ascii_alphanumeric() || b == b'-';
        if keep {
            out.push(b as char);
        } else if b == b'_' {
            let reads_as_escape =
                l.len() == 1 || (i + 2 < l.len() && is_hex(l[i + 1]) && is_hex(l[i + 2]));
            if reads_as_escape {
                escape(b, out);
            } else {
                out.push('_');
            }
        } else {
            escape(b, out);
        }
    }
}

fn check_len(s: String) -> Result<String, TopicError> {
    match s.len() > MAX_NAME_LEN {
        true => Err(TopicError::TooLong(s.len())),
        false => Ok(s),
    }
}

/// What the queues of a user's persistent MQTT sessions are named under:
/// `$mqtt.session.<user>.` (the user's name as one level; `_` for no user).
pub fn session_prefix(user: &str) -> String {
    let mut s = String::from("$mqtt.session.");
    level(user.as_bytes(), &mut s);
    s.push('.');
    s
}

/// The queue that holds a persistent MQTT session of `user`'s client `client_id`:
/// [`session_prefix`] then the client id as one level. Refused when longer than a name
/// may be.
pub fn session_queue(user: &str, client_id: &str) -> Result<String, TopicError> {
    let mut s = session_prefix(user);
    level(client_id.as_bytes(), &mut s);
    check_len(s)
}

/// An MQTT topic name as the Agora topic name it is.
pub fn to_agora(topic: &str) -> Result<String, TopicError> {
    let b = topic.as_bytes();
    if b.is_empty() || b.contains(&0) {
        return Err(TopicError::Invalid);
    }
    if b.iter().any(|&c| c == b'+' || c == b'#') {
        return Err(TopicError::Wildcard);
    }
    let (dollar, body) = match b.strip_prefix(b"$") {
        Some(rest) => (true, rest),
        None => (false, b),
    };
    let mut out = String::with_capacity(b.len() + 8);
    if dollar {
        out.push('$');
    }
    for (i, l) in body.split(|&c| c == b'/').enumerate() {
        if i > 0 {
            out.push('.');
        }
        level(l, &mut out);
    }
    let out = check_len(out)?;
    debug_assert!(validate_name(out.as_bytes()).is_ok(), "{out}");
    Ok(out)
}

/// An MQTT topic filter as the Agora patterns that match what it matches: one, or two
/// when it ends in `/#`.
pub fn filter_to_agora(filter: &str) -> Result<Vec<String>, TopicError> {
    let b = filter.as_bytes();
    if b.is_empty() || b.contains(&0) {
        return Err(TopicError::Invalid);
    }
    let levels: Vec<&[u8]> = b.split(|&c| c == b'/').collect();
    let mut out = String::with_capacity(b.len() + 8);
    let mut parent = None;
    for (i, l) in levels.iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        match *l {
            b"+" => out.push('*'),
            b"#" if i + 1 == levels.len() => {
                if i > 0 {
                    // `a/#` matches `a` too: the pattern without its last token.
                    parent = Some(out[..out.len() - 1].to_owned());
                }
                out.push('>');
            }
            l if l.contains(&b'+') || l.contains(&b'#') => return Err(TopicError::BadFilter),
            l => {
                let l = match (i, l.strip_prefix(b"$")) {
                    (0, Some(rest)) => {
                        out.push('$');
                        rest
                    }
                    _ => l,
                };
                level(l, &mut out)
            }
        }
    }
    let mut all = vec![check_len(out)?];
    if let Some(p) = parent {
        all.insert(0, check_len(p)?);
    }
    debug_assert!(
        all.iter().all(|p| validate_pattern(p.as_bytes()).is_ok()),
        "{all:?}"
    );
    Ok(all)
}

/// An Agora topic name (no `topic:`) as the MQTT topic name an MQTT subscriber sees.
pub fn from_agora(name: &str) -> String {
    let b = name.as_bytes();
    let (dollar, body) = match b.strip_prefix(b"$") {
        Some(rest) => (true, rest),
        None => (false, b),
    };
    let mut out = Vec::with_capacity(b.len());
    if dollar {
        out.push(b'$');
    }
    for (n, tok) in body.split(|&c| c == b'.').enumerate() {
        if n > 0 {
            out.push(b'/');
        }
        if tok == b"_" {
            continue;
        }
        let mut i = 0;
        while i < tok.len() {
            if tok[i] == b'_' && i + 2 < tok.len() && is_hex(tok[i + 1]) && is_hex(tok[i + 2]) {
                let hex = |c: u8| match c {
                    b'0'..=b'9' => c - b'0',
                    _ => c - b'A' + 10,
                };
                out.push(hex(tok[i + 1]) << 4 | hex(tok[i + 2]));
                i += 3;
            } else {
                out.push(tok[i]);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_queue_is_under_its_users_prefix_with_both_escaped() {
        assert_eq!(session_prefix("alice"), "$mqtt.session.alice.");
        assert_eq!(session_prefix(""), "$mqtt.session._.");
        let q = session_queue("bob.smith", "dev 1/a").unwrap();
        assert_eq!(q, "$mqtt.session.bob_2Esmith.dev_201_2Fa");
        assert!(q.starts_with(&session_prefix("bob.smith")));
        // Another user's prefix never holds it: a user is one whole level.
        assert!(!q.starts_with(&session_prefix("bob")));
        crate::name::validate_name(q.as_bytes()).unwrap();
        assert!(matches!(
            session_queue("u", &"x".repeat(300)),
            Err(TopicError::TooLong(_))
        ));
    }

    #[test]
    fn plain_topics_map_level_for_token() {
        assert_eq!(
            to_agora("sensors/kitchen/temp").unwrap(),
            "sensors.kitchen.temp"
        );
        assert_eq!(from_agora("sensors.kitchen.temp"), "sensors/kitchen/temp");
        assert_eq!(to_agora("my_topic-1").unwrap(), "my_topic-1");
        assert_eq!(from_agora("my_topic-1"), "my_topic-1");
    }

    #[test]
    fn what_names_do_not_allow_is_escaped_and_comes_back() {
        for t in [
            "a.b/c d",
            "/leading",
            "trailing/",
            "a//b",
            "/",
            "café/ünïcode",
            "_/__/_41/x_4",
            "$SYS/broker/load",
            "a_5F",
            "emoji/😀",
        ] {
            let a = to_agora(t).unwrap();
            assert!(validate_name(a.as_bytes()).is_ok(), "{t} -> {a}");
            assert_eq!(from_agora(&a), t, "{t} -> {a}");
        }
        assert_eq!(to_agora("a.b/c d").unwrap(), "a_2Eb.c_20d");
        assert_eq!(to_agora("a//b").unwrap(), "a._.b");
        assert_eq!(to_agora("_").unwrap(), "_5F");
    }

    #[test]
    fn topic_names_hold_no_wildcards_and_fit_the_limit() {
        assert_eq!(to_agora("a/+"), Err(TopicError::Wildcard));
        assert_eq!(to_agora("a/#"), Err(TopicError::Wildcard));
        assert_eq!(to_agora(""), Err(TopicError::Invalid));
        assert_eq!(to_agora("a\0b"), Err(TopicError::Invalid));
        assert!(to_agora(&"x".repeat(255)).is_ok());
        assert_eq!(to_agora(&"x".repeat(256)), Err(TopicError::TooLong(256)));
        // 100 spaces are 300 bytes escaped.
        assert_eq!(to_agora(&" ".repeat(100)), Err(TopicError::TooLong(300)));
    }

    #[test]
    fn filters_map_plus_to_star_and_hash_to_the_parent_and_rest() {
        assert_eq!(
            filter_to_agora("sensors/+/temp").unwrap(),
            ["sensors.*.temp"]
        );
        assert_eq!(filter_to_agora("orders/#").unwrap(), ["orders", "orders.>"]);
        assert_eq!(filter_to_agora("#").unwrap(), [">"]);
        assert_eq!(filter_to_agora("+").unwrap(), ["*"]);
        assert_eq!(filter_to_agora("+/+/#").unwrap(), ["*.*", "*.*.>"]);
        assert_eq!(filter_to_agora("a b/+").unwrap(), ["a_20b.*"]);
        assert_eq!(filter_to_agora("plain/topic").unwrap(), ["plain.topic"]);
        assert_eq!(filter_to_agora("$SYS/#").unwrap(), ["$SYS", "$SYS.>"]);
        for bad in ["a/#/b", "a+/b", "a/b#", "#/a"] {
            assert_eq!(filter_to_agora(bad), Err(TopicError::BadFilter), "{bad}");
        }
        assert_eq!(filter_to_agora(""), Err(TopicError::Invalid));
    }

    #[test]
    fn a_native_name_maps_to_mqtt_by_the_reverse_rules() {
        assert_eq!(from_agora("a._.b"), "a//b");
        assert_eq!(from_agora("orders.eu"), "orders/eu");
        assert_eq!(from_agora("x_41"), "xA");
        assert_eq!(from_agora("$sys.metrics"), "$sys/metrics");
    }
}
