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
use agora_protocol::{ClientFrame, Destination, Headers, Password, ServerFrame, StatsPage};
use http_body_util::{BodyExt, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};

use super::{error, json, native, prom, respond, Body};
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
enum Who {
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
    fn user(&self) -> Option<Arc<User>> {
        match self {
            Who::User(u) => Some(u.clone()),
            Who::Open { .. } => None,
        }
    }

    fn may_act(&self) -> Result<(), Response<Body>> {
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
    let query = query(req.uri().query().unwrap_or(""));
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
        (_, ["api", ..]) => action(b, req, &who, peer, &method, &parts[1..]).await,
        _ => error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no route {method} {path}"),
        ),
    }
}

fn stopping() -> Response<Body> {
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
        .and_then(|v| base64(v.trim()))
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

fn bad(message: impl Into<String>) -> Response<Body> {
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

/// The console's actions.
async fn action(
    b: &Arc<Broker>,
    req: Request<Incoming>,
    who: &Who,
    peer: SocketAddr,
    method: &Method,
    parts: &[&str],
) -> Response<Body> {
    if let Err(r) = who.may_act() {
        return r;
    }
    if *method != Method::GET {
        if let Err(r) = same_site(&req) {
            return r;
        }
    }
    let dest = |kind: &str, name: &str| -> Result<Destination, Response<Body>> {
        let name = percent(name);
        Destination::parse(&format!("{kind}:{name}")).map_err(|e| {
            error(
                StatusCode::BAD_REQUEST,
                "bad_name",
                format!("{kind}:{name}: {e}"),
            )
        })
    };
    let body = |req: Request<Incoming>| async {
        let max = b.config.max_payload;
        Limited::new(req.into_body(), max)
            .collect()
            .await
            .map(|c| c.to_bytes())
            .map_err(|_| {
                error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    format!("the body is larger than --max-payload ({max} bytes)"),
                )
            })
    };
    let rid = Some(1);
    let (frames, done): (Vec<ClientFrame>, fn(ServerFrame) -> serde_json::Value) =
        match (method, parts) {
            (&Method::POST, ["queues", name, "purge"]) => {
                return match dest("queue", name) {
                    Ok(d) => purge(b, d).await,
                    Err(r) => r,
                }
            }
            (&Method::DELETE, ["queues", name]) => match dest("queue", name) {
                Ok(dest) => (
                    vec![ClientFrame::Delete { rid, dest }],
                    |_| serde_json::json!({"deleted": true}),
                ),
                Err(r) => return r,
            },
            (&Method::GET, ["queues", name, "peek"]) => {
                return match dest("queue", name) {
                    Ok(d) => peek(b, d, &query(req.uri().query().unwrap_or(""))).await,
                    Err(r) => r,
                }
            }
            (m, ["chain", kind, name]) if *kind == "queue" || *kind == "topic" => {
                let dest = match dest(kind, name) {
                    Ok(d) => d,
                    Err(r) => return r,
                };
                let chain_of = |f: ServerFrame| match f {
                    ServerFrame::ChainResp { chain, .. } if chain.is_empty() => {
                        serde_json::json!({"chain": null})
                    }
                    ServerFrame::ChainResp { chain, .. } => {
                        serde_json::json!({"chain": String::from_utf8_lossy(&chain)})
                    }
                    _ => serde_json::json!({"chain": null}),
                };
                match *m {
                    Method::GET => (vec![ClientFrame::ChainGet { rid, dest }], chain_of),
                    Method::PUT => match body(req).await {
                        Ok(chain) => (
                            vec![ClientFrame::ChainSet { rid, dest, chain }],
                            |_| serde_json::json!({"chain": "set"}),
                        ),
                        Err(r) => return r,
                    },
                    Method::DELETE => (
                        vec![ClientFrame::ChainClear { rid, dest }],
                        |_| serde_json::json!({"chain": null}),
                    ),
                    _ => return not_found(method, parts),
                }
            }
            (&Method::POST, ["publish", kind, name]) if *kind == "queue" || *kind == "topic" => {
                let dest = match dest(kind, name) {
                    Ok(d) => d,
                    Err(r) => return r,
                };
                match body(req).await {
                    Ok(payload) => (
                        vec![
                            ClientFrame::SetAck {
                                rid: Some(0),
                                on: true,
                            },
                            ClientFrame::Pub(agora_protocol::Publish {
                                rid,
                                dest,
                                headers: Headers::new(),
                                payload,
                            }),
                        ],
                        |_| serde_json::json!({"published": true}),
                    ),
                    Err(r) => return r,
                }
            }
            _ => return not_found(method, parts),
        };
    match native::ask(b, who.user(), peer, &frames).await {
        Some(ServerFrame::Err(e)) => {
            let status = match e.code {
                agora_protocol::ErrorCode::NotPermitted
                | agora_protocol::ErrorCode::NotAuthenticated => StatusCode::FORBIDDEN,
                agora_protocol::ErrorCode::UnknownDestination => StatusCode::NOT_FOUND,
                agora_protocol::ErrorCode::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
                agora_protocol::ErrorCode::Internal | agora_protocol::ErrorCode::StorageFailed => {
                    StatusCode::INTERNAL_SERVER_ERROR
                }
                _ => StatusCode::BAD_REQUEST,
            };
            error(status, &e.code.to_string(), e.message)
        }
        Some(f) => json(StatusCode::OK, &done(f)),
        None => stopping(),
    }
}

fn not_found(method: &Method, parts: &[&str]) -> Response<Body> {
    error(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no route {method} /api/{}", parts.join("/")),
    )
}

/// An action's guard against cross-site requests: the console's header, and an
/// `Origin` (browsers send one on such requests) that names this host.
fn same_site(req: &Request<Incoming>) -> Result<(), Response<Body>> {
    let h = req.headers();
    if h.get("x-agora-console").and_then(|v| v.to_str().ok()) != Some("1") {
        return Err(error(
            StatusCode::FORBIDDEN,
            "not_permitted",
            "an action needs the header X-Agora-Console: 1 (it guards against cross-site requests)",
        ));
    }
    if let Some(origin) = h.get(hyper::header::ORIGIN).and_then(|v| v.to_str().ok()) {
        let host = h
            .get(hyper::header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let bare = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
            .unwrap_or("");
        if bare != host {
            return Err(error(
                StatusCode::FORBIDDEN,
                "not_permitted",
                format!("an action from origin {origin} is not this console's ({host})"),
            ));
        }
    }
    Ok(())
}

/// The queue `dest` names, without making it.
async fn queue(
    b: &Broker,
    dest: &Destination,
) -> Result<Arc<crate::queue::QueueShared>, Response<Body>> {
    let lookup = |reply| ManagerCmd::Lookup {
        dest: dest.clone(),
        reply,
    };
    match crate::ask::ask(&b.manager, lookup).await {
        None => Err(stopping()),
        Some(Some(crate::manager::Handle::Queue(q))) => Ok(q),
        Some(_) => Err(error(
            StatusCode::NOT_FOUND,
            "unknown_destination",
            format!("there is no {dest}"),
        )),
    }
}

/// `POST /api/queues/<name>/purge`: as `PURGE` does it (the same rule; the caller may
/// act), answering how many messages went.
async fn purge(b: &Broker, dest: Destination) -> Response<Body> {
    if let Err(r) = crate::session::Session::<()>::check_purge(&dest) {
        return error(StatusCode::FORBIDDEN, &r.code.to_string(), r.message);
    }
    let q = match queue(b, &dest).await {
        Ok(q) => q,
        Err(r) => return r,
    };
    match crate::ask::ask(&q.tx, |reply| crate::queue::QueueCmd::Purge { reply }).await {
        Some(n) => {
            log::info!("purged {n} messages from {dest} (HTTP console)");
            json(StatusCode::OK, &serde_json::json!({ "purged": n }))
        }
        None => error(
            StatusCode::NOT_FOUND,
            "unknown_destination",
            format!("{dest} was deleted"),
        ),
    }
}

/// `GET /api/queues/<name>/peek?limit=N`: the first messages waiting in a queue,
/// without taking them.
async fn peek(b: &Broker, dest: Destination, q: &[(String, String)]) -> Response<Body> {
    let mut limit = 10usize;
    for (k, v) in q {
        match (k.as_str(), v.parse::<usize>()) {
            ("limit", Ok(n)) if (1..=100).contains(&n) => limit = n,
            _ => return bad(format!("{k}={v}: only limit, 1 to 100")),
        }
    }
    let q = match queue(b, &dest).await {
        Ok(q) => q,
        Err(r) => return r,
    };
    let Some(head) =
        crate::ask::ask(&q.tx, |reply| crate::queue::QueueCmd::Peek { limit, reply }).await
    else {
        return error(
            StatusCode::NOT_FOUND,
            "unknown_destination",
            format!("{dest} went away"),
        );
    };
    let messages: Vec<serde_json::Value> = head
        .into_iter()
        .map(|(m, deliveries)| {
            let headers: serde_json::Map<String, serde_json::Value> = m
                .headers
                .iter()
                .map(|(k, v)| (k.to_owned(), serde_json::Value::from(v)))
                .collect();
            serde_json::json!({
                "payload": String::from_utf8_lossy(&m.payload),
                "bytes": m.payload.len(),
                "headers": headers,
                "deliveries": deliveries,
            })
        })
        .collect();
    json(StatusCode::OK, &serde_json::json!({ "messages": messages }))
}

/// A query string's pairs, percent-decoded.
fn query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent(k), percent(v))
        })
        .collect()
}

/// `%HH` and `+` decoded (bytes that are not UTF-8 become U+FFFD).
fn percent(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

/// Standard base64 (with or without padding).
fn base64(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes().filter(|c| *c != b'=') {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
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

    #[test]
    fn base64_and_percent_decode() {
        assert_eq!(base64("YWxpY2U6czNjcmV0").unwrap(), b"alice:s3cret");
        assert_eq!(base64("YQ==").unwrap(), b"a");
        assert!(base64("a b").is_none());
        assert_eq!(percent("queue%3Ajobs+1%"), "queue:jobs 1%");
        assert_eq!(percent("%é%zz"), "%é%zz", "no panic inside a character");
        assert_eq!(
            query("prefix=a.&limit=5"),
            [("prefix".into(), "a.".into()), ("limit".into(), "5".into())]
        );
    }
}
