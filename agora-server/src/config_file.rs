//! The broker's config file (`agora --config FILE`, TOML): broker settings,
//! destinations, their mutator chains and queue settings, and the enrichment databases
//! chains may name.
//!
//! ```toml
//! [broker]                     # any setting with a flag, by the flag's name with
//! max_payload = 4194304        # '_' for '-' (see the settings table); a flag or an
//! ack_timeout = "30s"          # AGORA_… variable overrides it
//!
//! [databases]                  # name = SQLite file (relative to this file)
//! sensors = "sensors.db"
//!
//! [queues.jobs]                # every key optional; unset ones take the broker's
//! max_messages = 10000         # defaults (flags, variables, [broker])
//! max_bytes = 67108864
//! max_deliveries = 5           # 0: never dead-letter
//! ttl = "10m"
//! ack_timeout = "30s"
//! dead_letter = "jobs.failed"
//! durable = true               # false: memory-only, whatever --data-dir says
//! memory_bytes = 8388608       # a durable queue's head kept in memory; the rest waits on disk
//! chain = "set header:seen=now"
//! bind = ["jobs.>"]             # topic names or patterns whose messages also go here
//!
//! [topics.telemetry]
//! chain = "threshold /temp > 30 | enrich db=sensors table=sites key=/site"
//!
//! [users.alice]                # with any user, every client must say who it is
//! password = "$argon2id$v=19$m=19456,t=2,p=1$…"   # from `agora passwd`
//! certificate = "CN=alice"     # or: its TLS client certificate's subject
//! publish = ["queue:jobs", "topic:sensors.>"]
//! subscribe = ["queue:jobs"]
//! admin = false                # purge, delete, chains, $sys.metrics, all of STATS
//! ```
//!
//! Everything is checked before the broker listens: an unknown key, a bad name, a
//! chain that does not parse or names an undeclared database stops it with an error
//! naming the file, the entry and the problem. This module reads the file and applies
//! the destination tables; the `[broker]` values are given their place among flags,
//! variables and defaults by [`crate::settings`], which also checks them.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use agora_protocol::Destination;
use serde::Deserialize;

use crate::config::{Config, QueueSettings};
use crate::mutators::{Chain, Env};

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    broker: toml::Table,
    #[serde(default)]
    databases: BTreeMap<String, PathBuf>,
    #[serde(default)]
    queues: BTreeMap<String, QueueEntry>,
    #[serde(default)]
    topics: BTreeMap<String, TopicEntry>,
    #[serde(default)]
    users: BTreeMap<String, UserEntry>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct UserEntry {
    password: Option<String>,
    certificate: Option<String>,
    #[serde(default)]
    publish: Vec<String>,
    #[serde(default)]
    subscribe: Vec<String>,
    #[serde(default)]
    admin: bool,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct QueueEntry {
    max_messages: Option<u64>,
    max_bytes: Option<u64>,
    max_deliveries: Option<u32>,
    ttl: Option<String>,
    ack_timeout: Option<String>,
    dead_letter: Option<String>,
    durable: Option<bool>,
    memory_bytes: Option<u64>,
    chain: Option<String>,
    bind: Option<Vec<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TopicEntry {
    chain: Option<String>,
}

/// Why a config file was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigFileError {
    /// The file.
    pub file: PathBuf,
    /// The entry at fault, e.g. `[queues.jobs] ttl`, `[broker] port` or `line 4`.
    pub entry: String,
    /// What is wrong with it.
    pub problem: String,
}

impl fmt::Display for ConfigFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {}: {}",
            self.file.display(),
            self.entry,
            self.problem
        )
    }
}

impl std::error::Error for ConfigFileError {}

/// A config file that has been read and parsed (every table has the right shape),
/// not yet applied.
pub struct ConfigFile {
    path: PathBuf,
    file: File,
}

