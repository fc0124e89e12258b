//! The cluster handshake: the lines two nodes of one cluster exchange when one dials the
//! other's cluster port, before the link carries the native protocol.
//!
//! ```text
//! dialer   → acceptor: HELLO <cluster> <node> <nonce> [peers=<digest>] [tick=<ms>]
//! acceptor → dialer:   HELLO <cluster> <node> <nonce> <proof> [peers=<digest>] [tick=<ms>]
//! dialer   → acceptor: PROOF <proof>
//! acceptor → dialer:   WELCOME
//! ```
//!
//! `<cluster>` is the cluster's name, `<node>` the sender's node id, `<nonce>` 32 random
//! hex digits, `<proof>` 64 hex digits: an HMAC-SHA256, keyed with the cluster's shared
//! secret, of the prover's role and node id and both nonces (computed by the broker, not
//! here: this module only frames the lines), `<digest>` 16 hex digits naming the set of
//! node ids the sender's `--peers` lists (a node of a cluster with replicated queues
//! links only to nodes that list the same ones), `<ms>` the milliseconds of the sender's
//! Raft tick (`--raft-tick`; absent: 100, which a node leaves unsaid so that nodes of
//! an earlier version, which refuse the field, still link to it). Either side that refuses sends
//! `ERR <reason>` and closes. Every line ends in CRLF and is at most [`MAX_LINE`] bytes.

pub mod raft;

/// The longest handshake line, CRLF included.
pub const MAX_LINE: usize = 256;

/// One handshake line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// A node introduces itself; the acceptor's answer carries its proof of the
    /// dialer's nonce.
    Hello {
        /// The sender's cluster name.
        cluster: String,
        /// The sender's node id.
        node: u64,
        /// 32 random hex digits, for the other side to prove with.
        nonce: String,
        /// The acceptor's proof of the dialer's nonce (absent in the dialer's line).
        proof: Option<String>,
        /// The digest of the node ids of the sender's `--peers` (absent: not said, as
        /// by a node of an earlier version).
        peers: Option<String>,
        /// The sender's Raft tick in milliseconds (absent: not said, meaning 100).
        tick: Option<u64>,
    },
    /// The dialer's proof of the acceptor's nonce.
    Proof(String),
    /// The acceptor took the dialer: native frames follow.
    Welcome,
    /// Refused, for the operator; the sender closes.
    Err(String),
}

/// Why a handshake line could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineError {
    /// No CRLF within [`MAX_LINE`] bytes.
    TooLong,
    /// Not one of the lines above, or a field out of its form.
    Malformed(String),
}

impl std::fmt::Display for LineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LineError::TooLong => write!(f, "a handshake line longer than {MAX_LINE} bytes"),
            LineError::Malformed(why) => write!(f, "a malformed handshake line: {why}"),
        }
    }
}

impl std::error::Error for LineError {}

