//! The WebSocket port: the native protocol on `/agora` and MQTT on `/mqtt`, through a
//! WebSocket client (async-tungstenite's) and through Python's `websockets` and paho's
//! WebSocket transport (`tests/peers/ws_check.py`; `.ci/run` installs them).

mod common;

use std::process::Command;

use agora_server::Config;
use async_tungstenite::tungstenite::client::IntoClientRequest;
use async_tungstenite::tungstenite::Message;
use common::mqtt::{packet, Hello};
use common::*;
use futures_lite::StreamExt;

fn server() -> (TestServer, std::net::SocketAddr) {
    let mut c = Config::ephemeral();
    c.ws_port = Some(0);
    let s = start_with(c);
    let ws = s.ws.expect("the WebSocket port");
    (s, ws)
}

type Ws = async_tungstenite::WebSocketStream<async_net::TcpStream>;

/// Awaits `f`, failing the test past the deadline.
async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
    futures_lite::future::or(f, async {
        smol::Timer::after(DEADLINE).await;
        panic!("nothing within {DEADLINE:?}")
    })
    .await
}

async fn open(
    addr: std::net::SocketAddr,
    path: &str,
    protocol: Option<&str>,
) -> (Ws, Option<String>) {
    let mut req = format!("ws://{addr}{path}").into_client_request().unwrap();
    if let Some(p) = protocol {
        req.headers_mut()
            .insert("sec-websocket-protocol", p.parse().unwrap());
    }
    let tcp = async_net::TcpStream::connect(addr).await.unwrap();
    let (ws, resp) = async_tungstenite::client_async(req, tcp)
        .await
        .expect("handshake");
    let chosen = resp
        .headers()
        .get("sec-websocket-protocol")
        .map(|v| v.to_str().unwrap().to_owned());
    (ws, chosen)
}

/// Binary messages until `until` has arrived.
async fn until(ws: &mut Ws, until: &[u8]) -> Vec<u8> {
    let mut got = Vec::new();
    while !got.windows(until.len()).any(|w| w == until) {
        match within(ws.next()).await {
            Some(Ok(Message::Binary(b))) => got.extend_from_slice(&b),
            other => panic!("{other:?} while waiting for {until:?}; got {got:?}"),
        }
    }
    got
}

#[test]
fn the_native_protocol_runs_over_agora_in_binary_messages() {
    let (_s, addr) = server();
    smol::block_on(async {
        let (mut sub, _) = open(addr, "/agora", None).await;
        assert!(until(&mut sub, b"\r\n").await.starts_with(b"INFO "));
        sub.send(Message::Binary(b"SUB #1 topic:t 1\r\n".to_vec().into()))
            .await
            .unwrap();
        until(&mut sub, b"OK #1\r\n").await;
        let (mut publ, _) = open(addr, "/agora", None).await;
        until(&mut publ, b"\r\n").await;
        // A frame cut across two messages, then two frames in one.
        publ.send(Message::Binary(b"PUB topic:t 2\r\nh".to_vec().into()))
            .await
            .unwrap();
        publ.send(Message::Binary(
            b"i\r\nPUB topic:t 3\r\nyou\r\n".to_vec().into(),
        ))
        .await
        .unwrap();
        let got = until(&mut sub, b"you\r\n").await;
        assert!(got.windows(2).any(|w| w == b"hi"), "{got:?}");
        // A text message is refused with "unsupported data".
        publ.send(Message::Text("PUB topic:t 1\r\nx\r\n".into()))
            .await
            .unwrap();
        match within(publ.next()).await {
            Some(Ok(Message::Close(Some(f)))) => assert_eq!(u16::from(f.code), 1003),
            other => panic!("{other:?}"),
        }
    });
}

#[test]
fn mqtt_runs_over_mqtt_with_its_subprotocol() {
    let (_s, addr) = server();
    smol::block_on(async {
        let (mut ws, chosen) = open(addr, "/mqtt", Some("mqtt")).await;
        assert_eq!(chosen.as_deref(), Some("mqtt"));
        ws.send(Message::Binary(Hello::v311("ws-1").bytes().into()))
            .await
            .unwrap();
        let connack = until(&mut ws, &[0x20, 2]).await;
        assert_eq!(connack, [0x20, 2, 0, 0]);
        ws.send(Message::Binary(packet(0xC0, &[]).into()))
            .await
            .unwrap();
        assert_eq!(until(&mut ws, &[0xD0, 0]).await, [0xD0, 0]);
    });
}

#[test]
fn an_unknown_path_is_not_found() {
    let (_s, addr) = server();
    smol::block_on(async {
        let req = format!("ws://{addr}/elsewhere")
            .into_client_request()
            .unwrap();
        let tcp = async_net::TcpStream::connect(addr).await.unwrap();
        let e = async_tungstenite::client_async(req, tcp).await.unwrap_err();
        assert!(e.to_string().contains("404"), "{e}");
    });
}

#[test]
fn python_websockets_and_paho_over_websocket() {
    let (_s, addr) = server();
    let found = Command::new("python3")
        .args(["-c", "import websockets, paho.mqtt"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "websockets or paho-mqtt is not installed: python3 -m pip install 'websockets>=13' 'paho-mqtt>=2,<3'"
    );
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/ws_check.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(addr.port().to_string())
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{said}");
    assert!(said.contains("paho /mqtt"), "{said}");
}
