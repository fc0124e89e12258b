//! The settings a client is built with: the public [`Reconnect`] policy and the
//! builder's `Options`. Plain values; imports nothing else of the crate, so every other
//! module may read them.

use std::path::PathBuf;
use std::time::Duration;

use agora_protocol::Password;

/// How to reconnect after the connection is lost: exponential backoff from
/// `initial_delay`, doubling up to `max_delay`, for at most `max_attempts` tries in a
/// row (`None`: forever, until [`Client::close`](crate::Client::close)).
///
/// ```
/// use std::time::Duration;
/// let policy = agora_client::Reconnect::default()
///     .initial_delay(Duration::from_millis(100))
///     .max_delay(Duration::from_secs(10))
///     .max_attempts(Some(20));
/// assert_eq!(policy.max_attempts, Some(20));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reconnect {
    /// The wait before the first attempt.
    pub initial_delay: Duration,
    /// The longest wait between attempts.
    pub max_delay: Duration,
    /// Attempts in a row before giving up and closing the client; `None`: no limit.
    pub max_attempts: Option<u32>,
}

impl Default for Reconnect {
    /// 50 ms, doubling up to 5 s, forever.
    fn default() -> Self {
        Reconnect {
            initial_delay: Duration::from_millis(50),
            max_delay: Duration::from_secs(5),
            max_attempts: None,
        }
    }
}

impl Reconnect {
    /// Sets the wait before the first attempt.
    ///
    /// ```
    /// # use std::time::Duration;
    /// let p = agora_client::Reconnect::default().initial_delay(Duration::from_millis(10));
    /// assert_eq!(p.initial_delay, Duration::from_millis(10));
    /// ```
    pub fn initial_delay(mut self, d: Duration) -> Self {
        self.initial_delay = d;
        self
    }

    /// Sets the longest wait between attempts.
    ///
    /// ```
    /// # use std::time::Duration;
    /// let p = agora_client::Reconnect::default().max_delay(Duration::from_secs(1));
    /// assert_eq!(p.max_delay, Duration::from_secs(1));
    /// ```
    pub fn max_delay(mut self, d: Duration) -> Self {
        self.max_delay = d;
        self
    }

    /// Sets how many attempts in a row are made before giving up.
    ///
    /// ```
    /// let p = agora_client::Reconnect::default().max_attempts(Some(3));
    /// assert_eq!(p.max_attempts, Some(3));
    /// ```
    pub fn max_attempts(mut self, n: Option<u32>) -> Self {
        self.max_attempts = n;
        self
    }
}

/// The builder's settings.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    pub(crate) name: Option<String>,
    pub(crate) connect_timeout: Duration,
    pub(crate) request_timeout: Duration,
    pub(crate) max_payload: usize,
    pub(crate) reconnect: Option<Reconnect>,
    pub(crate) subscription_buffer: usize,
    pub(crate) command_buffer: usize,
    pub(crate) publish_buffer: usize,
    /// How long the driver gathers fire-and-forget publishes while a publisher
    /// streams (zero: it writes whatever is buffered at once).
    pub(crate) publish_linger: Duration,
    /// `Some`: speak TLS, with these settings.
    pub(crate) tls: Option<TlsOptions>,
    /// `user=` and `password=` of every `CONNECT`, the reconnects' too.
    pub(crate) credentials: Option<(String, Password)>,
    /// The reconnect policy applies to the first connection too.
    pub(crate) retry_initial: bool,
    /// What a topic subscription does when its buffer is full.
    pub(crate) overflow: Overflow,
    /// Which threads run the connection.
    pub(crate) threads: Threads,
}

/// Which threads run a client's connection
/// ([`ClientBuilder::threads`](crate::ClientBuilder::threads)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Threads {
    /// The process's shared I/O threads: half the cores (rounded up), at most four,
    /// unless [`set_shared_threads`](crate::set_shared_threads) or `AGORA_CLIENT_THREADS`
    /// says otherwise; started by the first client that uses them and kept for the life
    /// of the process. Every client of the process runs there as tasks (its driver,
    /// which writes, and its reader), on sockets in async-io's reactor; a client costs
    /// no thread of its own.
    #[default]
    Shared,
    /// Two threads of the connection's own, on a blocking socket: a driver that
    /// writes and a reader that reads, each woken by the kernel directly, never
    /// through the reactor, whoever polls it, at two threads per client. Measured on
    /// two cores they do worse than the shared threads on every row (fewer round trips:
    /// only the shared threads let a publisher write an idle connection itself; less
    /// throughput where messages stream; figures in the client chapter): they are for
    /// a process whose own threads poll the reactor, where an event for a shared
    /// thread may pass through one of them.
    Dedicated,
}

/// What a topic subscription does when the application does not keep up and its
/// buffer ([`ClientBuilder::subscription_buffer`](crate::ClientBuilder::subscription_buffer))
/// is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Overflow {
    /// Ask the broker to hold the subscription's messages (`HOLD`) until the
    /// application takes what is buffered (`RESUME`): they wait in the broker's
    /// subscriber buffer, under its slow-consumer policy, and whatever the broker
    /// drops there is reported ([`Event::Dropped`](crate::Event::Dropped)). What was
    /// already on its way when the buffer filled is kept too. Nothing else on the
    /// connection waits.
    #[default]
    Hold,
    /// Drop the oldest buffered message in the client and count it
    /// ([`Subscription::dropped`](crate::Subscription::dropped)): the broker keeps
    /// sending.
    DropOldest,
}

/// The builder's TLS settings, as given; the files are read when the client connects.
#[derive(Debug, Clone, Default)]
pub(crate) struct TlsOptions {
    /// PEM CA certificates to trust instead of the system's.
    pub(crate) ca_file: Option<PathBuf>,
    /// A PEM certificate (chain) and its private key, presented to the broker.
    pub(crate) client_cert: Option<(PathBuf, PathBuf)>,
    /// The name the broker's certificate must carry; `None`: the address's host.
    pub(crate) server_name: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            name: None,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            max_payload: agora_protocol::DEFAULT_MAX_PAYLOAD,
            reconnect: None,
            subscription_buffer: 1024,
            command_buffer: 1024,
            publish_buffer: 256 * 1024,
            publish_linger: Duration::from_micros(50),
            tls: None,
            credentials: None,
            retry_initial: false,
            overflow: Overflow::Hold,
            threads: Threads::Shared,
        }
    }
}