/// Whether `name` may name a cluster: 1 to 64 of `A-Z a-z 0-9 _ - .`.
pub fn valid_cluster_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// The digest a `HELLO` names a set of node ids by (in any order, repeats ignored):
/// 16 hex digits of a 64-bit FNV-1a hash of the ids, sorted, each as 8 little-endian
/// bytes.
pub fn peers_digest(ids: &[u64]) -> String {
    let mut ids = ids.to_vec();
    ids.sort_unstable();
    ids.dedup();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in ids.iter().flat_map(|id| id.to_le_bytes()) {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

fn hex_of_len(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The line's bytes, CRLF included.
pub fn encode(line: &Line) -> Vec<u8> {
    let text = match line {
        Line::Hello {
            cluster,
            node,
            nonce,
            proof,
            peers,
            tick,
        } => {
            let mut t = format!("HELLO {cluster} {node} {nonce}");
            if let Some(p) = proof {
                t.push(' ');
                t.push_str(p);
            }
            if let Some(d) = peers {
                t.push_str(" peers=");
                t.push_str(d);
            }
            if let Some(ms) = tick {
                t.push_str(&format!(" tick={ms}"));
            }
            t
        }
        Line::Proof(p) => format!("PROOF {p}"),
        Line::Welcome => "WELCOME".to_owned(),
        Line::Err(why) => {
            let why: String = why
                .chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .take(MAX_LINE - 8)
                .collect();
            format!("ERR {why}")
        }
    };
    let mut v = text.into_bytes();
    v.truncate(MAX_LINE - 2);
    v.extend_from_slice(b"\r\n");
    v
}

/// Reads one line off the front of `buf`: `Ok(None)` until a whole line is there, and
/// then the line and how many bytes it took.
pub fn decode(buf: &[u8]) -> Result<Option<(Line, usize)>, LineError> {
    let Some(end) = buf.iter().take(MAX_LINE).position(|&b| b == b'\n') else {
        return match buf.len() >= MAX_LINE {
            true => Err(LineError::TooLong),
            false => Ok(None),
        };
    };
    let text = std::str::from_utf8(&buf[..end])
        .map_err(|_| LineError::Malformed("not UTF-8".into()))?
        .trim_end_matches('\r');
    let bad = |why: &str| LineError::Malformed(format!("{why} in {text:?}"));
    let (verb, rest) = text.split_once(' ').unwrap_or((text, ""));
    let line = match verb {
        "HELLO" => {
            let mut f: Vec<&str> = rest.split(' ').collect();
            let tick = match f.last().and_then(|l| l.strip_prefix("tick=")) {
                Some(ms) => match ms.parse::<u64>() {
                    Ok(n) if n > 0 && ms.len() <= 6 && ms.bytes().all(|b| b.is_ascii_digit()) => {
                        Some(n)
                    }
                    _ => return Err(bad("a tick must be 1 to 999999 milliseconds")),
                },
                None => None,
            };
            if tick.is_some() {
                f.pop();
            }
            let peers = match f.last().and_then(|l| l.strip_prefix("peers=")) {
                Some(d) if hex_of_len(d, 16) => Some(d.to_owned()),
                Some(_) => return Err(bad("a peers digest must be 16 hex digits")),
                None => None,
            };
            if peers.is_some() {
                f.pop();
            }
            if !(3..=4).contains(&f.len()) {
                return Err(bad("HELLO takes a cluster, a node and a nonce"));
            }
            if !valid_cluster_name(f[0]) {
                return Err(bad("a bad cluster name"));
            }
            let node = f[1].parse::<u64>().map_err(|_| bad("a bad node id"))?;
            if !hex_of_len(f[2], 32) {
                return Err(bad("a nonce must be 32 hex digits"));
            }
            let proof = match f.get(3) {
                Some(p) if hex_of_len(p, 64) => Some((*p).to_owned()),
                Some(_) => return Err(bad("a proof must be 64 hex digits")),
                None => None,
            };
            Line::Hello {
                cluster: f[0].to_owned(),
                node,
                nonce: f[2].to_owned(),
                proof,
                peers,
                tick,
            }
        }
        "PROOF" if hex_of_len(rest, 64) => Line::Proof(rest.to_owned()),
        "PROOF" => return Err(bad("a proof must be 64 hex digits")),
        "WELCOME" if rest.is_empty() => Line::Welcome,
        "ERR" => Line::Err(rest.to_owned()),
        _ => return Err(bad("not a handshake line")),
    };
    Ok(Some((line, end + 1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nonce() -> String {
        "0123456789abcdef0123456789ABCDEF".into()
    }

    #[test]
    fn every_line_round_trips() {
        let lines = [
            Line::Hello {
                cluster: "prod-eu.1".into(),
                node: 3,
                nonce: nonce(),
                proof: None,
                peers: None,
                tick: None,
            },
            Line::Hello {
                cluster: "prod-eu.1".into(),
                node: 3,
                nonce: nonce(),
                proof: None,
                peers: Some("0123456789abcdef".into()),
                tick: None,
            },
            Line::Hello {
                cluster: "c".into(),
                node: 2,
                nonce: nonce(),
                proof: None,
                peers: None,
                tick: Some(25),
            },
            Line::Hello {
                cluster: "c".into(),
                node: u64::MAX,
                nonce: nonce(),
                proof: Some("ab".repeat(32)),
                peers: Some("fedcba9876543210".into()),
                tick: Some(999_999),
            },
            Line::Proof("0f".repeat(32)),
            Line::Welcome,
            Line::Err("node 9 is not one of --peers".into()),
        ];
        for l in lines {
            let bytes = encode(&l);
            assert!(bytes.ends_with(b"\r\n") && bytes.len() <= MAX_LINE);
            // Cut anywhere before the end: not yet; whole, with more after: exact.
            for cut in 0..bytes.len() {
                assert_eq!(decode(&bytes[..cut]), Ok(None), "{l:?} cut at {cut}");
            }
            let mut more = bytes.clone();
            more.extend_from_slice(b"INFO {}\r\n");
            assert_eq!(decode(&more), Ok(Some((l, bytes.len()))));
        }
    }

    #[test]
    fn bad_lines_are_refused_with_what_is_wrong() {
        let cases: [(&[u8], &str); 14] = [
            (b"HELLO c 1\r\n", "takes a cluster"),
            (
                b"HELLO bad/name 1 0123456789abcdef0123456789abcdef\r\n",
                "cluster name",
            ),
            (b"HELLO c x 0123456789abcdef0123456789abcdef\r\n", "node id"),
            (b"HELLO c 1 0123\r\n", "nonce"),
            (
                b"HELLO c 1 0123456789abcdef0123456789abcdef zz\r\n",
                "proof",
            ),
            (
                b"HELLO c 1 0123456789abcdef0123456789abcdef peers=12\r\n",
                "peers digest",
            ),
            (b"HELLO c 1 peers=0123456789abcdef\r\n", "takes a cluster"),
            (
                b"HELLO c 1 0123456789abcdef0123456789abcdef tick=0\r\n",
                "a tick must be",
            ),
            (
                b"HELLO c 1 0123456789abcdef0123456789abcdef tick=+5\r\n",
                "a tick must be",
            ),
            (
                b"HELLO c 1 0123456789abcdef0123456789abcdef tick=1000000\r\n",
                "a tick must be",
            ),
            // The tick comes after the digest, not before.
            (
                b"HELLO c 1 0123456789abcdef0123456789abcdef tick=5 peers=0123456789abcdef\r\n",
                "proof",
            ),
            (b"PROOF 12\r\n", "proof"),
            (b"WELCOME now\r\n", "not a handshake line"),
            (b"CONNECT name=x\r\n", "not a handshake line"),
        ];
        for (input, why) in cases {
            match decode(input) {
                Err(LineError::Malformed(m)) => assert!(m.contains(why), "{m}"),
                other => panic!("{input:?}: {other:?}"),
            }
        }
        assert_eq!(decode(&[b'A'; MAX_LINE]), Err(LineError::TooLong));
        assert!(decode(&[0xff, b'\n']).is_err());
    }

    #[test]
    fn an_error_line_is_one_line_and_bounded() {
        let l = Line::Err(format!("a\r\nb{}", "x".repeat(1000)));
        let bytes = encode(&l);
        assert!(bytes.len() <= MAX_LINE);
        assert_eq!(bytes.iter().filter(|&&b| b == b'\n').count(), 1);
        assert!(matches!(decode(&bytes), Ok(Some((Line::Err(_), _)))));
    }
}
