//! The console's actions: purge, delete, peek, chains and test publishes, for a caller
//! who may act (`api::Who::may_act`), guarded against cross-site requests.
#![allow(clippy::result_large_err)]

use std::net::SocketAddr;
use std::sync::Arc;

use agora_protocol::{ClientFrame, Destination, Headers, ServerFrame};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};

use super::api::{bad, stopping, Who};
use super::parse::{percent, query};
use super::{error, json, native, Body};
use crate::manager::ManagerCmd;
use crate::Broker;

/// The console's actions.
pub(super) async fn action(
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
