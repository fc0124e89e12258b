//! Password checks off the executor, and the growing delay that slows repeated failures
//! from one address.
//!
//! argon2 is costly on purpose (about 20 ms and 19 MiB per check with the defaults
//! `agora passwd` uses), so checks run on [`POOL_THREADS`] threads of their own fed by a
//! queue of [`POOL_QUEUE`] checks; a connection whose check finds the queue full waits
//! for room (within `--auth-timeout`), and the executor's threads never do the work.
//!
//! Failures are counted per address: an address with `n` failures, the last less than
//! [`FAILURE_WINDOW`] ago, waits [`delay_for`]`(n)` (100 ms, doubling, at most 10 s)
//! before its next check is even made. At most [`MAX_TRACKED`] addresses are
//! remembered (the oldest forgotten first).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use agora_protocol::Password;
use argon2::password_hash::{PasswordHash, PasswordVerifier};

use super::{User, Users};

/// Threads that check passwords.
pub(crate) const POOL_THREADS: usize = 2;
/// Checks waiting for a thread, at most.
pub(crate) const POOL_QUEUE: usize = 64;
/// How long an address's failures are remembered after its last one.
pub(crate) const FAILURE_WINDOW: Duration = Duration::from_secs(600);
/// The delay after the first failure; it doubles with each further one.
pub(crate) const FIRST_DELAY: Duration = Duration::from_millis(100);
/// The longest delay.
pub(crate) const MAX_DELAY: Duration = Duration::from_secs(10);
/// Addresses whose failures are remembered, at most.
pub(crate) const MAX_TRACKED: usize = 65_536;

/// Why a login was refused (for the log; the client only hears `auth_failed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Denied {
    NoSuchUser,
    WrongPassword,
    /// The user logs in by certificate only.
    NoPassword,
    /// The broker is stopping.
    Stopping,
}

impl Denied {
    pub fn reason(self) -> &'static str {
        match self {
            Denied::NoSuchUser => "no such user",
            Denied::WrongPassword => "wrong password",
            Denied::NoPassword => "the user has no password (certificate only)",
            Denied::Stopping => "the broker is stopping",
        }
    }
}

/// A config file's hash must be one argon2 can check.
pub(super) fn check_hash(phc: &str) -> Result<(), String> {
    let h = PasswordHash::new(phc)
        .map_err(|e| format!("password is not a hash ({e}); make one with `agora passwd`"))?;
    match h.algorithm.as_str() {
        "argon2id" | "argon2i" | "argon2d" => Ok(()),
        other => Err(format!(
            "password is a {other} hash; only argon2 hashes are taken (make one with `agora passwd`)"
        )),
    }
}

struct Job {
    /// `None`: check against a dummy hash, so a missing user costs what a wrong
    /// password does.
    hash: Option<String>,
    password: Password,
    reply: async_channel::Sender<bool>,
}

fn run(job: Job) {
    static DUMMY: OnceLock<String> = OnceLock::new();
    let dummy = || {
        DUMMY
            .get_or_init(|| super::hash_password("agora: no such user").unwrap_or_default())
            .clone()
    };
    let phc = job.hash.clone().unwrap_or_else(dummy);
    let ok = PasswordHash::new(&phc).is_ok_and(|h| {
        argon2::Argon2::default()
            .verify_password(job.password.expose().as_bytes(), &h)
            .is_ok()
    });
    let _ = job.reply.try_send(ok && job.hash.is_some());
}

/// The pool of password checkers and the failure counts. Its threads end when it is
/// dropped.
pub(crate) struct Verifier {
    jobs: async_channel::Sender<Job>,
    failures: Mutex<Failures>,
}

