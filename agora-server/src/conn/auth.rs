//! `CONNECT user=… password=…`: the password checked on the verifier's pool (after the
//! delay the address's recent failures have earned), within `--auth-timeout` of the
//! connection's start; a refusal is answered `ERR auth_failed`, logged at warn (never
//! the password), and ends the connection.

use super::*;
use crate::auth::Denied;

/// Longest user name shown in the log as the client sent it.
const LOGGED_NAME: usize = 64;

impl Conn<'_> {
    pub(super) async fn authenticate(&mut self, c: agora_protocol::Connect) -> Flow {
        let broker = self.broker;
        let verifier = &broker.verifier;
        let ip = self.peer.ip();
        let name = c.user.clone().unwrap_or_default();
        let password = c.password.clone().unwrap_or_default();
        let wait = verifier.delay(ip, Instant::now());
        let checked = async {
            if !wait.is_zero() {
                smol::Timer::after(wait).await;
            }
            verifier.check(&broker.config.users, &name, &password).await
        };
        let deadline = self.auth_deadline.unwrap_or_else(Instant::now);
        let checked = future::or(async { Some(checked.await) }, async {
            smol::Timer::at(deadline).await;
            None
        })
        .await;
        let shown: String = name.chars().take(LOGGED_NAME).collect();
        match checked {
            None => self.auth_timed_out().await,
            Some(Ok(user)) => {
                log::info!("client {} authenticated as {}", self.peer, user.name);
                self.auth_deadline = None;
                let answer = self.session.authenticated(user, c);
                self.reply(&answer).await
            }
            Some(Err(Denied::Stopping)) => Err(End::Stopping),
            Some(Err(why)) => {
                let n = verifier.failed(ip, Instant::now());
                log::warn!(
                    "client {}: authentication as '{shown}' failed ({}); {n} failures from {ip} in the last {} minutes, its next attempt waits {:?}",
                    self.peer,
                    why.reason(),
                    crate::auth::FAILURE_WINDOW.as_secs() / 60,
                    crate::auth::delay_for(n),
                );
                let _ = self
                    .error(
                        c.rid,
                        ErrorCode::AuthFailed,
                        "user or password not accepted",
                    )
                    .await;
                Err(End::AuthFailed)
            }
        }
    }

    /// The client did not authenticate within `--auth-timeout`: told so, and closed.
    pub(super) async fn auth_timed_out(&mut self) -> Flow {
        let t = self.broker.config.auth_timeout;
        log::debug!(
            "client {} did not authenticate within {t:?}; closing",
            self.peer
        );
        let why = format!("not authenticated within {t:?}; closing");
        let _ = self.error(None, ErrorCode::Timeout, &why).await;
        Err(End::AuthTimeout)
    }
}
