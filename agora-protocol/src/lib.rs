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
//! Frames are typed by direction: a [`ClientFrame`] is what a client may send (and the
//! broker reads), a [`ServerFrame`] what the broker may send (and a client reads), so a
//! broker that receives `MSG` gets a decode error, not a frame it must refuse itself.
//! [`decode_client`] and [`decode_server`] (and their `_with` forms for other
//! [`Limits`]) take bytes from the front of a [`BytesMut`](bytes::BytesMut) and return
//! `Ok(None)` until a whole frame is there; [`encode`] appends a frame of either
//! direction to a buffer. Both the broker and the client use them: nothing else defines
//! frames.
//!
//! Layout: `decode.rs` owns the framing (lines, limits, payloads); `args.rs` the
//! general path's tokenizer; one module per command family under `cmd/` holds
//! its frames' grammar, parser and encoder; [`COMMANDS`] maps each command word to its
//! parsers, its body and its `HELP` line.
#![warn(missing_docs, rust_2018_idioms)]

mod args;
mod client;
pub mod cluster;
mod cmd;
mod decode;
mod encode;
mod error;
mod frame;
pub mod mqtt;
pub mod msg_id;
mod name;
mod read_size;
pub mod reply;
mod server;
pub mod startup;
mod table;

pub use bytes;
pub use client::ClientFrame;
pub use cmd::publish::{decode_pub_to, encode_msg, encode_pub};
pub use cmd::session::encode_err;
pub use cmd::subscribe::MAX_NACK_DELAY;
pub use decode::{decode_client, decode_client_with, decode_server, decode_server_with};
pub use encode::encode;
pub use error::{ErrorKind, ProtocolError};
pub use frame::{
    AckMode, Connect, Delivery, ErrorCode, ErrorReply, HeaderError, Headers, Info, Nack, Password,
    Publish, StatsPage, Subscribe,
};
pub use name::{Destination, DestinationError, Kind, Name, NameError, RequestId, MAX_NAME_LEN};
pub use read_size::ReadSize;
pub use server::ServerFrame;
pub use table::{help_text, CommandSpec, SentBy, COMMANDS};

/// What both directions' frames can do: [`ClientFrame`] and [`ServerFrame`]. Generic
/// code (tests, tools that read either side) uses it; most code names the direction.
pub trait Frame: Sized + std::fmt::Debug + Clone + PartialEq {
    /// Appends the frame to `dst` (what [`encode`] calls).
    fn encode(&self, dst: &mut bytes::BytesMut);

    /// Decodes one frame of this direction from the front of `buf` under `limits`: the
    /// contract of [`decode_client_with`].
    fn decode_with(
        buf: &mut bytes::BytesMut,
        limits: &Limits,
    ) -> Result<Option<Self>, ProtocolError>;

    /// The request id the frame carries, if any.
    fn request_id(&self) -> RequestId;

    /// The command word that starts the frame's line, e.g. `"PUB"`.
    fn command(&self) -> &'static str;
}

/// Checks the decoder's contract on arbitrary bytes; shared by the fuzz target and the
/// test that replays the fuzz corpus. Not part of the stable API.
#[doc(hidden)]
pub mod testing {
    use bytes::BytesMut;

    use crate::{encode, ClientFrame, Frame, Limits, ServerFrame};

    /// Feeds `data` to both directions' decoders (see [`check_decode_as`]), and checks
    /// [`decode_pub_to`](crate::decode_pub_to) against the broker's decoder (see
    /// [`check_pub_to`]).
    pub fn check_decode(data: &[u8]) {
        check_decode_as::<ClientFrame>(data);
        check_decode_as::<ServerFrame>(data);
        check_pub_to(data);
        check_mqtt(data);
        check_raft(data);
    }

    /// Feeds `data` to the cluster's Raft frame decoder (what a node reads from
    /// another). Panics if it panics, or if a frame it reads does not survive
    /// encode → decode unchanged.
    pub fn check_raft(data: &[u8]) {
        use crate::cluster::raft::RaftFrame;
        if let Ok(f) = RaftFrame::decode(data) {
            let mut out = Vec::new();
            f.encode(&mut out)
                .expect("a frame read is one that can be written");
            assert_eq!(RaftFrame::decode(&out), Ok(f));
        }
    }

