//! `enrich db=NAME table=T key=PATH [column=C] [into=json|header|/ptr] [missing=pass|drop]
//! [error=pass|drop] [ttl=60s] [cache=10000] [timeout=250ms]`: looks the message's key up
//! in a SQLite table and merges the matching row into the message.
//!
//! - `db` names a database the broker's config file declares; a chain never carries a
//!   path, so a client cannot make the broker open a file of its choosing.
//! - The row is the first of `SELECT * FROM "T" WHERE "C" = key`; its columns other
//!   than `C` become JSON fields (`into=json`: top level; `into=/ptr`: an object at that
//!   pointer) or headers (`into=header`). `column` defaults to the key path's last name
//!   (`key=/site` → `site`); `into` defaults to `json` for a JSON key, else `header`.
//! - Answers (rows and missing rows) are cached per mutator for `ttl`, at most `cache`
//!   keys, oldest first out; errors are cached for at most one second, so a broken
//!   database is not hit per message either.
//! - A cache miss never blocks the executor: the lookup runs on the `blocking` thread
//!   pool and the publish waits at most `timeout` for it (only that publisher waits).
//! - Policies: no key in the message or no row → `missing` (default `pass`: unchanged);
//!   an error (the file cannot be opened, no such table, timeout) → `error` (default
//!   `pass`). `drop` drops the message instead (counted as filtered).

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};
use serde_json::{Map, Value};

use super::{path, Env, Finish, Lookup, Msg, Mutator, Path, Step, Verdict};

/// Errors are remembered at most this long, so a broken database is retried soon.
const ERROR_TTL: Duration = Duration::from_secs(1);
/// Connections kept open per database between lookups.
const IDLE_CONNECTIONS: usize = 4;

/// A SQLite file the config file declares under a name. Opened read-only, lazily, on
/// the blocking pool; a few connections are kept for reuse.
pub struct Database {
    name: String,
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

/// A row: column names and values, in the table's column order.
type Row = Vec<(String, Value)>;

/// A row as the cache keeps it: the columns, and the header block `into=header` adds,
/// built once per lookup so a cache hit on a message without headers costs no
/// allocation (headers are shared, copy on write).
struct Found {
    row: Row,
    headers: agora_protocol::Headers,
}

impl Found {
    /// `key_column` is not merged (the message has it already).
    fn new(row: Row, key_column: &str) -> Found {
        let mut headers = agora_protocol::Headers::new();
        for (c, v) in row
            .iter()
            .filter(|(c, _)| !c.eq_ignore_ascii_case(key_column))
        {
            let text = match v {
                Value::Null => continue,
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            // Columns that cannot be headers (odd names, line breaks) are skipped.
            let _ = headers.insert(c, &text);
        }
        Found { row, headers }
    }
}

impl Database {
    /// A database called `name` at `path` (not opened yet).
    pub fn new(name: &str, path: PathBuf) -> Database {
        Database {
            name: name.to_owned(),
            path,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Looks `key` up. Blocks: call it on the blocking pool.
    fn lookup(&self, table: &str, column: &str, key: &str) -> Result<Option<Row>, String> {
        let conn = self.idle.lock().ok().and_then(|mut v| v.pop());
        let conn = match conn {
            Some(c) => c,
            None => Connection::open_with_flags(
                &self.path,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
            .map_err(|e| format!("database {} ({}): {e}", self.name, self.path.display()))?,
        };
        let row =
            query(&conn, table, column, key).map_err(|e| format!("database {}: {e}", self.name))?;
        if let Ok(mut v) = self.idle.lock() {
            if v.len() < IDLE_CONNECTIONS {
                v.push(conn);
            }
        }
        Ok(row)
    }
}

fn query(conn: &Connection, table: &str, column: &str, key: &str) -> rusqlite::Result<Option<Row>> {
    // Names are checked identifiers (see `ident`), so quoting them is enough.
    let sql = format!("SELECT * FROM \"{table}\" WHERE \"{column}\" = ?1 LIMIT 1");
    let mut stmt = conn.prepare_cached(&sql)?;
    let names: Vec<String> = stmt.column_names().iter().map(|s| s.to_string()).collect();
    let mut rows = stmt.query([key])?;
    let Some(r) = rows.next()? else {
        return Ok(None);
    };
    let mut row = Vec::with_capacity(names.len());
    for (i, n) in names.into_iter().enumerate() {
        let v = match r.get_ref(i)? {
            ValueRef::Null => Value::Null,
            ValueRef::Integer(x) => Value::from(x),
            ValueRef::Real(x) => serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number),
            ValueRef::Text(t) => Value::String(String::from_utf8_lossy(t).into_owned()),
            ValueRef::Blob(_) => continue,
        };
        row.push((n, v));
    }
    Ok(Some(row))
}

/// What a lookup found, as cached.
#[derive(Clone)]
enum Answer {
    Row(Arc<Found>),
    NoRow,
    Error(Arc<str>),
}

/// What happens to a message when the lookup finds nothing or fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Policy {
    Pass,
    Drop,
}

#[derive(Debug, Clone, PartialEq)]
enum Target {
    Json,
    At(Vec<String>),
    Header,
}

struct Cfg {
    db: Arc<Database>,
    table: String,
    column: String,
    key: Path,
    into: Target,
    missing: Policy,
    error: Policy,
    ttl: Duration,
    timeout: Duration,
}

/// Bounded cache of answers by key: first in, first out, each with its own expiry.
struct Cache {
    map: HashMap<String, (Instant, Answer)>,
    order: VecDeque<String>,
    cap: usize,
}

impl Cache {
    fn get(&self, key: &str, now: Instant) -> Option<Answer> {
        match self.map.get(key) {
            Some((until, a)) if *until > now => Some(a.clone()),
            _ => None,
        }
    }

