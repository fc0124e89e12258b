//! Message mutators: per-destination chains that keep, change or drop each message.
//!
//! A [`Chain`] is parsed from one line of text (grammar in [`grammar`] and the book's
//! Mutators chapter), e.g. `threshold /temp > 30 | enrich db=sensors table=sites
//! key=/site | set header:seen=now`, and attached to a queue or topic. It runs once per
//! publish, in the publishing connection's task, before the message is reserved,
//! buffered or fanned out — never per subscriber. A destination without a chain pays
//! one relaxed atomic load per publish ([`ChainSlot::get`]).
//!
//! This module owns the mutators and their parsing. It must never block the executor:
//! the only mutator that does I/O ([`enrich`]) runs its database lookups on the
//! `blocking` thread pool, with a timeout, and caches the answers.

pub mod enrich;
pub mod grammar;
pub mod path;
mod sample;
mod set;
mod threshold;

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::*};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use agora_protocol::bytes::Bytes;
use agora_protocol::Headers;
use serde_json::{Map, Value};

pub use enrich::Database;
pub use path::Path;

/// What a mutator decided about a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Pass it on (possibly changed) to the next mutator, then the destination.
    Keep,
    /// Throw it away: it is counted as `filtered` and never reaches the destination.
    Drop,
}

/// The rest of a mutator's work once something it waited for is ready: it finishes
/// with the message and gives the verdict.
pub type Finish = Box<dyn FnOnce(&mut Msg) -> Verdict + Send>;

/// Work a mutator cannot finish without waiting (a database lookup).
pub type Pending = Pin<Box<dyn Future<Output = Finish> + Send>>;

/// A mutator's answer: decided now, or after waiting.
pub enum Step {
    /// Decided.
    Done(Verdict),
    /// Wait for the future, then call what it gives with the same message. The chain
    /// awaits it in the publishing connection's task, so that publisher's later
    /// messages keep their order; other publishers and the destination do not wait.
    Wait(Pending),
}

impl From<Verdict> for Step {
    fn from(v: Verdict) -> Step {
        Step::Done(v)
    }
}

/// One link of a chain: given a message, keep it (possibly changed) or drop it.
///
/// `apply` is called on the publishing connection's task and must not block; work that
/// would (I/O) goes in [`Step::Wait`].
pub trait Mutator: Send + Sync {
    /// Looks at (and may change) `msg`.
    fn apply(&self, msg: &mut Msg) -> Step;
}

/// A message as mutators see it: headers, payload, and the payload parsed as JSON
/// once some mutator needed to change it (so a chain parses and writes it back once).
pub struct Msg {
    /// The message's headers.
    pub headers: Headers,
    payload: Bytes,
    /// The payload as a JSON object, once a mutator changed it; the payload bytes are
    /// stale while `doc` is `Some`.
    doc: Option<Map<String, Value>>,
    /// When the broker received it (read once, on first use).
    received: Option<SystemTime>,
}

impl Msg {
    /// A message with these headers and payload.
    pub fn new(headers: Headers, payload: Bytes) -> Msg {
        Msg {
            headers,
            payload,
            doc: None,
            received: None,
        }
    }

    /// The headers and payload, with JSON changes written back.
    pub fn into_parts(mut self) -> (Headers, Bytes) {
        self.flush();
        (self.headers, self.payload)
    }

    /// The payload as it stands (JSON changes written back first).
    pub fn payload(&mut self) -> &Bytes {
        self.flush();
        &self.payload
    }

    /// Replaces the whole payload.
    pub fn set_payload(&mut self, payload: Bytes) {
        self.doc = None;
        self.payload = payload;
    }

    fn flush(&mut self) {
        if let Some(doc) = self.doc.take() {
            // Serialising a map of JSON values cannot fail.
            let v = serde_json::to_vec(&doc).unwrap_or_default();
            self.payload = Bytes::from(v);
        }
    }

