//! Every server's version, as the server itself or its installation gives it: for
//! results.json, the results page, and a note beside the rows of a release that is out
//! of upstream support.

use std::path::Path;

use serde::Serialize;

use crate::server::Bins;
use crate::System;

/// One server program and the systems of the run it serves.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Version {
    /// The program: `agora`, `nats-server`, `redis-server`, `rabbitmq-server`.
    pub(crate) server: &'static str,
    /// The systems of this run it serves.
    pub(crate) systems: Vec<&'static str>,
    /// Where it is, when it was found.
    pub(crate) path: Option<String>,
    /// What it says its version is (its first line), or why there is none.
    pub(crate) version: String,
    /// What a reader must know beside its rows.
    pub(crate) note: Option<String>,
}

impl Version {
    /// `server (systems): version`, and the note in `open`/`close` (`" (", ")"`, say).
    pub(crate) fn describe(&self, open: &str, close: &str) -> String {
        let note = self
            .note
            .as_deref()
            .map(|n| format!("{open}{n}{close}"))
            .unwrap_or_default();
        format!(
            "{} ({}): {}{note}",
            self.server,
            self.systems.join(", "),
            self.version
        )
    }
}

/// The first line a program prints (stdout, else stderr) when run with `args`.
pub(super) fn first_line(program: &Path, args: &[&str]) -> Option<String> {
    let out = std::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let text = if text.is_empty() {
        String::from_utf8_lossy(&out.stderr).trim().to_owned()
    } else {
        text
    };
    text.lines().next().map(str::to_owned)
}

/// RabbitMQ's version from its installation: its start-up script finds the server in
/// `../lib/rabbitmq_server-<version>`. Asking a tool instead (`rabbitmqctl version`)
/// starts an Erlang port mapper that outlives it.
fn rabbitmq_version(script: &Path) -> Option<String> {
    let lib = script.parent()?.parent()?.join("lib");
    let mut found: Vec<String> = std::fs::read_dir(lib)
        .ok()?
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_prefix("rabbitmq_server-")
                .map(str::to_owned)
        })
        .collect();
    found.sort();
    found.pop()
}

/// Whether a RabbitMQ release is out of upstream support: the 3.x series before 3.13
/// (3.12's community support ended in 2024; Debian 12 ships 3.10).
fn rabbitmq_unsupported(version: &str) -> bool {
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    major < 3 || (major == 3 && minor < 13)
}

/// The servers of `systems`, each with its version.
pub(crate) fn versions(bins: &Bins, systems: &[System]) -> Vec<Version> {
    use System::*;
    let of = |these: &[System]| -> Vec<&'static str> {
        these
            .iter()
            .filter(|s| systems.contains(s))
            .map(|s| s.name())
            .collect()
    };
    let asked = |bin: Option<&Path>, args: &[&str]| match bin {
        None => (None, "not found".to_owned()),
        Some(b) => (
            Some(b.display().to_string()),
            first_line(b, args).unwrap_or_else(|| "did not say".into()),
        ),
    };
    let mut out = Vec::new();
    let mut add = |server, systems: Vec<&'static str>, (path, version), note| {
        if !systems.is_empty() {
            out.push(Version {
                server,
                systems,
                path,
                version,
                note,
            });
        }
    };
    add(
        "agora",
        of(&[
            Agora,
            AgoraLean,
            AgoraLeanHttp,
            AgoraLeanTls,
            AgoraDurable,
            AgoraDurableEvery,
            AgoraCluster,
        ]),
        asked(Some(&bins.agora), &["--version"]),
        None,
    );
    add(
        "nats-server",
        of(&[Nats, NatsLean, NatsLeanTls]),
        asked(bins.nats.as_deref(), &["--version"]),
        None,
    );
    add(
        "nats-server",
        of(&[Jetstream, JetstreamDefault, JetstreamCluster]),
        asked(bins.jetstream.as_deref(), &["--version"]),
        None,
    );
    add(
        "redis-server",
        of(&[Redis, RedisLean]),
        asked(bins.redis.as_deref(), &["--version"]),
        None,
    );
    let rabbit = bins.rabbitmq.as_deref();
    let version = rabbit.and_then(rabbitmq_version);
    add(
        "rabbitmq-server",
        of(&[RabbitmqQuorum, RabbitmqClassic, RabbitmqCluster]),
        (
            rabbit.map(|p| p.display().to_string()),
            version.clone().unwrap_or_else(|| "not found".into()),
        ),
        version
            .filter(|v| rabbitmq_unsupported(v))
            .map(|v| format!("RabbitMQ {v}: out of upstream support")),
    );
    out
}

/// What to print beside `system`'s rows, if anything.
pub(crate) fn note_for(versions: &[Version], system: System) -> Option<&str> {
    versions
        .iter()
        .find(|v| v.systems.contains(&system.name()))
        .and_then(|v| v.note.as_deref())
}

#[cfg(test)]
mod tests {
    #[test]
    fn rabbitmq_support() {
        assert!(super::rabbitmq_unsupported("3.10.8"));
        assert!(super::rabbitmq_unsupported("3.12.14"));
        assert!(!super::rabbitmq_unsupported("3.13.7"));
        assert!(!super::rabbitmq_unsupported("4.1.0"));
    }
}
