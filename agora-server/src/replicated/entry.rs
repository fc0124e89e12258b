//! What a replicated queue puts on disk and in its log besides Raft's own: a message
//! as its `Enqueue` entry holds it, and the name of the queue's log file.

use std::time::Instant;

use agora_protocol::Headers;

use crate::message::Message;

/// A queue's name as a file name: itself when it is plain, else in hex.
pub(super) fn file_name(name: &str) -> String {
    let plain = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    match plain && !name.starts_with('.') {
        true => name.to_owned(),
        false => name.bytes().map(|b| format!("{b:02x}")).collect(),
    }
}

/// The queue name [`file_name`] made `file` of.
pub(super) fn queue_name(file: &str) -> Option<String> {
    let hex = file.len().is_multiple_of(2)
        && file.len() >= 2
        && file
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if hex {
        let bytes: Option<Vec<u8>> = (0..file.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&file[i..i + 2], 16).ok())
            .collect();
        if let Some(name) = bytes.and_then(|b| String::from_utf8(b).ok()) {
            if file_name(&name) == file {
                return Some(name);
            }
        }
    }
    (file_name(file) == file).then(|| file.to_owned())
}

/// A message as a replicated queue's entry holds it: its headers, then its payload.
/// `count:u16 (klen:u16 key vlen:u32 value)* payload`.
pub(crate) fn encode_message(m: &Message) -> Vec<u8> {
    let mut v = Vec::with_capacity(2 + m.headers.encoded_len() + m.payload.len());
    let n = m.headers.len().min(u16::MAX as usize);
    v.extend_from_slice(&(n as u16).to_le_bytes());
    for (k, val) in m.headers.iter().take(n) {
        v.extend_from_slice(&(k.len() as u16).to_le_bytes());
        v.extend_from_slice(k.as_bytes());
        v.extend_from_slice(&(val.len() as u32).to_le_bytes());
        v.extend_from_slice(val.as_bytes());
    }
    v.extend_from_slice(&m.payload);
    v
}

/// Walks the headers of the message [`encode_message`] wrote in `b`, handing each
/// (key, value) to `each` until it returns false; where the payload starts, or `None`
/// when `b` is not such a message (or `each` stopped first).
fn walk_headers<'a>(
    b: &'a [u8],
    mut each: impl FnMut(&'a [u8], &'a [u8]) -> bool,
) -> Option<usize> {
    let mut at = 0usize;
    let mut take = |n: usize| -> Option<&'a [u8]> {
        let s = b.get(at..at.checked_add(n)?)?;
        at += n;
        Some(s)
    };
    let n = u16::from_le_bytes(take(2)?.try_into().ok()?);
    for _ in 0..n {
        let kl = u16::from_le_bytes(take(2)?.try_into().ok()?) as usize;
        let k = take(kl)?;
        let vl = u32::from_le_bytes(take(4)?.try_into().ok()?) as usize;
        let v = take(vl)?;
        if !each(k, v) {
            return None;
        }
    }
    Some(at)
}

/// The message id (`agora-msg-id`) of the message [`encode_message`] wrote in `b`, if
/// it carries one (and `b` is such a message).
pub(crate) fn msg_id_of(b: &[u8]) -> Option<&str> {
    let mut id = None;
    walk_headers(b, |k, v| {
        if k.eq_ignore_ascii_case(agora_protocol::msg_id::MSG_ID.as_bytes()) {
            id = std::str::from_utf8(v).ok();
            return false;
        }
        true
    });
    id
}

/// The message [`encode_message`] wrote; `None` when `b` is not one.
pub(crate) fn decode_message(b: &[u8], received: Instant) -> Option<Message> {
    let mut headers = Headers::new();
    let mut ok = true;
    let at = walk_headers(b, |k, v| {
        ok = match (std::str::from_utf8(k), std::str::from_utf8(v)) {
            (Ok(k), Ok(v)) => headers.append(k, v).is_ok(),
            _ => false,
        };
        ok
    })?;
    Some(Message {
        received,
        headers,
        payload: agora_protocol::bytes::Bytes::copy_from_slice(&b[at..]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_survives_its_entry_and_junk_is_refused() {
        let mut headers = Headers::new();
        headers.insert("agora-msg-id", "order-7").unwrap();
        headers.insert("k", "").unwrap();
        let now = Instant::now();
        let m = Message {
            received: now,
            headers,
            payload: agora_protocol::bytes::Bytes::from_static(b"a payload"),
        };
        let b = encode_message(&m);
        let back = decode_message(&b, now).unwrap();
        assert_eq!(back.headers.get("agora-msg-id"), Some("order-7"));
        assert_eq!(back.headers.len(), 2);
        assert_eq!(&back.payload[..], b"a payload");
        for cut in 0..b.len() - 9 {
            assert!(decode_message(&b[..cut], now).is_none(), "cut at {cut}");
        }
    }

    #[test]
    fn file_names_are_plain_or_hex() {
        assert_eq!(file_name("orders.eu-1_x"), "orders.eu-1_x");
        assert_eq!(file_name("a/b"), "612f62");
        assert_eq!(file_name(".."), "2e2e");
        for name in ["orders.eu-1_x", "a/b", "..", "ab", "q 1"] {
            assert_eq!(
                queue_name(&file_name(name)).as_deref(),
                Some(name),
                "{name}"
            );
        }
    }
}
