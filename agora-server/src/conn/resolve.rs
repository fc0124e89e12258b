//! Finding a connection's destinations: the handle cache in front of the queue manager
//! (made or not made: `resolve`, `resolve_publish`, `find`), and the inbox a new
//! connection is given.

use super::*;

impl Conn<'_> {
    /// The handle for `dest`, from the cache or the queue manager. `Err(Denied::Stopping)`: the
    /// broker is going away.
    pub(super) async fn resolve(&mut self, dest: &Destination) -> Result<Handle, Denied> {
        self.resolve_as(dest, false).await
    }

    /// What a publish to `dest` goes to: as [`resolve`](Conn::resolve), except that a
    /// topic that is no destination yet is not made one (an unlisted topic, for this
    /// connection: see [`Unlisted`](crate::topic::Unlisted)).
    pub(super) async fn resolve_publish(&mut self, dest: &Destination) -> Result<Handle, Denied> {
        self.resolve_as(dest, true).await
    }

    async fn resolve_as(&mut self, dest: &Destination, publish: bool) -> Result<Handle, Denied> {
        // A subscription needs the destination itself, never an unlisted topic.
        let usable = |h: &Handle| !h.is_closed() && (publish || h.is_listed());
        if let Some((d, h)) = &self.last {
            if d == dest && usable(h) {
                return Ok(h.clone());
            }
        }
        if let Some(h) = self.handles.get(dest) {
            if usable(h) {
                let h = h.clone();
                self.last = Some((dest.compact(), h.clone()));
                return Ok(h);
            }
        }
        let h = match publish {
            true => {
                let resolve = |reply| ManagerCmd::ResolvePublish {
                    dest: dest.clone(),
                    reply,
                };
                ask(&self.broker.manager, resolve).await
            }
            false => {
                let resolve = |reply| ManagerCmd::Resolve {
                    dest: dest.clone(),
                    reply,
                };
                ask(&self.broker.manager, resolve).await
            }
        };
        let h = h
            .ok_or(Denied::Stopping)?
            .map_err(|(code, why)| Denied::Refused(code, why))?;
        if self.handles.len() >= HANDLE_CACHE {
            self.handles.clear();
        }
        self.handles.insert(dest.compact(), h.clone());
        self.last = Some((dest.compact(), h.clone()));
        Ok(h)
    }

    /// The destination `dest` if it exists, without making it (through the same cache
    /// as [`resolve`](Conn::resolve)).
    pub(super) async fn find(&mut self, dest: &Destination) -> Result<Option<Handle>, Denied> {
        if let Some(h) = self.handles.get(dest).filter(|h| !h.is_closed()) {
            return Ok(Some(h.clone()));
        }
        let lookup = |reply| ManagerCmd::Lookup {
            dest: dest.clone(),
            reply,
        };
        let Some(h) = ask(&self.broker.manager, lookup)
            .await
            .ok_or(Denied::Stopping)?
        else {
            return Ok(None);
        };
        if self.handles.len() >= HANDLE_CACHE {
            self.handles.clear();
        }
        self.handles.insert(dest.compact(), h.clone());
        Ok(Some(h))
    }
}

/// A new connection's inbox: `$inbox.` and 128 bits from the operating system's
/// generator in 22 letters and digits. Unguessable, since knowing an inbox's address
/// is the right to reply to it.
pub(super) fn new_inbox(node: Option<u64>) -> String {
    use argon2::password_hash::rand_core::{OsRng, RngCore};
    const DIGITS: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut bytes = [0u8; 16];
    OsRng.fill_bytes(&mut bytes);
    let mut n = u128::from_le_bytes(bytes);
    let mut name = String::from(agora_protocol::reply::INBOX_PREFIX);
    for _ in 0..22 {
        name.push(char::from(DIGITS[(n % 62) as usize]));
        n /= 62;
    }
    // On a node of a cluster the inbox names its node, so that a reply published on
    // another node goes straight to this one (`crate::cluster::inbox_node`).
    if let Some(node) = node {
        name.push('_');
        name.push_str(&node.to_string());
    }
    name
}
