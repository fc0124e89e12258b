//! TLS on the TCP port (`--tls-cert`, `--tls-key`, `--tls-client-ca`): certificates
//! made here with rcgen, clients made here with rustls over a blocking socket.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agora_protocol::bytes::BytesMut;
use agora_protocol::{decode_server_with, Limits, ServerFrame};
use agora_server::{Config, Server};
use common::pki::{Issued, Pki};
use common::{agora_exit, read_again, start_with, DEADLINE};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};

fn tls_config(server: &Issued, client_ca: Option<&Path>) -> Config {
    let mut c = Config::ephemeral();
    c.tls_cert = Some(server.cert.clone());
    c.tls_key = Some(server.key.clone());
    c.tls_client_ca = client_ca.map(Path::to_owned);
    c
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client configuration trusting `ca`, presenting `cert` when given.
fn client_config(ca: &Path, cert: Option<&Issued>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(ca).unwrap();
    for c in rustls_pemfile::certs(&mut &pem[..]) {
        roots.add(c.unwrap()).unwrap();
    }
    let b = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    Arc::new(match cert {
        None => b.with_no_client_auth(),
        Some(i) => b
            .with_client_auth_cert(
                vec![i.der.clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(i.key_der.clone())),
            )
            .unwrap(),
    })
}

/// A TLS client over a blocking socket that decodes what the broker sends.
struct Client {
    tls: rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
    buf: BytesMut,
}

impl Client {
    fn connect(addr: SocketAddr, config: Arc<rustls::ClientConfig>) -> Client {
        let sock = TcpStream::connect(addr).unwrap();
        sock.set_nodelay(true).unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let conn = rustls::ClientConnection::new(config, name).unwrap();
        Client {
            tls: rustls::StreamOwned::new(conn, sock),
            buf: BytesMut::new(),
        }
    }

    fn send(&mut self, b: &[u8]) {
        self.tls.write_all(b).unwrap();
        self.tls.flush().unwrap();
    }

    /// The next frame; an error when the connection failed or closed first. Fails the
    /// test at the deadline.
    fn next(&mut self) -> std::io::Result<ServerFrame> {
        let limits = Limits {
            max_line: 1 << 16,
            max_payload: 1 << 20,
        };
        let end = Instant::now() + DEADLINE;
        loop {
            if let Some(f) = decode_server_with(&mut self.buf, &limits).expect("a good frame") {
                return Ok(f);
            }
            let left = end.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "no frame within {DEADLINE:?}");
            self.tls.sock.set_read_timeout(Some(left)).unwrap();
            let mut chunk = [0u8; 16384];
            match self.tls.read(&mut chunk) {
                Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if read_again(&e) => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// `PINGREQ #rid`, then every frame up to its answer.
    fn sync(&mut self, rid: u64) -> Vec<ServerFrame> {
        self.send(format!("PINGREQ #{rid}\r\n").as_bytes());
        let mut before = Vec::new();
        loop {
            match self.next().expect("connection open") {
                ServerFrame::PingResp { rid: Some(r) } if r == rid => return before,
                f => before.push(f),
            }
        }
    }
}

/// Reads a plain socket until the broker closes it (what it sent is returned); fails
/// the test at the deadline.
fn read_to_close(s: &mut TcpStream) -> Vec<u8> {
    let end = Instant::now() + DEADLINE;
    let mut got = Vec::new();
    loop {
        let left = end.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "the broker did not close within {DEADLINE:?}"
        );
        s.set_read_timeout(Some(left)).unwrap();
        let mut chunk = [0u8; 4096];
        match s.read(&mut chunk) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            Err(e) if read_again(&e) => {}
            Err(_) => return got,
        }
    }
}

/// INFO first, then a subscription and a publish delivered, over TLS.
#[test]
fn publish_and_subscribe_over_tls() {
    let pki = Pki::new("test");
    let server = pki.issue("server");
    let s = start_with(tls_config(&server, None));
    let config = client_config(&pki.ca_file(), None);
    let mut sub = Client::connect(s.addr, config.clone());
    assert!(matches!(sub.next().unwrap(), ServerFrame::Info(_)));
    sub.send(b"SUB topic:news 1\r\n");
    assert!(sub
        .sync(1)
        .iter()
        .all(|f| matches!(f, ServerFrame::Ok { .. })));
    let mut publ = Client::connect(s.addr, config);
    assert!(matches!(publ.next().unwrap(), ServerFrame::Info(_)));
    // Large enough to take several TLS records.
    let big = vec![b'x'; 100_000];
    publ.send(b"PUB topic:news 5\r\nhello\r\n");
    let mut b = format!("PUB topic:news {}\r\n", big.len()).into_bytes();
    b.extend_from_slice(&big);
    b.extend_from_slice(b"\r\n");
    publ.send(&b);
    assert!(publ.sync(2).is_empty());
    match sub.next().unwrap() {
        ServerFrame::Msg(m) => assert_eq!(&m.payload[..], b"hello"),
        f => panic!("expected MSG, got {f:?}"),
    }
    match sub.next().unwrap() {
        ServerFrame::Msg(m) => assert_eq!(m.payload.len(), big.len()),
        f => panic!("expected MSG, got {f:?}"),
    }
}

/// A client speaking clear text to the TLS port is closed, never greeted; TLS clients
/// are served meanwhile.
#[test]
fn plain_text_to_the_tls_port_is_closed() {
    let pki = Pki::new("test");
    let server = pki.issue("server");
    let s = start_with(tls_config(&server, None));
    let mut plain = TcpStream::connect(s.addr).unwrap();
    plain.write_all(b"PINGREQ #1\r\nSUB topic:x 1\r\n").unwrap();
    let got = read_to_close(&mut plain);
    assert!(
        !String::from_utf8_lossy(&got).contains("INFO"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
    let mut c = Client::connect(s.addr, client_config(&pki.ca_file(), None));
    assert!(matches!(c.next().unwrap(), ServerFrame::Info(_)));
    assert!(c.sync(1).is_empty());
}

/// A client that never finishes its handshake is closed after the handshake timeout,
/// and other clients are served while it waits.
#[test]
fn a_handshake_that_never_finishes_is_closed() {
    let pki = Pki::new("test");
    let server = pki.issue("server");
    let mut config = tls_config(&server, None);
    let timeout = Duration::from_millis(300);
    config.tls_handshake_timeout = timeout;
    let s = start_with(config);
    let started = Instant::now();
    let mut silent = TcpStream::connect(s.addr).unwrap();
    // Half a ClientHello's record header: the broker waits for the rest.
    silent.write_all(&[0x16, 0x03, 0x01]).unwrap();
    let mut c = Client::connect(s.addr, client_config(&pki.ca_file(), None));
    assert!(matches!(c.next().unwrap(), ServerFrame::Info(_)));
    assert!(c.sync(1).is_empty());
    let got = read_to_close(&mut silent);
    assert!(got.is_empty(), "{got:?}");
    assert!(started.elapsed() >= timeout, "closed before the timeout");
    // The served client is still served.
    assert!(c.sync(2).is_empty());
}

/// With `--tls-client-ca`, a client certificate that CA signed is required.
#[test]
fn client_certificates_are_required_with_a_client_ca() {
    let pki = Pki::new("test");
    let server = pki.issue("server");
    let clients = Pki::new("clients");
    let good = clients.issue("billing");
    let other = Pki::new("other").issue("stranger");
    let s = start_with(tls_config(&server, Some(&clients.ca_file())));
    let ca = pki.ca_file();

    let mut c = Client::connect(s.addr, client_config(&ca, Some(&good)));
    assert!(matches!(c.next().unwrap(), ServerFrame::Info(_)));
    assert!(c.sync(1).is_empty());

    // TLS 1.3: the client's side of the handshake may end before the broker has
    // refused; the refusal comes as the first read.
    for cert in [None, Some(&other)] {
        let mut c = Client::connect(s.addr, client_config(&ca, cert));
        let _ = c.tls.write_all(b"PINGREQ #1\r\n");
        let _ = c.tls.flush();
        let got = c.next();
        assert!(got.is_err(), "refused, got {got:?}");
    }
}

/// Files that cannot be used stop the start, naming the file.
#[test]
fn bad_tls_files_refuse_to_start() {
    let pki = Pki::new("test");
    let server = pki.issue("server");
    let other = pki.issue("other");
    let not_pem = pki.dir.path().join("not.pem");
    std::fs::write(&not_pem, b"hello\n").unwrap();
    let missing = pki.dir.path().join("missing.pem");
    let refused = |c: Config| {
        smol::block_on(Server::bind(c))
            .err()
            .expect("refused")
            .to_string()
    };
    let mut c = tls_config(&server, None);
    c.tls_key = Some(other.key.clone());
    let e = refused(c);
    assert!(e.contains(&*other.key.to_string_lossy()), "{e}");
    for (cert, key, bad) in [
        (&missing, &server.key, &missing),
        (&not_pem, &server.key, &not_pem),
        (&server.cert, &not_pem, &not_pem),
        (&server.cert, &missing, &missing),
    ] {
        let mut c = Config::ephemeral();
        c.tls_cert = Some(cert.clone());
        c.tls_key = Some(key.clone());
        let e = refused(c);
        assert!(e.contains(&*bad.to_string_lossy()), "{e}");
    }
    let mut c = Config::ephemeral();
    c.tls_cert = Some(server.cert.clone());
    assert!(refused(c).contains("--tls-key"));

    // The binary: exits non-zero, the file named on stderr.
    let (status, err) = agora_exit(
        &[
            "--port".as_ref(),
            "0".as_ref(),
            "--tls-cert".as_ref(),
            server.cert.as_os_str(),
        ],
        &[("AGORA_TLS_KEY", other.key.as_os_str())],
    );
    assert!(!status.success());
    assert!(err.contains(&*other.key.to_string_lossy()), "{err}");
}

/// The binary's listening line says `tls://`.
#[test]
fn the_listening_line_says_tls() {
    let pki = Pki::new("test");
    let server = pki.issue("server");
    let mut child: common::Agora = Command::new(env!("CARGO_BIN_EXE_agora"))
        .env("AGORA_MEMORY_ONLY", "true")
        .env("AGORA_TLS_CERT", &server.cert)
        .env("AGORA_TLS_KEY", &server.key)
        .args(["--port", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
        .into();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let addr = agora_protocol::startup::read_listener(&mut out, "tls").expect("tls:// line");
    let mut c = Client::connect(addr, client_config(&pki.ca_file(), None));
    assert!(matches!(c.next().unwrap(), ServerFrame::Info(_)));
}

/// With users, a client certificate whose subject is a user's `certificate` is that
/// user from the first byte; another certificate still needs a password. INFO says
/// `tls_required=1` and `auth_required=1`.
#[test]
fn a_client_certificate_names_a_user() {
    use agora_server::auth::{hash_password, Pattern, Rights, User};
    let pki = Pki::new("test");
    let server = pki.issue("server");
    let clients = Pki::new("clients");
    let billing = clients.issue_to("billing", Some("billing"));
    let other = clients.issue_to("other", Some("someone-else"));
    let mut config = tls_config(&server, Some(&clients.ca_file()));
    let rights = Rights {
        publish: vec![Pattern::parse("queue:invoices").unwrap()],
        ..Rights::default()
    };
    config
        .users
        .insert(User::new("billing", None, Some("CN=billing"), rights.clone()).unwrap())
        .unwrap();
    let hash = hash_password("pw").unwrap();
    config
        .users
        .insert(User::new("dave", Some(&hash), None, rights).unwrap())
        .unwrap();
    let s = start_with(config);
    let ca = pki.ca_file();

    let mut c = Client::connect(s.addr, client_config(&ca, Some(&billing)));
    match c.next().unwrap() {
        ServerFrame::Info(i) => assert!(i.tls_required && i.auth_required, "{i:?}"),
        f => panic!("{f:?}"),
    }
    c.send(b"SETACK #1 on\r\nPUB #2 queue:invoices 1\r\nx\r\nPUB #3 queue:other 1\r\nx\r\n");
    assert!(matches!(
        c.next().unwrap(),
        ServerFrame::Ok { rid: Some(1) }
    ));
    assert!(matches!(
        c.next().unwrap(),
        ServerFrame::PubAck { rid: Some(2), .. }
    ));
    assert!(
        matches!(c.next().unwrap(), ServerFrame::Err(e) if e.code == agora_protocol::ErrorCode::NotPermitted)
    );

    let mut c = Client::connect(s.addr, client_config(&ca, Some(&other)));
    assert!(matches!(c.next().unwrap(), ServerFrame::Info(_)));
    c.send(b"PUB #1 queue:invoices 1\r\nx\r\n");
    assert!(
        matches!(c.next().unwrap(), ServerFrame::Err(e) if e.code == agora_protocol::ErrorCode::NotAuthenticated)
    );
    c.send(b"CONNECT #2 user=dave password=pw\r\n");
    assert!(matches!(
        c.next().unwrap(),
        ServerFrame::Ok { rid: Some(2) }
    ));
}

/// A TLS client this project did not write: `openssl s_client` (installed by `.ci/run`
/// where missing) completes the handshake, verifying the broker's certificate against
/// the CA, and sees the `INFO` line and the answer to a ping.
#[test]
fn openssl_s_client_sees_the_info_line() {
    let pki = Pki::new("test");
    let server = pki.issue("server");
    let s = start_with(tls_config(&server, None));
    let mut child: common::Agora = Command::new("openssl")
        .args([
            "s_client",
            "-quiet",
            "-verify_return_error",
            "-servername",
            "localhost",
        ])
        .arg("-connect")
        .arg(s.addr.to_string())
        .arg("-CAfile")
        .arg(pki.ca_file())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("openssl s_client cannot run ({e}); .ci/run installs openssl"))
        .into();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"PINGREQ #7\r\n").unwrap();
    stdin.flush().unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut lines = Vec::new();
    let end = Instant::now() + DEADLINE;
    while !lines.iter().any(|l: &String| l.starts_with("PINGRESP #7")) {
        assert!(
            Instant::now() < end,
            "no PINGRESP within {DEADLINE:?}: {lines:?}"
        );
        let mut line = String::new();
        let n = std::io::BufRead::read_line(&mut out, &mut line).unwrap();
        assert!(n > 0, "openssl s_client ended: {lines:?}");
        lines.push(line);
    }
    assert!(lines[0].starts_with("INFO server="), "{lines:?}");
    assert!(lines[0].contains("tls_required=1"), "{lines:?}");
    drop(stdin);
}

/// MQTT over TLS (`mqtts`): the MQTT port speaks TLS when `--tls-cert` is set, and a
/// client certificate names the user as on the TCP port (no password in `CONNECT`).
#[test]
fn mqtts_takes_a_certificate_user_and_mosquittos_clients() {
    use agora_server::auth::{Pattern, Rights, User};
    let pki = Pki::new("test");
    let server = pki.issue("server");
    let clients = Pki::new("clients");
    let device = clients.issue_to("device", Some("device-7"));
    let mut config = tls_config(&server, Some(&clients.ca_file()));
    config.mqtt_port = Some(0);
    let p = |l: &[&str]| l.iter().map(|p| Pattern::parse(p).unwrap()).collect();
    let rights = Rights {
        publish: p(&["topic:sensors.>"]),
        subscribe: p(&["topic:sensors.>"]),
        admin: false,
    };
    config
        .users
        .insert(User::new("device-7", None, Some("CN=device-7"), rights).unwrap())
        .unwrap();
    let s = start_with(config);
    let m = s.mqtt.unwrap();
    let ca = pki.ca_file();

    let mut c = Client::connect(m, client_config(&ca, Some(&device)));
    c.tls.sock.set_read_timeout(Some(DEADLINE)).unwrap();
    c.send(&common::mqtt::Hello::v311("device-7").bytes());
    let mut got = [0u8; 4];
    c.tls.read_exact(&mut got).unwrap();
    assert_eq!(
        got,
        [0x20, 2, 0, 0],
        "CONNACK accepted, by the certificate alone"
    );
    c.send(&common::mqtt::subscribe(false, 1, "sensors/#", 1));
    let mut suback = [0u8; 5];
    c.tls.read_exact(&mut suback).unwrap();
    assert_eq!(suback, [0x90, 3, 0, 1, 1]);

    // mosquitto's client over TLS, verifying the broker against the CA; its client
    // certificate names the same user.
    let out = std::process::Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &m.port().to_string(), "-q", "1"])
        .args(["-t", "sensors/door", "-m", "open"])
        .arg("--cafile")
        .arg(&ca)
        .arg("--cert")
        .arg(&device.cert)
        .arg("--key")
        .arg(&device.key)
        .output()
        .expect("mosquitto_pub (apt-get install mosquitto-clients)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut publish = [0u8; 2 + 2 + 12 + 2 + 4];
    c.tls.read_exact(&mut publish).unwrap();
    assert_eq!(&publish[4..16], b"sensors/door");
    assert_eq!(&publish[18..], b"open");
}

/// WebSocket over TLS (`wss`): the WebSocket port speaks TLS when `--tls-cert` is set;
/// the native protocol on `/agora` works through it.
#[test]
fn wss_carries_the_native_protocol() {
    use async_tungstenite::tungstenite::client::IntoClientRequest;
    use async_tungstenite::tungstenite::Message;
    use futures_lite::StreamExt;
    let pki = Pki::new("test");
    let server = pki.issue("server");
    let mut config = tls_config(&server, None);
    config.ws_port = Some(0);
    let s = start_with(config);
    let addr = s.ws.unwrap();
    let connector = futures_rustls::TlsConnector::from(client_config(&pki.ca_file(), None));
    smol::block_on(async {
        let tcp = async_net::TcpStream::connect(addr).await.unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let tls = connector.connect(name, tcp).await.expect("TLS handshake");
        let req = format!("wss://localhost:{}/agora", addr.port())
            .into_client_request()
            .unwrap();
        let (mut ws, _) = async_tungstenite::client_async(req, tls)
            .await
            .expect("WebSocket handshake");
        let first = futures_lite::future::or(ws.next(), async {
            smol::Timer::after(DEADLINE).await;
            None
        })
        .await;
        match first {
            Some(Ok(Message::Binary(b))) => assert!(b.starts_with(b"INFO "), "{b:?}"),
            other => panic!("{other:?}"),
        }
    });
}

/// HTTPS: the HTTP port speaks TLS when `--tls-cert` is set; a user's credentials are
/// taken over it; plain HTTP to it gets nothing.
#[test]
fn the_http_port_speaks_https_and_takes_credentials_over_it() {
    use std::io::{Read, Write};
    let pki = Pki::new("test");
    let server = pki.issue("server");
    let mut config = tls_config(&server, None);
    config.http_port = Some(0);
    let hash = agora_server::auth::hash_password("pw").unwrap();
    let rights = agora_server::auth::Rights {
        publish: vec![],
        subscribe: vec![],
        admin: true,
    };
    config
        .users
        .insert(agora_server::auth::User::new("root", Some(&hash), None, rights).unwrap())
        .unwrap();
    let s = start_with(config);
    let addr = s.http.unwrap();
    let ask = |head: &str| -> String {
        let mut c = Client::connect(addr, client_config(&pki.ca_file(), None));
        c.tls.sock.set_read_timeout(Some(DEADLINE)).unwrap();
        c.tls
            .write_all(format!("{head}host: localhost\r\nconnection: close\r\n\r\n").as_bytes())
            .unwrap();
        let mut all = Vec::new();
        let _ = c.tls.read_to_end(&mut all);
        String::from_utf8_lossy(&all).into_owned()
    };
    let ready = ask("GET /readyz HTTP/1.1\r\n");
    assert!(ready.starts_with("HTTP/1.1 200 "), "{ready}");
    let refused = ask("GET /api/stats HTTP/1.1\r\n");
    assert!(refused.starts_with("HTTP/1.1 401 "), "{refused}");
    // root:pw
    let stats = ask("GET /api/stats HTTP/1.1\r\nauthorization: Basic cm9vdDpwdw==\r\n");
    assert!(stats.starts_with("HTTP/1.1 200 "), "{stats}");
    assert!(stats.contains("\"destinations\""), "{stats}");
    // Plain HTTP to the HTTPS port: no HTTP answer.
    let mut plain = TcpStream::connect(addr).unwrap();
    plain.set_read_timeout(Some(DEADLINE)).unwrap();
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .unwrap();
    let got = read_to_close(&mut plain);
    assert!(!got.starts_with(b"HTTP/1.1 200"), "{got:?}");
}
