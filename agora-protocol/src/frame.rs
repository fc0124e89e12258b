//! The parts frames are built from: headers, error codes, and the structs of the larger
//! frames (`INFO`, `CONNECT`, publishes, subscriptions, deliveries, errors).
//!
//! This module owns the vocabulary and the validity rules of its parts (header keys and
//! values, error codes). It never does I/O and never allocates for a frame that carries
//! no headers and no text. Which frames exist, and who sends them, is in
//! [`client`](crate::client) and [`server`](crate::server).

use std::fmt;

use bytes::Bytes;

use crate::name::{is_name_byte, Destination, RequestId, MAX_NAME_LEN};
/// Why a header key or value was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderError {
    /// The key is empty, too long, or holds a byte outside `[A-Za-z0-9._-]`.
    BadKey,
    /// The value holds CR or LF, or leading or trailing blanks (they would not survive
    /// the trip over the wire).
    BadValue,
}

impl fmt::Display for HeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeaderError::BadKey => f.write_str("header key must be 1 to 255 of [A-Za-z0-9._-]"),
            HeaderError::BadValue => {
                f.write_str("header value must not hold CR or LF or start or end with a blank")
            }
        }
    }
}

impl std::error::Error for HeaderError {}

/// `header-key = 1*255name-char`
pub(crate) fn valid_header_key(k: &str) -> bool {
    !k.is_empty() && k.len() <= MAX_NAME_LEN && k.bytes().all(is_name_byte)
}

/// `header-value = *(any UTF-8 but CR and LF)`, with no blank at either end.
pub(crate) fn valid_header_value(v: &str) -> bool {
    !v.bytes().any(|b| b == b'\r' || b == b'\n')
        && !v.starts_with([' ', '\t'])
        && !v.ends_with([' ', '\t'])
}

/// Message headers: ordered `key: value` pairs.
///
/// Keys are compared without regard to ASCII case, as in HTTP; the case given is kept.
/// An empty `Headers` does not allocate, and cloning shares the entries (a reference
/// count: a topic's subscribers all get the same headers), copying them only when a
/// clone is changed.
///
/// ```
/// let mut h = agora_protocol::Headers::new();
/// h.insert("Trace-Id", "abc123").unwrap();
/// assert_eq!(h.get("trace-id"), Some("abc123"));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(Option<std::sync::Arc<Vec<(String, String)>>>);

impl Headers {
    /// No headers.
    pub const fn new() -> Headers {
        Headers(None)
    }

    fn entries(&self) -> &[(String, String)] {
        self.0.as_deref().map_or(&[], Vec::as_slice)
    }

    fn entries_mut(&mut self) -> &mut Vec<(String, String)> {
        std::sync::Arc::make_mut(self.0.get_or_insert_with(Default::default))
    }

    /// Sets `key` to `value`, replacing any earlier values of `key`.
    pub fn insert(&mut self, key: &str, value: &str) -> Result<(), HeaderError> {
        Self::check(key, value)?;
        self.remove(key);
        self.entries_mut().push((key.to_owned(), value.to_owned()));
        Ok(())
    }

    /// Adds `key: value` after the existing entries, keeping earlier values of `key`.
    pub fn append(&mut self, key: &str, value: &str) -> Result<(), HeaderError> {
        Self::check(key, value)?;
        self.entries_mut().push((key.to_owned(), value.to_owned()));
        Ok(())
    }

    fn check(key: &str, value: &str) -> Result<(), HeaderError> {
        if !valid_header_key(key) {
            return Err(HeaderError::BadKey);
        }
        if !valid_header_value(value) {
            return Err(HeaderError::BadValue);
        }
        Ok(())
    }

    /// Adds an entry the decoder already validated.
    pub(crate) fn push_validated(&mut self, key: String, value: String) {
        self.entries_mut().push((key, value));
    }

