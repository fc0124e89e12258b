//! The HTTP port's routes: who is asking, then what they asked.
//!
//! A refusal is the response itself (`Err(Response)`): large, but on a cold path where
//! boxing it would buy nothing.
#![allow(clippy::result_large_err)]

use std::net::SocketAddr;
use std::sync::atomic::Ordering::*;
use std::sync::Arc;
use std::time::Duration;

use agora_protocol::bytes::Bytes;
use agora_protocol::{Destination, Password, StatsPage};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};

use super::{error, json, prom, respond, Body};
use crate::auth::User;
use crate::manager::ManagerCmd;
use crate::Broker;

const INDEX: &str = include_str!("console/index.html");
const SCRIPT: &str = include_str!("console/console.js");
const STYLE: &str = include_str!("console/console.css");

/// How often the event stream sends the broker's figures.
const EVERY: Duration = Duration::from_secs(1);

/// How long an event may wait for a viewer that reads nothing before its stream ends
/// (and its place among `--http-max-viewers` is free).
const STALLED: Duration = Duration::from_secs(30);

/// Who is asking.
pub(super) enum Who {
    /// No users configured: anyone; `loopback` clients may act.
    Open {
        loopback: bool,
    },
    User(Arc<User>),
}

impl Who {
    /// The user whose rights filter what is shown (`None`: everything).
    fn only(&self) -> Option<Arc<User>> {
        match self {
            Who::User(u) if !u.rights.admin => Some(u.clone()),
            _ => None,
        }
    }

    /// The user actions run as (`None` with no users configured).
    pub(super) fn user(&self) -> Option<Arc<User>> {
        match self {
            Who::User(u) => Some(u.clone()),
            Who::Open { .. } => None,
        }
    }

    pub(super) fn may_act(&self) -> Result<(), Response<Body>> {
        match self {
            Who::Open { loopback: true } => Ok(()),
            Who::Open { loopback: false } => Err(error(
                StatusCode::FORBIDDEN,
                "not_permitted",
                "with no users configured, console actions are taken from loopback clients only",
            )),
            Who::User(u) if u.rights.admin => Ok(()),
            Who::User(u) => Err(error(
                StatusCode::FORBIDDEN,
                "not_permitted",
                format!(
                    "user {} may not act from the console (it needs admin = true)",
                    u.name
                ),
            )),
        }
    }
}

/// Answers one request.
pub(super) async fn route(
    b: &Arc<Broker>,
    req: Request<Incoming>,
    peer: SocketAddr,
    secure: bool,
) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    match (&method, path.as_str()) {
        (&Method::GET, "/healthz") => return respond(StatusCode::OK, "text/plain", "ok\n"),
        (&Method::GET, "/readyz") => {
            return match b.ready.load(SeqCst) {
                true => respond(StatusCode::OK, "text/plain", "ready\n"),
                false => respond(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    "not ready: the broker is shutting down\n",
                ),
            }
        }
        _ => {}
    }
    let who = match authenticate(b, &req, peer, secure).await {
        Ok(w) => w,
        Err(r) => return r,
    };
    let query = super::parse::query(req.uri().query().unwrap_or(""));
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (&method, parts.as_slice()) {
        (&Method::GET, [""]) => respond(StatusCode::OK, "text/html; charset=utf-8", INDEX),
        (&Method::GET, ["console.js"]) => {
            respond(StatusCode::OK, "text/javascript; charset=utf-8", SCRIPT)
        }
        (&Method::GET, ["console.css"]) => {
            respond(StatusCode::OK, "text/css; charset=utf-8", STYLE)
        }
        (&Method::GET, ["metrics"]) => {
            let page = StatsPage {
                limit: Some(b.config.http_metrics_destinations as u32),
                ..StatsPage::default()
            };
            match stats(b, page, who.only()).await {
                Some(doc) => respond(
                    StatusCode::OK,
                    "text/plain; version=0.0.4; charset=utf-8",
                    prom::render(&doc),
                ),
                None => stopping(),
            }
        }
        (&Method::GET, ["api", "stats"]) => {
            let page = match stats_page(&query) {
                Ok(p) => p,
                Err(r) => return r,
            };
            match stats(b, page, who.only()).await {
                Some(doc) => json(StatusCode::OK, &doc),
                None => stopping(),
            }
        }
        (&Method::GET, ["api", "connections"]) => {
            let (after, limit) = match connections_page(&query) {
                Ok(p) => p,
                Err(r) => return r,
            };
            let only = who.only();
            json(
                StatusCode::OK,
                &b.conns
                    .list(after, limit, only.as_ref().map(|u| u.name.as_str())),
            )
        }
        (&Method::GET, ["api", "events"]) => events(b, &who),
        (_, ["api", ..]) => super::actions::action(b, req, &who, peer, &method, &parts[1..]).await,
        _ => error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no route {method} {path}"),
        ),
    }
}

pub(super) fn stopping() -> Response<Body> {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "shutting_down",
        "the broker is shutting down",
    )
}

