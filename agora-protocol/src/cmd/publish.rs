//! Publishing and delivery: `PUB`/`HPUB` (client), `MSG`/`HMSG` and `PUBACK` (broker).
//!
//! ```text
//! pub     = "PUB" [rid] dest size
//!           payload
//! hpub    = "HPUB" [rid] dest header-bytes total-bytes
//!           h-payload
//! msg     = "MSG" dest sid did count size
//!           payload
//! hmsg    = "HMSG" dest sid did count header-bytes total-bytes
//!           h-payload
//! count   = number                ; deliveries so far, this one included; 1 to 2^32 - 1
//! puback  = "PUBACK" [rid] ["filtered"]
//! ```
//!
//! This module owns these frames' decode and encode, including the two hot paths: the
//! direct decode of a plain `PUB` (what the broker reads most) and of a plain `MSG`
//! (what a subscriber reads most), which skip the tokenizer, and encoders that take a
//! message's parts so a sender need not build a frame per message. The hot paths must
//! never report an error themselves: anything unusual goes to the general path, which
//! reports it exactly.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::args::{err, number, shown, Args, DestSpan, PayloadSpec};
use crate::decode::{Draft, Parsed};
use crate::encode::{crlf, line_start, put_dest, put_u64};
use crate::error::{ErrorKind, ProtocolError};
use crate::frame::{Delivery, Headers, Publish};
use crate::name::{validate_name, Destination, Kind, Name, RequestId};
use crate::{ClientFrame, Limits, ServerFrame};

/// `pub` and `hpub`, the sizes already taken off: `[rid] dest`.
pub(crate) fn decode_pub(a: &mut Args<'_>) -> Result<Draft<ClientFrame>, ProtocolError> {
    let rid = a.rid()?;
    let dest = a.dest()?;
    a.end()?;
    Ok(Draft {
        rid,
        frame: ClientFrame::Pub(Publish {
            rid,
            dest: dest.unfilled(),
            headers: Headers::new(),
            payload: Bytes::new(),
        }),
        name: Some(dest.name),
    })
}

