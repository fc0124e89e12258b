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
//!
//! With `--json` (for mutator chains, which read JSON fields) a payload is instead a JSON
//! object of exactly the requested size:
//!
//! ```text
//! {"seq":<sequence>,"t":<send time ns>,"temp":42.5,"site":"s1","pad":"xxx…"}
//! ```
//!
//! `seq` and `t` are the same numbers as above; `temp` and `site` are for thresholds and
//! enrichment; `pad` fills up to the size. The receiver finds `"seq":` and `"t":` by
//! scanning, so a chain that rewrites the object (sorted keys, added fields) still decodes.

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

/// How the sequence number and send time are carried.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Format {
    /// 16 bytes of binary header, then zeros.
    #[default]
    Binary,
    /// A JSON object (see the module's documentation).
    Json,
}

/// The largest JSON payload with empty padding (20-digit numbers); smaller sizes come
/// out at their natural length.
pub(crate) const MIN_JSON_PAYLOAD: usize = 86;

impl Format {
    /// A payload of `size` bytes in this format (at least the format's minimum).
    pub(crate) fn encode(self, size: usize, publisher: usize, n: u64, sent_ns: u64) -> Bytes {
        match self {
            Format::Binary => encode(size, publisher, n, sent_ns),
            Format::Json => encode_json(size, publisher, n, sent_ns),
        }
    }

    /// `(publisher, n, sent_ns)` of a payload in this format.
    pub(crate) fn decode(self, payload: &[u8]) -> Option<(usize, u64, u64)> {
        match self {
            Format::Binary => decode(payload),
            Format::Json => decode_json(payload),
        }
    }
}

/// A JSON object of `size` bytes (or the few more its numbers need).
pub(crate) fn encode_json(size: usize, publisher: usize, n: u64, sent_ns: u64) -> Bytes {
    let seq = ((publisher as u64) << SEQ_BITS) | n;
    let mut s = format!(r#"{{"seq":{seq},"t":{sent_ns},"temp":42.5,"site":"s1","pad":""#);
    let fill = size.saturating_sub(s.len() + 2);
    s.extend(std::iter::repeat_n('x', fill));
    s.push_str("\"}");
    Bytes::from(s)
}

/// The unsigned integer after `key` (e.g. `"seq":`) in `payload`.
fn json_u64(payload: &[u8], key: &[u8]) -> Option<u64> {
    let at = payload.windows(key.len()).position(|w| w == key)? + key.len();
    let digits = payload[at..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .count();
    std::str::from_utf8(&payload[at..at + digits])
        .ok()?
        .parse()
        .ok()
}

/// `(publisher, n, sent_ns)` of a JSON payload made by [`encode_json`].
pub(crate) fn decode_json(payload: &[u8]) -> Option<(usize, u64, u64)> {
    let seq = json_u64(payload, br#""seq":"#)?;
    let sent = json_u64(payload, br#""t":"#)?;
    Some((
        (seq >> SEQ_BITS) as usize,
        seq & ((1 << SEQ_BITS) - 1),
        sent,
    ))
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
    /// How payloads are decoded.
    pub(crate) format: Format,
    /// `counts[publisher][n]`: times message `n` of that publisher arrived (saturating).
    counts: Vec<Vec<u8>>,
    /// Payloads that did not decode (counted as neither delivered nor lost).
    pub(crate) garbled: u64,
}

impl Seen {
    /// Nothing seen yet; payloads decoded as `format`.
    pub(crate) fn new(format: Format) -> Seen {
        Seen {
            format,
            ..Seen::default()
        }
    }

    /// Notes one arrival; returns its send time.
    pub(crate) fn note(&mut self, payload: &[u8]) -> Option<u64> {
        let Some((publisher, n, sent)) = self.format.decode(payload) else {
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
        self.tally_kept(sent, 1)
    }

    /// `(lost, duplicated)` when only every `keep_every`-th message (numbers 0, N, 2N…)
    /// is meant to arrive (a `sample N` chain with one publisher); any other number that
    /// arrives counts as a duplicate: it should not be there.
    pub(crate) fn tally_kept(&self, sent: &[u64], keep_every: u64) -> (u64, u64) {
        let keep_every = keep_every.max(1) as usize;
        let (mut lost, mut dup) = (0, 0);
        for (publisher, &count) in sent.iter().enumerate() {
            let row = self.counts.get(publisher).map_or(&[][..], Vec::as_slice);
            for n in 0..count as usize {
                let expected = n % keep_every == 0;
                match (row.get(n).copied().unwrap_or(0), expected) {
                    (0, true) => lost += 1,
                    (0, false) => {}
                    (c, true) => dup += u64::from(c - 1),
                    (c, false) => dup += u64::from(c),
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

    #[test]
    fn json_round_trip_and_size() {
        for size in [MIN_JSON_PAYLOAD, 128, 1024] {
            let p = encode_json(size, 2, u64::from(u32::MAX), u64::MAX);
            assert_eq!(p.len(), size);
            let v: serde_json::Value = serde_json::from_slice(&p).unwrap();
            assert_eq!(v["temp"], 42.5);
            assert_eq!(v["site"], "s1");
            assert_eq!(decode_json(&p), Some((2, u64::from(u32::MAX), u64::MAX)));
        }
        // Rewritten with sorted keys and extra fields (as a `set` on JSON would).
        let p = br#"{"pad":"xx","region":"eu","seq":7,"site":"s1","t":99,"temp":42.5}"#;
        assert_eq!(decode_json(p), Some((0, 7, 99)));
    }

    #[test]
    fn tally_kept_expects_every_nth() {
        let mut s = Seen::default();
        for n in [0, 3, 6] {
            s.note(&encode(16, 0, n, 0));
        }
        // 8 sent, keep 1 in 3: 0, 3, 6 expected, all there.
        assert_eq!(s.tally_kept(&[8], 3), (0, 0));
        s.note(&encode(16, 0, 4, 0));
        assert_eq!(s.tally_kept(&[8], 3), (0, 1));
        assert_eq!(s.tally_kept(&[10], 3), (1, 1));
    }
}
