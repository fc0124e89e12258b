//! Streaming decode: bytes in, frames out.
//!
//! The contract: `Ok(None)` means "not enough bytes yet" for every incomplete prefix,
//! and nothing of that prefix is consumed (blank lines before it may be). Limits are checked before anything is buffered for a
//! frame: a line is searched for only within `max_line + 2` bytes, and a payload's
//! declared size is checked before its bytes are awaited. Payloads and names are split
//! off the buffer as [`Bytes`], never copied.
//!
//! A line is found with `memchr`; `PUB` and `MSG` lines in their plain form are read by a
//! direct path, every other line's tokens by nom. nom's types stay inside this module.

use std::ops::Range;

use bytes::{Buf, Bytes, BytesMut};
use nom::bytes::complete::{take_while, take_while1};
use nom::IResult;

use crate::error::{ErrorKind, ProtocolError};
use crate::frame::*;
use crate::Limits;

type NomError<'a> = nom::error::Error<&'a [u8]>;

/// `key=value` from an option token, with the token's offset.
type KeyValue<'a> = (&'a [u8], &'a [u8], usize);

/// Most tokens a control line may hold (`HMSG` needs 7).
const MAX_TOKENS: usize = 12;

/// Decodes one frame from the front of `buf` with the default [`Limits`].
///
/// ```
/// use bytes::BytesMut;
/// use agora_protocol::{decode, Frame};
/// let mut buf = BytesMut::from(&b"PUB topic:prices 5\r\nhello\r\nPUB"[..]);
/// let Some(Frame::Pub(p)) = decode(&mut buf).unwrap() else { panic!() };
/// assert_eq!(&p.payload[..], b"hello");
/// assert_eq!(decode(&mut buf).unwrap(), None); // "PUB" is only a prefix
/// ```
pub fn decode(buf: &mut BytesMut) -> Result<Option<Frame>, ProtocolError> {
    decode_with(buf, &Limits::default())
}

/// Decodes one frame from the front of `buf` under `limits`.
///
/// Returns `Ok(None)` when `buf` holds only a prefix of a frame (it may reserve room
/// for the rest of a payload), `Ok(Some(frame))` after consuming a frame, and `Err` for
/// a malformed frame (see [`ProtocolError::is_fatal`] for what was consumed). Empty
/// lines are skipped.
pub fn decode_with(buf: &mut BytesMut, limits: &Limits) -> Result<Option<Frame>, ProtocolError> {
    loop {
        let window = &buf[..buf.len().min(limits.max_line.saturating_add(2))];
        let lf = match memchr::memchr(b'\n', window) {
            Some(lf) => lf,
            None => {
                // Incomplete: no LF yet. Past the window it can never be a legal line.
                if buf.len() >= limits.max_line.saturating_add(2) {
                    return Err(ProtocolError::new(
                        ErrorKind::LineTooLong {
                            max: limits.max_line,
                        },
                        limits.max_line,
                        "",
                    ));
                }
                return Ok(None);
            }
        };
        let content = if lf > 0 && buf[lf - 1] == b'\r' {
            lf - 1
        } else {
            lf
        };
        if content > limits.max_line {
            return Err(ProtocolError::new(
                ErrorKind::LineTooLong {
                    max: limits.max_line,
                },
                limits.max_line,
                "",
            ));
        }
        let line_total = lf + 1;
        if buf[..content].iter().all(|&b| b == b' ' || b == b'\t') {
            buf.advance(line_total);
            continue;
        }
        if let Some(done) = direct(buf, content, line_total, limits) {
            return done;
        }
        let line = &buf[..content];
        let parsed = match fast_msg(line) {
            Some(d) => Ok(d),
            None => parse_line(line),
        };
        let draft = match parsed {
            Ok(d) => d,
            Err(e) => {
                if !e.is_fatal() {
                    buf.advance(line_total);
                }
                return Err(e);
            }
        };
        let Some(spec) = draft.payload.clone() else {
            let name = take_line(buf, line_total, draft.name_span());
            return draft.finish(name, Bytes::new(), Headers::new()).map(Some);
        };
        if spec.total > limits.max_payload as u64 {
            return Err(ProtocolError::new(
                ErrorKind::PayloadTooLarge {
                    declared: spec.total,
                    max: limits.max_payload,
                },
                spec.at,
                "",
            )
            .with_rid(draft.rid));
        }
        let total = spec.total as usize;
        let end = line_total + total;
        if buf.len() <= end {
            buf.reserve(end + 2 - buf.len());
            return Ok(None);
        }
        let term = match &buf[end..] {
            [b'\n', ..] => 1,
            [b'\r', b'\n', ..] => 2,
            [b'\r'] => return Ok(None),
            _ => {
                return Err(ProtocolError::new(
                    ErrorKind::PayloadSizeMismatch,
                    end,
                    format!("declared {total} bytes"),
                )
                .with_rid(draft.rid))
            }
        };
        let name = take_line(buf, line_total, draft.name_span());
        let body = buf.split_to(total).freeze();
        buf.advance(term);
        if let Some(e) = draft.deferred {
            return Err(e);
        }
        let headers = match spec.hdr {
            0 => Headers::new(),
            n => match parse_headers(&body[..n]) {
                Ok(h) => h,
                Err(at) => {
                    return Err(ProtocolError::new(
                        ErrorKind::BadHeaders,
                        line_total + at,
                        "expected 'key: value' lines ended by an empty line",
                    )
                    .with_rid(draft.rid))
                }
            },
        };
        let payload = if spec.hdr == 0 {
            body
        } else {
            body.slice(spec.hdr..)
        };
        return draft.finish(name, payload, headers).map(Some);
    }
}

