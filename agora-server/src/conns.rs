//! The broker's connections, for the HTTP API's `/api/connections` and the console:
//! each connection's address, protocol, name, user, subscriptions and bytes, kept in a
//! registry as the connection's task updates them (a relaxed add per read and per
//! write batch on the hot path; the rest when a `CONNECT`, `SUB` or `UNSUB` is acted on).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::*};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::Serialize;

/// One connection as the registry shows it.
pub(crate) struct ConnInfo {
    pub id: u64,
    pub address: SocketAddr,
    /// `tcp`, `tls`, `udp`, `mqtt` or `ws`.
    pub protocol: &'static str,
    pub since: Instant,
    /// The name and user its `CONNECT` gave (or its certificate named).
    pub who: Mutex<(Option<String>, Option<String>)>,
    pub subscriptions: AtomicUsize,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
}

impl ConnInfo {
    pub fn new(id: u64, address: SocketAddr, protocol: &'static str) -> ConnInfo {
        ConnInfo {
            id,
            address,
            protocol,
            since: Instant::now(),
            who: Mutex::new((None, None)),
            subscriptions: AtomicUsize::new(0),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
        }
    }

    /// Its name and user, as the session has them now.
    pub fn set_who(&self, name: Option<&str>, user: Option<&str>) {
        let mut w = self.who.lock().unwrap_or_else(|e| e.into_inner());
        *w = (name.map(str::to_owned), user.map(str::to_owned));
    }

    fn user(&self) -> Option<String> {
        self.who.lock().unwrap_or_else(|e| e.into_inner()).1.clone()
    }
}

/// A connection in a listing.
#[derive(Serialize, Debug, PartialEq)]
pub(crate) struct Listed {
    pub id: u64,
    pub address: String,
    pub name: Option<String>,
    pub protocol: &'static str,
    pub user: Option<String>,
    pub subscriptions: usize,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub since_s: f64,
}

/// One page of connections.
#[derive(Serialize, Debug)]
pub(crate) struct Listing {
    pub connections: Vec<Listed>,
    pub page: Page,
}

#[derive(Serialize, Debug)]
pub(crate) struct Page {
    pub limit: usize,
    pub listed: usize,
    /// Connections this listing could show (all, or the user's own).
    pub total: usize,
    /// Pass as `after=` for the next page; `null` on the last.
    pub next: Option<u64>,
}

/// The most connections one page lists.
pub(crate) const MAX_PAGE: usize = 10_000;

/// The broker's connections, by id.
#[derive(Default)]
pub(crate) struct Registry {
    map: Mutex<BTreeMap<u64, Arc<ConnInfo>>>,
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Arc<ConnInfo>>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a connection; it stays listed until [`Registry::remove`].
    pub fn add(&self, info: Arc<ConnInfo>) {
        self.lock().insert(info.id, info);
    }

    pub fn remove(&self, id: u64) {
        self.lock().remove(&id);
    }

    /// The connections after id `after`, at most `limit` (1 to [`MAX_PAGE`]), in id
    /// order; only user `only`'s when given.
    pub fn list(&self, after: Option<u64>, limit: usize, only: Option<&str>) -> Listing {
        let limit = limit.clamp(1, MAX_PAGE);
        let map = self.lock();
        let mine = |c: &&Arc<ConnInfo>| only.is_none() || c.user().as_deref() == only;
        let total = match only {
            None => map.len(),
            Some(_) => map.values().filter(mine).count(),
        };
        let start = after.map_or(0, |a| a.saturating_add(1));
        let mut connections = Vec::new();
        let mut next = None;
        for c in map.range(start..).map(|(_, c)| c).filter(mine) {
            if connections.len() == limit {
                next = connections.last().map(|l: &Listed| l.id);
                break;
            }
            let (name, user) = c.who.lock().unwrap_or_else(|e| e.into_inner()).clone();
            connections.push(Listed {
                id: c.id,
                address: c.address.to_string(),
                name,
                protocol: c.protocol,
                user,
                subscriptions: c.subscriptions.load(Relaxed),
                bytes_in: c.bytes_in.load(Relaxed),
                bytes_out: c.bytes_out.load(Relaxed),
                since_s: c.since.elapsed().as_secs_f64(),
            });
        }
        Listing {
            page: Page {
                limit,
                listed: connections.len(),
                total,
                next,
            },
            connections,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(id: u64, user: Option<&str>) -> Arc<ConnInfo> {
        let c = ConnInfo::new(id, "127.0.0.1:5000".parse().unwrap(), "tcp");
        c.set_who(Some("w"), user);
        Arc::new(c)
    }

    #[test]
    fn pages_follow_each_other_and_a_user_sees_its_own() {
        let r = Registry::default();
        for id in 1..=5 {
            r.add(conn(id, if id % 2 == 0 { Some("ann") } else { None }));
        }
        r.remove(3);
        let first = r.list(None, 2, None);
        let ids: Vec<u64> = first.connections.iter().map(|c| c.id).collect();
        assert_eq!(
            (ids, first.page.next, first.page.total),
            (vec![1, 2], Some(2), 4)
        );
        let rest = r.list(first.page.next, 2, None);
        let ids: Vec<u64> = rest.connections.iter().map(|c| c.id).collect();
        assert_eq!((ids, rest.page.next), (vec![4, 5], None));
        let ann = r.list(None, 10, Some("ann"));
        let ids: Vec<u64> = ann.connections.iter().map(|c| c.id).collect();
        assert_eq!((ids, ann.page.total), (vec![2, 4], 2));
    }
}
