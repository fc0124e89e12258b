//! The broker's start-up lines: the one contract between `agora` and whatever starts it
//! (a test, xtask, the bench, an operator's script).
//!
//! Once every listener is bound, the broker prints one line per listener on stdout and
//! nothing else ever goes there:
//!
//! ```text
//! agora listening on tcp://127.0.0.1:48879
//! agora listening on udp://127.0.0.1:48879
//! ```
//!
//! The stream listener (`tcp`, or `tls` once configured) comes first; later front doors
//! (`ws`, `mqtt`, `http`) add their own lines after it. Every reader parses these lines
//! with [`parse_line`] or [`read_listener`], never by hand.

use std::io::{self, BufRead};
use std::net::SocketAddr;

/// One parsed start-up line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listening {
    /// The program that printed it (`agora`; the bench's relay prints `relay`).
    pub program: String,
    /// `tcp`, `udp`, `tls`, …
    pub scheme: String,
    /// The address bound (the real port, when port 0 was asked for).
    pub addr: SocketAddr,
}

/// The line a program prints for one listener.
///
/// ```
/// let addr = "127.0.0.1:48879".parse().unwrap();
/// let line = agora_protocol::startup::line("agora", "tcp", addr);
/// assert_eq!(line, "agora listening on tcp://127.0.0.1:48879");
/// let parsed = agora_protocol::startup::parse_line(&line).unwrap();
/// assert_eq!((parsed.scheme.as_str(), parsed.addr), ("tcp", addr));
/// ```
pub fn line(program: &str, scheme: &str, addr: SocketAddr) -> String {
    format!("{program} listening on {scheme}://{addr}")
}

/// Parses `<program> listening on <scheme>://<addr>` (surrounding white space ignored);
/// `None` for any other line.
pub fn parse_line(line: &str) -> Option<Listening> {
    let (program, rest) = line.trim().split_once(" listening on ")?;
    let (scheme, addr) = rest.split_once("://")?;
    if program.is_empty() || program.contains(' ') || scheme.is_empty() {
        return None;
    }
    Some(Listening {
        program: program.to_owned(),
        scheme: scheme.to_owned(),
        addr: addr.parse().ok()?,
    })
}

/// Reads start-up lines from a program's stdout until the one for `scheme`, and returns
/// its address. Lines of other listeners before it are passed over; anything else, or
/// the end of the output first, is an error quoting what was read.
pub fn read_listener(out: &mut impl BufRead, scheme: &str) -> io::Result<SocketAddr> {
    // Bounded: a program has a handful of listeners.
    for _ in 0..16 {
        let mut text = String::new();
        if out.read_line(&mut text)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("the output ended before a {scheme}:// listening line"),
            ));
        }
        match parse_line(&text) {
            Some(l) if l.scheme == scheme => return Ok(l.addr),
            Some(_) => {}
            None => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("unexpected start-up line {text:?}"),
                ))
            }
        }
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidData,
        format!("no {scheme}:// listening line among the first 16"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_past_other_listeners_and_refuses_anything_else() {
        let out = "agora listening on tcp://127.0.0.1:5\nagora listening on udp://127.0.0.1:5\n";
        let udp = read_listener(&mut out.as_bytes(), "udp").unwrap();
        assert_eq!(udp, "127.0.0.1:5".parse().unwrap());
        let tcp = read_listener(&mut out.as_bytes(), "tcp").unwrap();
        assert_eq!(tcp, udp);
        let e = read_listener(&mut out.as_bytes(), "tls").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        let e = read_listener(&mut "error: bad flag\n".as_bytes(), "tcp").unwrap_err();
        assert!(e.to_string().contains("bad flag"), "{e}");
        assert_eq!(parse_line("agora listening on tcp://nowhere"), None);
        assert_eq!(parse_line("listening on tcp://127.0.0.1:1"), None);
        let ipv6 = parse_line("relay listening on tcp://[::1]:80").unwrap();
        assert_eq!((ipv6.program.as_str(), ipv6.addr.port()), ("relay", 80));
    }
}
