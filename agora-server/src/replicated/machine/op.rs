//! A replicated queue's log entries and their bytes. Every tag ever written stays
//! readable: an `Enqueue` from before entries carried their time reads as untimed.

/// An entry of a replicated queue's log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    /// A message, proposed by member `origin` as its `seq`th at `at` (milliseconds
    /// since the Unix epoch on its clock; 0: not said, as in entries of brokers before
    /// message TTL on replicated queues).
    Enqueue {
        origin: u64,
        seq: u64,
        at: u64,
        body: Vec<u8>,
    },
    /// The message whose entry is at `id` was acknowledged.
    Ack { id: u64 },
    /// The message whose entry is at `id` came back from a consumer (given back, not
    /// answered in time, or its consumer left): one more toward `--max-deliveries`,
    /// whichever node serves next.
    Return { id: u64 },
    /// Every message enqueued before this entry leaves the queue (`PURGE`).
    Purge,
}

/// The bytes of an encoded `Enqueue` before its body (with its time).
const ENQUEUE_HEAD: usize = 25;

/// An `Enqueue` without its time (written before it had one): read, never written.
const ENQUEUE_UNTIMED: u8 = 1;
const ACK: u8 = 2;
const PURGE: u8 = 3;
const ENQUEUE: u8 = 4;
const RETURN: u8 = 5;

impl Op {
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Op::Enqueue {
                origin,
                seq,
                at,
                body,
            } => {
                let mut v = Vec::with_capacity(ENQUEUE_HEAD + body.len());
                v.push(ENQUEUE);
                v.extend_from_slice(&origin.to_le_bytes());
                v.extend_from_slice(&seq.to_le_bytes());
                v.extend_from_slice(&at.to_le_bytes());
                v.extend_from_slice(body);
                v
            }
            Op::Ack { id } => {
                let mut v = vec![ACK];
                v.extend_from_slice(&id.to_le_bytes());
                v
            }
            Op::Purge => vec![PURGE],
            Op::Return { id } => {
                let mut v = vec![RETURN];
                v.extend_from_slice(&id.to_le_bytes());
                v
            }
        }
    }

    /// The length of the body of an encoded `Enqueue` (what the queue's figures count).
    pub fn body_len(data: &[u8]) -> usize {
        match data.first() {
            Some(&ENQUEUE_UNTIMED) => data.len().saturating_sub(17),
            _ => data.len().saturating_sub(ENQUEUE_HEAD),
        }
    }

    pub fn decode(data: &[u8]) -> Option<Op> {
        let word = |at: usize| -> Option<u64> {
            Some(u64::from_le_bytes(data.get(at..at + 8)?.try_into().ok()?))
        };
        match *data.first()? {
            ENQUEUE => Some(Op::Enqueue {
                origin: word(1)?,
                seq: word(9)?,
                at: word(17)?,
                body: data[ENQUEUE_HEAD..].to_vec(),
            }),
            ENQUEUE_UNTIMED => Some(Op::Enqueue {
                origin: word(1)?,
                seq: word(9)?,
                at: 0,
                body: data[17..].to_vec(),
            }),
            ACK if data.len() == 9 => Some(Op::Ack { id: word(1)? }),
            PURGE if data.len() == 1 => Some(Op::Purge),
            RETURN if data.len() == 9 => Some(Op::Return { id: word(1)? }),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replicated::machine::{Applied, Machine};

    #[test]
    fn ops_read_back_as_written_and_anything_else_is_unknown() {
        for op in [
            Op::Enqueue {
                origin: 3,
                seq: u64::MAX,
                at: 1_700_000_000_000,
                body: b"hello".to_vec(),
            },
            Op::Enqueue {
                origin: 1,
                seq: 0,
                at: 0,
                body: Vec::new(),
            },
            Op::Ack { id: 77 },
            Op::Purge,
            Op::Return { id: 5 },
        ] {
            assert_eq!(Op::decode(&op.encode()), Some(op));
        }
        // An entry of a broker before enqueues had a time: none.
        let mut old = vec![ENQUEUE_UNTIMED];
        old.extend_from_slice(&5u64.to_le_bytes());
        old.extend_from_slice(&6u64.to_le_bytes());
        old.extend_from_slice(b"body");
        let read = Op::Enqueue {
            origin: 5,
            seq: 6,
            at: 0,
            body: b"body".to_vec(),
        };
        assert_eq!(Op::decode(&old), Some(read.clone()));
        assert_eq!((Op::body_len(&old), Op::body_len(&read.encode())), (4, 4));
        for bad in [
            &[][..],
            &[9, 1],
            &[ENQUEUE, 1, 2],
            &[
                ENQUEUE, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17,
            ],
            &[ACK, 1, 2, 3, 4, 5, 6, 7],
        ] {
            assert_eq!(Op::decode(bad), None, "{bad:?}");
        }
        let mut m = Machine::default();
        assert_eq!(m.apply(1, b"\x07junk"), Applied::Unknown);
    }
}