    /// The broker's receive time: the first time a mutator asks for it.
    pub fn received(&mut self) -> SystemTime {
        *self.received.get_or_insert_with(SystemTime::now)
    }

    /// The payload as a mutable JSON object, parsed on first use; `None` if the payload
    /// is not a JSON object.
    pub fn json_mut(&mut self) -> Option<&mut Map<String, Value>> {
        if self.doc.is_none() {
            match serde_json::from_slice::<Value>(&self.payload) {
                Ok(Value::Object(m)) => self.doc = Some(m),
                _ => return None,
            }
        }
        self.doc.as_mut()
    }

    /// Reads the value at `path` as a number. See [`Path`] for what each form reads.
    pub fn number(&self, p: &Path) -> Lookup<f64> {
        match p {
            Path::Payload => match self.doc {
                Some(_) => Lookup::NotNumber,
                None => parse_number(&self.payload),
            },
            Path::Header(name) => match self.headers.get(name) {
                Some(v) => parse_number(v.as_bytes()),
                None => Lookup::Missing,
            },
            Path::Json(tokens) => match &self.doc {
                Some(doc) => match path::pointer(doc, tokens) {
                    Some(Value::Number(n)) => n.as_f64().map_or(Lookup::NotNumber, Lookup::Found),
                    Some(_) => Lookup::NotNumber,
                    None => Lookup::Missing,
                },
                None => match path::scan(&self.payload, tokens) {
                    Ok(Some(raw)) => parse_number(raw),
                    Ok(None) => Lookup::Missing,
                    Err(()) => Lookup::BadJson,
                },
            },
        }
    }

    /// Reads the value at `path` as text (a JSON string's contents, a number's digits,
    /// `true`/`false`), for use as a lookup key.
    pub fn text(&self, p: &Path) -> Lookup<String> {
        match p {
            Path::Payload => match std::str::from_utf8(&self.payload) {
                Ok(s) if self.doc.is_none() => Lookup::Found(s.trim().to_owned()),
                _ => Lookup::NotNumber,
            },
            Path::Header(name) => match self.headers.get(name) {
                Some(v) => Lookup::Found(v.to_owned()),
                None => Lookup::Missing,
            },
            Path::Json(tokens) => {
                let v = match &self.doc {
                    Some(doc) => path::pointer(doc, tokens).cloned(),
                    None => match path::scan(&self.payload, tokens) {
                        Ok(Some(raw)) => serde_json::from_slice(raw).ok(),
                        Ok(None) => None,
                        Err(()) => return Lookup::BadJson,
                    },
                };
                match v {
                    Some(Value::String(s)) => Lookup::Found(s),
                    Some(Value::Number(n)) => Lookup::Found(n.to_string()),
                    Some(Value::Bool(b)) => Lookup::Found(b.to_string()),
                    Some(_) => Lookup::NotNumber,
                    None => Lookup::Missing,
                }
            }
        }
    }
}

/// The outcome of reading a value from a message.
#[derive(Debug, Clone, PartialEq)]
pub enum Lookup<T> {
    /// The value.
    Found(T),
    /// No such header or field.
    Missing,
    /// There, but not of the wanted kind (not a number, or not a scalar).
    NotNumber,
    /// A JSON pointer was given but the payload is not a JSON object or array.
    BadJson,
}

fn parse_number(b: &[u8]) -> Lookup<f64> {
    match std::str::from_utf8(b)
        .ok()
        .and_then(|s| s.trim().parse::<f64>().ok())
    {
        Some(v) if v.is_finite() => Lookup::Found(v),
        _ => Lookup::NotNumber,
    }
}

/// What chains may refer to: the enrichment databases the broker's config file
/// declares. A client can name one of these, never a path.
#[derive(Default)]
pub struct Env {
    databases: HashMap<String, Arc<Database>>,
}

