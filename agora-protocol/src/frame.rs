//! The frame types: everything either side can say, as plain data.
//!
//! This module owns the vocabulary and the validity rules of its parts (names, header
//! keys and values, error codes). It never does I/O and never allocates for a frame
//! that carries no headers and no text.

use std::fmt;
use std::ops::Deref;

use bytes::Bytes;

/// The longest destination name, in bytes.
pub const MAX_NAME_LEN: usize = 255;

/// A request id: chosen by the client, echoed by the reply (`#<id>` on the wire).
pub type RequestId = Option<u64>;

/// A validated destination name: 1 to 255 bytes of ASCII letters, digits, `.`, `-`
/// and `_`, optionally starting with `$` (names starting with `$` are reserved for the
/// broker, e.g. `$sys.metrics`).
///
/// Names are case-sensitive. The bytes are shared ([`Bytes`]), so a name decoded from
/// a frame is a slice of the read buffer, not a copy.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Name(Bytes);

/// Why a string is not a valid [`Name`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameError {
    /// The name is empty (or is just `$`).
    Empty,
    /// The name is longer than [`MAX_NAME_LEN`] bytes.
    TooLong(usize),
    /// The name holds a byte outside the allowed set, at this index.
    BadByte(usize),
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NameError::Empty => f.write_str("name is empty"),
            NameError::TooLong(n) => {
                write!(f, "name is {n} bytes long, the limit is {MAX_NAME_LEN}")
            }
            NameError::BadByte(i) => write!(
                f,
                "name has a character outside [A-Za-z0-9._-] at index {i}"
            ),
        }
    }
}

impl std::error::Error for NameError {}

/// `name-char = ALPHA / DIGIT / "." / "-" / "_"`, as a table: one load per byte on
/// the decoder's hot path.
static NAME_BYTES: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric() || c == b'.' || c == b'-' || c == b'_';
        b += 1;
    }
    t
};

/// `name-char = ALPHA / DIGIT / "." / "-" / "_"`
#[inline]
pub(crate) fn is_name_byte(b: u8) -> bool {
    NAME_BYTES[b as usize]
}

/// Checks `name = ["$"] 1*name-char`, at most [`MAX_NAME_LEN`] bytes.
pub(crate) fn validate_name(b: &[u8]) -> Result<(), NameError> {
    if b.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong(b.len()));
    }
    let body = b.strip_prefix(b"$").unwrap_or(b);
    if body.is_empty() {
        return Err(NameError::Empty);
    }
    let skip = b.len() - body.len();
    match body.iter().position(|&c| !is_name_byte(c)) {
        Some(i) => Err(NameError::BadByte(i + skip)),
        None => Ok(()),
    }
}

impl Name {
    /// Validates and wraps a name.
    ///
    /// ```
    /// use agora_protocol::Name;
    /// assert!(Name::new("prices.eu-west").is_ok());
    /// assert!(Name::new("no spaces").is_err());
    /// ```
    pub fn new(name: impl Into<Bytes>) -> Result<Name, NameError> {
        let b = name.into();
        validate_name(&b)?;
        Ok(Name(b))
    }

    /// Wraps bytes already checked by the decoder.
    pub(crate) fn from_validated(b: Bytes) -> Name {
        Name(b)
    }

    /// The name as text. Always ASCII.
    pub fn as_str(&self) -> &str {
        // Validated ASCII at construction, so this never fails.
        std::str::from_utf8(&self.0).unwrap_or("")
    }

    /// The name's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// True for names starting with `$`, which only the broker may create.
    pub fn is_reserved(&self) -> bool {
        self.0.first() == Some(&b'$')
    }

