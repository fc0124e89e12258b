//! Request-reply's conventions, which ride on ordinary publishes so the frame grammar
//! does not change: a request is a publish with the header
//! `agora-reply-to: topic:<name>`, and its reply a publish to that topic.
//!
//! A broker gives each connection an **inbox**, `$inbox.<nonce>` (the `inbox=` key of
//! `INFO`), which that connection alone may subscribe to; any authenticated client may
//! publish to `$inbox.<nonce>.<anything>`, which reaches the inbox's subscriber with
//! its `MSG` naming the full address. A requester names `$inbox.<nonce>.<n>` as the
//! reply address of its `n`th request and tells the replies apart by it.
//!
//! ```
//! use agora_protocol::{reply, Headers};
//! let mut h = Headers::new();
//! h.insert(reply::REPLY_TO, "topic:$inbox.k3Yq.7").unwrap();
//! let to = reply::reply_to(&h).unwrap().unwrap();
//! assert_eq!(to.to_string(), "topic:$inbox.k3Yq.7");
//! assert_eq!(reply::inbox_of(to.name.as_str()), Some("$inbox.k3Yq"));
//! ```

use crate::frame::Headers;
use crate::name::{Destination, Kind};

/// The header naming a request's reply address, `topic:<name>`.
pub const REPLY_TO: &str = "agora-reply-to";

/// Header keys starting with this are the broker's (see the protocol chapter's table).
pub const RESERVED_HEADER_PREFIX: &str = "agora-";

/// The header the broker sets on the copy a queue bound to a topic pattern gets
/// (`BIND`): the name of the topic the message was published to.
pub const TOPIC: &str = "agora-topic";

/// What every inbox name starts with.
pub const INBOX_PREFIX: &str = "$inbox.";

/// The reply address a publish's headers name: `None` when it is not a request;
/// `Some(Err(why))` when the header is there but names no topic (several values, not a
/// destination, a queue, a pattern).
pub fn reply_to(headers: &Headers) -> Option<Result<Destination, String>> {
    if headers.is_empty() {
        return None;
    }
    let mut values = headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case(REPLY_TO))
        .map(|(_, v)| v);
    let v = values.next()?;
    if values.next().is_some() {
        return Some(Err(format!("{REPLY_TO} may appear once")));
    }
    Some(match Destination::parse(v) {
        Ok(d) if d.kind == Kind::Topic => Ok(d),
        Ok(d) => Err(format!("{REPLY_TO} must name a topic, not {d}")),
        Err(e) => Err(format!("{REPLY_TO}: '{v}' is not topic:<name> ({e})")),
    })
}

/// Whether `name` is in the broker's inboxes (`$inbox.…`).
pub fn is_inbox(name: &str) -> bool {
    name.starts_with(INBOX_PREFIX)
}

/// The inbox an address under it belongs to: `$inbox.<nonce>` for `$inbox.<nonce>` and
/// `$inbox.<nonce>.<anything>`; `None` for a name outside the inboxes.
pub fn inbox_of(name: &str) -> Option<&str> {
    let rest = name.strip_prefix(INBOX_PREFIX)?;
    let nonce = rest.split('.').next().filter(|n| !n.is_empty())?;
    Some(&name[..INBOX_PREFIX.len() + nonce.len()])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> Headers {
        let mut h = Headers::new();
        for (k, v) in pairs {
            h.append(k, v).unwrap();
        }
        h
    }

    #[test]
    fn a_reply_address_must_be_one_concrete_topic() {
        assert!(reply_to(&Headers::new()).is_none());
        assert!(reply_to(&headers(&[("trace", "1")])).is_none());
        let ok = reply_to(&headers(&[("Agora-Reply-To", "topic:r.1")])).unwrap();
        assert_eq!(ok.unwrap().to_string(), "topic:r.1");
        for bad in ["queue:r", "r", "topic:r.*", "topic:", "topic:a b"] {
            let e = reply_to(&headers(&[(REPLY_TO, bad)])).unwrap().unwrap_err();
            assert!(e.contains(REPLY_TO), "{bad}: {e}");
        }
        let twice = headers(&[(REPLY_TO, "topic:a"), (REPLY_TO, "topic:b")]);
        assert!(reply_to(&twice).unwrap().is_err());
    }

    #[test]
    fn an_address_belongs_to_its_inbox() {
        assert_eq!(inbox_of("$inbox.abc"), Some("$inbox.abc"));
        assert_eq!(inbox_of("$inbox.abc.17"), Some("$inbox.abc"));
        assert_eq!(inbox_of("$inbox.abc.x.y"), Some("$inbox.abc"));
        assert_eq!(inbox_of("$inbox."), None);
        assert_eq!(inbox_of("$inbox"), None);
        assert_eq!(inbox_of("inbox.abc"), None);
        assert!(is_inbox("$inbox.a") && !is_inbox("$sys.metrics"));
    }
}