impl Verifier {
    /// With `threads` checking threads (0: no checks can be made; for a broker
    /// without passwords).
    pub fn start(threads: usize) -> Verifier {
        let (jobs, rx) = async_channel::bounded::<Job>(POOL_QUEUE);
        for i in 0..threads {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("agora-auth-{i}"))
                .spawn(move || {
                    while let Ok(job) = rx.recv_blocking() {
                        run(job);
                    }
                });
            if let Err(e) = spawned {
                log::error!("cannot start a password-checking thread: {e}");
            }
        }
        Verifier {
            jobs,
            failures: Mutex::new(Failures::default()),
        }
    }

    /// How long a check from `ip` must wait first, given its recent failures.
    pub fn delay(&self, ip: IpAddr, now: Instant) -> Duration {
        let n = self.lock().recent(ip, now);
        delay_for(n)
    }

    /// Counts a failure from `ip`; returns its failures in the window, this one
    /// included.
    pub fn failed(&self, ip: IpAddr, now: Instant) -> u32 {
        self.lock().record(ip, now)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Failures> {
        self.failures.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Checks `password` for the user `name`, on the pool.
    pub async fn check(
        &self,
        users: &Users,
        name: &str,
        password: &Password,
    ) -> Result<Arc<User>, Denied> {
        let user = users.get(name).cloned();
        let hash = user.as_ref().and_then(|u| u.password.clone());
        let (reply, answer) = async_channel::bounded(1);
        let job = Job {
            hash,
            password: password.clone(),
            reply,
        };
        self.jobs.send(job).await.map_err(|_| Denied::Stopping)?;
        let ok = answer.recv().await.map_err(|_| Denied::Stopping)?;
        match (user, ok) {
            (Some(u), true) => Ok(u),
            (None, _) => Err(Denied::NoSuchUser),
            (Some(u), false) if u.password.is_none() => Err(Denied::NoPassword),
            (Some(_), false) => Err(Denied::WrongPassword),
        }
    }
}

/// The delay before a check from an address with `n` recent failures.
pub(crate) fn delay_for(n: u32) -> Duration {
    match n {
        0 => Duration::ZERO,
        n => FIRST_DELAY
            .saturating_mul(1 << (n - 1).min(16))
            .min(MAX_DELAY),
    }
}

/// Failures per address: how many, and when the last was.
#[derive(Default)]
struct Failures {
    by_ip: HashMap<IpAddr, (u32, Instant)>,
}

impl Failures {
    fn recent(&mut self, ip: IpAddr, now: Instant) -> u32 {
        match self.by_ip.get(&ip) {
            Some((n, last)) if now.saturating_duration_since(*last) <= FAILURE_WINDOW => *n,
            Some(_) => {
                self.by_ip.remove(&ip);
                0
            }
            None => 0,
        }
    }

    fn record(&mut self, ip: IpAddr, now: Instant) -> u32 {
        let n = self.recent(ip, now) + 1;
        if !self.by_ip.contains_key(&ip) && self.by_ip.len() >= MAX_TRACKED {
            self.by_ip
                .retain(|_, (_, last)| now.saturating_duration_since(*last) <= FAILURE_WINDOW);
            if self.by_ip.len() >= MAX_TRACKED {
                let oldest = self
                    .by_ip
                    .iter()
                    .min_by_key(|(_, (_, t))| *t)
                    .map(|(k, _)| *k);
                if let Some(k) = oldest {
                    self.by_ip.remove(&k);
                }
            }
        }
        self.by_ip.insert(ip, (n, now));
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_delay_doubles_from_100ms_to_at_most_10s() {
        assert_eq!(delay_for(0), Duration::ZERO);
        assert_eq!(delay_for(1), Duration::from_millis(100));
        assert_eq!(delay_for(2), Duration::from_millis(200));
        assert_eq!(delay_for(7), Duration::from_millis(6400));
        assert_eq!(delay_for(8), MAX_DELAY);
        assert_eq!(delay_for(u32::MAX), MAX_DELAY);
    }

    #[test]
    fn failures_are_per_address_and_forgotten_after_the_window() {
        let mut f = Failures::default();
        let t = Instant::now();
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        assert_eq!(f.record(a, t), 1);
        assert_eq!(f.record(a, t + Duration::from_secs(1)), 2);
        assert_eq!(f.recent(b, t), 0);
        assert_eq!(f.recent(a, t + Duration::from_secs(2)), 2);
        let later = t + Duration::from_secs(1) + FAILURE_WINDOW + Duration::from_secs(1);
        assert_eq!(f.recent(a, later), 0);
        assert_eq!(f.record(a, later), 1, "counting starts again");
    }

    #[test]
    fn at_most_max_tracked_addresses_are_remembered() {
        let mut f = Failures::default();
        let t = Instant::now();
        for i in 0..MAX_TRACKED as u32 + 10 {
            f.record(
                IpAddr::from(i.to_be_bytes()),
                t + Duration::from_nanos(u64::from(i)),
            );
        }
        assert_eq!(f.by_ip.len(), MAX_TRACKED);
        assert_eq!(
            f.recent(IpAddr::from(0u32.to_be_bytes()), t),
            0,
            "the oldest went"
        );
    }

    #[test]
    fn passwords_are_checked_on_the_pool() {
        let v = Verifier::start(POOL_THREADS);
        let mut users = Users::default();
        let hash = super::super::hash_password("right").unwrap();
        users
            .insert(User::new("alice", Some(&hash), None, Default::default()).unwrap())
            .unwrap();
        users
            .insert(User::new("bob", None, Some("CN=bob"), Default::default()).unwrap())
            .unwrap();
        smol::block_on(async {
            let ok = v.check(&users, "alice", &Password::new("right")).await;
            assert_eq!(ok.unwrap().name, "alice");
            let wrong = v.check(&users, "alice", &Password::new("wrong")).await;
            assert_eq!(wrong.unwrap_err(), Denied::WrongPassword);
            let nobody = v.check(&users, "carol", &Password::new("right")).await;
            assert_eq!(nobody.unwrap_err(), Denied::NoSuchUser);
            let cert = v.check(&users, "bob", &Password::new("")).await;
            assert_eq!(cert.unwrap_err(), Denied::NoPassword);
        });
    }
}