    /// A copy that owns exactly its bytes, so that storing it does not keep a whole
    /// read buffer alive.
    pub fn compact(&self) -> Name {
        Name(Bytes::copy_from_slice(&self.0))
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Deref for Name {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl TryFrom<&str> for Name {
    type Error = NameError;
    fn try_from(s: &str) -> Result<Name, NameError> {
        Name::new(Bytes::copy_from_slice(s.as_bytes()))
    }
}

impl TryFrom<String> for Name {
    type Error = NameError;
    fn try_from(s: String) -> Result<Name, NameError> {
        Name::new(s)
    }
}

/// What kind of destination a name addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// Each message goes to exactly one consumer and is kept until consumed.
    Queue,
    /// Each message goes to every current subscriber.
    Topic,
}

impl Kind {
    /// The prefix used on the wire: `queue` or `topic`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Queue => "queue",
            Kind::Topic => "topic",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A queue or a topic, written `queue:<name>` or `topic:<name>` on the wire.
///
/// Queues and topics are separate namespaces: `queue:orders` and `topic:orders` are two
/// destinations.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Destination {
    /// Queue or topic.
    pub kind: Kind,
    /// The validated name.
    pub name: Name,
}

impl Destination {
    /// A queue destination.
    ///
    /// ```
    /// let d = agora_protocol::Destination::queue("orders").unwrap();
    /// assert_eq!(d.to_string(), "queue:orders");
    /// ```
    pub fn queue(name: &str) -> Result<Destination, NameError> {
        Ok(Destination {
            kind: Kind::Queue,
            name: Name::try_from(name)?,
        })
    }

    /// A topic destination.
    pub fn topic(name: &str) -> Result<Destination, NameError> {
        Ok(Destination {
            kind: Kind::Topic,
            name: Name::try_from(name)?,
        })
    }

    /// Parses `queue:<name>` or `topic:<name>`.
    ///
    /// ```
    /// let d: agora_protocol::Destination = "topic:prices.eu-west".parse().unwrap();
    /// assert_eq!(d.kind, agora_protocol::Kind::Topic);
    /// ```
    pub fn parse(s: &str) -> Result<Destination, DestinationError> {
        let (kind, name) = if let Some(n) = s.strip_prefix("queue:") {
            (Kind::Queue, n)
        } else if let Some(n) = s.strip_prefix("topic:") {
            (Kind::Topic, n)
        } else {
            return Err(DestinationError::NoKind);
        };
        Ok(Destination {
            kind,
            name: Name::try_from(name).map_err(DestinationError::Name)?,
        })
    }

    /// A copy whose name owns exactly its bytes (see [`Name::compact`]).
    pub fn compact(&self) -> Destination {
        Destination {
            kind: self.kind,
            name: self.name.compact(),
        }
    }
}

/// Why a string is not a valid [`Destination`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DestinationError {
    /// The string does not start with `queue:` or `topic:`.
    NoKind,
    /// The name part is invalid.
    Name(NameError),
}

impl fmt::Display for DestinationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DestinationError::NoKind => {
                f.write_str("destination must start with 'queue:' or 'topic:'")
            }
            DestinationError::Name(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for DestinationError {}

impl std::str::FromStr for Destination {
    type Err = DestinationError;
    fn from_str(s: &str) -> Result<Destination, DestinationError> {
        Destination::parse(s)
    }
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind, self.name)
    }
}

impl fmt::Debug for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind, self.name)
    }
}

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
    /// The request is not allowed (e.g. publishing to a reserved `$` name).
    NotPermitted,
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
    /// A code this version of the protocol does not know (sent by a newer peer).
    Unrecognized,
}

