//! Who a connection's client is, and the rights that follow: the session asks this
//! before anything else. With no users configured every client is [`Access::Open`] and
//! may do everything, as before users existed.

use std::sync::Arc;

use agora_protocol::{ClientFrame, Destination, ErrorCode};

use super::{refuse, Refusal};
use crate::auth::{Pattern, User};

/// Destinations a session remembers it may publish to, at most (it forgets them all
/// when full, and checks the patterns again).
pub(crate) const ALLOWED_CACHE: usize = 256;

/// See the module documentation.
#[derive(Debug, Clone)]
pub(crate) enum Access {
    /// No users are configured: everything is allowed.
    Open,
    /// Users are configured and the client has not authenticated: only `CONNECT`,
    /// pings, `HELP` and `DISCONNECT` are acted on.
    Pending,
    /// Authenticated as this user (by password, or by its certificate).
    User(Arc<User>),
    /// A UDP source of a broker with users: it may publish to these destinations,
    /// anonymously, and nothing else.
    Anonymous(Arc<[Pattern]>),
}

impl Access {
    /// The user, when authenticated.
    pub fn user(&self) -> Option<&Arc<User>> {
        match self {
            Access::User(u) => Some(u),
            _ => None,
        }
    }

    /// Whether the client may see every destination (no users, or an admin).
    pub fn sees_all(&self) -> bool {
        match self {
            Access::Open => true,
            Access::User(u) => u.rights.admin,
            _ => false,
        }
    }

    /// The refusal for a frame that is not acted on before authentication, or over
    /// anonymous UDP; `None` when the session goes on with it.
    pub fn gate(&self, frame: &ClientFrame) -> Option<Refusal> {
        match self {
            Access::Open | Access::User(_) => None,
            Access::Pending => match frame {
                ClientFrame::Connect(_)
                | ClientFrame::PingReq { .. }
                | ClientFrame::PingResp { .. }
                | ClientFrame::Help { .. }
                | ClientFrame::Disconnect => None,
                f => Some(not_authenticated(f.command())),
            },
            Access::Anonymous(_) => match frame {
                // Publishes are checked by their destination; CONNECT carries the
                // source's proof that it receives.
                ClientFrame::Pub(_) | ClientFrame::Connect(_) | ClientFrame::Disconnect => None,
                // Short: an unverified source is answered at most 4x what it sent.
                f => Some(Refusal {
                    code: ErrorCode::NotPermitted,
                    message: format!("{}: UDP takes anonymous PUB only", f.command()),
                }),
            },
        }
    }

    /// Whether the client may publish to `dest` (its name already found not
    /// reserved); `allowed` remembers the destinations that passed.
    pub fn check_publish(
        &self,
        dest: &Destination,
        allowed: &mut std::collections::HashSet<Destination>,
    ) -> Result<(), Refusal> {
        let ok = match self {
            Access::Open => return Ok(()),
            Access::Pending => return Err(not_authenticated("PUB")),
            _ if allowed.contains(dest) => return Ok(()),
            Access::User(u) => u.rights.may_publish(dest),
            Access::Anonymous(p) => p.iter().any(|p| p.matches(dest)),
        };
        if !ok {
            return refuse(ErrorCode::NotPermitted, self.denied("publish to", dest));
        }
        if allowed.len() >= ALLOWED_CACHE {
            allowed.clear();
        }
        allowed.insert(dest.compact());
        Ok(())
    }

    /// Whether the client may subscribe to `dest`.
    pub fn check_subscribe(&self, dest: &Destination) -> Result<(), Refusal> {
        let ok = match self {
            Access::Open => true,
            Access::Pending => return Err(not_authenticated("SUB")),
            Access::User(u) => u.rights.may_subscribe(dest),
            Access::Anonymous(_) => false,
        };
        match ok {
            true => Ok(()),
            false => refuse(ErrorCode::NotPermitted, self.denied("subscribe to", dest)),
        }
    }

    /// `PURGE`, `DELETE`, `CHAIN SET` and `CHAIN CLEAR`: admins only, once users exist.
    pub fn check_admin(&self, what: &str, dest: &Destination) -> Result<(), Refusal> {
        match self {
            Access::Open => Ok(()),
            Access::User(u) if u.rights.admin => Ok(()),
            _ => refuse(
                ErrorCode::NotPermitted,
                format!("{} (it needs admin = true)", self.denied(what, dest)),
            ),
        }
    }

    /// `CHAIN GET`: a destination the client may see.
    pub fn check_see(&self, dest: &Destination) -> Result<(), Refusal> {
        let ok = match self {
            Access::Open => true,
            Access::User(u) => u.rights.may_see(dest),
            _ => false,
        };
        match ok {
            true => Ok(()),
            false => refuse(
                ErrorCode::NotPermitted,
                self.denied("read the chain of", dest),
            ),
        }
    }

    fn denied(&self, what: &str, dest: &Destination) -> String {
        match self {
            Access::User(u) => format!("user {} may not {what} {dest}", u.name),
            _ => format!("an anonymous client may not {what} {dest}"),
        }
    }
}

pub(super) fn not_authenticated(command: &str) -> Refusal {
    Refusal {
        code: ErrorCode::NotAuthenticated,
        message: format!(
            "{command} before authentication: send CONNECT user=<name> password=<percent-encoded> first"
        ),
    }
}
