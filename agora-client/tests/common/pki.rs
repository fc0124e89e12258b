//! Certificates made in the test with rcgen: a CA, and certificates it signs, written
//! as PEM files in a temporary directory; and a broker configuration that uses them.

use std::path::{Path, PathBuf};

use agora_server::Config;
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};

/// A CA and the directory its files (and those of what it signs) are in.
pub struct Pki {
    dir: tempfile::TempDir,
    ca: rcgen::Certificate,
    ca_key: KeyPair,
}

/// A certificate and its key, as PEM files.
pub struct Issued {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Pki {
    pub fn new(name: &str) -> Pki {
        let mut params = CertificateParams::new(Vec::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("{name} CA"));
        let ca_key = KeyPair::generate().unwrap();
        let ca = params.self_signed(&ca_key).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        Pki { dir, ca, ca_key }
    }

    /// The CA's certificate, PEM.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A path in the directory (for files that are not there, or not PEM).
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A certificate for `localhost` and 127.0.0.1 (server and client alike).
    pub fn issue(&self, name: &str) -> Issued {
        self.issue_with(name, |_| {})
    }

    /// As [`Pki::issue`], with `edit` applied to the certificate's parameters first.
    pub fn issue_with(&self, name: &str, edit: impl FnOnce(&mut CertificateParams)) -> Issued {
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        edit(&mut params);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca, &self.ca_key).unwrap();
        let issued = Issued {
            cert: self.path(&format!("{name}.pem")),
            key: self.path(&format!("{name}.key")),
        };
        std::fs::write(&issued.cert, cert.pem()).unwrap();
        std::fs::write(&issued.key, key.serialize_pem()).unwrap();
        issued
    }
}

/// A broker on a free port speaking TLS with `server`'s certificate, requiring client
/// certificates signed by the CA in `client_ca` when given.
pub fn tls_config(server: &Issued, client_ca: Option<&Path>) -> Config {
    let mut c = Config::ephemeral();
    c.tls_cert = Some(server.cert.clone());
    c.tls_key = Some(server.key.clone());
    c.tls_client_ca = client_ca.map(Path::to_owned);
    c
}
