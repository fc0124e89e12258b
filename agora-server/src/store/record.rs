//! The log's records: what a durable queue does, one record per change, each framed
//! with its length and a checksum.
//!
//! ```text
//! record  = length:u32 crc:u32 body        ; little-endian; crc = CRC-32 (IEEE) of body
//! body    = kind:u8 queue:u32 fields
//! declare = 1 queue name:str               ; a queue's number for its name
//! enqueue = 2 queue id:u64 count:u32 headers payload:bytes
//! deliver = 3 queue id:u64 count:u32       ; delivered, `count` times so far (the latest one says)
//! ack     = 4 queue id:u64                 ; gone: acknowledged, or dead-lettered
//! purge   = 5 queue                        ; every message enqueued before it, gone
//! delete  = 6 queue                        ; the queue and its messages, gone
//! headers = n:u16 *(key:str value:str)
//! str     = len:u32 utf-8 bytes
//! bytes   = len:u32 bytes
//! ```
//!
//! Decoding never trusts a length: a record longer than [`MAX_RECORD`] or one whose
//! fields do not fill its body exactly is damage, reported with its offset.

use agora_protocol::bytes::Bytes;
use agora_protocol::Headers;

/// The largest body a record may declare: a payload at the protocol's largest
/// configurable size, its headers and the fields around them.
pub const MAX_RECORD: usize = 64 * 1024 * 1024 + 64 * 1024;

/// Bytes before a record's body: its length and its checksum.
pub const FRAME: usize = 8;

/// One change to the durable queues.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// `queue` is this name's number from here on (every segment starts with the
    /// queues that exist, so that a segment can be read without the older ones).
    Declare {
        /// The queue's number in later records.
        queue: u32,
        /// Its name.
        name: String,
    },
    /// A message joined the queue (`count`: deliveries so far; above 0 when a live
    /// message is copied forward out of a segment being reclaimed).
    Enqueue {
        /// The queue.
        queue: u32,
        /// The message's id: unique in the broker, assigned in publish order.
        id: u64,
        /// Deliveries so far.
        count: u32,
        /// The message's headers.
        headers: Headers,
        /// Its payload.
        payload: Bytes,
    },
    /// The message was delivered; `count` deliveries so far.
    Deliver {
        /// The queue.
        queue: u32,
        /// The message.
        id: u64,
        /// Deliveries so far, this one included.
        count: u32,
    },
    /// The message left the queue: acknowledged, auto-acknowledged on write, or moved
    /// to the dead-letter queue (whose `Enqueue` comes first).
    Ack {
        /// The queue.
        queue: u32,
        /// The message.
        id: u64,
    },
    /// Every message in the queue before this record is gone.
    Purge {
        /// The queue.
        queue: u32,
    },
    /// The queue is gone, with its messages.
    Delete {
        /// The queue.
        queue: u32,
    },
    /// A destination's mutator chain was set at run time (`CHAIN SET`), or cleared
    /// (`text` empty); every segment starts with the chains in force, as with
    /// `Declare`s.
    Chain {
        /// The destination, `kind:name`.
        dest: String,
        /// The chain in its one-line syntax; empty when cleared.
        text: String,
    },
    /// A queue's bindings to topic patterns as they are after a `BIND` or `UNBIND` (or
    /// its deletion: none); every segment starts with the bindings in force, as with
    /// chains.
    Bindings {
        /// The queue's name.
        queue: String,
        /// Its patterns, `topic:…`, separated by spaces; empty when it has none.
        patterns: String,
    },
}

/// Why bytes are not a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bad {
    /// The bytes end inside the record: what a crash leaves at a log's end.
    Short,
    /// The declared length is larger than any record can be.
    TooLong(u64),
    /// The checksum does not match the body.
    Checksum,
    /// The checksum matches but the body is not a record of a known kind.
    Malformed(&'static str),
}

impl std::fmt::Display for Bad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Bad::Short => write!(f, "the record is cut short"),
            Bad::TooLong(n) => write!(f, "a record of {n} bytes (at most {MAX_RECORD})"),
            Bad::Checksum => write!(f, "the checksum does not match"),
            Bad::Malformed(why) => write!(f, "not a record: {why}"),
        }
    }
}

