//! TLS to the broker: the rustls configuration, built once per [`ClientBuilder::connect`]
//! from the builder's settings (whom to trust, the client certificate, the server
//! name), and the translation of rustls's failures into errors that say what failed and
//! with which broker. It reads the files it is given and the system's CA store, nothing
//! else, and never touches a socket beyond starting the handshake on one.
//!
//! The crypto is ring's (rustls's `ring` provider), named here rather than taken from a
//! process-wide default, as the broker does.
//!
//! [`ClientBuilder::connect`]: crate::ClientBuilder::connect

use std::fmt;
use std::io;
use std::path::Path;
use std::sync::Arc;

use async_net::TcpStream;
use rustls::pki_types;

use crate::error::{Error, Result};
use crate::options::TlsOptions;

/// A TLS connection to the broker.
pub(crate) type TlsStream = futures_rustls::client::TlsStream<TcpStream>;

/// What each (re)connect needs to start TLS: the configuration and the name to verify.
#[derive(Clone)]
pub(crate) struct Connector {
    config: Arc<rustls::ClientConfig>,
    name: pki_types::ServerName<'static>,
}

impl fmt::Debug for Connector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connector")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Connector {
    /// Reads the files and builds the configuration for the broker at `addr`. An
    /// error names the file at fault.
    pub(crate) fn new(opts: &TlsOptions, addr: &str) -> Result<Connector> {
        let host = match &opts.server_name {
            Some(n) => n.as_str(),
            None => host_of(addr),
        };
        let name = pki_types::ServerName::try_from(host.to_owned())
            .map_err(|_| Error::InvalidServerName(host.to_owned()))?;
        let roots = match &opts.ca_file {
            Some(path) => {
                let mut roots = rustls::RootCertStore::empty();
                for c in certificates(path)? {
                    roots.add(c).map_err(|e| {
                        file_error(path, format!("a CA certificate in it cannot be used: {e}"))
                    })?;
                }
                roots
            }
            None => system_roots(addr)?,
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Tls {
                addr: addr.to_owned(),
                source: Box::new(e),
            })?
            .with_root_certificates(roots);
        let config = match &opts.client_cert {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                let chain = certificates(cert)?;
                let private = private_key(key)?;
                builder.with_client_auth_cert(chain, private).map_err(|e| {
                    file_error(
                        key,
                        format!(
                            "not the private key of the certificate in {}: {e}",
                            cert.display()
                        ),
                    )
                })?
            }
        };
        Ok(Connector {
            config: Arc::new(config),
            name,
        })
    }

    /// Runs the client's side of the TLS handshake on a connected socket.
    pub(crate) async fn connect(&self, tcp: TcpStream, addr: &str) -> Result<TlsStream> {
        futures_rustls::TlsConnector::from(self.config.clone())
            .connect(self.name.clone(), tcp)
            .await
            .map_err(|e| match classify(addr, e) {
                // Anything that ends the handshake is TLS's failure, an early close too.
                Error::Io(e) => Error::Tls {
                    addr: addr.to_owned(),
                    source: Box::new(e),
                },
                other => other,
            })
    }
}

/// An I/O error on a TLS stream as the error it is: rustls's refusal of the broker's
/// certificate, another TLS failure (an alert from the broker, a record that is not
/// TLS), or a plain I/O error.
pub(crate) fn classify(addr: &str, e: io::Error) -> Error {
    let is_rustls = e
        .get_ref()
        .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some());
    if !is_rustls {
        return Error::Io(e);
    }
    let Some(inner) = e.into_inner() else {
        unreachable!("checked above: the error wraps a rustls error")
    };
    let addr = addr.to_owned();
    match inner.downcast_ref::<rustls::Error>() {
        Some(rustls::Error::InvalidCertificate(_)) => Error::CertificateNotTrusted {
            addr,
            source: inner,
        },
        _ => Error::Tls {
            addr,
            source: inner,
        },
    }
}

/// The host part of `host:port`, `[v6]:port` or a bare host: the server name to verify
/// when none is given (an IP address is checked against the certificate's IP names).
fn host_of(addr: &str) -> &str {
    let host = match addr.rsplit_once(':') {
        Some((h, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => addr,
    };
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

/// The operating system's trusted CA certificates (rustls-native-certs: on Linux the
/// files `SSL_CERT_FILE`/`SSL_CERT_DIR` or the distribution's bundle name). Ones that
/// do not parse are skipped; none at all is an error.
fn system_roots(addr: &str) -> Result<rustls::RootCertStore> {
    let found = rustls_native_certs::load_native_certs();
    for e in &found.errors {
        log::debug!("agora client: reading the system's CA certificates: {e}");
    }
    let mut roots = rustls::RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        return Err(Error::Tls {
            addr: addr.to_owned(),
            source: "the system has no CA certificates to trust; give a CA file".into(),
        });
    }
    Ok(roots)
}

fn file_error(path: &Path, why: impl Into<String>) -> Error {
    Error::TlsFile {
        path: path.to_owned(),
        source: io::Error::new(io::ErrorKind::InvalidData, why.into()),
    }
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::TlsFile {
        path: path.to_owned(),
        source: io::Error::new(e.kind(), format!("cannot be read: {e}")),
    })
}

/// Every certificate in the PEM file `path` (at least one).
fn certificates(path: &Path) -> Result<Vec<pki_types::CertificateDer<'static>>> {
    let text = read(path)?;
    let certs = rustls_pemfile::certs(&mut &text[..])
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(path, format!("not PEM: {e}")))?;
    if certs.is_empty() {
        return Err(file_error(
            path,
            "no PEM certificate in it (looked for -----BEGIN CERTIFICATE-----)",
        ));
    }
    Ok(certs)
}

/// The first private key in the PEM file `path`.
fn private_key(path: &Path) -> Result<pki_types::PrivateKeyDer<'static>> {
    let text = read(path)?;
    match rustls_pemfile::private_key(&mut &text[..]) {
        Ok(Some(key)) => Ok(key),
        Ok(None) => Err(file_error(
            path,
            "no PEM private key in it (PKCS#8, PKCS#1 or SEC1)",
        )),
        Err(e) => Err(file_error(path, format!("not PEM: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::host_of;

    #[test]
    fn the_host_of_an_address() {
        assert_eq!(host_of("127.0.0.1:48879"), "127.0.0.1");
        assert_eq!(host_of("broker.example:48879"), "broker.example");
        assert_eq!(host_of("[::1]:48879"), "::1");
        assert_eq!(host_of("localhost"), "localhost");
    }
}
