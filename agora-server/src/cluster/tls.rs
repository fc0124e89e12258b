//! TLS on the cluster links (`--cluster-ca`), mutual: each node's cluster port presents
//! its `--cluster-cert`, and each node dialing another checks that certificate against
//! the cluster's CAs and the host its `--peers` entry names, and shows its own, which the
//! port checks against the same CAs. Who a node is, is still proved
//! by the handshake's shared secret over the encrypted stream; TLS keeps the traffic
//! between nodes private and unaltered. The client port's TLS settings are its own: a
//! node may serve clients in clear text and link over TLS, or the other way round.

use std::io;
use std::sync::Arc;

use futures_rustls::rustls::{self, pki_types};
use futures_rustls::{TlsAcceptor, TlsConnector};

use crate::Config;

/// Both sides of TLS for the links.
#[derive(Clone)]
pub(crate) struct LinkTls {
    pub acceptor: TlsAcceptor,
    pub connector: TlsConnector,
}

fn bad(why: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, why.into())
}

/// The links' TLS as the settings describe it: `None` without `--cluster-ca`. An error
/// names the setting and the file at fault.
pub(crate) fn link_tls(config: &Config) -> io::Result<Option<LinkTls>> {
    let (ca, cert, key) =
        match (
            &config.cluster_ca,
            &config.cluster_cert,
            &config.cluster_key,
        ) {
            (None, None, None) => return Ok(None),
            (Some(ca), Some(cert), Some(key)) => (ca, cert, key),
            _ => return Err(bad(
                "TLS on cluster links needs all of --cluster-ca, --cluster-cert and --cluster-key",
            )),
        };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = crate::tls::certificates("--cluster-cert", cert)?;
    let private = crate::tls::private_key("--cluster-key", key)?;
    let mut roots = rustls::RootCertStore::empty();
    for c in crate::tls::certificates("--cluster-ca", ca)? {
        roots
            .add(c)
            .map_err(|e| bad(format!("--cluster-ca {}: {e}", ca.display())))?;
    }
    let roots = Arc::new(roots);
    // Both ways: the dialer shows its certificate too, and the acceptor checks it.
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        roots.clone(),
        provider.clone(),
    )
    .build()
    .map_err(|e| bad(format!("--cluster-ca {}: {e}", ca.display())))?;
    let server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(format!("TLS: {e}")))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain.clone(), private.clone_key())
        .map_err(|e| bad(format!("--cluster-cert/--cluster-key: {e}")))?;
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(format!("TLS: {e}")))?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, private)
        .map_err(|e| bad(format!("--cluster-cert/--cluster-key: {e}")))?;
    Ok(Some(LinkTls {
        acceptor: TlsAcceptor::from(Arc::new(server)),
        connector: TlsConnector::from(Arc::new(client)),
    }))
}

/// The name a peer's certificate must carry: the host of its `--peers` address (an IP
/// address is checked as one).
pub(crate) fn server_name(addr: &str) -> Result<pki_types::ServerName<'static>, String> {
    let host = addr
        .rsplit_once(':')
        .map(|(h, _)| h.trim_start_matches('[').trim_end_matches(']'))
        .unwrap_or(addr);
    pki_types::ServerName::try_from(host.to_owned())
        .map_err(|e| format!("'{host}' cannot name a TLS server: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_is_named_by_the_host_of_its_address() {
        assert_eq!(
            server_name("10.0.0.2:7480").unwrap(),
            pki_types::ServerName::IpAddress(
                "10.0.0.2".parse::<std::net::IpAddr>().unwrap().into()
            )
        );
        assert_eq!(
            server_name("[::1]:7480").unwrap(),
            pki_types::ServerName::IpAddress("::1".parse::<std::net::IpAddr>().unwrap().into())
        );
        assert!(matches!(
            server_name("node-b.example:7480").unwrap(),
            pki_types::ServerName::DnsName(_)
        ));
        assert!(server_name("bad name:1").is_err());
    }
}
