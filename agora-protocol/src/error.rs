//! The decoder's public error: what was wrong, where, and whether the stream can go on.

use std::fmt;

use crate::frame::ErrorCode;
use crate::name::{NameError, RequestId};

/// What kind of problem the decoder found.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The control line is longer than the limit (CRLF not counted).
    LineTooLong {
        /// The limit in bytes.
        max: usize,
    },
    /// The declared payload is larger than the limit.
    PayloadTooLarge {
        /// The size the line declared.
        declared: u64,
        /// The limit in bytes.
        max: usize,
    },
    /// The command word is unknown.
    UnknownCommand,
    /// Missing, extra or malformed arguments.
    BadArgs,
    /// A destination that is not `queue:<name>` or `topic:<name>` with a valid name.
    BadName(Option<NameError>),
    /// The header block of an `HPUB`/`HMSG` is malformed.
    BadHeaders,
    /// The bytes after the declared payload are not CRLF: the payload was longer or
    /// shorter than declared.
    PayloadSizeMismatch,
}

/// A frame that could not be decoded.
///
/// When [`is_fatal`](ProtocolError::is_fatal) is false, the decoder has consumed the bad
/// frame (its line, and its payload where the size was readable) and the next call
/// decodes what follows; the receiver answers with `ERR` and goes on. When it is true,
/// the framing is lost: answer, then close the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolError {
    kind: ErrorKind,
    offset: usize,
    rid: RequestId,
    fatal: bool,
    detail: String,
}

impl ProtocolError {
    pub(crate) fn new(kind: ErrorKind, offset: usize, detail: impl Into<String>) -> Self {
        let fatal = matches!(
            kind,
            ErrorKind::LineTooLong { .. }
                | ErrorKind::PayloadTooLarge { .. }
                | ErrorKind::PayloadSizeMismatch
        );
        ProtocolError {
            kind,
            offset,
            rid: None,
            fatal,
            detail: detail.into(),
        }
    }

    pub(crate) fn fatal(mut self) -> Self {
        self.fatal = true;
        self
    }

    pub(crate) fn with_rid(mut self, rid: RequestId) -> Self {
        self.rid = rid;
        self
    }

    /// What was wrong.
    pub fn kind(&self) -> &ErrorKind {
        &self.kind
    }

    /// Byte offset, from the start of the frame, where the problem was found.
    pub fn offset(&self) -> usize {
        self.offset
    }

    /// The request id of the bad frame, when it could be read, so the `ERR` can echo it.
    pub fn request_id(&self) -> RequestId {
        self.rid
    }

    /// True when the stream cannot be decoded further.
    pub fn is_fatal(&self) -> bool {
        self.fatal
    }

    /// The wire error code to answer with.
    pub fn code(&self) -> ErrorCode {
        match self.kind {
            ErrorKind::LineTooLong { .. } => ErrorCode::LineTooLong,
            ErrorKind::PayloadTooLarge { .. } => ErrorCode::PayloadTooLarge,
            ErrorKind::UnknownCommand => ErrorCode::UnknownCommand,
            ErrorKind::BadArgs => ErrorCode::BadArgs,
            ErrorKind::BadName(_) => ErrorCode::BadName,
            ErrorKind::BadHeaders | ErrorKind::PayloadSizeMismatch => ErrorCode::BadFrame,
        }
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            ErrorKind::LineTooLong { max } => write!(f, "control line longer than {max} bytes")?,
            ErrorKind::PayloadTooLarge { declared, max } => write!(
                f,
                "payload of {declared} bytes is larger than the limit of {max} bytes"
            )?,
            ErrorKind::UnknownCommand => f.write_str("unknown command")?,
            ErrorKind::BadArgs => f.write_str("bad arguments")?,
            ErrorKind::BadName(Some(e)) => write!(f, "bad destination: {e}")?,
            ErrorKind::BadName(None) => f.write_str("bad destination")?,
            ErrorKind::BadHeaders => f.write_str("malformed header block")?,
            ErrorKind::PayloadSizeMismatch => {
                f.write_str("payload is not followed by CRLF where its declared size ends")?
            }
        }
        if !self.detail.is_empty() {
            write!(f, ": {}", self.detail)?;
        }
        write!(f, " (at byte {})", self.offset)
    }
}

impl std::error::Error for ProtocolError {}
