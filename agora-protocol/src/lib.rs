//! The Agora wire protocol: frames, streaming decode, encode. Sans-IO.
//!
//! ```text
//! frame    = line [payload]
//! line     = command [SP "#" request-id] *(SP arg) CRLF      ; LF alone is accepted
//! payload  = <n bytes, as declared by the line's last token> CRLF
//!
//! PUB topic:prices 5\r\nhello\r\n                 publish to a topic
//! PUB #7 queue:orders 2\r\nhi\r\n                 publish to a queue, request id 7
//! HPUB topic:t 16 21\r\nTrace-Id: ab\r\n\r\nhello\r\n    with headers
//! SUB queue:orders 1 prefetch=64 ack=manual\r\n   consume a queue
//! MSG queue:orders 1 42 1 2\r\nhi\r\n              delivery 42 on subscription 1
//! ACK 42\r\n                                      done with delivery 42
//! ERR #7 queue_full queue 'orders' is full\r\n    an error, echoing request id 7
//! ```
//!
//! Control lines are text (a person can type them at `telnet localhost 48879`); the
//! command word is case-insensitive. Payloads are binary-safe and carried by an explicit
//! byte count, never by a terminator. The complete grammar, every frame, the error-code
//! table and the `STATS` schema are in the book's Protocol chapter
//! (`book/src/protocol.md`).
//!
//! The API is two functions: [`decode`] (and [`decode_with`] for other [`Limits`]) takes
//! bytes from the front of a [`BytesMut`](bytes::BytesMut) and returns `Ok(None)` until a
//! whole frame is there; [`encode`] appends a frame to a buffer. Both the broker and the
//! client use them: nothing else defines frames.
#![warn(missing_docs, rust_2018_idioms)]

mod decode;
mod encode;
mod error;
mod frame;
pub mod startup;

pub use bytes;
pub use decode::{decode, decode_with};
pub use encode::{encode, encode_err, encode_msg, encode_pub};
pub use error::{ErrorKind, ProtocolError};
pub use frame::{
    AckMode, Connect, Delivery, Destination, DestinationError, ErrorCode, ErrorReply, Frame,
    HeaderError, Headers, Info, Kind, Name, NameError, Publish, RequestId, Subscribe, MAX_NAME_LEN,
};

/// Checks the decoder's contract on arbitrary bytes; shared by the fuzz target and the
/// test that replays the fuzz corpus. Not part of the stable API.
#[doc(hidden)]
pub mod testing {
    use bytes::BytesMut;

    use crate::{decode_with, encode, Limits};

    /// Feeds `data` to the decoder in two parts (cut where its first byte says), with
    /// small limits so the limit paths are reached. Panics if the decoder panics, if a
    /// recoverable error consumes nothing, or if a decoded frame does not survive
    /// encode → decode unchanged.
    pub fn check_decode(data: &[u8]) {
        let limits = Limits {
            max_line: 64,
            max_payload: 256,
        };
        let big = Limits {
            max_line: 1 << 16,
            max_payload: 1 << 20,
        };
        let mut buf = BytesMut::new();
        let cut = data.first().map_or(0, |&b| b as usize % (data.len() + 1));
        for part in [&data[..cut], &data[cut..]] {
            buf.extend_from_slice(part);
            loop {
                let before = buf.len();
                match decode_with(&mut buf, &limits) {
                    Ok(Some(frame)) => {
                        let mut out = BytesMut::new();
                        encode(&frame, &mut out);
                        let again = decode_with(&mut out, &big);
                        assert_eq!(again, Ok(Some(frame)), "re-decode of {out:?}");
                    }
                    Ok(None) => break,
                    Err(e) if e.is_fatal() => return,
                    Err(e) => assert!(buf.len() < before, "{e} consumed nothing"),
                }
            }
        }
    }
}

/// The broker's default TCP and UDP port (0xBEEF).
pub const DEFAULT_PORT: u16 = 48879;

/// The protocol version this crate speaks, as sent in `INFO` and `CONNECT`.
pub const PROTOCOL_VERSION: u32 = 1;

/// Default longest control line, in bytes, CRLF not counted.
pub const DEFAULT_MAX_LINE: usize = 4096;

/// Default largest payload (header block included), in bytes.
pub const DEFAULT_MAX_PAYLOAD: usize = 1024 * 1024;

/// How many bytes to ask the socket for next, for a decoder's read buffer. It starts at
/// [`ReadSize::MIN`], doubles while reads fill it and halves while they come back less
/// than a quarter full, up to [`ReadSize::MAX`]: an idle peer costs little (a safe `read`
/// needs the new part of the buffer initialised, so a big request costs a big `memset`
/// even when one small frame arrives) and a busy one is read in bulk. The broker's
/// connections and the client's reader both size their reads with it.
///
/// ```
/// let mut size = agora_protocol::ReadSize::default();
/// assert_eq!(size.get(), agora_protocol::ReadSize::MIN);
/// size.after_read(size.get()); // filled: ask for more next time
/// assert_eq!(size.get(), 2 * agora_protocol::ReadSize::MIN);
/// size.after_read(1); // far from full: ask for less
/// assert_eq!(size.get(), agora_protocol::ReadSize::MIN);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadSize(usize);

impl ReadSize {
    /// The smallest read asked for.
    pub const MIN: usize = 4 * 1024;
    /// The largest read asked for.
    pub const MAX: usize = 64 * 1024;

    /// Bytes to ask for in the next read.
    pub fn get(self) -> usize {
        self.0
    }

    /// Adapts to a read that returned `n` bytes.
    pub fn after_read(&mut self, n: usize) {
        if n >= self.0 {
            self.0 = (self.0 * 2).min(Self::MAX);
        } else if n < self.0 / 4 {
            self.0 = (self.0 / 2).max(Self::MIN);
        }
    }
}

impl Default for ReadSize {
    fn default() -> ReadSize {
        ReadSize(Self::MIN)
    }
}

/// The limits the decoder enforces before buffering a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest control line, CRLF not counted.
    pub max_line: usize,
    /// Largest payload, header block included.
    pub max_payload: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_line: DEFAULT_MAX_LINE,
            max_payload: DEFAULT_MAX_PAYLOAD,
        }
    }
}