impl ErrorCode {
    /// Every code, in the book's order.
    pub const ALL: [ErrorCode; 22] = [
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
        ErrorCode::TooManyConnections,
        ErrorCode::TooManySubscriptions,
        ErrorCode::TooManyDestinations,
        ErrorCode::MemoryLimit,
        ErrorCode::ShuttingDown,
        ErrorCode::UnknownDestination,
        ErrorCode::BadChain,
        ErrorCode::Timeout,
        ErrorCode::Internal,
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
            ErrorCode::TooManyConnections => "too_many_connections",
            ErrorCode::TooManySubscriptions => "too_many_subscriptions",
            ErrorCode::TooManyDestinations => "too_many_destinations",
            ErrorCode::MemoryLimit => "memory_limit",
            ErrorCode::ShuttingDown => "shutting_down",
            ErrorCode::UnknownDestination => "unknown_destination",
            ErrorCode::BadChain => "bad_chain",
            ErrorCode::Timeout => "timeout",
            ErrorCode::Internal => "internal",
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
/// `INFO server=<token> version=<token> proto=<n> max_payload=<n> max_line=<n>`.
#[derive(Debug, Clone, PartialEq, Eq)]
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
}

/// The client's optional introduction:
/// `CONNECT [#rid] [name=<token>] [proto=<n>] [confirm=on|off]`.
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

/// Every frame of the protocol, in both directions.
///
/// The book's Protocol chapter gives each frame's grammar; the comment on each variant
/// gives its line.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Frame {
    // ---- client → server ----
    /// `CONNECT [#rid] [name=…] [proto=…] [confirm=on|off]`
    Connect(Connect),
    /// `PUB` / `HPUB`
    Pub(Publish),
    /// `SUB [#rid] <dest> <sid> [prefetch=<n>] [ack=auto|manual]`
    Sub(Subscribe),
    /// `UNSUB [#rid] <sid>`
    Unsub {
        /// Request id.
        rid: RequestId,
        /// The subscription to end.
        sid: u64,
    },
    /// `ACK [#rid] <did>`: the delivery is done with; the broker forgets the message.
    Ack {
        /// Request id (an `ACK` with an id is answered by `OK`).
        rid: RequestId,
        /// The delivery id.
        did: u64,
    },
    /// `NACK [#rid] <did>`: give the message back for redelivery.
    Nack {
        /// Request id.
        rid: RequestId,
        /// The delivery id.
        did: u64,
    },
    /// `SETACK [#rid] on|off`: publisher confirms on this connection.
    SetAck {
        /// Request id.
        rid: RequestId,
        /// On or off.
        on: bool,
    },
    /// `STATS [#rid]`: ask for the broker's state.
    Stats {
        /// Request id.
        rid: RequestId,
    },
    /// `HELP [#rid]`: ask for a summary of the commands.
    Help {
        /// Request id.
        rid: RequestId,
    },
    /// `PURGE [#rid] <queue>`: drop every pending message of a queue.
    Purge {
        /// Request id.
        rid: RequestId,
        /// The queue.
        dest: Destination,
    },
    /// `DELETE [#rid] <dest>`: remove a destination; its subscribers get `CANCEL`.
    Delete {
        /// Request id.
        rid: RequestId,
        /// The destination.
        dest: Destination,
    },
    /// `CHAIN [#rid] GET <dest>`: show a destination's mutator chain.
    ChainGet {
        /// Request id.
        rid: RequestId,
        /// The destination.
        dest: Destination,
    },
    /// `CHAIN [#rid] SET <dest> <n>` + chain text: attach a mutator chain.
    ChainSet {
        /// Request id.
        rid: RequestId,
        /// The destination.
        dest: Destination,
        /// The chain, in the mutator chain syntax.
        chain: Bytes,
    },
    /// `CHAIN [#rid] CLEAR <dest>`: remove a destination's mutator chain.
    ChainClear {
        /// Request id.
        rid: RequestId,
        /// The destination.
        dest: Destination,
    },
    /// `DISCONNECT`: the client is leaving; the broker flushes and closes.
    Disconnect,

    // ---- either side ----
    /// `PINGREQ [#rid]`: are you there?
    PingReq {
        /// Request id echoed by `PINGRESP`.
        rid: RequestId,
    },
    /// `PINGRESP [#rid]`: yes.
    PingResp {
        /// The request id of the `PINGREQ`.
        rid: RequestId,
    },

