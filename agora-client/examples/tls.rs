//! Connect to a broker over TLS, trusting a CA file, with a client certificate and
//! credentials when they are given, and say what failed if the broker is refused.
//!
//! ```text
//! # terminal 1: a broker with a certificate (book: Security, a self-signed setup)
//! cargo run --release --bin agora -- --tls-cert server.pem --tls-key server.key
//! # terminal 2: AGORA_CA is the CA file to trust (for a self-signed certificate, itself)
//! AGORA_CA=server.pem cargo run --example tls
//! # with a client certificate (broker started with --tls-client-ca) and a user:
//! AGORA_CA=server.pem AGORA_CERT=me.pem AGORA_KEY=me.key \
//!   AGORA_USER=alice AGORA_PASSWORD=… cargo run --example tls
//! ```

use std::env;

use agora_client::{Client, Error};

fn main() -> Result<(), Error> {
    let server = env::var("AGORA_SERVER").unwrap_or(agora_client::DEFAULT_SERVER.into());
    futures_lite::future::block_on(async {
        // ANCHOR: connect
        // TLS on; without a CA file the system's CA certificates are trusted.
        let mut builder = Client::builder().name("tls-example").tls(true);
        if let Ok(ca) = env::var("AGORA_CA") {
            builder = builder.ca_file(ca);
        }
        // For a broker started with --tls-client-ca.
        if let (Ok(cert), Ok(key)) = (env::var("AGORA_CERT"), env::var("AGORA_KEY")) {
            builder = builder.client_cert(cert, key);
        }
        // From the environment, not the command line, which other users can read.
        if let Ok(user) = env::var("AGORA_USER") {
            let password = env::var("AGORA_PASSWORD").unwrap_or_default();
            builder = builder.credentials(user, password);
        }
        let client = match builder.connect(&server).await {
            Ok(c) => c,
            Err(e @ Error::CertificateNotTrusted { .. }) => {
                eprintln!("{e}\n(is AGORA_CA the CA that signed the broker's certificate?)");
                return Err(e);
            }
            Err(e @ Error::AuthFailed { .. }) => {
                eprintln!("{e}\n(check AGORA_USER and AGORA_PASSWORD)");
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        // ANCHOR_END: connect
        let rtt = client.ping().await?;
        println!("connected to {} over TLS, ping {rtt:?}", server);
        client.close().await
    })
}
