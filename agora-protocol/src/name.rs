//! Destination names: [`Name`], [`Kind`], [`Destination`] and the rules they obey.
//!
//! This module owns what a valid name is. It never does I/O, and a name decoded from a
//! frame is a slice of the read buffer, never a copy.

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
    /// A subscription pattern's token at this index is empty, a partial wildcard
    /// (`sens*`), or a `>` before the last token.
    BadPattern(usize),
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
            NameError::BadPattern(i) => write!(
                f,
                "the token at index {i} is empty, a partial wildcard, or a '>' before the last token (a wildcard is a whole token: * or >)"
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

/// Checks a topic subscription: a name, or a pattern of dot-separated tokens, none
/// empty, each `*`, or `>` as the last one, or name characters (the first may start
/// with `$`); at most [`MAX_NAME_LEN`] bytes.
pub(crate) fn validate_pattern(b: &[u8]) -> Result<(), NameError> {
    // Without a wildcard it is a name, with a name's rules (which allow empty tokens).
    if !b.iter().any(|&c| c == b'*' || c == b'>') {
        return validate_name(b);
    }
    if b.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong(b.len()));
    }
    if b.is_empty() {
        return Err(NameError::Empty);
    }
    let mut start = 0;
    let last = b.iter().rposition(|&c| c == b'.').map_or(0, |i| i + 1);
    for tok in b.split(|&c| c == b'.') {
        match tok {
            [] => return Err(NameError::BadPattern(start)),
            b"*" => {}
            b">" if start == last => {}
            b">" => return Err(NameError::BadPattern(start)),
            t => {
                let body = match start {
                    0 => t.strip_prefix(b"$").unwrap_or(t),
                    _ => t,
                };
                if body.is_empty() {
                    return Err(NameError::BadPattern(start));
                }
                let skip = t.len() - body.len();
                if let Some(i) = body.iter().position(|&c| !is_name_byte(c)) {
                    return Err(match body[i] {
                        b'*' | b'>' => NameError::BadPattern(start),
                        _ => NameError::BadByte(start + skip + i),
                    });
                }
            }
        }
        start += tok.len() + 1;
    }
    Ok(())
}

impl Name {
    /// A topic subscription pattern (`sensors.*.temp`, `orders.>`), or a plain name.
    ///
    /// ```
    /// use agora_protocol::Name;
    /// assert!(Name::pattern("sensors.*.temp").is_ok());
    /// assert!(Name::pattern("sens*").is_err());
    /// ```
    pub fn pattern(name: impl Into<Bytes>) -> Result<Name, NameError> {
        let b = name.into();
        validate_pattern(&b)?;
        Ok(Name(b))
    }

    /// True when a token is `*` or `>`: a subscription pattern, not a name.
    pub fn is_pattern(&self) -> bool {
        self.0.split(|&c| c == b'.').any(|t| t == b"*" || t == b">")
    }

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

    /// A topic subscription: a name, or a pattern with `*` and `>` tokens.
    ///
    /// ```
    /// let d = agora_protocol::Destination::topic_pattern("orders.>").unwrap();
    /// assert!(d.name.is_pattern());
    /// ```
    pub fn topic_pattern(name: &str) -> Result<Destination, NameError> {
        Ok(Destination {
            kind: Kind::Topic,
            name: Name::pattern(Bytes::copy_from_slice(name.as_bytes()))?,
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