impl Record {
    /// Appends the framed record to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[0; FRAME]);
        match self {
            Record::Declare { queue, name } => {
                head(out, 1, *queue);
                put_str(out, name);
            }
            Record::Enqueue {
                queue,
                id,
                count,
                headers,
                payload,
            } => {
                head(out, 2, *queue);
                out.extend_from_slice(&id.to_le_bytes());
                out.extend_from_slice(&count.to_le_bytes());
                out.extend_from_slice(&(headers.len() as u16).to_le_bytes());
                for (k, v) in headers.iter() {
                    put_str(out, k);
                    put_str(out, v);
                }
                out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
                out.extend_from_slice(payload);
            }
            Record::Deliver { queue, id, count } => {
                head(out, 3, *queue);
                out.extend_from_slice(&id.to_le_bytes());
                out.extend_from_slice(&count.to_le_bytes());
            }
            Record::Ack { queue, id } => {
                head(out, 4, *queue);
                out.extend_from_slice(&id.to_le_bytes());
            }
            Record::Purge { queue } => head(out, 5, *queue),
            Record::Delete { queue } => head(out, 6, *queue),
            Record::Chain { dest, text } => {
                head(out, 7, 0);
                put_str(out, dest);
                put_str(out, text);
            }
            Record::Bindings { queue, patterns } => {
                head(out, 8, 0);
                put_str(out, queue);
                put_str(out, patterns);
            }
        }
        let body = &out[start + FRAME..];
        let len = (body.len() as u32).to_le_bytes();
        let crc = crc32fast::hash(body).to_le_bytes();
        out[start..start + 4].copy_from_slice(&len);
        out[start + 4..start + FRAME].copy_from_slice(&crc);
    }

    /// The record at the front of `buf` and its framed length.
    pub fn decode(buf: &[u8]) -> Result<(Record, usize), Bad> {
        if buf.len() < FRAME {
            return Err(Bad::Short);
        }
        let len = u32::from_le_bytes(buf[..4].try_into().expect("4 bytes")) as usize;
        if len > MAX_RECORD {
            return Err(Bad::TooLong(len as u64));
        }
        let Some(body) = buf.get(FRAME..FRAME + len) else {
            return Err(Bad::Short);
        };
        let crc = u32::from_le_bytes(buf[4..FRAME].try_into().expect("4 bytes"));
        if crc32fast::hash(body) != crc {
            return Err(Bad::Checksum);
        }
        let mut r = Reader { buf: body };
        let kind = r.u8()?;
        let queue = r.u32()?;
        let record = match kind {
            1 => Record::Declare {
                queue,
                name: r.str()?,
            },
            2 => {
                let id = r.u64()?;
                let count = r.u32()?;
                let n = r.u16()?;
                let mut headers = Headers::new();
                for _ in 0..n {
                    let (k, v) = (r.str()?, r.str()?);
                    headers
                        .append(&k, &v)
                        .map_err(|_| Bad::Malformed("a header the protocol refuses"))?;
                }
                let len = r.u32()? as usize;
                let payload = Bytes::copy_from_slice(r.take(len)?);
                Record::Enqueue {
                    queue,
                    id,
                    count,
                    headers,
                    payload,
                }
            }
            3 => Record::Deliver {
                queue,
                id: r.u64()?,
                count: r.u32()?,
            },
            4 => Record::Ack {
                queue,
                id: r.u64()?,
            },
            5 => Record::Purge { queue },
            6 => Record::Delete { queue },
            7 => Record::Chain {
                dest: r.str()?,
                text: r.str()?,
            },
            8 => Record::Bindings {
                queue: r.str()?,
                patterns: r.str()?,
            },
            _ => return Err(Bad::Malformed("an unknown kind")),
        };
        if !r.buf.is_empty() {
            return Err(Bad::Malformed("bytes left after the fields"));
        }
        Ok((record, FRAME + len))
    }
}

fn head(out: &mut Vec<u8>, kind: u8, queue: u32) {
    out.push(kind);
    out.extend_from_slice(&queue.to_le_bytes());
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Fields out of a body whose checksum matched.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Bad> {
        if self.buf.len() < n {
            return Err(Bad::Malformed("a field runs past the record"));
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Ok(a)
    }

    fn u8(&mut self) -> Result<u8, Bad> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, Bad> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().expect("2")))
    }

    fn u32(&mut self) -> Result<u32, Bad> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4")))
    }

    fn u64(&mut self) -> Result<u64, Bad> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8")))
    }

    fn str(&mut self) -> Result<String, Bad> {
        let n = self.u32()? as usize;
        let b = self.take(n)?;
        String::from_utf8(b.to_vec()).map_err(|_| Bad::Malformed("text that is not UTF-8"))
    }
}
