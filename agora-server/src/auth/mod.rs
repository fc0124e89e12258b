//! Users and what they may do (`[users.<name>]` in the config file), and checking who a
//! client is: a password (`CONNECT user=… password=…`, argon2id hashes made by
//! `agora passwd`) or, with `--tls-client-ca`, the subject of its TLS certificate.
//!
//! The rules are plain values ([`Rights`], [`Pattern`]); the session applies them to
//! every request. Checking a password costs milliseconds and memory (argon2 is built
//! to), so it runs on a small pool of threads of its own ([`Verifier`]), never on the
//! executor: a flood of logins waits there, and other clients are served meanwhile.

mod passwd;
mod pattern;
mod subject;
mod verify;

pub use passwd::{hash_password, read_password};
pub use pattern::{Pattern, Token};
pub(crate) use subject::subject_of;
pub(crate) use verify::{delay_for, Denied, Verifier, FAILURE_WINDOW, POOL_THREADS};

use std::collections::BTreeMap;
use std::sync::Arc;

use agora_protocol::{Destination, Kind};

use crate::metrics::METRICS_TOPIC;

/// What a user may do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rights {
    /// Destinations it may publish to.
    pub publish: Vec<Pattern>,
    /// Destinations it may subscribe to (consume, for a queue).
    pub subscribe: Vec<Pattern>,
    /// Purge, delete and set or clear chains on any destination, subscribe to
    /// `topic:$sys.metrics`, and see every destination in `STATS`.
    pub admin: bool,
}

impl Rights {
    /// Whether it may publish to `dest`.
    pub fn may_publish(&self, dest: &Destination) -> bool {
        self.publish.iter().any(|p| p.matches(dest))
    }

    /// Whether it may subscribe to `dest`: one of its patterns names every destination
    /// the subscription can match. `topic:$sys.metrics` names every destination, so
    /// only admins may.
    pub fn may_subscribe(&self, dest: &Destination) -> bool {
        if dest.kind == Kind::Topic && dest.name.as_str() == METRICS_TOPIC {
            return self.admin;
        }
        let wanted = Pattern::of(dest);
        self.subscribe.iter().any(|p| p.covers(&wanted))
    }

    /// Whether `STATS` shows it `dest`: admins see everything, others what they may
    /// publish to or subscribe to.
    pub fn may_see(&self, dest: &Destination) -> bool {
        self.admin
            || self.publish.iter().any(|p| p.matches(dest))
            || self.subscribe.iter().any(|p| p.matches(dest))
    }
}

/// A user from the config file.
#[derive(Clone, PartialEq, Eq)]
pub struct User {
    /// Its name (`[users.<name>]`).
    pub name: String,
    /// Its argon2 hash (PHC string), if it may log in with a password.
    password: Option<String>,
    /// The subject (RFC 4514, normalised) of the client certificate that is this
    /// user, if any.
    certificate: Option<String>,
    /// What it may do.
    pub rights: Rights,
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("name", &self.name)
            .field("certificate", &self.certificate)
            .field("rights", &self.rights)
            .finish_non_exhaustive()
    }
}

impl User {
    /// The user a cluster link's sessions are (`crate::cluster`): it may publish and
    /// subscribe to every topic, and consume the replicated queues (`replicated`: a node
    /// whose clients consume one it does not lead does so on the leader), and nothing
    /// else; no client can log in as it.
    pub(crate) fn cluster(node: u64, replicated: &[Pattern]) -> User {
        let all = || vec![Pattern::parse("topic:>").expect("a valid pattern")];
        let mut subscribe = all();
        subscribe.extend(replicated.iter().cloned());
        User {
            name: format!("cluster.node-{node}"),
            password: None,
            certificate: None,
            rights: Rights {
                publish: all(),
                subscribe,
                admin: false,
            },
        }
    }

    /// A user; `password` a PHC string from `agora passwd` (checked here),
    /// `certificate` an RFC 4514 subject such as `CN=billing,O=Acme`.
    pub fn new(
        name: &str,
        password: Option<&str>,
        certificate: Option<&str>,
        rights: Rights,
    ) -> Result<User, String> {
        if name.is_empty()
            || name.len() > 64
            || !name
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.' | b'@'))
        {
            return Err("a user name is 1 to 64 letters, digits, '-', '_', '.' and '@'".to_owned());
        }
        if password.is_none() && certificate.is_none() {
            return Err(
                "give it a password (from `agora passwd`) or a certificate subject, or both"
                    .to_owned(),
            );
        }
        if let Some(p) = password {
            verify::check_hash(p)?;
        }
        let certificate = match certificate {
            None => None,
            Some(c) => Some(subject::normalise(c).map_err(|why| format!("certificate: {why}"))?),
        };
        Ok(User {
            name: name.to_owned(),
            password: password.map(str::to_owned),
            certificate,
            rights,
        })
    }
}

