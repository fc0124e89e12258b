//! What the broker holds and hands on: a [`Message`] (as published, shared by every
//! copy) and a [`Delivery`] (one message on its way to one subscription). Plain data,
//! imported by queues, topics, connections and shippers alike, so none of them needs
//! another's module for it.

use agora_protocol::bytes::Bytes;
use agora_protocol::Headers;

/// Payloads shorter than this are copied out of their read buffer when they wait in a
/// queue ([`Message::compact`]).
pub(crate) const COPY_BELOW: usize = 4096;

/// A message as the broker holds it. Cloning shares the payload (a reference count),
/// never copies it.
#[derive(Clone, Debug)]
pub(crate) struct Message {
    pub headers: Headers,
    pub payload: Bytes,
    /// When the broker read it, for latency.
    pub received: std::time::Instant,
}

impl Message {
    /// Gives the message its own copy of its payload. A payload read over TCP is a
    /// slice of the connection's read buffer and keeps that whole buffer (up to 64 KiB)
    /// resident while it is held; a message left waiting in a queue (one with no
    /// consumer, or for a second: `QueueState::compact_waiting`) is given its own
    /// allocation instead, so it cannot keep a buffer full of other messages' bytes
    /// resident long after they were consumed.
    /// Payloads of [`COPY_BELOW`] bytes or more are left as they are: they fill much
    /// of the buffer they keep, and jemalloc pads a copy of 16 KiB or more with a page.
    pub fn compact(&mut self) {
        if self.payload.len() < COPY_BELOW {
            self.payload = Bytes::copy_from_slice(&self.payload);
        }
    }

    /// What the message counts against byte limits.
    pub fn size(&self) -> usize {
        Message::size_of(&self.headers, self.payload.len())
    }

    /// What a message of these headers and a payload of `payload` bytes counts against
    /// byte limits (also for messages the log keeps on disk).
    pub fn size_of(headers: &Headers, payload: usize) -> usize {
        payload
            + if headers.is_empty() {
                0
            } else {
                headers.encoded_len()
            }
    }
}

/// One message on its way to one subscription.
#[derive(Debug)]
pub(crate) struct Delivery {
    /// Delivery id to ack (0: none expected).
    pub did: u64,
    /// Delivery count, this one included.
    pub count: u32,
    pub msg: Message,
    /// Bytes this delivery holds of the memory budget: a topic delivery's payload, given
    /// back when its batch is written or the subscription ends; 0 for queue
    /// deliveries (the queue gives its bytes back itself).
    pub charged: usize,
    /// To a wildcard subscription: the topic it was published to, which its `MSG`
    /// names (`None`: the subscription's own destination).
    pub topic: Option<agora_protocol::Destination>,
}
