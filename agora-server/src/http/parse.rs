//! What a request carries, decoded: a query string, percent-escapes, base64.

/// A query string's pairs, percent-decoded.
pub(super) fn query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent(k), percent(v))
        })
        .collect()
}

/// `%HH` and `+` decoded (bytes that are not UTF-8 become U+FFFD).
pub(super) fn percent(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

/// Standard base64 (with or without padding).
pub(super) fn base64(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes().filter(|c| *c != b'=') {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_and_percent_decode() {
        assert_eq!(base64("YWxpY2U6czNjcmV0").unwrap(), b"alice:s3cret");
        assert_eq!(base64("YQ==").unwrap(), b"a");
        assert!(base64("a b").is_none());
        assert_eq!(percent("queue%3Ajobs+1%"), "queue:jobs 1%");
        assert_eq!(percent("%é%zz"), "%é%zz", "no panic inside a character");
        assert_eq!(
            query("prefix=a.&limit=5"),
            [("prefix".into(), "a.".into()), ("limit".into(), "5".into())]
        );
    }
}
