//! [`ClientBuilder`]: a client's options, and the connect that starts it (the
//! handshake on the caller's executor, then the driver thread).

use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::client::{Client, Inner};
use crate::driver::{self, Driver, Shared};
use crate::error::Result;
use crate::options::{Options, Reconnect};
use crate::pubbuf::PubBuf;

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

    /// Messages buffered per topic subscription before the oldest is dropped (default
    /// 1024, at least 1).
    ///
    /// ```
    /// let b = agora_client::Client::builder().subscription_buffer(10_000);
    /// ```
    pub fn subscription_buffer(mut self, n: usize) -> Self {
        self.opts.subscription_buffer = n.max(1);
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

    /// Connects to `addr` (`host:port`), reads the broker's `INFO`, sends `CONNECT`
    /// and waits for its `OK`, then starts the driver thread.
    ///
    /// ```no_run
    /// # futures_lite::future::block_on(async {
    /// let client = agora_client::Client::builder().name("me").connect("127.0.0.1:48879").await?;
    /// # Ok::<(), agora_client::Error>(())
    /// # });
    /// ```
    pub async fn connect(self, addr: impl ToString) -> Result<Client> {
        let addr = addr.to_string();
        let opts = self.opts;
        let conn = driver::handshake(&addr, &opts).await?;
        let shared = Arc::new(Shared {
            generation: AtomicU64::new(1),
            info: Mutex::new(conn.info.clone()),
            closed: AtomicBool::new(false),
            next_sid: AtomicU64::new(1),
            server_max_payload: AtomicU64::new(conn.info.max_payload),
            pubs: PubBuf::new(opts.publish_buffer),
        });
        let (cmd_tx, cmd_rx) = async_channel::bounded(opts.command_buffer);
        let (ctl_tx, ctl_rx) = async_channel::unbounded();
        let (err_tx, err_rx) = async_channel::bounded(256);
        let driver = Driver::new(
            addr.clone(),
            opts.clone(),
            shared.clone(),
            cmd_rx,
            (ctl_tx.clone(), ctl_rx),
            err_tx,
        );
        std::thread::Builder::new()
            .name("agora-client".to_owned())
            .spawn(move || async_io::block_on(driver.run(conn)))?;
        Ok(Client {
            inner: Arc::new(Inner {
                addr,
                opts,
                shared,
                cmd: cmd_tx,
                ctl: ctl_tx,
                errors: err_rx,
            }),
        })
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