    fn insert(&mut self, key: String, a: Answer, until: Instant) {
        if let Some(e) = self.map.get_mut(&key) {
            *e = (until, a);
            return;
        }
        while self.map.len() >= self.cap {
            match self.order.pop_front() {
                Some(old) => {
                    self.map.remove(&old);
                }
                None => break,
            }
        }
        self.order.push_back(key.clone());
        self.map.insert(key, (until, a));
    }
}

pub(super) struct Enrich {
    cfg: Arc<Cfg>,
    cache: Arc<Mutex<Cache>>,
}

/// `name = ALPHA / "_" *( ALPHA / DIGIT / "_" )`: what may be quoted into SQL.
fn ident(what: &str, s: &str) -> Result<String, String> {
    let mut c = s.chars();
    let ok = c
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && c.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "enrich: {what} '{s}' must be letters, digits and '_' (not starting with a digit)"
        ))
    }
}

/// `duration = 1*DIGIT ("ms" / "s" / "m" / "h")`
pub(crate) fn duration(s: &str) -> Option<Duration> {
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().ok()?;
    Some(match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.checked_mul(60)?),
        "h" => Duration::from_secs(n.checked_mul(3600)?),
        _ => return None,
    })
}

fn policy(name: &str, v: &str) -> Result<Policy, String> {
    match v {
        "pass" => Ok(Policy::Pass),
        "drop" => Ok(Policy::Drop),
        _ => Err(format!("enrich: {name} must be pass or drop, not '{v}'")),
    }
}