/// Every configured user; empty: the broker asks nobody who they are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Users {
    by_name: BTreeMap<String, Arc<User>>,
}

impl Users {
    /// Adds `user`; refused when its name or its certificate subject is taken.
    pub fn insert(&mut self, user: User) -> Result<(), String> {
        if self.by_name.contains_key(&user.name) {
            return Err(format!("user '{}' is declared twice", user.name));
        }
        if let Some(c) = &user.certificate {
            if let Some(other) = self.by_certificate(c) {
                return Err(format!("certificate {c} is already user '{}'s", other.name));
            }
        }
        self.by_name.insert(user.name.clone(), Arc::new(user));
        Ok(())
    }

    /// True when no user is configured.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// How many users there are.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// Whether any user logs in with a password (the config file then holds hashes).
    pub fn has_passwords(&self) -> bool {
        self.by_name.values().any(|u| u.password.is_some())
    }

    /// The user named `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<User>> {
        self.by_name.get(name)
    }

    /// The user whose certificate has the subject `subject` (normalised).
    pub fn by_certificate(&self, subject: &str) -> Option<&Arc<User>> {
        self.by_name
            .values()
            .find(|u| u.certificate.as_deref() == Some(subject))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rights(publish: &[&str], subscribe: &[&str], admin: bool) -> Rights {
        Rights {
            publish: publish.iter().map(|p| Pattern::parse(p).unwrap()).collect(),
            subscribe: subscribe
                .iter()
                .map(|p| Pattern::parse(p).unwrap())
                .collect(),
            admin,
        }
    }

    fn d(t: &str) -> Destination {
        t.parse().unwrap()
    }

    #[test]
    fn rights_follow_the_patterns() {
        let r = rights(&["queue:jobs", "topic:sensors.>"], &["queue:jobs"], false);
        assert!(r.may_publish(&d("queue:jobs")));
        assert!(r.may_publish(&d("topic:sensors.a.temp")));
        assert!(!r.may_publish(&d("queue:other")));
        assert!(r.may_subscribe(&d("queue:jobs")));
        assert!(
            !r.may_subscribe(&d("topic:sensors.a")),
            "publish is not subscribe"
        );
        assert!(r.may_see(&d("topic:sensors.a")));
        assert!(!r.may_see(&d("queue:other")));
    }

    #[test]
    fn only_admins_may_subscribe_to_the_metrics_topic() {
        let everything = rights(&[], &["topic:>", "topic:$sys.>"], false);
        assert!(!everything.may_subscribe(&d("topic:$sys.metrics")));
        assert!(!rights(&[], &["topic:>"], false).may_see(&d("topic:$sys.metrics")));
        let admin = rights(&[], &[], true);
        assert!(admin.may_subscribe(&d("topic:$sys.metrics")));
        assert!(admin.may_see(&d("queue:anything")));
        assert!(
            !admin.may_publish(&d("queue:anything")),
            "admin is not publish"
        );
    }

    #[test]
    fn users_need_a_good_name_and_a_way_in() {
        let hash = hash_password("secret").unwrap();
        assert!(User::new("alice", Some(&hash), None, Rights::default()).is_ok());
        assert!(User::new("bad name", Some(&hash), None, Rights::default()).is_err());
        let e = User::new("alice", None, None, Rights::default()).unwrap_err();
        assert!(e.contains("password"), "{e}");
        let e = User::new("alice", Some("plaintext"), None, Rights::default()).unwrap_err();
        assert!(e.contains("agora passwd"), "{e}");
        let mut users = Users::default();
        users
            .insert(User::new("a", None, Some("CN=billing"), Rights::default()).unwrap())
            .unwrap();
        let e = users
            .insert(User::new("b", None, Some("cn = billing"), Rights::default()).unwrap())
            .unwrap_err();
        assert!(e.contains("already"), "{e}");
        assert_eq!(users.by_certificate("CN=billing").unwrap().name, "a");
    }
}
