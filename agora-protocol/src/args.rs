//! The tokens of a control line, and the rules for the small things in it (numbers,
//! request ids, destinations, `key=value` options).
//!
//! This module owns the general path's tokenizer. It only borrows the line: names are returned as byte ranges, so
//! the caller can split them off the read buffer without a copy.

use std::ops::Range;

use bytes::Bytes;

use crate::error::{ErrorKind, ProtocolError};
use crate::name::{validate_name, validate_pattern, Destination, Kind, Name, RequestId};

/// `key=value` from an option token, with the token's offset.
pub(crate) type KeyValue<'a> = (&'a [u8], &'a [u8], usize);

/// Most tokens a control line may hold (`HMSG` needs 7).
const MAX_TOKENS: usize = 12;

/// `blank = SP / HTAB`
pub(crate) fn is_blank(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// `token = 1*(%x21-7E / %x80-FF)` — anything but blanks and control bytes.
fn is_token_byte(b: u8) -> bool {
    b > b' ' && b != 0x7f
}

/// `number = 1*20DIGIT` (at most 2^64 - 1)
pub(crate) fn number(t: &[u8]) -> Option<u64> {
    if t.is_empty() || t.len() > 20 {
        return None;
    }
    let mut n: u64 = 0;
    for &b in t {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(n)
}

/// Where a payload-bearing frame's body is, from its line.
#[derive(Clone, Debug)]
pub(crate) struct PayloadSpec {
    /// Header block length (0 without headers).
    pub(crate) hdr: usize,
    /// Header block plus payload.
    pub(crate) total: u64,
    /// Offset of the size token, for errors.
    pub(crate) at: usize,
}

/// A destination found in a line: its kind and where its name lies.
#[derive(Clone, Debug)]
pub(crate) struct DestSpan {
    pub(crate) kind: Kind,
    pub(crate) name: Range<usize>,
}

impl DestSpan {
    /// The destination with its name still empty: the decoder puts the name in once it
    /// has split it off the read buffer (see `decode::Fill`).
    pub(crate) fn unfilled(&self) -> Destination {
        Destination {
            kind: self.kind,
            name: Name::from_validated(Bytes::new()),
        }
    }
}

/// The tokens of one control line, with their offsets.
pub(crate) struct Args<'a> {
    pub(crate) line: &'a [u8],
    pub(crate) toks: [&'a [u8]; MAX_TOKENS],
    pub(crate) len: usize,
    pub(crate) pos: usize,
    /// The command word, upper-cased for messages.
    pub(crate) cmd: &'static str,
    /// Where tokenizing stopped early, and why.
    stop: Option<(usize, String)>,
}

pub(crate) fn err(kind: ErrorKind, at: usize, detail: impl Into<String>) -> ProtocolError {
    ProtocolError::new(kind, at, detail)
}

/// At most this much of a peer's bytes is echoed in an error message.
pub(crate) fn shown(t: &[u8]) -> String {
    let s: String = String::from_utf8_lossy(&t[..t.len().min(32)])
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if t.len() > 32 {
        format!("{s}...")
    } else {
        s
    }
}

impl<'a> Args<'a> {
    /// `control-line = *blank command *(1*blank token) *blank`
    ///
    /// Never fails: where tokens stop (a control byte, or more than [`MAX_TOKENS`]) is
    /// remembered in `stop` and reported only if a rule needs a token past it, so that
    /// free text (`ERR` messages) can still be read from the raw line.
    pub(crate) fn split(line: &'a [u8]) -> Args<'a> {
        let mut toks: [&[u8]; MAX_TOKENS] = [&[]; MAX_TOKENS];
        let mut len = 0;
        let mut rest = line;
        let mut stop = None;
        loop {
            // `blanks = *blank`
            let r = &rest[rest.iter().take_while(|&&b| is_blank(b)).count()..];
            if r.is_empty() {
                break;
            }
            let at = line.len() - r.len();
            let n = r.iter().take_while(|&&b| is_token_byte(b)).count();
            if n == 0 {
                stop = Some((at, format!("control byte 0x{:02x} in line", r[0])));
                break;
            }
            let (t, r2) = r.split_at(n);
            if len == MAX_TOKENS {
                stop = Some((at, "too many arguments".to_owned()));
                break;
            }
            toks[len] = t;
            len += 1;
            rest = r2;
        }
        Args {
            line,
            toks,
            len,
            pos: 1,
            cmd: "",
            stop,
        }
    }

    pub(crate) fn offset(&self, t: &[u8]) -> usize {
        t.as_ptr() as usize - self.line.as_ptr() as usize
    }

    /// Offset of the next token, or the end of the line.
    pub(crate) fn here(&self) -> usize {
        if self.pos < self.len {
            self.offset(self.toks[self.pos])
        } else {
            self.line.len()
        }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.len - self.pos
    }

    /// The error for reading past where tokenizing stopped.
    pub(crate) fn stopped(&self) -> Option<ProtocolError> {
        self.stop
            .as_ref()
            .map(|(at, why)| err(ErrorKind::BadArgs, *at, why.clone()))
    }

    pub(crate) fn next(&mut self, what: &str) -> Result<&'a [u8], ProtocolError> {
        if self.pos >= self.len {
            if let Some(e) = self.stopped() {
                return Err(e);
            }
            return Err(err(
                ErrorKind::BadArgs,
                self.line.len(),
                format!("{} needs {what}", self.cmd),
            ));
        }
        self.pos += 1;
        Ok(self.toks[self.pos - 1])
    }

    /// `rid = "#" number` — optional, right after the command word.
    pub(crate) fn rid(&mut self) -> Result<RequestId, ProtocolError> {
        match self.toks.get(self.pos) {
            Some(t) if self.pos < self.len && t.first() == Some(&b'#') => {
                let at = self.offset(t);
                self.pos += 1;
                number(&t[1..]).map(Some).ok_or_else(|| {
                    err(
                        ErrorKind::BadArgs,
                        at,
                        format!(
                            "request id must be '#' and 1 to 20 digits, got '{}'",
                            shown(t)
                        ),
                    )
                })
            }
            _ => Ok(None),
        }
    }

    pub(crate) fn u64(&mut self, what: &str) -> Result<u64, ProtocolError> {
        let t = self.next(what)?;
        number(t).ok_or_else(|| {
            err(
                ErrorKind::BadArgs,
                self.offset(t),
                format!("{what} must be a number, got '{}'", shown(t)),
            )
        })
    }

    pub(crate) fn u32(&mut self, what: &str) -> Result<u32, ProtocolError> {
        let t = self.next(what)?;
        number(t)
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| {
                err(
                    ErrorKind::BadArgs,
                    self.offset(t),
                    format!("{what} must be a number below 2^32, got '{}'", shown(t)),
                )
            })
    }

    /// `dest = ("queue" / "topic") ":" name`
    pub(crate) fn dest(&mut self) -> Result<DestSpan, ProtocolError> {
        let t = self.next("a destination (queue:<name> or topic:<name>)")?;
        let at = self.offset(t);
        let (kind, skip) = if t.starts_with(b"queue:") {
            (Kind::Queue, 6)
        } else if t.starts_with(b"topic:") {
            (Kind::Topic, 6)
        } else {
            return Err(err(
                ErrorKind::BadName(None),
                at,
                format!("'{}' must start with 'queue:' or 'topic:'", shown(t)),
            ));
        };
        validate_name(&t[skip..])
            .map_err(|e| err(ErrorKind::BadName(Some(e)), at, format!("'{}'", shown(t))))?;
        Ok(DestSpan {
            kind,
            name: at + skip..at + t.len(),
        })
    }

    /// A `SUB`'s destination: a queue's name, or a topic's name or pattern (`*`, `>`).
    pub(crate) fn sub_dest(&mut self) -> Result<DestSpan, ProtocolError> {
        let next = (self.pos < self.len).then(|| self.toks[self.pos]);
        match next {
            Some(t) if t.starts_with(b"topic:") => {
                let t = self.next("a destination")?;
                let at = self.offset(t);
                validate_pattern(&t[6..])
                    .map_err(|e| err(ErrorKind::BadName(Some(e)), at, format!("'{}'", shown(t))))?;
                Ok(DestSpan {
                    kind: Kind::Topic,
                    name: at + 6..at + t.len(),
                })
            }
            _ => self.dest(),
        }
    }

    /// The rest of the line from the next token on, as text (for messages).
    pub(crate) fn rest_text(&mut self) -> String {
        let at = self.here();
        self.pos = self.len;
        // A lone CR inside a line is not a line end; as text it becomes a blank, as
        // the encoder writes it.
        String::from_utf8_lossy(&self.line[at..])
            .replace('\r', " ")
            .trim_matches([' ', '\t'])
            .to_owned()
    }

    pub(crate) fn end(&self) -> Result<(), ProtocolError> {
        if let Some(e) = self.stopped() {
            return Err(e);
        }
        if self.pos < self.len {
            let t = self.toks[self.pos];
            return Err(err(
                ErrorKind::BadArgs,
                self.offset(t),
                format!("unexpected argument '{}' to {}", shown(t), self.cmd),
            ));
        }
        Ok(())
    }

    /// `kv = key "=" value`
    pub(crate) fn kv(&mut self) -> Option<Result<KeyValue<'a>, ProtocolError>> {
        if self.pos >= self.len {
            return self.stopped().map(Err);
        }
        let t = self.toks[self.pos];
        self.pos += 1;
        let at = self.offset(t);
        Some(match t.iter().position(|&b| b == b'=') {
            Some(i) if i > 0 => Ok((&t[..i], &t[i + 1..], at)),
            _ => Err(err(
                ErrorKind::BadArgs,
                at,
                format!("expected key=value, got '{}'", shown(t)),
            )),
        })
    }

    /// `CHAIN [#rid] SET …` is the one CHAIN form with a payload.
    pub(crate) fn is_chain_set(&self) -> bool {
        let sub = if self.len > 1 && self.toks[1].first() == Some(&b'#') {
            2
        } else {
            1
        };
        self.len > sub && self.toks[sub].eq_ignore_ascii_case(b"SET")
    }

    /// Reads the size tokens of a payload frame (the last one or two words of the raw
    /// line), so that the payload can be skipped even when other arguments are bad.
    pub(crate) fn payload_spec(&self, with_headers: bool) -> Option<PayloadSpec> {
        let line = self.line;
        let mut words = line.rsplit(|&b| is_blank(b)).filter(|w| !w.is_empty());
        let last = words.next()?;
        let before = words.next()?;
        let total = number(last)?;
        let hdr = if with_headers {
            // The command word must still precede the two sizes.
            words.next()?;
            let h = number(before)?;
            if h > total || h < 2 {
                return None;
            }
            h as usize
        } else {
            0
        };
        Some(PayloadSpec {
            hdr,
            total,
            at: self.offset(last),
        })
    }
}

pub(crate) fn on_off(v: &[u8]) -> Option<bool> {
    if v.eq_ignore_ascii_case(b"on") {
        Some(true)
    } else if v.eq_ignore_ascii_case(b"off") {
        Some(false)
    } else {
        None
    }
}

pub(crate) fn text(v: &[u8]) -> String {
    String::from_utf8_lossy(v).into_owned()
}
