//! Streaming decode: bytes in, frames of one direction out.
//!
//! The contract: `Ok(None)` means "not enough bytes yet" for every incomplete prefix,
//! and nothing of that prefix is consumed (blank lines before it may be). Limits are
//! checked before anything is buffered for a frame: a line is searched for only within
//! `max_line + 2` bytes, and a payload's declared size is checked before its bytes are
//! awaited. Payloads and names are split off the buffer as [`Bytes`], never copied.
//!
//! This module owns the framing (lines, payloads, header blocks) and the dispatch on the
//! command word through [`COMMANDS`](crate::COMMANDS); what each line means is in the
//! command's module under `cmd/`. A line is found with `memchr`; plain `PUB` (for the
//! broker) and `MSG` (for the client) lines are read by a direct path in
//! `cmd/publish.rs`, every other line's tokens by `args.rs`. A frame the other
//! side sends is refused here, as `unknown_command`, after its payload is skipped.

use std::ops::Range;

use bytes::{Buf, Bytes, BytesMut};

use crate::args::{err, is_blank, shown, Args, PayloadSpec};
use crate::error::{ErrorKind, ProtocolError};
use crate::frame::{valid_header_key, valid_header_value, Headers};
use crate::name::RequestId;
use crate::table::{lookup, Body, CommandSpec, Parser, SentBy};
use crate::{ClientFrame, Limits, ServerFrame};

/// Decodes one frame a client sends, from the front of `buf`, with the default
/// [`Limits`]: what the broker reads.
///
/// ```
/// use bytes::BytesMut;
/// use agora_protocol::{decode_client, ClientFrame};
/// let mut buf = BytesMut::from(&b"PUB topic:prices 5\r\nhello\r\nPUB"[..]);
/// let Some(ClientFrame::Pub(p)) = decode_client(&mut buf).unwrap() else { panic!() };
/// assert_eq!(&p.payload[..], b"hello");
/// assert_eq!(decode_client(&mut buf).unwrap(), None); // "PUB" is only a prefix
/// ```
pub fn decode_client(buf: &mut BytesMut) -> Result<Option<ClientFrame>, ProtocolError> {
    decode_frame(buf, &Limits::default())
}

/// Decodes one frame a client sends, from the front of `buf`, under `limits`.
///
/// Returns `Ok(None)` when `buf` holds only a prefix of a frame (it may reserve room
/// for the rest of a payload), `Ok(Some(frame))` after consuming a frame, and `Err` for
/// a malformed frame (see [`ProtocolError::is_fatal`] for what was consumed). Empty
/// lines are skipped. A frame only the broker sends (`MSG`, `OK`, …) is a recoverable
/// `unknown_command` error, its payload skipped.
pub fn decode_client_with(
    buf: &mut BytesMut,
    limits: &Limits,
) -> Result<Option<ClientFrame>, ProtocolError> {
    decode_frame(buf, limits)
}

/// Decodes one frame the broker sends, from the front of `buf`, with the default
/// [`Limits`]: what a client reads.
///
/// ```
/// use bytes::BytesMut;
/// use agora_protocol::{decode_server, ServerFrame};
/// let mut buf = BytesMut::from(&b"OK #7\r\nPUB topic:t 1\r\nx\r\n"[..]);
/// assert_eq!(decode_server(&mut buf).unwrap(), Some(ServerFrame::Ok { rid: Some(7) }));
/// let e = decode_server(&mut buf).unwrap_err(); // clients publish, brokers do not
/// assert!(!e.is_fatal() && buf.is_empty());
/// ```
pub fn decode_server(buf: &mut BytesMut) -> Result<Option<ServerFrame>, ProtocolError> {
    decode_frame(buf, &Limits::default())
}

/// Decodes one frame the broker sends, from the front of `buf`, under `limits`; the
/// contract of [`decode_client_with`], the other way round.
pub fn decode_server_with(
    buf: &mut BytesMut,
    limits: &Limits,
) -> Result<Option<ServerFrame>, ProtocolError> {
    decode_frame(buf, limits)
}

/// What the framing needs from a direction's frame type.
pub(crate) trait Side: Sized {
    /// Who sends frames of this type.
    const SENT_BY: SentBy;