impl Enrich {
    pub fn build(opts: Vec<(String, String)>, env: &Env) -> Result<Enrich, String> {
        let mut o: HashMap<String, String> = HashMap::new();
        for (k, v) in opts {
            if o.insert(k.clone(), v).is_some() {
                return Err(format!("enrich: option '{k}' is given twice"));
            }
        }
        let mut take = |k: &str| o.remove(k);
        let need = |v: Option<String>, k: &str| {
            v.ok_or_else(|| format!("enrich needs {k}= (enrich db=NAME table=T key=PATH)"))
        };
        let db_name = need(take("db"), "db")?;
        let db = env.database(&db_name).ok_or_else(|| {
            format!(
                "enrich: no database '{db_name}' is declared in the broker's config file ({})",
                env.database_names()
            )
        })?;
        let table = ident("table", &need(take("table"), "table")?)?;
        let key_text = need(take("key"), "key")?;
        let key = match super::grammar::path(&key_text) {
            Ok(("", p)) => p,
            _ => {
                return Err(format!(
                    "enrich: key '{key_text}' must be '.', header:NAME or a JSON pointer"
                ))
            }
        };
        let column = match take("column") {
            Some(c) => ident("column", &c)?,
            None => match key.leaf() {
                Some(l) => ident("column (from the key's name; give column=)", l)?,
                None => return Err("enrich: key=. needs column=".to_owned()),
            },
        };
        let into = match take("into").as_deref() {
            None => match key {
                Path::Json(_) => Target::Json,
                _ => Target::Header,
            },
            Some("json") => Target::Json,
            Some("header") => Target::Header,
            Some(p) => match path::pointer_tokens(p) {
                Some(t) => Target::At(t),
                None => {
                    return Err(format!(
                        "enrich: into must be json, header or a JSON pointer, not '{p}'"
                    ))
                }
            },
        };
        let missing = take("missing").map_or(Ok(Policy::Pass), |v| policy("missing", &v))?;
        let error = take("error").map_or(Ok(Policy::Pass), |v| policy("error", &v))?;
        let dur = |k: &str, v: Option<String>, d: Duration| match v {
            None => Ok(d),
            Some(v) => duration(&v).filter(|d| !d.is_zero()).ok_or_else(|| {
                format!("enrich: {k} must be a duration like 250ms, 30s or 5m, not '{v}'")
            }),
        };
        let ttl = dur("ttl", take("ttl"), Duration::from_secs(60))?;
        let timeout = dur("timeout", take("timeout"), Duration::from_millis(250))?;
        let cap = match take("cache") {
            None => 10_000,
            Some(v) => v
                .parse::<usize>()
                .ok()
                .filter(|n| *n >= 1)
                .ok_or_else(|| format!("enrich: cache must be a count from 1 up, not '{v}'"))?,
        };
        if let Some(k) = o.keys().min() {
            return Err(format!(
                "enrich: unknown option '{k}' (known: db, table, key, column, into, missing, error, ttl, cache, timeout)"
            ));
        }
        Ok(Enrich {
            cfg: Arc::new(Cfg {
                db,
                table,
                column,
                key,
                into,
                missing,
                error,
                ttl,
                timeout,
            }),
            cache: Arc::new(Mutex::new(Cache {
                map: HashMap::new(),
                order: VecDeque::new(),
                cap,
            })),
        })
    }
}

impl Cfg {
    fn verdict(p: Policy) -> Verdict {
        match p {
            Policy::Pass => Verdict::Keep,
            Policy::Drop => Verdict::Drop,
        }
    }

    fn finish(&self, a: &Answer, msg: &mut Msg) -> Verdict {
        match a {
            Answer::Row(r) => {
                self.merge(r, msg);
                Verdict::Keep
            }
            Answer::NoRow => Self::verdict(self.missing),
            Answer::Error(_) => Self::verdict(self.error),
        }
    }

    fn merge(&self, found: &Found, msg: &mut Msg) {
        let cols = found
            .row
            .iter()
            .filter(|(c, _)| !c.eq_ignore_ascii_case(&self.column));
        match &self.into {
            Target::Header if msg.headers.is_empty() => msg.headers = found.headers.clone(),
            Target::Header => {
                for (c, v) in found.headers.iter() {
                    let _ = msg.headers.insert(c, v);
                }
            }
            Target::Json => {
                if let Some(doc) = msg.json_mut() {
                    for (c, v) in cols {
                        doc.insert(c.clone(), v.clone());
                    }
                }
            }
            Target::At(tokens) => {
                let obj: Map<String, Value> = cols.map(|(c, v)| (c.clone(), v.clone())).collect();
                if let Some(doc) = msg.json_mut() {
                    path::set(doc, tokens, Value::Object(obj));
                }
            }
        }
    }
}

