//! The TLS rows' one certificate and their clients' side of TLS.
//!
//! At the bench's start, rcgen makes a CA and a server certificate it signs (for
//! `localhost` and 127.0.0.1, not a CA itself: rustls refuses a CA certificate as a
//! server's own), written as PEM files under `--out`; `agora` and nats-server are both
//! started on that certificate and key. The lean clients trust that CA alone, through
//! rustls with ring, and offer TLS 1.3 with one cipher suite, [`SUITE`], so that both
//! servers are held to the same record protection whatever their own preferences (rustls
//! puts AES-256-GCM first, Go's crypto/tls AES-128-GCM). What each connection
//! negotiated is recorded with the run.

use std::collections::BTreeSet;
use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use crate::drivers::lean::{Dial, Transport};

/// The one cipher suite the clients offer: TLS 1.3's mandatory one (RFC 8446, 9.1),
/// which both servers support.
pub(crate) const SUITE: rustls::SupportedCipherSuite =
    rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256;

/// The longest a handshake may take before the connection counts as failed.
const HANDSHAKE: Duration = Duration::from_secs(5);

/// The certificate both TLS servers use, as files.
#[derive(Debug, Clone)]
pub(crate) struct Certs {
    /// The CA's certificate (PEM): what the clients trust.
    pub(crate) ca: PathBuf,
    /// The server's certificate, then the CA's (PEM).
    pub(crate) cert: PathBuf,
    /// The server's private key (PKCS#8 PEM).
    pub(crate) key: PathBuf,
}

impl Certs {
    /// Makes a CA and a server certificate for `localhost` and 127.0.0.1 (ECDSA P-256,
    /// rcgen's default) and writes them into `dir`, replacing what is there.
    pub(crate) fn make(dir: &Path) -> Result<Certs, String> {
        let e = |e: rcgen::Error| format!("making the TLS certificate: {e}");
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let mut params = CertificateParams::new(Vec::new()).map_err(e)?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "agora-bench CA");
        let ca_key = KeyPair::generate().map_err(e)?;
        let ca = params.self_signed(&ca_key).map_err(e)?;
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .map_err(e)?;
        params
            .distinguished_name
            .push(DnType::CommonName, "agora-bench server");
        let key = KeyPair::generate().map_err(e)?;
        let cert = params.signed_by(&key, &ca, &ca_key).map_err(e)?;
        let certs = Certs {
            ca: dir.join("ca.pem"),
            cert: dir.join("server.pem"),
            key: dir.join("server.key"),
        };
        for (path, text) in [
            (&certs.ca, ca.pem()),
            (&certs.cert, cert.pem() + &ca.pem()),
            (&certs.key, key.serialize_pem()),
        ] {
            std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))?;
        }
        Ok(certs)
    }

    /// The clients' configuration: this CA only, TLS 1.3 with [`SUITE`] only.
    pub(crate) fn client_config(&self) -> Result<Arc<ClientConfig>, String> {
        let pem = std::fs::read(&self.ca).map_err(|e| format!("{}: {e}", self.ca.display()))?;
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.map_err(|e| format!("{}: {e}", self.ca.display()))?;
            roots
                .add(cert)
                .map_err(|e| format!("{}: {e}", self.ca.display()))?;
        }
        let provider = rustls::crypto::CryptoProvider {
            cipher_suites: vec![SUITE],
            ..rustls::crypto::ring::default_provider()
        };
        let config = ClientConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| format!("TLS client configuration: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Arc::new(config))
    }
}

/// A lean client's TLS over its TCP socket.
pub(crate) type TlsStream = StreamOwned<ClientConnection, TcpStream>;

impl Transport for TlsStream {
    fn tcp(&self) -> &TcpStream {
        &self.sock
    }

    fn goodbye(&mut self) {
        self.conn.send_close_notify();
        let _ = self.flush();
    }
}

/// Dials TLS to 127.0.0.1, checking the server's certificate against the bench's CA,
/// and notes what each connection negotiated.
#[derive(Clone)]
pub(crate) struct Tls {
    config: Arc<ClientConfig>,
    /// Every distinct "version suite group" seen, shared by the clones a run makes.
    seen: Arc<Mutex<BTreeSet<String>>>,
}

impl Tls {
    pub(crate) fn new(config: Arc<ClientConfig>) -> Tls {
        Tls {
            config,
            seen: Arc::default(),
        }
    }
}

impl Dial for Tls {
    type Stream = TlsStream;

    fn dial(&self, mut tcp: TcpStream) -> Result<TlsStream, String> {
        let e = |e: std::io::Error| format!("TLS handshake: {e}");
        // The servers listen on 127.0.0.1 only: the certificate names it.
        let name = ServerName::from(tcp.peer_addr().map_err(e)?.ip());
        let mut conn = ClientConnection::new(self.config.clone(), name)
            .map_err(|e| format!("TLS client: {e}"))?;
        tcp.set_read_timeout(Some(HANDSHAKE)).map_err(e)?;
        // The whole handshake now, so that it is never part of a measured run.
        while conn.is_handshaking() {
            conn.complete_io(&mut tcp).map_err(e)?;
        }
        let session = format!(
            "{:?} {:?} {}",
            conn.protocol_version()
                .ok_or("TLS: no protocol version after the handshake")?,
            conn.negotiated_cipher_suite()
                .ok_or("TLS: no cipher suite after the handshake")?
                .suite(),
            conn.negotiated_key_exchange_group()
                .map_or_else(|| "?".to_owned(), |g| format!("{:?}", g.name())),
        );
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(session);
        Ok(StreamOwned::new(conn, tcp))
    }

    fn negotiated(&self) -> Option<String> {
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        (!seen.is_empty()).then(|| seen.iter().cloned().collect::<Vec<_>>().join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The certificate the servers get is trusted by the clients' configuration, for
    /// 127.0.0.1, and is not a CA itself.
    #[test]
    fn certificate_and_client_agree() {
        let dir = std::env::temp_dir().join(format!("agora-bench-tls-{}", std::process::id()));
        let certs = Certs::make(&dir).unwrap();
        let config = certs.client_config().unwrap();
        let pem = std::fs::read(&certs.cert).unwrap();
        let chain = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        assert_eq!(chain.len(), 2, "the server's certificate, then the CA's");
        let key = &std::fs::read(&certs.key).unwrap();
        let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key).unwrap();
        let server = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
        // A handshake in memory: client and server pass their bytes to each other.
        let name = ServerName::from(std::net::IpAddr::from(std::net::Ipv4Addr::LOCALHOST));
        let mut client = ClientConnection::new(config, name).unwrap();
        let mut server = rustls::ServerConnection::new(Arc::new(server)).unwrap();
        for _ in 0..10 {
            let mut buf = Vec::new();
            while client.wants_write() {
                client.write_tls(&mut buf).unwrap();
            }
            server.read_tls(&mut &buf[..]).unwrap();
            server.process_new_packets().unwrap();
            let mut buf = Vec::new();
            while server.wants_write() {
                server.write_tls(&mut buf).unwrap();
            }
            client.read_tls(&mut &buf[..]).unwrap();
            client.process_new_packets().unwrap();
            if !client.is_handshaking() && !server.is_handshaking() {
                break;
            }
        }
        assert!(!client.is_handshaking());
        assert_eq!(
            client.negotiated_cipher_suite().map(|s| s.suite()),
            Some(SUITE.suite())
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
