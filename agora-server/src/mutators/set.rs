//! `set path=value…` and `remove path…`: add, overwrite or remove headers and JSON
//! fields, or replace the payload (`set .=…`).
//!
//! Values: `now` is the broker's receive time (RFC 3339, UTC, milliseconds), `now_ms`
//! the same in Unix milliseconds; in a JSON field an unquoted value that is valid JSON
//! (`42`, `true`, `{"a":1}`) is that value, anything else (or anything in double
//! quotes) a string. A JSON path on a payload that is not a JSON object leaves the
//! payload unchanged and the message passes.

use std::time::{SystemTime, UNIX_EPOCH};

use agora_protocol::bytes::Bytes;
use agora_protocol::Headers;
use serde_json::Value;

use super::grammar::SetValue;
use super::{path, Msg, Mutator, Path, Step, Verdict};

enum Val {
    /// The receive time, RFC 3339.
    Now,
    /// The receive time, Unix milliseconds.
    NowMs,
    /// A fixed value: its header/payload text and its JSON form.
    Fixed(String, Value),
}

impl Val {
    fn from_spec(v: SetValue) -> Val {
        if !v.quoted {
            match v.text.as_str() {
                "now" => return Val::Now,
                "now_ms" => return Val::NowMs,
                _ => {}
            }
            if let Ok(j) = serde_json::from_str::<Value>(&v.text) {
                return Val::Fixed(v.text, j);
            }
        }
        let j = Value::String(v.text.clone());
        Val::Fixed(v.text, j)
    }

    fn text(&self, msg: &mut Msg) -> String {
        match self {
            Val::Now => rfc3339(msg.received()),
            Val::NowMs => unix_ms(msg.received()).to_string(),
            Val::Fixed(t, _) => t.clone(),
        }
    }

    fn json(&self, msg: &mut Msg) -> Value {
        match self {
            Val::Now => Value::String(rfc3339(msg.received())),
            Val::NowMs => Value::from(unix_ms(msg.received())),
            Val::Fixed(_, j) => j.clone(),
        }
    }
}

fn rfc3339(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

pub(super) struct Set {
    assignments: Vec<(Path, Val)>,
}

impl Set {
    pub fn new(assignments: Vec<(Path, SetValue)>) -> Result<Set, String> {
        let mut out = Vec::with_capacity(assignments.len());
        for (p, v) in assignments {
            let v = Val::from_spec(v);
            if let (Path::Header(name), Val::Fixed(text, _)) = (&p, &v) {
                if Headers::new().insert(name, text).is_err() {
                    return Err(format!("'{text}' is not a valid value for header {name}"));
                }
            }
            out.push((p, v));
        }
        Ok(Set { assignments: out })
    }
}

impl Mutator for Set {
    fn apply(&self, msg: &mut Msg) -> Step {
        for (p, v) in &self.assignments {
            match p {
                Path::Header(name) => {
                    let text = v.text(msg);
                    // Checked when built; `now` values are always valid.
                    let _ = msg.headers.insert(name, &text);
                }
                Path::Payload => {
                    let text = v.text(msg);
                    msg.set_payload(Bytes::from(text));
                }
                Path::Json(tokens) => {
                    let j = v.json(msg);
                    if let Some(doc) = msg.json_mut() {
                        path::set(doc, tokens, j);
                    }
                }
            }
        }
        Verdict::Keep.into()
    }
}

pub(super) struct Remove {
    paths: Vec<Path>,
}

impl Remove {
    pub fn new(paths: Vec<Path>) -> Result<Remove, String> {
        Ok(Remove { paths })
    }
}

impl Mutator for Remove {
    fn apply(&self, msg: &mut Msg) -> Step {
        for p in &self.paths {
            match p {
                Path::Header(name) => {
                    msg.headers.remove(name);
                }
                Path::Json(tokens) => {
                    // Only parse (and later rewrite) the payload if the field is there.
                    let present = msg.doc.is_some()
                        || matches!(path::scan(&msg.payload, tokens), Ok(Some(_)));
                    if present {
                        if let Some(doc) = msg.json_mut() {
                            path::remove(doc, tokens);
                        }
                    }
                }
                Path::Payload => {}
            }
        }
        Verdict::Keep.into()
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{chain, run};
    use serde_json::{json, Value};

    fn doc(s: &str) -> Value {
        serde_json::from_str(s).unwrap()
    }

    #[test]
    fn sets_headers_fields_and_the_payload() {
        let c = chain(r#"set header:unit=C /unit="C" /n=5 /ok=true /nested/x=[1] /s=hello"#);
        let (h, p) = run(&c, &[], r#"{"t":1}"#).unwrap();
        assert_eq!(h.get("unit"), Some("C"));
        assert_eq!(
            doc(&p),
            json!({"t":1,"unit":"C","n":5,"ok":true,"nested":{"x":[1]},"s":"hello"})
        );
        let (_, p) = run(&chain("set .=42"), &[], "anything").unwrap();
        assert_eq!(p, "42");
        let (h, _) = run(&chain("set header:x=2"), &[("X", "1")], "").unwrap();
        assert_eq!(h.iter().collect::<Vec<_>>(), vec![("x", "2")]);
    }

    #[test]
    fn now_stamps_the_receive_time() {
        let (h, p) = run(&chain("set header:seen=now /seen=now_ms"), &[], "{}").unwrap();
        let seen = h.get("seen").unwrap();
        assert!(chrono::DateTime::parse_from_rfc3339(seen).is_ok(), "{seen}");
        assert!(seen.ends_with('Z'));
        let ms = doc(&p)["seen"].as_u64().unwrap();
        let t = chrono::DateTime::parse_from_rfc3339(seen)
            .unwrap()
            .timestamp_millis() as u64;
        assert_eq!(ms, t, "one receive time per message");
    }

    #[test]
    fn json_paths_on_non_json_payloads_pass_unchanged() {
        let (_, p) = run(&chain("set /a=1 | remove /b"), &[], "plain text").unwrap();
        assert_eq!(p, "plain text");
        let (_, p) = run(&chain("set /a/b=1"), &[], r#"{"a":3}"#).unwrap();
        assert_eq!(doc(&p), json!({"a":3}));
    }

    #[test]
    fn removes_headers_and_fields() {
        let c = chain("remove header:secret /password /deep/x");
        let (h, p) = run(
            &c,
            &[("Secret", "1"), ("keep", "2")],
            r#"{"password":"p","deep":{"x":1,"y":2}}"#,
        )
        .unwrap();
        assert_eq!(h.get("secret"), None);
        assert_eq!(h.get("keep"), Some("2"));
        assert_eq!(doc(&p), json!({"deep":{"y":2}}));
        let (_, p) = run(&c, &[], r#"{ "untouched" : 1 }"#).unwrap();
        assert_eq!(p, r#"{ "untouched" : 1 }"#, "no field, no rewrite");
    }

    #[test]
    fn bad_header_values_are_refused_when_built() {
        let e = super::super::Chain::parse("set header:a=\" x\"", &Default::default()).unwrap_err();
        assert!(e.message.contains("not a valid value"), "{e}");
    }
}