    /// The first value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries()
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    }

    /// Removes every entry of `key`; returns how many there were.
    pub fn remove(&mut self, key: &str) -> usize {
        if !self
            .entries()
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case(key))
        {
            return 0;
        }
        let v = self.entries_mut();
        let before = v.len();
        v.retain(|(k, _)| !k.eq_ignore_ascii_case(key));
        let removed = before - v.len();
        if v.is_empty() {
            // Empty is always `None`, so equal headers compare equal.
            self.0 = None;
        }
        removed
    }

    /// The entries in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries().iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// How many entries.
    pub fn len(&self) -> usize {
        self.entries().len()
    }

    /// No entries.
    pub fn is_empty(&self) -> bool {
        self.entries().is_empty()
    }

    /// The size of the encoded header block, including its closing blank line.
    pub fn encoded_len(&self) -> usize {
        self.entries()
            .iter()
            .map(|(k, v)| k.len() + 2 + v.len() + 2)
            .sum::<usize>()
            + 2
    }
}

/// How a queue consumer acknowledges deliveries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckMode {
    /// The consumer answers each delivery with `ACK` or `NACK`.
    Manual,
    /// The broker removes a message as soon as it is written to the consumer.
    Auto,
}

/// The stable error codes of `ERR` and `CANCEL` frames. The book's Protocol chapter has
/// the table with the meaning of each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// The command word is not one the receiver knows (or may receive).
    UnknownCommand,
    /// Missing, extra or malformed arguments.
    BadArgs,
    /// A destination name that breaks the naming rules.
    BadName,
    /// A frame whose payload or headers do not match what its line declared.
    BadFrame,
    /// A declared payload larger than the receiver's limit.
    PayloadTooLarge,
    /// A control line longer than the receiver's limit.
    LineTooLong,
    /// The queue is at its message or byte limit; the publish was not accepted.
    QueueFull,
    /// The subscriber fell too far behind and was cut off.
    SlowConsumer,
    /// `ACK`/`NACK` of a delivery id that is not outstanding on this connection.
    UnknownDelivery,
    /// `UNSUB` of a subscription id that is not active on this connection.
    UnknownSubscription,
    /// `SUB` with a subscription id that is already active on this connection.
    DuplicateSubscription,
    /// The request is not allowed (e.g. publishing to a reserved `$` name, or outside
    /// the user's rights).
    NotPermitted,
    /// Users are configured and this connection has not authenticated yet: only
    /// `CONNECT`, `PINGREQ`, `PINGRESP`, `HELP` and `DISCONNECT` are acted on.
    NotAuthenticated,
    /// `CONNECT` with a user and password (or a certificate) the broker does not
    /// accept; the connection is closed.
    AuthFailed,
    /// The broker is at its connection limit.
    TooManyConnections,
    /// The connection is at its subscription limit.
    TooManySubscriptions,
    /// The broker is at its destination limit.
    TooManyDestinations,
    /// The broker's memory budget for held messages is spent.
    MemoryLimit,
    /// The broker is shutting down and takes no new work.
    ShuttingDown,
    /// The destination does not exist.
    UnknownDestination,
    /// A mutator chain that does not parse or cannot be built.
    BadChain,
    /// The peer did not answer in time (pings, acks).
    Timeout,
    /// A fault inside the broker; the request may be retried.
    Internal,
    /// A UDP source that has not proved it receives what the broker sends it asked for
    /// something that needs it (a subscription); the message holds the token to echo.
    Unverified,
    /// The broker could not store a message where its durability mode says (the disk
    /// failed or is full); the publish was not confirmed and may not be kept.
    StorageFailed,
    /// The log is at `--max-disk`, or its disk is nearly full: a publish to a durable
    /// queue was not accepted; acknowledgements give space back.
    StorageFull,
    /// A request (a publish with `agora-reply-to`) to a destination nobody listens on
    /// (a topic without subscribers, a queue without consumers): it was not stored.
    NoResponders,
    /// A code this version of the protocol does not know (sent by a newer peer).
    Unrecognized,
}

impl ErrorCode {
    /// Every code, in the book's order.
    pub const ALL: [ErrorCode; 28] = [
        ErrorCode::UnknownCommand,
        ErrorCode::BadArgs,
        ErrorCode::BadName,
        ErrorCode::BadFrame,
        ErrorCode::PayloadTooLarge,
        ErrorCode::LineTooLong,
        ErrorCode::QueueFull,
        ErrorCode::SlowConsumer,
        ErrorCode::UnknownDelivery,
        ErrorCode::UnknownSubscription,
        ErrorCode::DuplicateSubscription,
        ErrorCode::NotPermitted,
        ErrorCode::NotAuthenticated,
        ErrorCode::AuthFailed,
        ErrorCode::TooManyConnections,
        ErrorCode::TooManySubscriptions,
        ErrorCode::TooManyDestinations,
        ErrorCode::MemoryLimit,
        ErrorCode::ShuttingDown,
        ErrorCode::UnknownDestination,
        ErrorCode::BadChain,
        ErrorCode::Timeout,
        ErrorCode::Internal,
        ErrorCode::Unverified,
        ErrorCode::StorageFailed,
        ErrorCode::StorageFull,
        ErrorCode::NoResponders,
        ErrorCode::Unrecognized,
    ];