impl Mutator for Enrich {
    fn apply(&self, msg: &mut Msg) -> Step {
        let cfg = &self.cfg;
        let key = match msg.text(&cfg.key) {
            Lookup::Found(k) => k,
            _ => return Cfg::verdict(cfg.missing).into(),
        };
        let cached = match self.cache.lock() {
            Ok(c) => c.get(&key, Instant::now()),
            Err(_) => None,
        };
        if let Some(a) = cached {
            return cfg.finish(&a, msg).into();
        }
        let cfg = self.cfg.clone();
        let cache = self.cache.clone();
        Step::Wait(Box::pin(async move {
            let (db, table, column, k) = (
                cfg.db.clone(),
                cfg.table.clone(),
                cfg.column.clone(),
                key.clone(),
            );
            let column_for_row = column.clone();
            let lookup = async move {
                match blocking::unblock(move || db.lookup(&table, &column, &k)).await {
                    Ok(Some(r)) => Answer::Row(Arc::new(Found::new(r, &column_for_row))),
                    Ok(None) => Answer::NoRow,
                    Err(e) => Answer::Error(e.into()),
                }
            };
            let timeout = cfg.timeout;
            let answer = futures_lite::future::or(lookup, async move {
                smol::Timer::after(timeout).await;
                Answer::Error(format!("lookup timed out after {timeout:?}").into())
            })
            .await;
            let ttl = match &answer {
                Answer::Error(e) => {
                    log::warn!("enrich: {e}; applying the error policy ({:?})", cfg.error);
                    cfg.ttl.min(ERROR_TTL)
                }
                _ => cfg.ttl,
            };
            if let Ok(mut c) = cache.lock() {
                c.insert(key, answer.clone(), Instant::now() + ttl);
            }
            Box::new(move |msg: &mut Msg| cfg.finish(&answer, msg)) as Finish
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::run;
    use super::super::{Chain, Env};
    use super::*;
    use serde_json::json;

    fn db() -> (tempfile::TempDir, Env) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("s.db");
        let c = Connection::open(&file).unwrap();
        c.execute_batch(
            "CREATE TABLE sites (site TEXT PRIMARY KEY, city TEXT, alt REAL, floor INTEGER, note TEXT);
             INSERT INTO sites VALUES ('a', 'Oslo', 12.5, 3, NULL);
             CREATE TABLE nums (id INTEGER PRIMARY KEY, name TEXT);
             INSERT INTO nums VALUES (7, 'seven');",
        )
        .unwrap();
        let mut m = HashMap::new();
        m.insert("sensors".to_owned(), file);
        m.insert("gone".to_owned(), dir.path().join("missing.db"));
        (dir, Env::new(&m))
    }

    fn chain(text: &str, env: &Env) -> Chain {
        Chain::parse(text, env).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn merges_the_row_as_json_fields() {
        let (_d, env) = db();
        let c = chain("enrich db=sensors table=sites key=/site", &env);
        let (_, p) = run(&c, &[], r#"{"site":"a","t":1}"#).unwrap();
        let v: Value = serde_json::from_str(&p).unwrap();
        assert_eq!(
            v,
            json!({"site":"a","t":1,"city":"Oslo","alt":12.5,"floor":3,"note":null})
        );
        // Cached now: the same answer without the database.
        let (_, p2) = run(&c, &[], r#"{"site":"a","t":1}"#).unwrap();
        assert_eq!(p, p2);
    }

    #[test]
    fn merges_as_headers_or_under_a_pointer() {
        let (_d, env) = db();
        let c = chain("enrich db=sensors table=sites key=header:site", &env);
        let (h, p) = run(&c, &[("site", "a")], "raw").unwrap();
        assert_eq!(p, "raw");
        assert_eq!(h.get("city"), Some("Oslo"));
        assert_eq!(h.get("floor"), Some("3"));
        assert_eq!(h.get("note"), None, "NULL is no header");
        let c = chain(
            "enrich db=sensors table=nums key=/n column=id into=/info",
            &env,
        );
        let (_, p) = run(&c, &[], r#"{"n":7}"#).unwrap();
        let v: Value = serde_json::from_str(&p).unwrap();
        assert_eq!(v, json!({"n":7,"info":{"name":"seven"}}));
    }

    #[test]
    fn missing_rows_and_keys_follow_the_missing_policy() {
        let (_d, env) = db();
        let pass = chain("enrich db=sensors table=sites key=/site", &env);
        let drop = chain("enrich db=sensors table=sites key=/site missing=drop", &env);
        for payload in [r#"{"site":"zz"}"#, r#"{"other":1}"#, "not json"] {
            assert_eq!(run(&pass, &[], payload).unwrap().1, payload);
            assert!(run(&drop, &[], payload).is_none(), "{payload}");
        }
    }

    #[test]
    fn errors_follow_the_error_policy() {
        let (_d, env) = db();
        let pass = chain("enrich db=gone table=sites key=/site", &env);
        let drop = chain("enrich db=gone table=sites key=/site error=drop", &env);
        assert_eq!(
            run(&pass, &[], r#"{"site":"a"}"#).unwrap().1,
            r#"{"site":"a"}"#
        );
        assert!(run(&drop, &[], r#"{"site":"a"}"#).is_none());
        let bad_table = chain("enrich db=sensors table=nope key=/site error=drop", &env);
        assert!(run(&bad_table, &[], r#"{"site":"a"}"#).is_none());
    }

    #[test]
    fn refuses_undeclared_databases_and_bad_options() {
        let (_d, env) = db();
        let e = |t: &str| Chain::parse(t, &env).unwrap_err().message;
        assert!(e("enrich db=/etc/passwd table=t key=/k").contains("no database '/etc/passwd'"));
        assert!(e("enrich db=x table=t key=/k").contains("declared: gone, sensors"));
        assert!(e("enrich table=t key=/k").contains("needs db="));
        assert!(e("enrich db=sensors table=\"a b\" key=/k").contains("table 'a b'"));
        assert!(e("enrich db=sensors table=t key=. ").contains("needs column="));
        assert!(e("enrich db=sensors table=t key=/k missing=maybe").contains("pass or drop"));
        assert!(e("enrich db=sensors table=t key=/k ttl=10").contains("duration"));
        assert!(
            e("enrich db=sensors table=t key=/k colour=red").contains("unknown option 'colour'")
        );
        assert!(e("enrich db=sensors table=t key=/k db=x").contains("twice"));
        let none = Env::default();
        let m = Chain::parse("enrich db=a table=t key=/k", &none)
            .unwrap_err()
            .message;
        assert!(m.contains("none are declared"), "{m}");
    }

    #[test]
    fn the_cache_is_bounded_first_in_first_out() {
        let mut c = Cache {
            map: HashMap::new(),
            order: VecDeque::new(),
            cap: 2,
        };
        let now = Instant::now();
        let later = now + Duration::from_secs(10);
        c.insert("a".into(), Answer::NoRow, later);
        c.insert("b".into(), Answer::NoRow, later);
        c.insert("a".into(), Answer::NoRow, later);
        c.insert("c".into(), Answer::NoRow, later);
        assert!(c.get("a", now).is_none());
        assert!(c.get("b", now).is_some());
        assert!(c.get("c", now).is_some());
        assert!(c.get("c", later).is_none(), "expired");
        assert_eq!(c.map.len(), 2);
        assert_eq!(c.order.len(), 2);
    }
}