impl Env {
    /// An environment with these databases (name → file).
    pub fn new(databases: &HashMap<String, PathBuf>) -> Env {
        Env {
            databases: databases
                .iter()
                .map(|(n, p)| (n.clone(), Arc::new(Database::new(n, p.clone()))))
                .collect(),
        }
    }

    fn database(&self, name: &str) -> Option<Arc<Database>> {
        self.databases.get(name).cloned()
    }

    fn database_names(&self) -> String {
        let mut v: Vec<&str> = self.databases.keys().map(String::as_str).collect();
        v.sort_unstable();
        if v.is_empty() {
            "none are declared".to_owned()
        } else {
            format!("declared: {}", v.join(", "))
        }
    }
}

/// A chain that does not parse or cannot be built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainError {
    /// 1-based character column in the chain text where the problem is.
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ChainError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at column {}: {}", self.column, self.message)
    }
}

impl std::error::Error for ChainError {}

/// Mutators in order, with the text they were parsed from.
pub struct Chain {
    text: String,
    steps: Vec<Box<dyn Mutator>>,
}

impl fmt::Debug for Chain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Chain").field("text", &self.text).finish()
    }
}

impl Chain {
    /// Parses `text` and builds its mutators; `enrich` may name only `env`'s databases.
    /// Blank text is an empty chain.
    pub fn parse(text: &str, env: &Env) -> Result<Chain, ChainError> {
        let specs = grammar::parse(text)?;
        let mut steps = Vec::with_capacity(specs.len());
        for (col, spec) in specs {
            steps.push(build(spec, env).map_err(|message| ChainError {
                column: col,
                message,
            })?);
        }
        Ok(Chain {
            text: text.trim().to_owned(),
            steps,
        })
    }

    /// The chain's text as it was given (trimmed).
    pub fn text(&self) -> &str {
        &self.text
    }

    /// How many mutators.
    pub fn len(&self) -> usize {
        self.steps.len()
    }

    /// No mutators.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// Runs every mutator in order; stops at the first that drops the message.
    pub async fn run(&self, msg: &mut Msg) -> Verdict {
        for m in &self.steps {
            let v = match m.apply(msg) {
                Step::Done(v) => v,
                Step::Wait(p) => {
                    let finish = p.await;
                    finish(msg)
                }
            };
            if v == Verdict::Drop {
                return Verdict::Drop;
            }
        }
        Verdict::Keep
    }
}

fn build(spec: grammar::Spec, env: &Env) -> Result<Box<dyn Mutator>, String> {
    use grammar::Spec;
    Ok(match spec {
        Spec::Threshold { path, test } => Box::new(threshold::Threshold::new(path, test)),
        Spec::Sample { every } => Box::new(sample::Sample::new(every)),
        Spec::Set(assignments) => Box::new(set::Set::new(assignments)?),
        Spec::Remove(paths) => Box::new(set::Remove::new(paths)?),
        Spec::Enrich(opts) => Box::new(enrich::Enrich::build(opts, env)?),
    })
}

/// Runs `chain` on a broker message in place.
pub(crate) async fn run_on(chain: &Chain, msg: &mut crate::message::Message) -> Verdict {
    let mut m = Msg::new(
        std::mem::take(&mut msg.headers),
        std::mem::take(&mut msg.payload),
    );
    let v = chain.run(&mut m).await;
    (msg.headers, msg.payload) = m.into_parts();
    v
}

/// A destination's chain, as its handle holds it. The flag is checked first so a
/// destination without a chain pays one relaxed load per publish and no lock.
#[derive(Default)]
pub(crate) struct ChainSlot {
    has: AtomicBool,
    chain: RwLock<Option<Arc<Chain>>>,
    /// Messages the chain dropped (`STATS` field `filtered`).
    pub filtered: AtomicU64,
}

impl ChainSlot {
    /// Whether a chain is attached (a cheap look, for the publish fast path).
    #[inline]
    pub fn is_set(&self) -> bool {
        self.has.load(Relaxed)
    }