    /// The token on the wire, e.g. `queue_full`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::UnknownCommand => "unknown_command",
            ErrorCode::BadArgs => "bad_args",
            ErrorCode::BadName => "bad_name",
            ErrorCode::BadFrame => "bad_frame",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::LineTooLong => "line_too_long",
            ErrorCode::QueueFull => "queue_full",
            ErrorCode::SlowConsumer => "slow_consumer",
            ErrorCode::UnknownDelivery => "unknown_delivery",
            ErrorCode::UnknownSubscription => "unknown_subscription",
            ErrorCode::DuplicateSubscription => "duplicate_subscription",
            ErrorCode::NotPermitted => "not_permitted",
            ErrorCode::NotAuthenticated => "not_authenticated",
            ErrorCode::AuthFailed => "auth_failed",
            ErrorCode::TooManyConnections => "too_many_connections",
            ErrorCode::TooManySubscriptions => "too_many_subscriptions",
            ErrorCode::TooManyDestinations => "too_many_destinations",
            ErrorCode::MemoryLimit => "memory_limit",
            ErrorCode::ShuttingDown => "shutting_down",
            ErrorCode::UnknownDestination => "unknown_destination",
            ErrorCode::BadChain => "bad_chain",
            ErrorCode::Timeout => "timeout",
            ErrorCode::Internal => "internal",
            ErrorCode::Unverified => "unverified",
            ErrorCode::StorageFailed => "storage_failed",
            ErrorCode::StorageFull => "storage_full",
            ErrorCode::NoResponders => "no_responders",
            ErrorCode::Unrecognized => "unrecognized",
        }
    }

    /// The code for a wire token; unknown tokens give [`ErrorCode::Unrecognized`].
    pub fn from_token(t: &[u8]) -> ErrorCode {
        ErrorCode::ALL
            .into_iter()
            .find(|c| c.as_str().as_bytes().eq_ignore_ascii_case(t))
            .unwrap_or(ErrorCode::Unrecognized)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The server's greeting, sent once on connect:
/// `INFO server=<token> version=<token> proto=<n> max_payload=<n> max_line=<n>
/// [auth_required=1] [tls_required=1] [inbox=<name>]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Info {
    /// The server's name (a token: printable ASCII, no blanks).
    pub server: String,
    /// The server's software version.
    pub version: String,
    /// The protocol version it speaks.
    pub proto: u32,
    /// The largest payload it accepts, in bytes.
    pub max_payload: u64,
    /// The longest control line it accepts, in bytes (without CRLF).
    pub max_line: u64,
    /// Users are configured: nothing but `CONNECT`, pings, `HELP` and `DISCONNECT` is
    /// acted on before `CONNECT user=… password=…` (or a client certificate) succeeds.
    pub auth_required: bool,
    /// The port speaks TLS only.
    pub tls_required: bool,
    /// This connection's inbox for replies, `$inbox.<nonce>` (see
    /// [`reply`](crate::reply)): only this connection may subscribe to it.
    pub inbox: Option<String>,
}

/// Which destinations a `STATS` answer lists:
/// `STATS [#rid] [prefix=<text>] [after=<kind:name>] [limit=<n>]`. Destinations are
/// listed in order (queues before topics, each by name); a page holds at most `limit`
/// of them (the broker's default when `None`) whose name starts with `prefix`, after
/// `after`. The document says where the next page starts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatsPage {
    /// Only names starting with this.
    pub prefix: Option<String>,
    /// Only destinations after this one (the `next` of the previous page).
    pub after: Option<crate::name::Destination>,
    /// At most this many destinations (1 or more).
    pub limit: Option<u32>,
    /// Also list at most this many connections (1 or more), in id order.
    pub connections: Option<u32>,
    /// Only connections after this id (the `next` of the previous page).
    pub connections_after: Option<u64>,
}

