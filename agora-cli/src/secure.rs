//! agora-cli's TLS and credential options (`--tls`, `--ca`, `--cert`, `--key`,
//! `--tls-server-name`, `--user`, `--password` or `AGORA_PASSWORD`), global to every
//! command, and what they make of the client's builder.

use std::path::PathBuf;

/// See the module documentation.
#[derive(clap::Args, Debug)]
pub(crate) struct Secure {
    /// Speak TLS to the broker (one started with --tls-cert), trusting the system's CA
    /// certificates unless --ca is given.
    #[arg(long, global = true, help_heading = "TLS and credentials")]
    pub(crate) tls: bool,
    /// Trust the CA certificates in this PEM file instead of the system's (implies
    /// --tls).
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        help_heading = "TLS and credentials"
    )]
    pub(crate) ca: Option<PathBuf>,
    /// Present this client certificate (PEM) to the broker, for one started with
    /// --tls-client-ca (implies --tls; needs --key).
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        requires = "key",
        help_heading = "TLS and credentials"
    )]
    pub(crate) cert: Option<PathBuf>,
    /// The private key (PEM) of the --cert certificate.
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        requires = "cert",
        help_heading = "TLS and credentials"
    )]
    pub(crate) key: Option<PathBuf>,
    /// The name the broker's certificate must carry (default: the host of --server;
    /// implies --tls).
    #[arg(
        long,
        global = true,
        value_name = "NAME",
        help_heading = "TLS and credentials"
    )]
    pub(crate) tls_server_name: Option<String>,
    /// Authenticate as this user (with --password or AGORA_PASSWORD).
    #[arg(
        long,
        global = true,
        value_name = "NAME",
        help_heading = "TLS and credentials"
    )]
    pub(crate) user: Option<String>,
    /// The user's password. Prefer the AGORA_PASSWORD environment variable: other users
    /// of the machine can read a process's arguments.
    #[arg(
        long,
        global = true,
        env = "AGORA_PASSWORD",
        hide_env_values = true,
        value_name = "PW",
        help_heading = "TLS and credentials"
    )]
    pub(crate) password: Option<String>,
}

impl Secure {
    /// Any TLS or credentials option given.
    pub(crate) fn given(&self) -> bool {
        self.tls
            || self.ca.is_some()
            || self.cert.is_some()
            || self.tls_server_name.is_some()
            || self.user.is_some()
    }

    /// `b` with these options.
    pub(crate) fn apply(&self, b: agora_client::ClientBuilder) -> agora_client::ClientBuilder {
        let mut b = b.tls(self.tls);
        if let Some(ca) = &self.ca {
            b = b.ca_file(ca);
        }
        if let (Some(cert), Some(key)) = (&self.cert, &self.key) {
            b = b.client_cert(cert, key);
        }
        if let Some(name) = &self.tls_server_name {
            b = b.server_name(name);
        }
        if let Some(user) = &self.user {
            b = b.credentials(user, self.password.clone().unwrap_or_default());
        }
        b
    }
}
