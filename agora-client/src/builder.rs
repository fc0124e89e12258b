//! [`ClientBuilder`]: a client's options, and the connect that starts it (the
//! handshake on the caller's executor, then the driver, on the shared I/O threads or a
//! thread of its own).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::client::{Client, Inner};
use crate::driver::{self, Driver, Shared};
use crate::error::{Error, Result};
use crate::options::{Options, Overflow, Reconnect, Threads, TlsOptions};
use crate::pubbuf::PubBuf;
use crate::tls::Connector;

/// Options for a [`Client`]; [`ClientBuilder::connect`] makes it.
///
/// ```no_run
/// # futures_lite::future::block_on(async {
/// use std::time::Duration;
/// let client = agora_client::Client::builder()
///     .name("billing")
///     .connect_timeout(Duration::from_secs(2))
///     .request_timeout(Duration::from_secs(5))
///     .max_payload(64 * 1024)
///     .reconnect(agora_client::Reconnect::default())
///     .connect("127.0.0.1:48879")
///     .await?;
/// # Ok::<(), agora_client::Error>(())
/// # });
/// ```
#[derive(Debug, Clone, Default)]
pub struct ClientBuilder {
    opts: Options,
}

impl ClientBuilder {
    /// The client's name, sent in `CONNECT` and shown in the broker's logs. A token:
    /// blanks and control bytes become `_` on the wire.
    ///
    /// ```
    /// let b = agora_client::Client::builder().name("billing");
    /// ```
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.opts.name = Some(name.into());
        self
    }

    /// How long connecting and the handshake may take (default 5 s); also applies to
    /// each reconnect attempt.
    ///
    /// ```
    /// let b = agora_client::Client::builder().connect_timeout(std::time::Duration::from_secs(1));
    /// ```
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.opts.connect_timeout = d;
        self
    }

    /// How long a request (subscribe, confirmed publish, ping, stats, unsubscribe) may
    /// wait for its answer before [`Error::Timeout`](crate::Error::Timeout) (default 10 s).
    ///
    /// ```
    /// let b = agora_client::Client::builder().request_timeout(std::time::Duration::from_secs(3));
    /// ```
    pub fn request_timeout(mut self, d: Duration) -> Self {
        self.opts.request_timeout = d;
        self
    }

    /// The largest payload (header block included) this client publishes (default
    /// 1 MiB). The broker's own limit from `INFO` applies too, whichever is smaller; a
    /// publish over it fails locally with
    /// [`Error::PayloadTooLarge`](crate::Error::PayloadTooLarge).
    ///
    /// ```
    /// let b = agora_client::Client::builder().max_payload(4096);
    /// ```
    pub fn max_payload(mut self, bytes: usize) -> Self {
        self.opts.max_payload = bytes;
        self
    }

    /// Reconnect after the connection is lost, with this policy (default: off; a lost
    /// connection closes the client).
    ///
    /// ```
    /// let b = agora_client::Client::builder().reconnect(agora_client::Reconnect::default());
    /// ```
    pub fn reconnect(mut self, policy: Reconnect) -> Self {
        self.opts.reconnect = Some(policy);
        self
    }

    /// Messages buffered per topic subscription before its [`Overflow`] policy acts
    /// (default 1024, at least 1): by default the broker is asked to hold the
    /// subscription until the application takes what is buffered.
    ///
    /// ```
    /// let b = agora_client::Client::builder().subscription_buffer(10_000);
    /// ```
    pub fn subscription_buffer(mut self, n: usize) -> Self {
        self.opts.subscription_buffer = n.max(1);
        self
    }

    /// What a topic subscription does when its buffer is full: [`Overflow::Hold`]
    /// (the default: flow control, the broker holds its messages) or
    /// [`Overflow::DropOldest`] (the client drops and counts).
    ///
    /// ```
    /// use agora_client::{Client, Overflow};
    /// let b = Client::builder().subscription_overflow(Overflow::DropOldest);
    /// ```
    pub fn subscription_overflow(mut self, o: Overflow) -> Self {
        self.opts.overflow = o;
        self
    }

    /// Which threads run the connection: the process's shared I/O threads
    /// ([`Threads::Shared`], the default: no thread of the client's own) or two of its
    /// own ([`Threads::Dedicated`]: for a process whose own threads poll the reactor;
    /// see the client chapter for the figures).
    ///
    /// ```
    /// use agora_client::{Client, Threads};
    /// let b = Client::builder().threads(Threads::Dedicated);
    /// ```
    pub fn threads(mut self, t: Threads) -> Self {
        self.opts.threads = t;
        self
    }

    /// Commands (requests, confirmed publishes) queued for the connection before the
    /// caller waits (default 1024, at least 1).
    ///
    /// ```
    /// let b = agora_client::Client::builder().command_buffer(4096);
    /// ```
    pub fn command_buffer(mut self, n: usize) -> Self {
        self.opts.command_buffer = n.max(1);
        self
    }

    /// Bytes of encoded fire-and-forget publishes buffered for the connection before a
    /// publisher waits (default 256 KiB, at least 1). A publish that finds room may
    /// take the buffer past the limit by its own size.
    ///
    /// ```
    /// let b = agora_client::Client::builder().publish_buffer(1 << 20);
    /// ```
    pub fn publish_buffer(mut self, bytes: usize) -> Self {
        self.opts.publish_buffer = bytes.max(1);
        self
    }

    /// How long the connection gathers fire-and-forget publishes into one write while
    /// a publisher streams them (default 50 µs; zero: never). When publishes arrived
    /// while the last write was under way, the next write waits until 64 KiB are
    /// buffered (or the [`publish_buffer`](Self::publish_buffer), if smaller) or this
    /// long, whichever is first: far fewer system calls, for both sides, at up to this
    /// much added latency on those publishes. A publish that finds the connection
    /// idle is written at once, and any other frame (a request, a confirmed publish,
    /// an ack) takes what is buffered with it without waiting.
    ///
    /// ```
    /// # use std::time::Duration;
    /// let b = agora_client::Client::builder().publish_linger(Duration::ZERO);
    /// ```
    pub fn publish_linger(mut self, linger: Duration) -> Self {
        self.opts.publish_linger = linger;
        self
    }

    /// Speak TLS to the broker (one started with `--tls-cert`), or not (the default).
    /// Without [`ca_file`](Self::ca_file) the broker's certificate must be signed by a
    /// CA the system trusts (its certificate store, read at connect). A client speaking
    /// clear text to a TLS port gets no `INFO`, and times out.
    ///
    /// ```
    /// let b = agora_client::Client::builder().tls(true);
    /// ```
    pub fn tls(mut self, on: bool) -> Self {
        self.opts.tls = match (on, self.opts.tls.take()) {
            (false, _) => None,
            (true, t) => Some(t.unwrap_or_default()),
        };
        self
    }

    /// Trust the CA certificates in this PEM file, instead of the system's, for the
    /// broker's certificate (a self-signed one: its own file). Turns TLS on. The file
    /// is read at connect; one that cannot be used fails it with
    /// [`Error::TlsFile`](crate::Error::TlsFile), naming it.
    ///
    /// ```
    /// let b = agora_client::Client::builder().ca_file("/etc/agora/ca.pem");
    /// ```
    pub fn ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.tls_options().ca_file = Some(path.into());
        self
    }

    /// Present this certificate (a PEM file: the certificate first, then its chain)
    /// and its private key (PEM: PKCS#8, PKCS#1 or SEC1) to the broker, for a broker
    /// started with `--tls-client-ca`. Turns TLS on. Read at connect, as
    /// [`ca_file`](Self::ca_file) is.
    ///
    /// ```
    /// let b = agora_client::Client::builder()
    ///     .ca_file("ca.pem")
    ///     .client_cert("billing.pem", "billing.key");
    /// ```
    pub fn client_cert(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.tls_options().client_cert = Some((cert.into(), key.into()));
        self
    }

    /// The name the broker's certificate must be issued for (default: the host part
    /// of the address given to [`connect`](Self::connect); for an IP address such as
    /// `127.0.0.1`, the certificate must name that IP address). Turns TLS on.
    ///
    /// ```
    /// // Connect by address, verify the certificate's DNS name.
    /// let b = agora_client::Client::builder().server_name("broker.internal");
    /// ```
    pub fn server_name(mut self, name: impl Into<String>) -> Self {
        self.tls_options().server_name = Some(name.into());
        self
    }

    /// Authenticate as `user` with `password` (sent in `CONNECT`, on every reconnect
    /// too). A broker that refuses them answers `auth_failed` and closes: connecting
    /// fails with [`Error::AuthFailed`](crate::Error::AuthFailed). Over clear TCP the
    /// password crosses the network readable: use it with TLS.
    ///
    /// ```
    /// let password = std::env::var("AGORA_PASSWORD").unwrap_or_default();
    /// let b = agora_client::Client::builder().tls(true).credentials("alice", password);
    /// ```
    pub fn credentials(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.opts.credentials = Some((user.into(), agora_protocol::Password::new(password)));
        self
    }

    fn tls_options(&mut self) -> &mut TlsOptions {
        self.opts.tls.get_or_insert_with(TlsOptions::default)
    }

    /// Also applies the reconnect policy ([`reconnect`](ClientBuilder::reconnect)) to
    /// the first connection (off by default, as async-nats's
    /// `retry_on_initial_connect`): `connect` then keeps trying, with the policy's
    /// backoff and attempts, instead of failing at the first refusal. Refused
    /// credentials and unreadable TLS files still fail at once.
    ///
    /// ```
    /// let b = agora_client::Client::builder()
    ///     .reconnect(agora_client::Reconnect::default())
    ///     .retry_on_initial_connect(true);
    /// ```
    pub fn retry_on_initial_connect(mut self, on: bool) -> Self {
        self.opts.retry_initial = on;
        self
    }

    /// Connects to `addr` (`host:port`; several, separated by commas, are tried in
    /// turn, as are they on every reconnect), starts TLS if it is on, reads the
    /// broker's `INFO`, sends `CONNECT` and waits for its `OK`, then starts the driver
    /// ([`threads`](Self::threads)). With TLS, the files given are read first.
    ///
    /// ```no_run
    /// # futures_lite::future::block_on(async {
    /// let client = agora_client::Client::builder().name("me").connect("127.0.0.1:48879").await?;
    /// let either = agora_client::Client::builder()
    ///     .connect("10.0.0.1:48879,10.0.0.2:48879")
    ///     .await?;
    /// # Ok::<(), agora_client::Error>(())
    /// # });
    /// ```
    pub async fn connect(self, addr: impl ToString) -> Result<Client> {
        let given = addr.to_string();
        let addrs: Vec<String> = given
            .split(',')
            .map(|a| a.trim().to_owned())
            .filter(|a| !a.is_empty())
            .collect();
        if addrs.is_empty() {
            return Err(Error::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("no broker address in {given:?}"),
            )));
        }
        let opts = self.opts;
        let tls = addrs
            .iter()
            .map(|a| match &opts.tls {
                Some(t) => Connector::new(t, a).map(Some),
                None => Ok(None),
            })
            .collect::<Result<Vec<_>>>()?;
        let (conn, at) = first_connection(&addrs, &opts, &tls).await?;
        let shared = Arc::new(Shared {
            generation: AtomicU64::new(1),
            info: Mutex::new(conn.info.clone()),
            closed: AtomicBool::new(false),
            next_sid: AtomicU64::new(1),
            server_max_payload: AtomicU64::new(conn.info.max_payload),
            pubs: PubBuf::new(opts.publish_buffer),
            next_request: AtomicU64::new(1),
            connected: AtomicBool::new(true),
            msg_ids: crate::driver::MsgIds::new(),
        });
        let (cmd_tx, cmd_rx) = async_channel::bounded(opts.command_buffer);
        let (ctl_tx, ctl_rx) = async_channel::unbounded();
        let (err_tx, err_rx) = async_channel::bounded(256);
        let (event_tx, event_rx) = async_channel::bounded(crate::events::EVENTS_KEPT);
        let addr = addrs[at].clone();
        let driver = Driver::new(
            (addrs, at),
            opts.clone(),
            tls,
            shared.clone(),
            cmd_rx,
            (ctl_tx.clone(), ctl_rx),
            (err_tx, event_tx),
        );
        let asker = driver.asker();
        match opts.threads {
            Threads::Dedicated => {
                std::thread::Builder::new()
                    .name("agora-client".to_owned())
                    .spawn(move || async_io::block_on(driver.run(conn)))?;
            }
            Threads::Shared => crate::pool::spawn(Box::new(move || {
                Box::pin(async move { driver.run(conn).await })
            }))?,
        }
        Ok(Client {
            inner: Arc::new(Inner {
                addr,
                opts,
                shared,
                cmd: cmd_tx,
                ctl: ctl_tx,
                asker,
                errors: err_rx,
                events: event_rx,
            }),
        })
    }
}

