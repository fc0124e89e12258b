//! TLS on the TCP port: the server's rustls configuration, built once at start from the
//! PEM files (`--tls-cert`, `--tls-key`, `--tls-client-ca`), and the handshake each
//! connection runs in its own task, bounded by `--tls-handshake-timeout`.
//!
//! A file that cannot be used stops the start with an error naming it (before any port
//! is bound). A client whose handshake fails or does not finish in time (one speaking
//! clear text to the port, one that stays silent) is closed and logged at debug; it
//! never reaches the connection code, so it is counted nowhere but under the
//! connection cap while its handshake runs. The crypto is ring's (rustls's `ring`
//! provider), named here rather than taken from a process-wide default.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_channel::Receiver;
use async_net::TcpStream;
use futures_lite::future;
use futures_rustls::rustls::{self, pki_types};
use futures_rustls::TlsAcceptor;

/// A TLS connection from a client, over the broker's TCP socket.
pub(crate) type TlsStream = futures_rustls::server::TlsStream<TcpStream>;

/// The server side of TLS as the settings describe it: `None` without `--tls-cert`.
/// An error names the setting and the file at fault.
pub(crate) fn acceptor(config: &crate::Config) -> io::Result<Option<TlsAcceptor>> {
    let (cert, key) = match (&config.tls_cert, &config.tls_key) {
        (None, None) => {
            return match &config.tls_client_ca {
                None => Ok(None),
                Some(_) => Err(bad("--tls-client-ca needs --tls-cert and --tls-key")),
            }
        }
        (Some(_), None) => {
            return Err(bad(
                "--tls-cert needs --tls-key (the certificate's private key)",
            ))
        }
        (None, Some(_)) => {
            return Err(bad(
                "--tls-key needs --tls-cert (the certificate it is the key of)",
            ))
        }
        (Some(c), Some(k)) => (c, k),
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = certificates("--tls-cert", cert)?;
    let private = private_key("--tls-key", key)?;
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(format!("TLS: {e}")))?;
    let builder = match &config.tls_client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in certificates("--tls-client-ca", ca)? {
                roots.add(c).map_err(|e| {
                    bad(format!(
                        "--tls-client-ca {}: a certificate in it cannot be used: {e}",
                        ca.display()
                    ))
                })?;
            }
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                    .build()
                    .map_err(|e| bad(format!("--tls-client-ca {}: {e}", ca.display())))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let server = builder.with_single_cert(chain, private).map_err(|e| {
        bad(format!(
            "--tls-key {} does not go with the certificate in --tls-cert {}: {e}",
            key.display(),
            cert.display()
        ))
    })?;
    Ok(Some(TlsAcceptor::from(Arc::new(server))))
}

fn bad(why: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, why.into())
}

/// Every certificate in the PEM file `path` (at least one), for the setting `flag`.
pub(crate) fn certificates(
    flag: &str,
    path: &Path,
) -> io::Result<Vec<pki_types::CertificateDer<'static>>> {
    let text = read(flag, path)?;
    let certs = rustls_pemfile::certs(&mut &text[..])
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("{flag} {}: not PEM: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(bad(format!(
            "{flag} {}: no PEM certificate in it (looked for -----BEGIN CERTIFICATE-----)",
            path.display()
        )));
    }
    Ok(certs)
}

/// The first private key in the PEM file `path`.
pub(crate) fn private_key(
    flag: &str,
    path: &Path,
) -> io::Result<pki_types::PrivateKeyDer<'static>> {
    let text = read(flag, path)?;
    match rustls_pemfile::private_key(&mut &text[..]) {
        Ok(Some(key)) => Ok(key),
        Ok(None) => Err(bad(format!(
            "{flag} {}: no PEM private key in it (PKCS#8, PKCS#1 or SEC1)",
            path.display()
        ))),
        Err(e) => Err(bad(format!("{flag} {}: not PEM: {e}", path.display()))),
    }
}

fn read(flag: &str, path: &Path) -> io::Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("{flag} {}: cannot be read: {e}", path.display()),
        )
    })
}

/// The user a client's certificate names (`certificate = "…"` in its `[users.…]`),
/// if it presented one that does.
pub(crate) fn user_of(
    tls: &TlsStream,
    users: &crate::auth::Users,
    peer: SocketAddr,
) -> Option<Arc<crate::auth::User>> {
    let cert = tls.get_ref().1.peer_certificates()?.first()?;
    let Some(subject) = crate::auth::subject_of(cert) else {
        log::debug!("client {peer}: its certificate's subject cannot be read");
        return None;
    };
    let user = users.by_certificate(&subject).cloned();
    if user.is_none() {
        log::debug!("client {peer}: certificate {subject} is no user's; a password is needed");
    }
    user
}

/// Runs the server's side of the handshake on a client just accepted, for at most
/// `timeout`, or until the broker stops. `None` when it did not finish (logged at debug;
/// the socket is closed).
pub(crate) async fn handshake(
    acceptor: &TlsAcceptor,
    stream: TcpStream,
    peer: SocketAddr,
    timeout: Duration,
    stop: &Receiver<()>,
) -> Option<TlsStream> {
    let _ = stream.set_nodelay(true);
    let raw = stream.clone();
    let shaken = future::or(
        async { Some(acceptor.accept(stream).await) },
        future::or(
            async {
                smol::Timer::after(timeout).await;
                None
            },
            async {
                let _ = stop.recv().await;
                Some(Err(io::Error::other("the broker is stopping")))
            },
        ),
    )
    .await;
    let why = match shaken {
        Some(Ok(tls)) => return Some(tls),
        Some(Err(e)) => e.to_string(),
        None => format!("not finished within {timeout:?}"),
    };
    log::debug!("client {peer}: TLS handshake failed ({why}); closed");
    let _ = raw.shutdown(std::net::Shutdown::Both);
    None
}