    // ---- server → client ----
    /// `INFO …`: the greeting.
    Info(Info),
    /// `MSG` / `HMSG`: a delivery.
    Msg(Delivery),
    /// `OK [#rid]`: the request succeeded.
    Ok {
        /// Request id.
        rid: RequestId,
    },
    /// `PUBACK [#rid] [filtered]`: the publish is accepted (or was dropped on purpose
    /// by the destination's mutator chain: `filtered`).
    PubAck {
        /// Request id.
        rid: RequestId,
        /// A mutator dropped the message.
        filtered: bool,
    },
    /// `ERR [#rid] <code> <message>`
    Err(ErrorReply),
    /// `STATSRESP [#rid] <n>` + JSON document.
    StatsResp {
        /// Request id.
        rid: RequestId,
        /// The JSON document (schema in the book).
        json: Bytes,
    },
    /// `HELPRESP [#rid] <n>` + text.
    HelpResp {
        /// Request id.
        rid: RequestId,
        /// The help text.
        text: Bytes,
    },
    /// `CHAINRESP [#rid] <dest> <n>` + chain text (empty: no chain).
    ChainResp {
        /// Request id.
        rid: RequestId,
        /// The destination.
        dest: Destination,
        /// The chain.
        chain: Bytes,
    },
    /// `CANCEL <sid> <code> <message>`: the broker ended a subscription.
    Cancel {
        /// The subscription.
        sid: u64,
        /// Why.
        code: ErrorCode,
        /// Human-readable text.
        message: String,
    },
    /// `SHUTDOWN [<message>]`: the broker is shutting down; it will close soon.
    Shutdown {
        /// Human-readable text.
        message: String,
    },
}

impl Frame {
    /// The request id the frame carries, if any.
    pub fn request_id(&self) -> RequestId {
        match self {
            Frame::Connect(c) => c.rid,
            Frame::Pub(p) => p.rid,
            Frame::Sub(s) => s.rid,
            Frame::Err(e) => e.rid,
            Frame::Unsub { rid, .. }
            | Frame::Ack { rid, .. }
            | Frame::Nack { rid, .. }
            | Frame::SetAck { rid, .. }
            | Frame::Stats { rid }
            | Frame::Help { rid }
            | Frame::Purge { rid, .. }
            | Frame::Delete { rid, .. }
            | Frame::ChainGet { rid, .. }
            | Frame::ChainSet { rid, .. }
            | Frame::ChainClear { rid, .. }
            | Frame::PingReq { rid }
            | Frame::PingResp { rid }
            | Frame::Ok { rid }
            | Frame::PubAck { rid, .. }
            | Frame::StatsResp { rid, .. }
            | Frame::HelpResp { rid, .. }
            | Frame::ChainResp { rid, .. } => *rid,
            Frame::Disconnect
            | Frame::Info(_)
            | Frame::Msg(_)
            | Frame::Cancel { .. }
            | Frame::Shutdown { .. } => None,
        }
    }

    /// The command word that starts the frame's line, e.g. `"PUB"`.
    pub fn command(&self) -> &'static str {
        match self {
            Frame::Connect(_) => "CONNECT",
            Frame::Pub(p) if p.headers.is_empty() => "PUB",
            Frame::Pub(_) => "HPUB",
            Frame::Sub(_) => "SUB",
            Frame::Unsub { .. } => "UNSUB",
            Frame::Ack { .. } => "ACK",
            Frame::Nack { .. } => "NACK",
            Frame::SetAck { .. } => "SETACK",
            Frame::Stats { .. } => "STATS",
            Frame::Help { .. } => "HELP",
            Frame::Purge { .. } => "PURGE",
            Frame::Delete { .. } => "DELETE",
            Frame::ChainGet { .. } | Frame::ChainSet { .. } | Frame::ChainClear { .. } => "CHAIN",
            Frame::Disconnect => "DISCONNECT",
            Frame::PingReq { .. } => "PINGREQ",
            Frame::PingResp { .. } => "PINGRESP",
            Frame::Info(_) => "INFO",
            Frame::Msg(m) if m.headers.is_empty() => "MSG",
            Frame::Msg(_) => "HMSG",
            Frame::Ok { .. } => "OK",
            Frame::PubAck { .. } => "PUBACK",
            Frame::Err(_) => "ERR",
            Frame::StatsResp { .. } => "STATSRESP",
            Frame::HelpResp { .. } => "HELPRESP",
            Frame::ChainResp { .. } => "CHAINRESP",
            Frame::Cancel { .. } => "CANCEL",
            Frame::Shutdown { .. } => "SHUTDOWN",
        }
    }
}