/// The first connection: each address in turn; with `retry_on_initial_connect`, again
/// and again as the reconnect policy says. The index of the address that answered.
async fn first_connection(
    addrs: &[String],
    opts: &Options,
    tls: &[Option<Connector>],
) -> Result<(driver::Established, usize)> {
    let policy = opts.reconnect.clone().filter(|_| opts.retry_initial);
    let mut delay = policy.as_ref().map(|p| p.initial_delay);
    let mut rounds = 0u32;
    loop {
        let mut last = None;
        for (i, addr) in addrs.iter().enumerate() {
            match driver::handshake(addr, opts, tls[i].as_ref()).await {
                Ok(c) => return Ok((c, i)),
                // Refused credentials will be refused again.
                Err(e @ Error::AuthFailed { .. }) => return Err(e),
                Err(e) => {
                    log::warn!("agora client: connect to {addr} failed: {e}");
                    last = Some(e);
                }
            }
        }
        let e = last.expect("at least one address");
        rounds += 1;
        match (&policy, delay) {
            (Some(p), Some(d)) if p.max_attempts.is_none_or(|m| rounds < m) => {
                async_io::Timer::after(d).await;
                delay = Some((d * 2).min(p.max_delay));
            }
            _ => return Err(e),
        }
    }
}

impl Client {
    /// Connects with default options; see [`ClientBuilder`] for the others.
    ///
    /// ```no_run
    /// # futures_lite::future::block_on(async {
    /// let client = agora_client::Client::connect("127.0.0.1:48879").await?;
    /// # Ok::<(), agora_client::Error>(())
    /// # });
    /// ```
    pub async fn connect(addr: impl ToString) -> Result<Client> {
        ClientBuilder::default().connect(addr).await
    }

    /// A builder for a client with options.
    ///
    /// ```
    /// let builder = agora_client::Client::builder().name("inventory");
    /// ```
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }
}
