//! What every benchmark message carries, and what the receiving side keeps of it.
//!
//! ```text
//! offset 0   u64 LE  sequence: publisher index << 40 | message number
//! offset 8   u64 LE  send time: ns since the bench's epoch (for latency-rate, the
//!                    *intended* send time, so a stalled publisher cannot hide latency)
//! offset 16  zeros   up to the payload size
//! ```
//!
//! The smallest payload is 16 B, exactly the header. Every system carries these bytes
//! unchanged, so one decoder serves all of them.

use std::sync::OnceLock;
use std::time::Instant;

use bytes::Bytes;
use hdrhistogram::Histogram;

/// Bits of the sequence number that count messages; the publisher index sits above.
const SEQ_BITS: u32 = 40;

/// The smallest payload that holds the header.
pub(crate) const MIN_PAYLOAD: usize = 16;

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Nanoseconds since the bench's epoch (one clock for every thread of this process).
pub(crate) fn now_ns() -> u64 {
    u64::try_from(epoch().elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// `t` as nanoseconds since the epoch.
pub(crate) fn ns_of(t: Instant) -> u64 {
    u64::try_from(t.saturating_duration_since(epoch()).as_nanos()).unwrap_or(u64::MAX)
}

/// A payload of `size` bytes (at least [`MIN_PAYLOAD`]) for message `n` of publisher
/// `publisher`, stamped `sent_ns`.
pub(crate) fn encode(size: usize, publisher: usize, n: u64, sent_ns: u64) -> Bytes {
    let mut buf = vec![0u8; size.max(MIN_PAYLOAD)];
    let seq = ((publisher as u64) << SEQ_BITS) | n;
    buf[..8].copy_from_slice(&seq.to_le_bytes());
    buf[8..16].copy_from_slice(&sent_ns.to_le_bytes());
    Bytes::from(buf)
}

/// `(publisher, n, sent_ns)` of a payload, or `None` for one too short to be ours.
pub(crate) fn decode(payload: &[u8]) -> Option<(usize, u64, u64)> {
    let seq = u64::from_le_bytes(payload.get(..8)?.try_into().ok()?);
    let sent = u64::from_le_bytes(payload.get(8..16)?.try_into().ok()?);
    Some((
        (seq >> SEQ_BITS) as usize,
        seq & ((1 << SEQ_BITS) - 1),
        sent,
    ))
}

/// A latency histogram in nanoseconds, 3 significant figures, growing as needed.
pub(crate) fn histogram() -> Histogram<u64> {
    let mut h = Histogram::new(3).expect("3 significant figures is valid");
    h.auto(true);
    h
}

/// How often each message was seen, per publisher: the evidence for `lost` and
/// `duplicated`.
#[derive(Default, Clone)]
pub(crate) struct Seen {
    /// `counts[publisher][n]`: times message `n` of that publisher arrived (saturating).
    counts: Vec<Vec<u8>>,
    /// Payloads that did not decode (counted as neither delivered nor lost).
    pub(crate) garbled: u64,
}

impl Seen {
    /// Notes one arrival; returns its send time.
    pub(crate) fn note(&mut self, payload: &[u8]) -> Option<u64> {
        let Some((publisher, n, sent)) = decode(payload) else {
            self.garbled += 1;
            return None;
        };
        // A corrupt header must not make us allocate terabytes.
        if publisher >= 1024 || n >= 1 << 32 {
            self.garbled += 1;
            return None;
        }
        if self.counts.len() <= publisher {
            self.counts.resize_with(publisher + 1, Vec::new);
        }
        let row = &mut self.counts[publisher];
        let n = n as usize;
        if row.len() <= n {
            row.resize((n + 1).max(row.len() * 2), 0);
        }
        row[n] = row[n].saturating_add(1);
        Some(sent)
    }

    /// Adds another receiver's arrivals to these (queues: the consumers share one stream).
    pub(crate) fn merge(&mut self, other: &Seen) {
        if self.counts.len() < other.counts.len() {
            self.counts.resize_with(other.counts.len(), Vec::new);
        }
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            if mine.len() < theirs.len() {
                mine.resize(theirs.len(), 0);
            }
            for (a, b) in mine.iter_mut().zip(theirs) {
                *a = a.saturating_add(*b);
            }
        }
        self.garbled += other.garbled;
    }

    /// `(lost, duplicated)` given how many messages each publisher sent.
    pub(crate) fn tally(&self, sent: &[u64]) -> (u64, u64) {
        let (mut lost, mut dup) = (0, 0);
        for (publisher, &count) in sent.iter().enumerate() {
            let row = self.counts.get(publisher).map_or(&[][..], Vec::as_slice);
            for n in 0..count as usize {
                match row.get(n).copied().unwrap_or(0) {
                    0 => lost += 1,
                    c => dup += u64::from(c - 1),
                }
            }
            // Numbers past what was sent cannot be ours: count them as duplicates.
            dup += row
                .iter()
                .skip(count as usize)
                .map(|&c| u64::from(c))
                .sum::<u64>();
        }
        (lost, dup)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let p = encode(128, 3, 77, 123_456);
        assert_eq!(p.len(), 128);
        assert_eq!(decode(&p), Some((3, 77, 123_456)));
        assert_eq!(encode(1, 0, 0, 0).len(), MIN_PAYLOAD);
        assert_eq!(decode(&[0u8; 15]), None);
    }

    #[test]
    fn tally_counts_lost_and_duplicates() {
        let mut a = Seen::default();
        let mut b = Seen::default();
        for n in [0, 1, 2] {
            a.note(&encode(16, 0, n, 0));
        }
        for n in [2, 4] {
            b.note(&encode(16, 0, n, 0));
        }
        b.note(&encode(16, 1, 0, 0));
        a.merge(&b);
        // publisher 0 sent 5 (3 lost? no: 0,1,2,4 seen, 3 lost; 2 twice), publisher 1 sent 2.
        assert_eq!(a.tally(&[5, 2]), (2, 1));
    }
}