/// `msg` and `hmsg`, the sizes already taken off: `dest sid did count`.
pub(crate) fn decode_msg(a: &mut Args<'_>) -> Result<Draft<ServerFrame>, ProtocolError> {
    if a.rid()?.is_some() {
        return Err(err(
            ErrorKind::BadArgs,
            0,
            format!("{} carries no request id", a.cmd),
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
    a.end()?;
    Ok(msg_draft(&dest, sid, did, count))
}

fn msg_draft(dest: &DestSpan, sid: u64, did: u64, count: u32) -> Draft<ServerFrame> {
    Draft {
        rid: None,
        frame: ServerFrame::Msg(Delivery {
            dest: dest.unfilled(),
            sid,
            did,
            count,
            headers: Headers::new(),
            payload: Bytes::new(),
        }),
        name: Some(dest.name.clone()),
    }
}

/// `puback = "PUBACK" [rid] ["filtered"]`
pub(crate) fn decode_puback(a: &mut Args<'_>) -> Result<Draft<ServerFrame>, ProtocolError> {
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
    Ok(Draft::done(rid, ServerFrame::PubAck { rid, filtered }))
}

/// Appends a `PUB` (or, with headers, `HPUB`) frame without building a
/// [`ClientFrame`].
pub fn encode_pub(
    rid: RequestId,
    dest: &Destination,
    headers: &Headers,
    payload: &[u8],
    dst: &mut BytesMut,
) {
    let hdr = block_len(headers);
    dst.reserve(32 + dest.name.len() + hdr + payload.len());
    line_start(dst, if hdr == 0 { "PUB" } else { "HPUB" }, rid);
    put_dest(dst, dest);
    sizes_and_body(dst, headers, hdr, payload);
}

/// Appends a `MSG` (or, with headers, `HMSG`) delivery frame without building a
/// [`ServerFrame`].
pub fn encode_msg(
    dest: &Destination,
    sid: u64,
    did: u64,
    count: u32,
    headers: &Headers,
    payload: &[u8],
    dst: &mut BytesMut,
) {
    let hdr = block_len(headers);
    dst.reserve(64 + dest.name.len() + hdr + payload.len());
    dst.put_slice(if hdr == 0 { b"MSG" } else { b"HMSG" });
    put_dest(dst, dest);
    dst.put_u8(b' ');
    put_u64(dst, sid);
    dst.put_u8(b' ');
    put_u64(dst, did);
    dst.put_u8(b' ');
    put_u64(dst, u64::from(count));
    sizes_and_body(dst, headers, hdr, payload);
}

pub(crate) fn encode_puback(rid: RequestId, filtered: bool, dst: &mut BytesMut) {
    line_start(dst, "PUBACK", rid);
    if filtered {
        dst.put_slice(b" filtered");
    }
    crlf(dst);
}

/// The header block's size on the wire: 0 without headers (a plain `PUB`/`MSG`).
fn block_len(headers: &Headers) -> usize {
    if headers.is_empty() {
        0
    } else {
        headers.encoded_len()
    }
}

fn sizes_and_body(dst: &mut BytesMut, headers: &Headers, hdr: usize, payload: &[u8]) {
    dst.put_u8(b' ');
    if hdr > 0 {
        put_u64(dst, hdr as u64);
        dst.put_u8(b' ');
    }
    put_u64(dst, (hdr + payload.len()) as u64);
    crlf(dst);
    if hdr > 0 {
        for (k, v) in headers.iter() {
            dst.put_slice(k.as_bytes());
            dst.put_slice(b": ");
            dst.put_slice(v.as_bytes());
            crlf(dst);
        }
        crlf(dst);
    }
    dst.put_slice(payload);
    crlf(dst);
}

/// The destination at the start of `rest` in a plain line (`topic:` or `queue:`, a
/// valid name, one blank after it): its kind and where that blank is.
#[inline]
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

/// What the direct path read from a plain `PUB` or `MSG`.
struct Plain {
    dest: Destination,
    /// `sid did count size` for `MSG`; `size` first for `PUB`.
    nums: [u64; 4],
    count: u32,
    payload: Bytes,
}

/// The hottest frames, `PUB dest size` (`MSG` false) and `MSG dest sid did count size`
/// (`MSG` true) without headers and with single blanks, decoded straight from the
/// buffer: no tokenizer, no draft. `None` for anything else, including every error: the
/// general path then reports it exactly. `Some(None)`: the payload has not all arrived.
#[inline(always)]
fn direct<const MSG: bool>(
    buf: &mut BytesMut,
    content: usize,
    line_total: usize,
    limits: &Limits,
) -> Option<Option<Plain>> {
    let line = &buf[..content];
    let word = line.get(..4)?;
    if !word.eq_ignore_ascii_case(if MSG { b"MSG " } else { b"PUB " }) {
        return None;
    }
    let skip = 4;
    let rest = &line[skip..];
    let (kind, sp) = plain_dest(rest)?;
    let mut nums = [0u64; 4];
    let want = if MSG { 4 } else { 1 };
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
    let count = if MSG {
        u32::try_from(nums[2]).ok().filter(|&c| c > 0)?
    } else {
        0
    };
    let total = total as usize;
    let Some(term) = term_at(buf, line_total + total)? else {
        return Some(None);
    };
    let name_start = skip + 6;
    let name_end = skip + sp;
    buf.advance(name_start);
    let name = buf.split_to(name_end - name_start).freeze();
    buf.advance(line_total - name_end);
    let payload = buf.split_to(total).freeze();
    buf.advance(term);
    Some(Some(Plain {
        dest: Destination {
            kind,
            name: Name::from_validated(name),
        },
        nums,
        count,
        payload,
    }))
}

/// The line end after a body that ends at `end`: its length; `Some(None)` when it has
/// not all arrived (room for it reserved); `None` when something else is there.
#[inline(always)]
fn term_at(buf: &mut BytesMut, end: usize) -> Option<Option<usize>> {
    if buf.len() <= end {
        buf.reserve(end + 2 - buf.len());
        return Some(None);
    }
    match &buf[end..] {
        [b'\n', ..] => Some(Some(1)),
        [b'\r', b'\n', ..] => Some(Some(2)),
        [b'\r'] => Some(None),
        _ => None,
    }
}

/// For a broker reading a run of publishes to one destination: a whole plain `PUB` to
/// `dest` (`PUB <kind>:<name> <size>`, upper case, single blanks, the same name byte
/// for byte) at the front of `buf` is consumed and its payload returned, without
/// splitting off or checking the name again. `None` for anything else — another name,
/// a request id, headers, a frame not all here yet, a malformed one — with nothing
/// consumed: [`decode_client_with`](crate::decode_client_with) then reads it, and
/// reports exactly what is wrong.
///
/// ```
/// use agora_protocol::{bytes::BytesMut, decode_pub_to, Destination, Limits};
/// let dest = Destination::topic("prices").unwrap();
/// let mut buf = BytesMut::from(&b"PUB topic:prices 2\r\nhi\r\nPUB topic:other 1\r\nx\r\n"[..]);
/// assert_eq!(&decode_pub_to(&mut buf, &dest, &Limits::default()).unwrap()[..], b"hi");
/// assert_eq!(decode_pub_to(&mut buf, &dest, &Limits::default()), None);
/// assert!(buf.starts_with(b"PUB topic:other"));
/// ```
#[inline]
pub fn decode_pub_to(buf: &mut BytesMut, dest: &Destination, limits: &Limits) -> Option<Bytes> {
    let name = dest.name.as_bytes();
    let kind: &[u8] = match dest.kind {
        Kind::Topic => b"topic:",
        Kind::Queue => b"queue:",
    };
    let sp = 10 + name.len();
    let b = &buf[..];
    if b.len() <= sp
        || &b[..4] != b"PUB "
        || &b[4..10] != kind
        || &b[10..sp] != name
        || b[sp] != b' '
    {
        return None;
    }
    let digits = &b[sp + 1..b.len().min(sp + 22)];
    let n = digits.iter().position(|c| !c.is_ascii_digit())?;
    let content = sp + 1 + n;
    let line_total = match &b[content..] {
        [b'\r', b'\n', ..] => content + 2,
        [b'\n', ..] => content + 1,
        _ => return None,
    };
    if content > limits.max_line {
        return None;
    }
    let total = number(&digits[..n])?;
    if total > limits.max_payload as u64 {
        return None;
    }
    let total = total as usize;
    let term = term_at(buf, line_total + total)??;
    buf.advance(line_total);
    let payload = buf.split_to(total).freeze();
    buf.advance(term);
    Some(payload)
}

/// The broker's direct path: a plain `PUB`.
#[inline]
pub(crate) fn direct_pub(
    buf: &mut BytesMut,
    content: usize,
    line_total: usize,
    limits: &Limits,
) -> Option<Option<ClientFrame>> {
    let p = direct::<false>(buf, content, line_total, limits)?;
    Some(p.map(|p| {
        ClientFrame::Pub(Publish {
            rid: None,
            dest: p.dest,
            headers: Headers::new(),
            payload: p.payload,
        })
    }))
}

/// The client's direct path: a plain `MSG`.
#[inline]
pub(crate) fn direct_msg(
    buf: &mut BytesMut,
    content: usize,
    line_total: usize,
    limits: &Limits,
) -> Option<Option<ServerFrame>> {
    let p = direct::<true>(buf, content, line_total, limits)?;
    Some(p.map(|p| {
        ServerFrame::Msg(Delivery {
            dest: p.dest,
            sid: p.nums[0],
            did: p.nums[1],
            count: p.count,
            headers: Headers::new(),
            payload: p.payload,
        })
    }))
}

/// The delivery's fast path for what [`direct`] leaves (`HMSG`, and a plain `MSG` whose
/// payload is not there or not right yet): `MSG SP dest SP sid SP did SP count SP size`,
/// or `HMSG` with `hdr-size SP size` at the end, single blanks. Anything else returns
/// `None` and takes the general path.
pub(crate) fn fast_msg(line: &[u8]) -> Option<Parsed<ServerFrame>> {
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
    let dest = DestSpan {
        kind,
        name: skip + 6..skip + sp,
    };
    Some(Parsed {
        rid: None,
        payload: Some(PayloadSpec {
            hdr,
            total,
            at: line.len() - size_tok.len(),
        }),
        draft: Ok(msg_draft(&dest, sid, did, count)),
    })
}