    /// This direction's parser for a command word, `None` when the other side sends it.
    fn parser(spec: &CommandSpec) -> Option<Parser<Self>>;

    /// The direct path for the hottest plain frame of this direction (see
    /// `cmd::publish::direct`). `None`: take the general path.
    fn direct(
        buf: &mut BytesMut,
        content: usize,
        line_total: usize,
        limits: &Limits,
    ) -> Option<Option<Self>>;

    /// A faster path than the tokenizer for some lines; `None`: tokenize.
    fn fast(line: &[u8]) -> Option<Parsed<Self>>;

    /// Puts the name and the body split off the buffer into the frame a parser drafted.
    fn fill(&mut self, name: Bytes, payload: Bytes, headers: Headers);
}

/// A frame drafted from its line: complete but for its destination's name and its
/// body, which are split off the buffer afterwards (`Side::fill`), so that the line's
/// borrow ends first.
pub(crate) struct Draft<F> {
    /// The frame's request id.
    pub(crate) rid: RequestId,
    /// The frame, its name and payload still empty.
    pub(crate) frame: F,
    /// Where the destination's name lies in the line, if the frame has one.
    pub(crate) name: Option<Range<usize>>,
}

impl<F> Draft<F> {
    /// A frame with no name to split off.
    pub(crate) fn done(rid: RequestId, frame: F) -> Draft<F> {
        Draft {
            rid,
            frame,
            name: None,
        }
    }
}

/// A parsed line and what follows it.
pub(crate) struct Parsed<F> {
    /// The request id, when it could be read, for errors found later.
    pub(crate) rid: RequestId,
    /// Where the body is, for frames that carry one.
    pub(crate) payload: Option<PayloadSpec>,
    /// The draft, or an error in a payload frame's line whose size was still readable:
    /// reported after the payload is skipped, so the stream stays in step.
    pub(crate) draft: Result<Draft<F>, ProtocolError>,
}

fn line_too_long(limits: &Limits) -> ProtocolError {
    ProtocolError::new(
        ErrorKind::LineTooLong {
            max: limits.max_line,
        },
        limits.max_line,
        "",
    )
}

/// The framing, the same for both directions.
#[inline]
pub(crate) fn decode_frame<F: Side>(
    buf: &mut BytesMut,
    limits: &Limits,
) -> Result<Option<F>, ProtocolError> {
    loop {
        let window = &buf[..buf.len().min(limits.max_line.saturating_add(2))];
        let Some(lf) = memchr::memchr(b'\n', window) else {
            // Incomplete: no LF yet. Past the window it can never be a legal line.
            if buf.len() >= limits.max_line.saturating_add(2) {
                return Err(line_too_long(limits));
            }
            return Ok(None);
        };
        let content = if lf > 0 && buf[lf - 1] == b'\r' {
            lf - 1
        } else {
            lf
        };
        if content > limits.max_line {
            return Err(line_too_long(limits));
        }
        let line_total = lf + 1;
        if buf[..content].iter().all(|&b| is_blank(b)) {
            buf.advance(line_total);
            continue;
        }
        if let Some(done) = F::direct(buf, content, line_total, limits) {
            return Ok(done);
        }
        let line = &buf[..content];
        let parsed = match F::fast(line) {
            Some(p) => Ok(p),
            None => parse_line::<F>(line),
        };
        let parsed = match parsed {
            Ok(p) => p,
            Err(e) => {
                if !e.is_fatal() {
                    buf.advance(line_total);
                }
                return Err(e);
            }
        };
        let Some(spec) = parsed.payload else {
            // `parse_line` returns such a line's error at once; this is only for safety.
            let draft = match parsed.draft {
                Ok(d) => d,
                Err(e) => {
                    buf.advance(line_total);
                    return Err(e);
                }
            };
            let name = take_line(buf, line_total, draft.name);
            let mut frame = draft.frame;
            frame.fill(name, Bytes::new(), Headers::new());
            return Ok(Some(frame));
        };
        let rid = parsed.rid;
        if spec.total > limits.max_payload as u64 {
            return Err(ProtocolError::new(
                ErrorKind::PayloadTooLarge {
                    declared: spec.total,
                    max: limits.max_payload,
                },
                spec.at,
                "",
            )
            .with_rid(rid));
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
                .with_rid(rid))
            }
        };
        let draft = match parsed.draft {
            Ok(d) => d,
            Err(e) => {
                buf.advance(end + term);
                return Err(e);
            }
        };
        let name = take_line(buf, line_total, draft.name);
        let body = buf.split_to(total).freeze();
        buf.advance(term);
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
                    .with_rid(rid))
                }
            },
        };
        let payload = if spec.hdr == 0 {
            body
        } else {
            body.slice(spec.hdr..)
        };
        let mut frame = draft.frame;
        frame.fill(name, payload, headers);
        return Ok(Some(frame));
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