/// Consumes a line of `line_total` bytes and returns the bytes of the name at `span`
/// within it (empty without one): one split and no copy.
fn take_line(buf: &mut BytesMut, line_total: usize, span: Option<Range<usize>>) -> Bytes {
    match span {
        Some(r) => {
            buf.advance(r.start);
            let name = buf.split_to(r.end - r.start).freeze();
            buf.advance(line_total - r.end);
            name
        }
        None => {
            buf.advance(line_total);
            Bytes::new()
        }
    }
}

/// `blank = SP / HTAB`
fn is_blank(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// `token = 1*(%x21-7E / %x80-FF)` — anything but blanks and control bytes.
fn token(i: &[u8]) -> IResult<&[u8], &[u8], NomError<'_>> {
    take_while1(|b: u8| b > b' ' && b != 0x7f)(i)
}

/// `blanks = *blank`
fn blanks(i: &[u8]) -> IResult<&[u8], &[u8], NomError<'_>> {
    take_while(is_blank)(i)
}

/// `number = 1*20DIGIT` (at most 2^64 - 1)
fn number(t: &[u8]) -> Option<u64> {
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
struct PayloadSpec {
    /// Header block length (0 without headers).
    hdr: usize,
    /// Header block plus payload.
    total: u64,
    /// Offset of the size token, for errors.
    at: usize,
}

/// A destination found in a line: its kind and where its name lies.
#[derive(Clone, Debug)]
struct DestSpan {
    kind: Kind,
    name: Range<usize>,
}

impl DestSpan {
    /// The destination, given the name's bytes split off the line by [`take_line`].
    fn get(&self, name: &Bytes) -> Destination {
        Destination {
            kind: self.kind,
            name: Name::from_validated(name.clone()),
        }
    }
}

/// A parsed line: the frame's shape with byte ranges instead of borrowed names, so the
/// buffer can be split afterwards.
struct Draft {
    rid: RequestId,
    shape: Shape,
    payload: Option<PayloadSpec>,
    /// An error in a payload frame's line whose size was still readable: reported after
    /// the payload is skipped, so the stream stays in step.
    deferred: Option<ProtocolError>,
}

enum Shape {
    Done(Frame),
    Pub(DestSpan),
    Sub {
        dest: DestSpan,
        sid: u64,
        prefetch: Option<u32>,
        ack: Option<AckMode>,
    },
    Purge(DestSpan),
    Delete(DestSpan),
    ChainGet(DestSpan),
    ChainSet(DestSpan),
    ChainClear(DestSpan),
    ChainResp(DestSpan),
    Msg {
        dest: DestSpan,
        sid: u64,
        did: u64,
        count: u32,
    },
    StatsResp,
    HelpResp,
    /// A line whose error was deferred until its payload is skipped.
    Invalid,
}

impl Draft {
    /// Where the line's destination name lies, if it has one.
    fn name_span(&self) -> Option<Range<usize>> {
        match &self.shape {
            Shape::Pub(d)
            | Shape::Purge(d)
            | Shape::Delete(d)
            | Shape::ChainGet(d)
            | Shape::ChainSet(d)
            | Shape::ChainClear(d)
            | Shape::ChainResp(d)
            | Shape::Sub { dest: d, .. }
            | Shape::Msg { dest: d, .. } => Some(d.name.clone()),
            Shape::Done(_) | Shape::StatsResp | Shape::HelpResp | Shape::Invalid => None,
        }
    }

    fn finish(self, name: Bytes, payload: Bytes, headers: Headers) -> Result<Frame, ProtocolError> {
        let rid = self.rid;
        Ok(match self.shape {
            Shape::Done(f) => f,
            Shape::Pub(d) => Frame::Pub(Publish {
                rid,
                dest: d.get(&name),
                headers,
                payload,
            }),
            Shape::Sub {
                dest,
                sid,
                prefetch,
                ack,
            } => Frame::Sub(Subscribe {
                rid,
                dest: dest.get(&name),
                sid,
                prefetch,
                ack,
            }),
            Shape::Purge(d) => Frame::Purge {
                rid,
                dest: d.get(&name),
            },
            Shape::Delete(d) => Frame::Delete {
                rid,
                dest: d.get(&name),
            },
            Shape::ChainGet(d) => Frame::ChainGet {
                rid,
                dest: d.get(&name),
            },
            Shape::ChainSet(d) => Frame::ChainSet {
                rid,
                dest: d.get(&name),
                chain: payload,
            },
            Shape::ChainClear(d) => Frame::ChainClear {
                rid,
                dest: d.get(&name),
            },
            Shape::ChainResp(d) => Frame::ChainResp {
                rid,
                dest: d.get(&name),
                chain: payload,
            },
            Shape::Msg {
                dest,
                sid,
                did,
                count,
            } => Frame::Msg(Delivery {
                dest: dest.get(&name),
                sid,
                did,
                count,
                headers,
                payload,
            }),
            Shape::StatsResp => Frame::StatsResp { rid, json: payload },
            Shape::HelpResp => Frame::HelpResp { rid, text: payload },
            Shape::Invalid => {
                return Err(ProtocolError::new(ErrorKind::BadArgs, 0, "").with_rid(rid))
            }
        })
    }
}

/// The tokens of one control line, with their offsets.
struct Args<'a> {
    line: &'a [u8],
    toks: [&'a [u8]; MAX_TOKENS],
    len: usize,
    pos: usize,
    /// The command word, upper-cased for messages.
    cmd: &'static str,
    /// Where tokenizing stopped early, and why.
    stop: Option<(usize, String)>,
}

fn err(kind: ErrorKind, at: usize, detail: impl Into<String>) -> ProtocolError {
    ProtocolError::new(kind, at, detail)
}

/// At most this much of a peer's bytes is echoed in an error message.
fn shown(t: &[u8]) -> String {
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
    fn split(line: &'a [u8]) -> Args<'a> {
        let mut toks: [&[u8]; MAX_TOKENS] = [&[]; MAX_TOKENS];
        let mut len = 0;
        let mut rest = line;
        let mut stop = None;
        loop {
            let (r, _) = blanks(rest).unwrap_or((rest, &[]));
            if r.is_empty() {
                break;
            }
            let at = line.len() - r.len();
            let Ok((r2, t)) = token(r) else {
                stop = Some((at, format!("control byte 0x{:02x} in line", r[0])));
                break;
            };
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

    fn offset(&self, t: &[u8]) -> usize {
        t.as_ptr() as usize - self.line.as_ptr() as usize
    }

    /// Offset of the next token, or the end of the line.
    fn here(&self) -> usize {
        if self.pos < self.len {
            self.offset(self.toks[self.pos])
        } else {
            self.line.len()
        }
    }

    fn remaining(&self) -> usize {
        self.len - self.pos
    }

    /// The error for reading past where tokenizing stopped.
    fn stopped(&self) -> Option<ProtocolError> {
        self.stop
            .as_ref()
            .map(|(at, why)| err(ErrorKind::BadArgs, *at, why.clone()))
    }

    fn next(&mut self, what: &str) -> Result<&'a [u8], ProtocolError> {
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
    fn rid(&mut self) -> Result<RequestId, ProtocolError> {
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

    fn u64(&mut self, what: &str) -> Result<u64, ProtocolError> {
        let t = self.next(what)?;
        number(t).ok_or_else(|| {
            err(
                ErrorKind::BadArgs,
                self.offset(t),
                format!("{what} must be a number, got '{}'", shown(t)),
            )
        })
    }

    fn u32(&mut self, what: &str) -> Result<u32, ProtocolError> {
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
    fn dest(&mut self) -> Result<DestSpan, ProtocolError> {
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

    /// The rest of the line from the next token on, as text (for messages).
    fn rest_text(&mut self) -> String {
        let at = self.here();
        self.pos = self.len;
        // A lone CR inside a line is not a line end; as text it becomes a blank, as
        // the encoder writes it.
        String::from_utf8_lossy(&self.line[at..])
            .replace('\r', " ")
            .trim_matches([' ', '\t'])
            .to_owned()
    }

    fn end(&self) -> Result<(), ProtocolError> {
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
    fn kv(&mut self) -> Option<Result<KeyValue<'a>, ProtocolError>> {
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
    fn is_chain_set(&self) -> bool {
        let sub = if self.len > 1 && self.toks[1].first() == Some(&b'#') {
            2
        } else {
            1
        };
        self.len > sub && self.toks[sub].eq_ignore_ascii_case(b"SET")
    }

    /// Reads the size tokens of a payload frame (the last one or two words of the raw
    /// line), so that the payload can be skipped even when other arguments are bad.
    fn payload_spec(&self, with_headers: bool) -> Option<PayloadSpec> {
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

fn on_off(v: &[u8]) -> Option<bool> {
    if v.eq_ignore_ascii_case(b"on") {
        Some(true)
    } else if v.eq_ignore_ascii_case(b"off") {
        Some(false)
    } else {
        None
    }
}

fn text(v: &[u8]) -> String {
    String::from_utf8_lossy(v).into_owned()
}

/// The destination at the start of `rest` in a plain line (`topic:` or `queue:`, a
/// valid name, one blank after it): its kind and where that blank is.
fn plain_dest(rest: &[u8]) -> Option<(Kind, usize)> {
    let sp = memchr::memchr(b' ', rest)?;
    let kind = match rest.get(..6)? {
        b"topic:" => Kind::Topic,
        b"queue:" => Kind::Queue,
        _ => return None,
    };
    validate_name(rest.get(6..sp)?).ok()?;
    Some((kind, sp))
}

/// The hottest frames, `PUB dest size` and `MSG dest sid did count size` without
/// headers, decoded straight into their [`Frame`] (no [`Draft`]). `None` for anything
/// else, including every error: the general path then reports it exactly.
#[inline]
fn direct(
    buf: &mut BytesMut,
    content: usize,
    line_total: usize,
    limits: &Limits,
) -> Option<Result<Option<Frame>, ProtocolError>> {
    let line = &buf[..content];
    let word = line.get(..4)?;
    let (msg, skip) = if word.eq_ignore_ascii_case(b"PUB ") {
        (false, 4)
    } else if word.eq_ignore_ascii_case(b"MSG ") {
        (true, 4)
    } else {
        return None;
    };
    let rest = &line[skip..];
    let (kind, sp) = plain_dest(rest)?;
    let mut nums = [0u64; 4];
    let want = if msg { 4 } else { 1 };
    let mut toks = rest[sp + 1..].split(|&b| b == b' ');
    for n in nums.iter_mut().take(want) {
        *n = number(toks.next()?)?;
    }
    if toks.next().is_some() {
        return None;
    }
    let total = nums[want - 1];
    if total > limits.max_payload as u64 {
        return None;
    }
    let count = if msg {
        Some(u32::try_from(nums[2]).ok().filter(|&c| c > 0)?)
    } else {
        None
    };
    let total = total as usize;
    let end = line_total + total;
    if buf.len() <= end {
        buf.reserve(end + 2 - buf.len());
        return Some(Ok(None));
    }
    let term = match &buf[end..] {
        [b'\n', ..] => 1,
        [b'\r', b'\n', ..] => 2,
        [b'\r'] => return Some(Ok(None)),
        _ => return None,
    };
    let name_start = skip + 6;
    let name_end = skip + sp;
    buf.advance(name_start);
    let name = buf.split_to(name_end - name_start).freeze();
    buf.advance(line_total - name_end);
    let payload = buf.split_to(total).freeze();
    buf.advance(term);
    let dest = Destination {
        kind,
        name: Name::from_validated(name),
    };
    Some(Ok(Some(match count {
        None => Frame::Pub(Publish {
            rid: None,
            dest,
            headers: Headers::new(),
            payload,
        }),
        Some(count) => Frame::Msg(Delivery {
            dest,
            sid: nums[0],
            did: nums[1],
            count,
            headers: Headers::new(),
            payload,
        }),
    })))
}

/// The delivery's fast path for what [`direct`] leaves (`HMSG`, and a plain `MSG` whose
/// payload is not there or not right yet): `MSG SP dest SP sid SP did SP count SP size`,
/// or `HMSG` with `hdr-size SP size` at the end, single blanks. Anything else returns
/// `None` and takes the general path.
fn fast_msg(line: &[u8]) -> Option<Draft> {
    let (with_headers, skip) = if line.len() >= 6 && line[..4].eq_ignore_ascii_case(b"MSG ") {
        (false, 4)
    } else if line.len() >= 7 && line[..5].eq_ignore_ascii_case(b"HMSG ") {
        (true, 5)
    } else {
        return None;
    };
    let rest = &line[skip..];
    let (kind, sp) = plain_dest(rest)?;
    let mut nums = rest[sp + 1..].split(|&b| b == b' ');
    let sid = number(nums.next()?)?;
    let did = number(nums.next()?)?;
    let count = u32::try_from(number(nums.next()?)?)
        .ok()
        .filter(|&c| c > 0)?;
    let hdr = if with_headers {
        let h = number(nums.next()?)?;
        usize::try_from(h).ok()?
    } else {
        0
    };
    let size_tok = nums.next()?;
    let total = number(size_tok)?;
    if nums.next().is_some() || (with_headers && (hdr < 2 || hdr as u64 > total)) {
        return None;
    }
    Some(Draft {
        rid: None,
        shape: Shape::Msg {
            dest: DestSpan {
                kind,
                name: skip + 6..skip + sp,
            },
            sid,
            did,
            count,
        },
        payload: Some(PayloadSpec {
            hdr,
            total,
            at: line.len() - size_tok.len(),
        }),
        deferred: None,
    })
}

/// Parses one control line (without its line ending).
fn parse_line(line: &[u8]) -> Result<Draft, ProtocolError> {
    let mut a = Args::split(line);
    let word = a.toks[0];
    macro_rules! is {
        ($w:literal) => {
            word.eq_ignore_ascii_case($w)
        };
    }
    // Payload-bearing frames first: the size must be known to keep the stream in step.
    let payload_cmd: Option<(&'static str, bool)> = if is!(b"PUB") {
        Some(("PUB", false))
    } else if is!(b"MSG") {
        Some(("MSG", false))
    } else if is!(b"HPUB") {
        Some(("HPUB", true))
    } else if is!(b"HMSG") {
        Some(("HMSG", true))
    } else if is!(b"STATSRESP") {
        Some(("STATSRESP", false))
    } else if is!(b"HELPRESP") {
        Some(("HELPRESP", false))
    } else if is!(b"CHAINRESP") {
        Some(("CHAINRESP", false))
    } else if is!(b"CHAIN") && a.is_chain_set() {
        Some(("CHAIN", false))
    } else {
        None
    };
    if let Some((cmd, with_headers)) = payload_cmd {
        a.cmd = cmd;
        let Some(spec) = a.payload_spec(with_headers) else {
            let rid = a.rid().ok().flatten();
            let detail = if with_headers {
                format!("{cmd} must end with <header-bytes> <total-bytes>, header-bytes at least 2 and at most total-bytes")
            } else {
                format!("{cmd} must end with the payload size in bytes")
            };
            return Err(err(ErrorKind::BadArgs, a.here(), detail)
                .with_rid(rid)
                .fatal());
        };
        let saved = a.pos;
        let rid = a.rid().ok().flatten();
        a.pos = saved;
        return Ok(match parse_payload_line(&mut a, cmd, with_headers) {
            Ok((rid, shape)) => Draft {
                rid,
                shape,
                payload: Some(spec),
                deferred: None,
            },
            Err(e) => Draft {
                rid,
                shape: Shape::Invalid,
                payload: Some(spec),
                deferred: Some(e.with_rid(rid)),
            },
        });
    }
    let rid_before = a.rid().ok().flatten();
    a.pos = 1;
    parse_plain_line(&mut a, word).map_err(|e| e.with_rid(rid_before))
}

/// The lines of frames that carry a payload; the size tokens were read already.
fn parse_payload_line(
    a: &mut Args<'_>,
    cmd: &'static str,
    with_headers: bool,
) -> Result<(RequestId, Shape), ProtocolError> {
    if let Some(e) = a.stopped() {
        return Err(e);
    }
    let sizes = if with_headers { 2 } else { 1 };
    // Hide the size tokens from the argument cursor.
    a.len -= sizes;
    let r = (|| {
        let rid = a.rid()?;
        let shape = match cmd {
            "PUB" | "HPUB" => Shape::Pub(a.dest()?),
            "MSG" | "HMSG" => {
                if rid.is_some() {
                    return Err(err(
                        ErrorKind::BadArgs,
                        0,
                        format!("{cmd} carries no request id"),
                    ));
                }
                let dest = a.dest()?;
                let sid = a.u64("a subscription id")?;
                let did = a.u64("a delivery id")?;
                let count = a.u32("a delivery count")?;
                if count == 0 {
                    return Err(err(
                        ErrorKind::BadArgs,
                        a.here(),
                        "delivery count starts at 1",
                    ));
                }
                Shape::Msg {
                    dest,
                    sid,
                    did,
                    count,
                }
            }
            "STATSRESP" => Shape::StatsResp,
            "HELPRESP" => Shape::HelpResp,
            "CHAINRESP" => Shape::ChainResp(a.dest()?),
            _ => {
                // CHAIN [#rid] SET <dest> <n>
                a.next("SET")?;
                Shape::ChainSet(a.dest()?)
            }
        };
        a.end()?;
        Ok((rid, shape))
    })();
    a.len += sizes;
    r
}

/// Lines without a payload.
fn parse_plain_line(a: &mut Args<'_>, word: &[u8]) -> Result<Draft, ProtocolError> {
    macro_rules! is {
        ($w:literal) => {
            word.eq_ignore_ascii_case($w)
        };
    }
    let done = |rid, f| Draft {
        rid,
        shape: Shape::Done(f),
        payload: None,
        deferred: None,
    };
    let shaped = |rid, shape| Draft {
        rid,
        shape,
        payload: None,
        deferred: None,
    };
    let draft = if is!(b"ACK") || is!(b"NACK") {
        let ack = is!(b"ACK");
        a.cmd = if ack { "ACK" } else { "NACK" };
        let rid = a.rid()?;
        let did = a.u64("a delivery id")?;
        a.end()?;
        done(
            rid,
            if ack {
                Frame::Ack { rid, did }
            } else {
                Frame::Nack { rid, did }
            },
        )
    } else if is!(b"PUBACK") {
        a.cmd = "PUBACK";
        let rid = a.rid()?;
        let filtered = match a.remaining() {
            0 => false,
            _ => {
                let t = a.next("")?;
                if !t.eq_ignore_ascii_case(b"filtered") {
                    return Err(err(
                        ErrorKind::BadArgs,
                        a.offset(t),
                        format!("PUBACK takes only 'filtered', got '{}'", shown(t)),
                    ));
                }
                true
            }
        };
        a.end()?;
        done(rid, Frame::PubAck { rid, filtered })
    } else if is!(b"SUB") {
        a.cmd = "SUB";
        let rid = a.rid()?;
        let dest = a.dest()?;
        let sid = a.u64("a subscription id")?;
        let (mut prefetch, mut ack) = (None, None);
        while let Some(kv) = a.kv() {
            let (k, v, at) = kv?;
            if k.eq_ignore_ascii_case(b"prefetch") {
                prefetch = Some(
                    number(v)
                        .and_then(|n| u32::try_from(n).ok())
                        .filter(|&n| n > 0)
                        .ok_or_else(|| {
                            err(
                                ErrorKind::BadArgs,
                                at,
                                "prefetch must be a number from 1 to 2^32-1",
                            )
                        })?,
                );
            } else if k.eq_ignore_ascii_case(b"ack") {
                ack = Some(if v.eq_ignore_ascii_case(b"auto") {
                    AckMode::Auto
                } else if v.eq_ignore_ascii_case(b"manual") {
                    AckMode::Manual
                } else {
                    return Err(err(
                        ErrorKind::BadArgs,
                        at,
                        "ack must be 'auto' or 'manual'",
                    ));
                });
            } else {
                return Err(err(
                    ErrorKind::BadArgs,
                    at,
                    format!("unknown SUB option '{}' (prefetch, ack)", shown(k)),
                ));
            }
        }
        shaped(
            rid,
            Shape::Sub {
                dest,
                sid,
                prefetch,
                ack,
            },
        )
    } else if is!(b"UNSUB") {
        a.cmd = "UNSUB";
        let rid = a.rid()?;
        let sid = a.u64("a subscription id")?;
        a.end()?;
        done(rid, Frame::Unsub { rid, sid })
    } else if is!(b"OK") {
        a.cmd = "OK";
        let rid = a.rid()?;
        a.end()?;
        done(rid, Frame::Ok { rid })
    } else if is!(b"PINGREQ") || is!(b"PING") {
        a.cmd = "PINGREQ";
        let rid = a.rid()?;
        a.end()?;
        done(rid, Frame::PingReq { rid })
    } else if is!(b"PINGRESP") || is!(b"PONG") {
        a.cmd = "PINGRESP";
        let rid = a.rid()?;
        a.end()?;
        done(rid, Frame::PingResp { rid })
    } else if is!(b"ERR") {
        a.cmd = "ERR";
        let rid = a.rid()?;
        let code = ErrorCode::from_token(a.next("an error code")?);
        let message = a.rest_text();
        done(rid, Frame::Err(ErrorReply { rid, code, message }))
    } else if is!(b"SETACK") {
        a.cmd = "SETACK";
        let rid = a.rid()?;
        let t = a.next("'on' or 'off'")?;
        let on = on_off(t).ok_or_else(|| {
            err(
                ErrorKind::BadArgs,
                a.offset(t),
                format!("SETACK takes 'on' or 'off', got '{}'", shown(t)),
            )
        })?;
        a.end()?;
        done(rid, Frame::SetAck { rid, on })
    } else if is!(b"CONNECT") {
        a.cmd = "CONNECT";
        let rid = a.rid()?;
        let mut c = Connect {
            rid,
            ..Connect::default()
        };
        while let Some(kv) = a.kv() {
            let (k, v, at) = kv?;
            if k.eq_ignore_ascii_case(b"name") {
                c.name = Some(text(v));
            } else if k.eq_ignore_ascii_case(b"proto") {
                c.proto = Some(
                    number(v)
                        .and_then(|n| u32::try_from(n).ok())
                        .ok_or_else(|| err(ErrorKind::BadArgs, at, "proto must be a number"))?,
                );
            } else if k.eq_ignore_ascii_case(b"confirm") {
                c.confirm = Some(
                    on_off(v)
                        .ok_or_else(|| err(ErrorKind::BadArgs, at, "confirm must be on or off"))?,
                );
            }
            // Unknown keys are ignored, so newer clients can talk to older brokers.
        }
        done(rid, Frame::Connect(c))
    } else if is!(b"INFO") {
        a.cmd = "INFO";
        let mut info = Info {
            server: String::new(),
            version: String::new(),
            proto: 0,
            max_payload: 0,
            max_line: 0,
        };
        while let Some(kv) = a.kv() {
            let (k, v, at) = kv?;
            let num = || {
                number(v).ok_or_else(|| {
                    err(
                        ErrorKind::BadArgs,
                        at,
                        format!("INFO {} must be a number", shown(k)),
                    )
                })
            };
            if k.eq_ignore_ascii_case(b"server") {
                info.server = text(v);
            } else if k.eq_ignore_ascii_case(b"version") {
                info.version = text(v);
            } else if k.eq_ignore_ascii_case(b"proto") {
                info.proto = u32::try_from(num()?)
                    .map_err(|_| err(ErrorKind::BadArgs, at, "proto too large"))?;
            } else if k.eq_ignore_ascii_case(b"max_payload") {
                info.max_payload = num()?;
            } else if k.eq_ignore_ascii_case(b"max_line") {
                info.max_line = num()?;
            }
            // Unknown keys are ignored (newer brokers may say more).
        }
        done(None, Frame::Info(info))
    } else if is!(b"STATS") {
        a.cmd = "STATS";
        let rid = a.rid()?;
        a.end()?;
        done(rid, Frame::Stats { rid })
    } else if is!(b"HELP") {
        a.cmd = "HELP";
        let rid = a.rid()?;
        a.end()?;
        done(rid, Frame::Help { rid })
    } else if is!(b"PURGE") || is!(b"DELETE") {
        let purge = is!(b"PURGE");
        a.cmd = if purge { "PURGE" } else { "DELETE" };
        let rid = a.rid()?;
        let d = a.dest()?;
        a.end()?;
        shaped(
            rid,
            if purge {
                Shape::Purge(d)
            } else {
                Shape::Delete(d)
            },
        )
    } else if is!(b"CHAIN") {
        a.cmd = "CHAIN";
        let rid = a.rid()?;
        let sub = a.next("GET, SET or CLEAR")?;
        let shape = if sub.eq_ignore_ascii_case(b"GET") {
            Shape::ChainGet(a.dest()?)
        } else if sub.eq_ignore_ascii_case(b"CLEAR") {
            Shape::ChainClear(a.dest()?)
        } else {
            return Err(err(
                ErrorKind::BadArgs,
                a.offset(sub),
                format!(
                    "CHAIN takes GET <dest>, SET <dest> <n> or CLEAR <dest>, got '{}'",
                    shown(sub)
                ),
            ));
        };
        a.end()?;
        shaped(rid, shape)
    } else if is!(b"DISCONNECT") {
        a.cmd = "DISCONNECT";
        a.end()?;
        done(None, Frame::Disconnect)
    } else if is!(b"CANCEL") {
        a.cmd = "CANCEL";
        let sid = a.u64("a subscription id")?;
        let code = ErrorCode::from_token(a.next("an error code")?);
        let message = a.rest_text();
        done(None, Frame::Cancel { sid, code, message })
    } else if is!(b"SHUTDOWN") {
        a.cmd = "SHUTDOWN";
        let message = a.rest_text();
        done(None, Frame::Shutdown { message })
    } else {
        return Err(err(
            ErrorKind::UnknownCommand,
            0,
            format!("'{}' (send HELP for the list)", shown(word)),
        ));
    };
    Ok(draft)
}

/// `headers = *(header-key ":" *blank header-value CRLF) CRLF`
///
/// Returns the offset of the first bad byte on failure.
fn parse_headers(block: &[u8]) -> Result<Headers, usize> {
    let mut h = Headers::new();
    let mut at = 0;
    loop {
        let rest = &block[at..];
        let Some(lf) = memchr::memchr(b'\n', rest) else {
            return Err(at);
        };
        let line = rest[..lf].strip_suffix(b"\r").unwrap_or(&rest[..lf]);
        if line.is_empty() {
            // The blank line ends the block, and must be its last bytes.
            return if at + lf + 1 == block.len() {
                Ok(h)
            } else {
                Err(at + lf + 1)
            };
        }
        let colon = memchr::memchr(b':', line).ok_or(at)?;
        let key = std::str::from_utf8(&line[..colon]).map_err(|_| at)?;
        let value = std::str::from_utf8(&line[colon + 1..])
            .map_err(|_| at + colon + 1)?
            .trim_matches([' ', '\t']);
        if !valid_header_key(key) || !valid_header_value(value) {
            return Err(at);
        }
        h.push_validated(key.to_owned(), value.to_owned());
        at += lf + 1;
    }
}