/// Basic auth with users configured (over HTTPS or from loopback); anyone without.
async fn authenticate(
    b: &Broker,
    req: &Request<Incoming>,
    peer: SocketAddr,
    secure: bool,
) -> Result<Who, Response<Body>> {
    let loopback = peer.ip().is_loopback();
    if b.config.users.is_empty() {
        return Ok(Who::Open { loopback });
    }
    let ask = |why: &str| {
        let mut r = error(StatusCode::UNAUTHORIZED, "not_authenticated", why);
        r.headers_mut().insert(
            hyper::header::WWW_AUTHENTICATE,
            hyper::header::HeaderValue::from_static("Basic realm=\"agora\", charset=\"UTF-8\""),
        );
        r
    };
    let Some(given) = req.headers().get(hyper::header::AUTHORIZATION) else {
        return Err(ask("this broker has users: give a user name and password"));
    };
    if !secure && !loopback {
        return Err(error(
            StatusCode::FORBIDDEN,
            "not_permitted",
            "credentials are taken over HTTPS (--tls-cert) or from loopback only",
        ));
    }
    let Some((name, password)) = given
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|v| super::parse::base64(v.trim()))
        .and_then(|v| String::from_utf8(v).ok())
        .and_then(|v| v.split_once(':').map(|(n, p)| (n.to_owned(), p.to_owned())))
    else {
        return Err(ask(
            "the Authorization header is not Basic <base64 of user:password>",
        ));
    };
    let verifier = &b.verifier;
    let wait = verifier.delay(peer.ip(), std::time::Instant::now());
    if !wait.is_zero() {
        smol::Timer::after(wait).await;
    }
    match verifier
        .check(&b.config.users, &name, &Password::new(password))
        .await
    {
        Ok(u) => Ok(Who::User(u)),
        Err(_) => {
            let n = verifier.failed(peer.ip(), std::time::Instant::now());
            let shown: String = name.chars().take(64).collect();
            log::warn!("HTTP client {peer}: authentication as '{shown}' failed; {n} recent failures from its address");
            Err(ask("wrong user name or password"))
        }
    }
}

/// The `STATS` document of `page`, as `only` may see it.
async fn stats(b: &Broker, page: StatsPage, only: Option<Arc<User>>) -> Option<serde_json::Value> {
    let list = |reply| ManagerCmd::List {
        page: page.clone(),
        only: only.clone(),
        reply,
    };
    let listing = crate::ask::ask(&b.manager, list).await?;
    let doc = crate::stats::document(b, &page, &listing, only.as_deref());
    serde_json::from_slice(&doc).ok()
}

pub(super) fn bad(message: impl Into<String>) -> Response<Body> {
    error(StatusCode::BAD_REQUEST, "bad_args", message)
}

fn stats_page(q: &[(String, String)]) -> Result<StatsPage, Response<Body>> {
    let mut page = StatsPage::default();
    for (k, v) in q {
        match k.as_str() {
            "prefix" => page.prefix = Some(v.clone()),
            "after" => {
                page.after =
                    Some(Destination::parse(v).map_err(|e| bad(format!("after={v}: {e}")))?)
            }
            "limit" => {
                page.limit = Some(
                    v.parse()
                        .ok()
                        .filter(|n| *n >= 1)
                        .ok_or_else(|| bad(format!("limit={v}: a number, at least 1")))?,
                )
            }
            _ => return Err(bad(format!("unknown parameter {k} (prefix, after, limit)"))),
        }
    }
    Ok(page)
}

fn connections_page(q: &[(String, String)]) -> Result<(Option<u64>, usize), Response<Body>> {
    let (mut after, mut limit) = (None, 1000);
    for (k, v) in q {
        match k.as_str() {
            "after" => after = Some(v.parse().map_err(|_| bad(format!("after={v}: an id")))?),
            "limit" => {
                limit = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=crate::conns::MAX_PAGE).contains(n))
                    .ok_or_else(|| bad(format!("limit={v}: 1 to {}", crate::conns::MAX_PAGE)))?
            }
            _ => return Err(bad(format!("unknown parameter {k} (after, limit)"))),
        }
    }
    Ok((after, limit))
}

/// `/api/events`: the broker's figures about once a second, as server-sent events,
/// to at most `--http-max-viewers` at once.
fn events(b: &Arc<Broker>, who: &Who) -> Response<Body> {
    let max = b.config.http_max_viewers;
    if b.http.viewers.fetch_add(1, SeqCst) >= max {
        b.http.viewers.fetch_sub(1, SeqCst);
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_viewers",
            format!("at most {max} event streams at once (--http-max-viewers)"),
        );
    }
    // Two events may wait: a viewer that does not read holds two, and its task waits.
    let (tx, rx) = async_channel::bounded::<Bytes>(2);
    let (b2, only) = (b.clone(), who.only());
    b.rt.spawn(async move {
        loop {
            let page = StatsPage::default();
            let Some(stats) = stats(&b2, page, only.clone()).await else {
                break;
            };
            let conns = b2
                .conns
                .list(None, 1000, only.as_ref().map(|u| u.name.as_str()));
            let data = serde_json::json!({"stats": stats, "connections": conns});
            let event = format!("event: stats\ndata: {data}\n\n");
            let sent = futures_lite::future::or(
                async { tx.send(Bytes::from(event)).await.is_ok() },
                async {
                    smol::Timer::after(STALLED).await;
                    false
                },
            )
            .await;
            if !sent || !b2.ready.load(SeqCst) {
                break;
            }
            smol::Timer::after(EVERY).await;
        }
        b2.http.viewers.fetch_sub(1, SeqCst);
    })
    .detach();
    use futures_lite::StreamExt;
    let body = StreamBody::new(rx.map(|b| Ok::<_, std::convert::Infallible>(Frame::data(b))));
    let mut r = Response::new(BodyExt::boxed_unsync(body));
    let h = r.headers_mut();
    h.insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/event-stream"),
    );
    h.insert(
        hyper::header::CACHE_CONTROL,
        hyper::header::HeaderValue::from_static("no-store"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_users_only_loopback_may_act() {
        assert!(Who::Open { loopback: true }.may_act().is_ok());
        let r = Who::Open { loopback: false }.may_act().unwrap_err();
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        assert!(
            Who::Open { loopback: false }.only().is_none(),
            "but it sees everything"
        );
    }
}