/// The general path: one control line (without its line ending), looked up in the
/// command table and read by its command's parser.
fn parse_line<F: Side>(line: &[u8]) -> Result<Parsed<F>, ProtocolError> {
    let mut a = Args::split(line);
    let word = a.toks[0];
    let Some(spec) = lookup(word) else {
        return Err(err(
            ErrorKind::UnknownCommand,
            0,
            format!("'{}' (send HELP for the list)", shown(word)),
        ));
    };
    a.cmd = spec.word;
    let parser = F::parser(spec);
    let sizes = match spec.body {
        Body::None => None,
        Body::Sized => Some(false),
        Body::Headers => Some(true),
        Body::SizedIfSet => a.is_chain_set().then_some(false),
    };
    // The request id as far as it can be read, for the error of a line that fails.
    let peek_rid = |a: &mut Args<'_>| {
        let saved = a.pos;
        let rid = a.rid().ok().flatten();
        a.pos = saved;
        rid
    };
    let Some(with_headers) = sizes else {
        let rid = peek_rid(&mut a);
        let Some(parse) = parser else {
            return Err(wrong_side(spec, F::SENT_BY).with_rid(rid));
        };
        return match parse(&mut a) {
            Ok(draft) => Ok(Parsed {
                rid: draft.rid,
                payload: None,
                draft: Ok(draft),
            }),
            Err(e) => Err(e.with_rid(rid)),
        };
    };
    // A payload frame: the size must be known to keep the stream in step.
    let Some(payload) = a.payload_spec(with_headers) else {
        let rid = a.rid().ok().flatten();
        let cmd = spec.word;
        let detail = if with_headers {
            format!("{cmd} must end with <header-bytes> <total-bytes>, header-bytes at least 2 and at most total-bytes")
        } else {
            format!("{cmd} must end with the payload size in bytes")
        };
        return Err(err(ErrorKind::BadArgs, a.here(), detail)
            .with_rid(rid)
            .fatal());
    };
    let rid = peek_rid(&mut a);
    let draft = match parser {
        None => Err(wrong_side(spec, F::SENT_BY)),
        Some(parse) => parse_payload_line(&mut a, parse, with_headers),
    };
    Ok(Parsed {
        rid,
        payload: Some(payload),
        draft: draft.map_err(|e| e.with_rid(rid)),
    })
}

/// The line of a frame that carries a payload; the size tokens were read already.
fn parse_payload_line<F>(
    a: &mut Args<'_>,
    parse: Parser<F>,
    with_headers: bool,
) -> Result<Draft<F>, ProtocolError> {
    if let Some(e) = a.stopped() {
        return Err(e);
    }
    let sizes = if with_headers { 2 } else { 1 };
    // Hide the size tokens from the argument cursor.
    a.len -= sizes;
    let r = parse(a);
    a.len += sizes;
    r
}

/// The error for a frame only the other side sends, read by a decoder of frames sent by
/// `reads`: recoverable, like an unknown word.
fn wrong_side(spec: &CommandSpec, reads: SentBy) -> ProtocolError {
    let detail = match reads {
        SentBy::Client => format!("'{}' is sent by the broker, not by clients", spec.word),
        _ => format!("'{}' is sent by clients, not by the broker", spec.word),
    };
    err(ErrorKind::UnknownCommand, 0, detail)
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