impl ConfigFile {
    /// Reads and parses `path`.
    pub fn read(path: &Path) -> Result<ConfigFile, ConfigFileError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigFileError {
            file: path.to_owned(),
            entry: "the file".to_owned(),
            problem: e.to_string(),
        })?;
        ConfigFile::parse(path, &text)
    }

    /// Parses `text` as the file at `path` (which errors name, and whose directory
    /// relative paths start from).
    pub fn parse(path: &Path, text: &str) -> Result<ConfigFile, ConfigFileError> {
        let file = parse(text).map_err(|(entry, problem)| ConfigFileError {
            file: path.to_owned(),
            entry,
            problem,
        })?;
        Ok(ConfigFile {
            path: path.to_owned(),
            file,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The directory relative paths in the file start from.
    pub fn dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("."))
    }

    /// The `[broker]` table as written (checked by [`crate::settings::resolve`]).
    pub fn broker(&self) -> &toml::Table {
        &self.file.broker
    }

    /// An error about `entry` of this file.
    pub fn error(&self, entry: &str, problem: String) -> ConfigFileError {
        ConfigFileError {
            file: self.path.clone(),
            entry: entry.to_owned(),
            problem,
        }
    }

    /// Adds the databases, chains and queue settings the file declares to `config`,
    /// whose queue defaults fill the settings a queue entry leaves out.
    /// `durable`: the broker keeps queues in a data directory (queue limits then
    /// default to a durable queue's, unless the entry says `durable = false`).
    pub fn apply(&self, config: &mut Config, durable: bool) -> Result<(), ConfigFileError> {
        apply(&self.file, self.dir(), config, durable)
            .map_err(|(entry, problem)| self.error(&entry, problem))
    }
}

/// Parses a config file's text, naming the line of a syntax error.
fn parse(text: &str) -> Result<File, (String, String)> {
    toml::from_str(text).map_err(|e| {
        let entry = match e.span() {
            Some(s) => format!(
                "line {}",
                text.as_bytes()[..s.start.min(text.len())]
                    .iter()
                    .filter(|&&b| b == b'\n')
                    .count()
                    + 1
            ),
            None => "the file".to_owned(),
        };
        (entry, e.message().trim().to_owned())
    })
}

/// Applies a parsed file; relative database paths are taken from `dir`.
fn apply(f: &File, dir: &Path, config: &mut Config, durable: bool) -> Result<(), (String, String)> {
    for (name, path) in &f.databases {
        let entry = format!("[databases] {name}");
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err((
                entry,
                "a database name is letters, digits, '_' and '-'".to_owned(),
            ));
        }
        if path.as_os_str().is_empty() {
            return Err((entry, "the path is empty".to_owned()));
        }
        config.databases.insert(name.clone(), dir.join(path));
    }
    let env = Env::new(&config.databases);
    let mut chain = |dest: Destination, entry: &str, text: &Option<String>| {
        if let Some(t) = text {
            Chain::parse(t, &env).map_err(|e| (format!("{entry} chain"), e.to_string()))?;
            config.chains.insert(dest, t.clone());
        }
        Ok::<(), (String, String)>(())
    };
    let mut settings = Vec::new();
    for (name, q) in &f.queues {
        let entry = format!("[queues.{name}]");
        let dest = destination(Destination::queue(name), &entry)?;
        chain(dest, &entry, &q.chain)?;
        settings.push((name, q, entry));
    }
    for (name, t) in &f.topics {
        let entry = format!("[topics.{name}]");
        let dest = destination(Destination::topic(name), &entry)?;
        chain(dest, &entry, &t.chain)?;
    }
    for (name, q, entry) in settings {
        let mut s: QueueSettings = config.queue_settings(name);
        (s.max_messages, s.max_bytes) = config.queue_limits(durable && q.durable != Some(false));
        let positive = |k: &str, v: Option<u64>| match v {
            Some(0) => Err((format!("{entry} {k}"), "must be at least 1".to_owned())),
            Some(n) => Ok(Some(usize::try_from(n).unwrap_or(usize::MAX))),
            None => Ok(None),
        };
        if let Some(n) = positive("max_messages", q.max_messages)? {
            s.max_messages = n;
        }
        if let Some(n) = positive("max_bytes", q.max_bytes)? {
            s.max_bytes = n;
        }
        if let Some(n) = positive("memory_bytes", q.memory_bytes)? {
            s.memory_bytes = n;
        }
        if let Some(n) = q.max_deliveries {
            s.max_deliveries = n;
        }
        if let Some(d) = duration(&entry, "ttl", &q.ttl)? {
            s.ttl = Some(d);
        }
        if let Some(d) = duration(&entry, "ack_timeout", &q.ack_timeout)? {
            s.ack_timeout = Some(d);
        }
        if let Some(dl) = &q.dead_letter {
            destination(Destination::queue(dl), &format!("{entry} dead_letter"))?;
            s.dead_letter = Some(dl.clone());
        }
        if let Some(d) = q.durable {
            s.durable = d;
        }
        for p in q.bind.iter().flatten() {
            // `sensors.>` or `topic:sensors.>`: a topic name or pattern.
            let text = match p.starts_with("topic:") {
                true => p.clone(),
                false => format!("topic:{p}"),
            };
            // Not the broker's `$` names (its metrics, the inboxes), as BIND refuses them.
            let pattern = crate::auth::Pattern::parse(&text)
                .ok()
                .filter(|p| p.kind() == agora_protocol::Kind::Topic && !text[6..].starts_with('$'))
                .filter(|_| !text[6..].split('.').any(str::is_empty))
                .ok_or_else(|| {
                    let why = format!("'{p}' is not a topic name or pattern (e.g. sensors.*.temp)");
                    (format!("{entry} bind"), why)
                })?;
            config
                .bindings
                .push((Destination::queue(name).expect("checked above"), pattern));
        }
        config.queues.insert(name.clone(), s);
    }
    for (name, u) in &f.users {
        let entry = format!("[users.{name}]");
        let patterns = |key: &str, list: &[String]| {
            list.iter()
                .map(|p| crate::auth::Pattern::parse(p))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|why| (format!("{entry} {key}"), why))
        };
        let rights = crate::auth::Rights {
            publish: patterns("publish", &u.publish)?,
            subscribe: patterns("subscribe", &u.subscribe)?,
            admin: u.admin,
        };
        let user = crate::auth::User::new(
            name,
            u.password.as_deref(),
            u.certificate.as_deref(),
            rights,
        )
        .map_err(|why| (entry.clone(), why))?;
        config.users.insert(user).map_err(|why| (entry, why))?;
    }
    Ok(())
}

