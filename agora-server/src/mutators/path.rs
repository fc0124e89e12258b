//! Where a mutator reads or writes: the whole payload, a header, or a JSON field.
//!
//! Reading a JSON field does not parse the whole payload into a tree: [`scan`] walks
//! the bytes along the pointer and skips everything else, so a threshold on one field
//! of a small object costs a pass over part of its bytes and no allocation.

use serde_json::{Map, Value};

/// A place in a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Path {
    /// `.`: the whole payload (a bare number like `21.5` is its own value).
    Payload,
    /// `header:NAME`: a header, by case-insensitive name.
    Header(String),
    /// `/a/b`: a JSON pointer (RFC 6901) into a JSON payload, as unescaped tokens.
    Json(Vec<String>),
}

impl Path {
    /// The name a value at this path goes by: a header's name or a pointer's last
    /// token (`None` for the payload).
    pub fn leaf(&self) -> Option<&str> {
        match self {
            Path::Payload => None,
            Path::Header(h) => Some(h),
            Path::Json(t) => t.last().map(String::as_str),
        }
    }
}

/// Splits a JSON pointer (`/a/b~1c`) into unescaped tokens (`a`, `b/c`).
pub fn pointer_tokens(p: &str) -> Option<Vec<String>> {
    let rest = p.strip_prefix('/')?;
    Some(
        rest.split('/')
            .map(|t| t.replace("~1", "/").replace("~0", "~"))
            .collect(),
    )
}

/// The value at `tokens` in a parsed document.
pub fn pointer<'a>(doc: &'a Map<String, Value>, tokens: &[String]) -> Option<&'a Value> {
    let (first, rest) = tokens.split_first()?;
    let mut v = doc.get(first)?;
    for t in rest {
        v = match v {
            Value::Object(m) => m.get(t)?,
            Value::Array(a) => a.get(t.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(v)
}

/// Sets the value at `tokens`, creating objects on the way; false if the way passes
/// through something that is not an object (nothing is changed then).
pub fn set(doc: &mut Map<String, Value>, tokens: &[String], value: Value) -> bool {
    let Some((last, parents)) = tokens.split_last() else {
        return false;
    };
    let mut m = doc;
    for t in parents {
        let v = m
            .entry(t.clone())
            .or_insert_with(|| Value::Object(Map::new()));
        match v {
            Value::Object(inner) => m = inner,
            _ => return false,
        }
    }
    m.insert(last.clone(), value);
    true
}

/// Removes the field at `tokens`; false if there was none.
pub fn remove(doc: &mut Map<String, Value>, tokens: &[String]) -> bool {
    let Some((last, parents)) = tokens.split_last() else {
        return false;
    };
    let mut m = doc;
    for t in parents {
        match m.get_mut(t) {
            Some(Value::Object(inner)) => m = inner,
            _ => return false,
        }
    }
    m.remove(last).is_some()
}

/// Finds the raw bytes of the value at `tokens` in a JSON document without parsing the
/// rest. `Ok(None)`: no such field; `Err`: the payload is not a JSON object or array,
/// or is malformed on the way to the field.
#[allow(clippy::result_unit_err)]
pub fn scan<'a>(bytes: &'a [u8], tokens: &[String]) -> Result<Option<&'a [u8]>, ()> {
    let mut s = Scanner { b: bytes, i: 0 };
    s.ws();
    match s.peek() {
        Some(b'{') | Some(b'[') => {}
        _ => return Err(()),
    }
    for t in tokens {
        let found = match s.peek() {
            Some(b'{') => s.find_key(t)?,
            Some(b'[') => match t.parse::<usize>() {
                Ok(n) => s.find_index(n)?,
                Err(_) => false,
            },
            _ => false,
        };
        if !found {
            return Ok(None);
        }
    }
    let start = s.i;
    s.skip_value()?;
    Ok(Some(&bytes[start..s.i]))
}

struct Scanner<'a> {
    b: &'a [u8],
    i: usize,
}