impl StatsPage {
    /// True when nothing is asked for but the defaults.
    pub fn is_default(&self) -> bool {
        self == &StatsPage::default()
    }
}

/// The client's introduction (optional unless the broker requires authentication):
/// `CONNECT [#rid] [name=<token>] [proto=<n>] [confirm=on|off] [token=<token>]
/// [user=<token>] [password=<pct-encoded>]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Connect {
    /// Request id echoed by the `OK`.
    pub rid: RequestId,
    /// A name for the client, shown in logs and `STATS`.
    pub name: Option<String>,
    /// The protocol version the client speaks.
    pub proto: Option<u32>,
    /// Publisher confirms from the start (same as `SETACK on`).
    pub confirm: Option<bool>,
    /// Over UDP: the token the broker sent this source, echoed to prove the source
    /// receives what it is sent (ignored over TCP).
    pub token: Option<String>,
    /// The user to authenticate as.
    pub user: Option<String>,
    /// Its password; RFC 3986 percent-encoded on the wire, so any text can be sent.
    pub password: Option<Password>,
}

/// A password as `CONNECT` carries it. Its `Debug` form never shows it, so a frame may
/// be logged whole.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    /// Wraps a password.
    pub fn new(p: impl Into<String>) -> Password {
        Password(p.into())
    }

    /// The password itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(***)")
    }
}

/// What a `NACK` asks of the queue: `NACK [#rid] <did> [delay=<duration>] [dlq]`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Nack {
    /// Back in the queue at once (the plain `NACK`).
    #[default]
    Requeue,
    /// Back in the queue once this long has passed (1 ms to 1 hour); meanwhile no
    /// consumer gets it.
    Delay(std::time::Duration),
    /// Straight to the queue's dead-letter queue, with the reason `rejected`.
    DeadLetter,
    /// Back in the queue at once, not counted as a delivery: the consumer never looked
    /// at it (a client giving back what it had buffered for an application that
    /// stopped consuming).
    Unseen,
}

/// A publish: `PUB [#rid] <dest> <n>` or, with headers,
/// `HPUB [#rid] <dest> <header-bytes> <total-bytes>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// Request id echoed by `PUBACK` or `ERR`.
    pub rid: RequestId,
    /// Where the message goes.
    pub dest: Destination,
    /// Headers (empty: sent as `PUB`).
    pub headers: Headers,
    /// The message body.
    pub payload: Bytes,
}

/// A subscription request:
/// `SUB [#rid] <dest> <sid> [prefetch=<n>] [ack=auto|manual]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    /// Request id echoed by `OK` or `ERR`.
    pub rid: RequestId,
    /// The queue to consume or the topic to follow.
    pub dest: Destination,
    /// The client's id for this subscription, unique on its connection.
    pub sid: u64,
    /// Queues only: most unacknowledged deliveries at once (broker default if absent).
    pub prefetch: Option<u32>,
    /// Queues only: acknowledgement mode (manual if absent).
    pub ack: Option<AckMode>,
}

/// A message delivered to a subscription:
/// `MSG <dest> <sid> <did> <count> <n>` or
/// `HMSG <dest> <sid> <did> <count> <header-bytes> <total-bytes>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Where it was published.
    pub dest: Destination,
    /// The subscription it is delivered to.
    pub sid: u64,
    /// The delivery id to `ACK`/`NACK`; 0 when no acknowledgement is expected (topics,
    /// auto-ack queues).
    pub did: u64,
    /// How many times this message has been delivered, this time included (1 = first).
    pub count: u32,
    /// Headers.
    pub headers: Headers,
    /// The message body.
    pub payload: Bytes,
}

impl Delivery {
    /// True when the message was delivered before (to this or another consumer).
    pub fn redelivered(&self) -> bool {
        self.count > 1
    }
}

/// An error reply: `ERR [#rid] <code> <message>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorReply {
    /// The request id of the request that failed, if it carried one.
    pub rid: RequestId,
    /// Stable code.
    pub code: ErrorCode,
    /// Human-readable text (one line).
    pub message: String,
}