fn destination<E: fmt::Display>(
    d: Result<Destination, E>,
    entry: &str,
) -> Result<Destination, (String, String)> {
    let d = d.map_err(|e| (entry.to_owned(), format!("bad name: {e}")))?;
    if d.name.is_reserved() {
        return Err((entry.to_owned(), format!("{d} is reserved for the broker")));
    }
    Ok(d)
}

fn duration(
    entry: &str,
    key: &str,
    v: &Option<String>,
) -> Result<Option<Duration>, (String, String)> {
    match v {
        None => Ok(None),
        Some(s) => match crate::mutators::enrich::duration(s.trim()) {
            Some(d) if !d.is_zero() => Ok(Some(d)),
            _ => Err((
                format!("{entry} {key}"),
                format!("'{s}' is not a duration like 500ms, 30s, 5m or 1h (above zero)"),
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply_text(text: &str, config: &mut Config) -> Result<(), (String, String)> {
        apply(&parse(text)?, Path::new("/etc/agora"), config, false)
    }

    fn ok(text: &str) -> Config {
        let mut c = Config::default();
        apply_text(text, &mut c).unwrap_or_else(|e| panic!("{e:?}"));
        c
    }

    fn bad(text: &str) -> (String, String) {
        apply_text(text, &mut Config::default()).expect_err(text)
    }

    #[test]
    fn a_full_file() {
        let c = ok(r#"
            [databases]
            sensors = "sensors.db"
            abs = "/data/x.db"

            [queues.jobs]
            max_messages = 10
            ttl = "10m"
            ack_timeout = "30s"
            dead_letter = "jobs.failed"
            chain = "set header:seen=now"
            bind = ["jobs.>", "topic:orders.*.paid"]

            [queues.plain]

            [topics.telemetry]
            chain = "threshold /temp > 30 | enrich db=sensors table=sites key=/site"
        "#);
        assert_eq!(
            c.databases["sensors"],
            PathBuf::from("/etc/agora/sensors.db")
        );
        assert_eq!(c.databases["abs"], PathBuf::from("/data/x.db"));
        let j = &c.queues["jobs"];
        assert_eq!(j.max_messages, 10);
        assert_eq!(
            j.max_bytes,
            Config::default().queue_max_bytes,
            "defaults fill the rest"
        );
        assert_eq!(j.ttl, Some(Duration::from_secs(600)));
        assert_eq!(j.ack_timeout, Some(Duration::from_secs(30)));
        assert_eq!(j.dead_letter.as_deref(), Some("jobs.failed"));
        assert_eq!(c.queues["plain"], Config::default().queue_settings("plain"));
        let bound: Vec<String> = c.bindings.iter().map(|(q, p)| format!("{q} {p}")).collect();
        assert_eq!(
            bound,
            ["queue:jobs topic:jobs.>", "queue:jobs topic:orders.*.paid"]
        );
        assert_eq!(c.chains.len(), 2);
        assert_eq!(
            c.chains[&Destination::queue("jobs").unwrap()],
            "set header:seen=now"
        );
    }

    #[test]
    fn errors_name_the_entry_and_the_problem() {
        let (e, p) = bad("[queues.jobs]\nttl = \"soon\"\n");
        assert_eq!(e, "[queues.jobs] ttl");
        assert!(p.contains("'soon'"), "{p}");
        for pattern in ["queue:x", "a..b", "sens*", "$inbox.>", "topic:$sys.metrics"] {
            let (e, p) = bad(&format!("[queues.jobs]\nbind = [\"{pattern}\"]\n"));
            assert_eq!(e, "[queues.jobs] bind");
            assert!(p.contains(pattern), "{p}");
        }
        let (e, p) = bad("[topics.t]\nchain = \"threshold /x >> 1\"\n");
        assert_eq!(e, "[topics.t] chain");
        assert!(p.starts_with("at column"), "{p}");
        let (e, p) = bad("[topics.t]\nchain = \"enrich db=nope table=t key=/k\"\n");
        assert_eq!(e, "[topics.t] chain");
        assert!(p.contains("no database 'nope'"), "{p}");
        let (e, p) = bad("\n\n[queues.q]\ncolour = 1\n");
        assert_eq!(e, "line 4");
        assert!(p.contains("unknown field `colour`"), "{p}");
        let (e, p) = bad("[queues.q]\nmax_messages = 0\n");
        assert_eq!(e, "[queues.q] max_messages");
        assert!(p.contains("at least 1"));
        let (e, _) = bad("[queues.\"bad name\"]\n");
        assert_eq!(e, "[queues.bad name]");
        let (e, p) = bad("[topics.\"$sys.x\"]\n");
        assert!(p.contains("reserved"), "{e}: {p}");
        let (e, _) = bad("[databases]\n\"../x\" = \"a.db\"\n");
        assert_eq!(e, "[databases] ../x");
        let (e, _) = bad("[queues.q]\ndead_letter = \"has space\"\n");
        assert_eq!(e, "[queues.q] dead_letter");
        let (e, p) = bad("[queues]\nq = 3\n");
        assert_eq!(e, "line 2");
        assert!(!p.is_empty());
        let (e, p) = bad("[users.alice]\npublish = [\"queue:jobs\"]\n");
        assert_eq!(e, "[users.alice]");
        assert!(p.contains("agora passwd"), "{p}");
        let (e, p) = bad("[users.alice]\ncertificate = \"CN=a\"\npublish = [\"jobs\"]\n");
        assert_eq!(e, "[users.alice] publish");
        assert!(p.contains("queue: or topic:"), "{p}");
        let (e, p) = bad("[users.alice]\npassword = \"hunter2\"\n");
        assert_eq!(e, "[users.alice]");
        assert!(p.contains("not a hash"), "{p}");
    }

    #[test]
    fn users_and_their_rights() {
        let hash = crate::auth::hash_password("pw").unwrap();
        let c = ok(&format!(
            r#"
            [users.alice]
            password = "{hash}"
            publish = ["queue:jobs", "topic:sensors.>"]
            subscribe = ["queue:jobs"]

            [users.ops]
            certificate = "CN=ops,O=Acme"
            admin = true
        "#
        ));
        assert_eq!(c.users.len(), 2);
        assert!(c.users.has_passwords());
        let alice = c.users.get("alice").unwrap();
        assert!(alice
            .rights
            .may_publish(&"topic:sensors.x".parse().unwrap()));
        assert!(!alice.rights.admin);
        let ops = c.users.by_certificate("CN=ops,O=Acme").unwrap();
        assert!(ops.rights.admin);
    }
}