impl Scanner<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\r' | b'\n')) {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> Result<(), ()> {
        self.ws();
        if self.peek() == Some(c) {
            self.i += 1;
            Ok(())
        } else {
            Err(())
        }
    }

    /// At `{`: moves to the value of `key` (true) or past the object (false).
    fn find_key(&mut self, key: &str) -> Result<bool, ()> {
        self.eat(b'{')?;
        self.ws();
        if self.peek() == Some(b'}') {
            self.i += 1;
            return Ok(false);
        }
        loop {
            self.ws();
            let (start, end, escaped) = self.string()?;
            let raw = &self.b[start..end];
            let matches = if escaped {
                serde_json::from_slice::<String>(&self.b[start - 1..end + 1]).map_err(|_| ())?
                    == key
            } else {
                raw == key.as_bytes()
            };
            self.eat(b':')?;
            self.ws();
            if matches {
                return Ok(true);
            }
            self.skip_value()?;
            self.ws();
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b'}') => {
                    self.i += 1;
                    return Ok(false);
                }
                _ => return Err(()),
            }
        }
    }

    /// At `[`: moves to element `n` (true) or past the array (false).
    fn find_index(&mut self, n: usize) -> Result<bool, ()> {
        self.eat(b'[')?;
        self.ws();
        if self.peek() == Some(b']') {
            self.i += 1;
            return Ok(false);
        }
        let mut k = 0;
        loop {
            self.ws();
            if k == n {
                return Ok(true);
            }
            self.skip_value()?;
            self.ws();
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b']') => {
                    self.i += 1;
                    return Ok(false);
                }
                _ => return Err(()),
            }
            k += 1;
        }
    }

    /// At `"`: the contents' bounds and whether they hold escapes; moves past it.
    fn string(&mut self) -> Result<(usize, usize, bool), ()> {
        if self.peek() != Some(b'"') {
            return Err(());
        }
        self.i += 1;
        let start = self.i;
        let mut escaped = false;
        loop {
            match memchr_quote_or_backslash(&self.b[self.i..]) {
                Some(off) => {
                    self.i += off;
                    if self.b[self.i] == b'\\' {
                        escaped = true;
                        self.i += 2;
                        if self.i > self.b.len() {
                            return Err(());
                        }
                    } else {
                        let end = self.i;
                        self.i += 1;
                        return Ok((start, end, escaped));
                    }
                }
                None => return Err(()),
            }
        }
    }

    /// Moves past one value (checked only as far as needed to find its end).
    fn skip_value(&mut self) -> Result<(), ()> {
        self.ws();
        match self.peek() {
            Some(b'"') => self.string().map(|_| ()),
            Some(b'{') | Some(b'[') => {
                let mut depth = 0usize;
                loop {
                    match self.peek() {
                        Some(b'"') => {
                            self.string()?;
                            continue;
                        }
                        Some(b'{') | Some(b'[') => depth += 1,
                        Some(b'}') | Some(b']') => {
                            depth -= 1;
                            if depth == 0 {
                                self.i += 1;
                                return Ok(());
                            }
                        }
                        Some(_) => {}
                        None => return Err(()),
                    }
                    self.i += 1;
                }
            }
            Some(_) => {
                let start = self.i;
                while let Some(c) = self.peek() {
                    if matches!(c, b',' | b'}' | b']' | b' ' | b'\t' | b'\r' | b'\n') {
                        break;
                    }
                    self.i += 1;
                }
                if self.i == start {
                    Err(())
                } else {
                    Ok(())
                }
            }
            None => Err(()),
        }
    }
}

fn memchr_quote_or_backslash(b: &[u8]) -> Option<usize> {
    b.iter().position(|&c| c == b'"' || c == b'\\')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(p: &str) -> Vec<String> {
        pointer_tokens(p).unwrap()
    }

    fn found<'a>(doc: &'a str, p: &str) -> Option<&'a str> {
        scan(doc.as_bytes(), &t(p))
            .unwrap()
            .map(|b| std::str::from_utf8(b).unwrap())
    }

    #[test]
    fn pointer_tokens_unescape() {
        assert_eq!(t("/a~1b/c~0d"), vec!["a/b", "c~d"]);
        assert_eq!(t("/"), vec![""]);
        assert!(pointer_tokens("a").is_none());
    }

    #[test]
    fn scan_finds_nested_fields_and_elements() {
        let doc = r#" { "x": {"y": [1, {"z": "}"}]}, "sensor": {"temp": 31.5 , "id":"a\"b"}, "e\"k": 3 } "#;
        assert_eq!(found(doc, "/sensor/temp"), Some("31.5"));
        assert_eq!(found(doc, "/sensor/id"), Some(r#""a\"b""#));
        assert_eq!(found(doc, "/x/y/1/z"), Some(r#""}""#));
        assert_eq!(found(doc, "/x/y/0"), Some("1"));
        assert_eq!(found(doc, "/x/y/2"), None);
        assert_eq!(found(doc, "/e\"k"), Some("3"));
        assert_eq!(found(doc, "/nope"), None);
        assert_eq!(found(doc, "/sensor/temp/deeper"), None);
        assert_eq!(found(doc, "/x"), Some(r#"{"y": [1, {"z": "}"}]}"#));
    }

    #[test]
    fn scan_rejects_non_objects_and_broken_json() {
        assert!(scan(b"42", &t("/a")).is_err());
        assert!(scan(b"hello", &t("/a")).is_err());
        assert!(scan(b"", &t("/a")).is_err());
        assert!(scan(br#"{"a" 1}"#, &t("/a")).is_err());
        assert!(scan(br#"{"b": "unterminated"#, &t("/a")).is_err());
        assert!(scan(br#"{"b": [1, 2"#, &t("/a")).is_err());
    }

    #[test]
    fn set_and_remove_in_a_document() {
        let mut m = Map::new();
        assert!(set(&mut m, &t("/a/b"), Value::from(1)));
        assert!(!set(&mut m, &t("/a/b/c"), Value::from(2)));
        assert_eq!(pointer(&m, &t("/a/b")), Some(&Value::from(1)));
        assert!(remove(&mut m, &t("/a/b")));
        assert!(!remove(&mut m, &t("/a/b")));
        assert_eq!(Value::Object(m), serde_json::json!({"a": {}}));
    }
}