    /// Feeds `data` to the MQTT decoder as a new connection, a 3.1.1 one and a 5.0 one,
    /// whole and in two parts (cut where its first byte says), with a small packet
    /// limit. Panics if the decoder panics, if a partial packet consumes anything, if the
    /// two feedings decode different packets, or if a 3.1.1 `PUBLISH` does not survive
    /// encode → decode unchanged.
    pub fn check_mqtt(data: &[u8]) {
        use crate::mqtt::{decode, encode, Packet, Reply, Version};
        const MAX: usize = 512;
        for version in [None, Some(Version::V311), Some(Version::V5)] {
            let run = |parts: &[&[u8]]| {
                let mut got = Vec::new();
                let mut buf = BytesMut::new();
                for part in parts {
                    buf.extend_from_slice(part);
                    loop {
                        let before = buf.len();
                        match decode(&mut buf, version, MAX) {
                            Ok(Some(p)) => got.push(Ok(p)),
                            Ok(None) => {
                                assert_eq!(buf.len(), before, "a partial packet consumed bytes");
                                break;
                            }
                            Err(e) => {
                                got.push(Err(e));
                                return got;
                            }
                        }
                    }
                }
                got
            };
            let cut = data.first().map_or(0, |&b| b as usize % (data.len() + 1));
            let whole = run(&[data]);
            let split = run(&[&data[..cut], &data[cut..]]);
            assert_eq!(
                whole, split,
                "the same bytes in two parts decode differently"
            );
            if version == Some(Version::V311) {
                for p in whole.into_iter().flatten() {
                    if let Packet::Publish(p) = p {
                        let mut out = BytesMut::new();
                        encode(&Reply::Publish(p.clone()), Version::V311, &mut out);
                        let again = decode(&mut out, version, usize::MAX);
                        assert_eq!(again, Ok(Some(Packet::Publish(p))), "re-decode");
                    }
                }
            }
        }
    }

    /// Decodes `data` with the broker's decoder, and before each frame asks
    /// [`decode_pub_to`](crate::decode_pub_to) about the destination of the last `PUB`
    /// (and about `topic:t`) on a copy of the bytes. Panics where it takes a frame
    /// the decoder does not read as a plain `PUB` to that destination with that
    /// payload, consuming the same bytes.
    pub fn check_pub_to(data: &[u8]) {
        let limits = Limits {
            max_line: 64,
            max_payload: 256,
        };
        let mut last = crate::Destination::topic("t").expect("a valid name");
        let mut buf = BytesMut::from(data);
        for _ in 0..data.len() + 1 {
            let mut copy = buf.clone();
            let fast = crate::decode_pub_to(&mut copy, &last, &limits);
            let before = buf.len();
            let frame = ClientFrame::decode_with(&mut buf, &limits);
            if let Some(payload) = fast {
                let Ok(Some(ClientFrame::Pub(p))) = &frame else {
                    panic!("decode_pub_to took what the decoder reads as {frame:?}");
                };
                assert_eq!(p.dest, last, "destination");
                assert!(p.rid.is_none() && p.headers.is_empty(), "{p:?}");
                assert_eq!(p.payload, payload, "payload");
                assert_eq!(copy.len(), buf.len(), "bytes consumed");
            }
            match frame {
                Ok(Some(ClientFrame::Pub(p))) => last = p.dest,
                Ok(Some(_)) => {}
                Ok(None) => return,
                Err(e) if e.is_fatal() => return,
                Err(_) => assert!(buf.len() < before),
            }
        }
    }

    /// Feeds `data` to the decoder of `F`'s direction in two parts (cut where its first
    /// byte says), with small limits so the limit paths are reached. Panics if the
    /// decoder panics, if a recoverable error consumes nothing, or if a decoded frame
    /// does not survive encode → decode unchanged.
    pub fn check_decode_as<F: Frame>(data: &[u8]) {
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
                match F::decode_with(&mut buf, &limits) {
                    Ok(Some(frame)) => {
                        let mut out = BytesMut::new();
                        encode(&frame, &mut out);
                        let again = F::decode_with(&mut out, &big);
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

/// The protocol version this crate speaks, as sent in `INFO` and `CONNECT`. Version 2
/// adds `HOLD`, `RESUME` and `DROPPED`; a broker speaks 1 and 2, and sends `DROPPED`
/// only to clients that named 2 in `CONNECT`.
pub const PROTOCOL_VERSION: u32 = 2;

/// Default longest control line, in bytes, CRLF not counted.
pub const DEFAULT_MAX_LINE: usize = 4096;

/// Default largest payload (header block included), in bytes.
pub const DEFAULT_MAX_PAYLOAD: usize = 1024 * 1024;

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