    /// The chain, if one is attached.
    #[inline]
    pub fn get(&self) -> Option<Arc<Chain>> {
        if !self.has.load(Relaxed) {
            return None;
        }
        match self.chain.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Attaches (or with `None`, removes) the chain. Publishes already running the old
    /// chain finish with it.
    pub fn set(&self, chain: Option<Arc<Chain>>) {
        let mut g = match self.chain.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        self.has
            .store(chain.as_ref().is_some_and(|c| !c.is_empty()), Relaxed);
        *g = chain;
    }

    /// Counts a message the chain dropped.
    pub fn count_filtered(&self) {
        self.filtered.fetch_add(1, Relaxed);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Runs a chain to completion on a message.
    pub fn run(
        chain: &Chain,
        headers: &[(&str, &str)],
        payload: &str,
    ) -> Option<(Headers, String)> {
        let mut h = Headers::new();
        for (k, v) in headers {
            h.insert(k, v).unwrap();
        }
        let mut m = Msg::new(h, Bytes::copy_from_slice(payload.as_bytes()));
        match futures_lite::future::block_on(chain.run(&mut m)) {
            Verdict::Drop => None,
            Verdict::Keep => {
                let (h, p) = m.into_parts();
                Some((h, String::from_utf8(p.to_vec()).unwrap()))
            }
        }
    }

    pub fn chain(text: &str) -> Chain {
        Chain::parse(text, &Env::default()).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn empty_chain_keeps_everything_and_has_no_flag() {
        let c = chain("   ");
        assert!(c.is_empty());
        assert_eq!(run(&c, &[], "x").unwrap().1, "x");
        let slot = ChainSlot::default();
        slot.set(Some(Arc::new(c)));
        assert!(slot.get().is_none());
        slot.set(Some(Arc::new(chain("sample 2"))));
        assert!(slot.get().is_some());
        slot.set(None);
        assert!(slot.get().is_none());
    }

    #[test]
    fn json_is_parsed_once_and_written_back_once() {
        let c = chain("set /a=1 | set /b=\"x\" | remove /c");
        let (_, p) = run(&c, &[], r#"{"c":true,"d":[1,2]}"#).unwrap();
        let v: Value = serde_json::from_str(&p).unwrap();
        assert_eq!(v, serde_json::json!({"a":1,"b":"x","d":[1,2]}));
    }

    #[test]
    fn order_matters() {
        // Stamping before the filter: the filter sees the stamped value.
        let a = chain("set /temp=50 | threshold /temp > 30");
        let b = chain("threshold /temp > 30 | set /temp=50");
        assert!(run(&a, &[], r#"{"temp":10}"#).is_some());
        assert!(run(&b, &[], r#"{"temp":10}"#).is_none());
    }

    #[test]
    fn number_reads_each_path_form() {
        let mut h = Headers::new();
        h.insert("level", "7").unwrap();
        let m = Msg::new(h, Bytes::from_static(b" 42.5 "));
        assert_eq!(m.number(&Path::Payload), Lookup::Found(42.5));
        assert_eq!(m.number(&Path::Header("LEVEL".into())), Lookup::Found(7.0));
        assert_eq!(m.number(&Path::Header("x".into())), Lookup::Missing);
        assert_eq!(m.number(&Path::Json(vec!["t".into()])), Lookup::BadJson);
        let m = Msg::new(
            Headers::new(),
            Bytes::from_static(br#"{"s":{"t":-3e2},"n":"x"}"#),
        );
        assert_eq!(
            m.number(&Path::Json(vec!["s".into(), "t".into()])),
            Lookup::Found(-300.0)
        );
        assert_eq!(m.number(&Path::Json(vec!["n".into()])), Lookup::NotNumber);
        assert_eq!(m.number(&Path::Json(vec!["q".into()])), Lookup::Missing);
        assert_eq!(m.number(&Path::Payload), Lookup::NotNumber);
    }
}
