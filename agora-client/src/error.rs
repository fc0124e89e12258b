//! The client's one error type, and the server errors that reach the application
//! without a request waiting for them ([`ServerError`], read from an [`ErrorStream`]).

use std::fmt;
use std::io;
use std::path::PathBuf;

use agora_protocol::{ErrorCode, NameError, ProtocolError};
use async_channel::Receiver;

/// Everything that can go wrong in the client.
///
/// `Display` is one lowercase line; [`source`](std::error::Error::source) gives the
/// underlying error where there is one.
///
/// ```
/// use agora_client::Error;
/// let e = Error::Server {
///     code: agora_client::ErrorCode::QueueFull,
///     message: "queue 'jobs' is full".into(),
/// };
/// assert_eq!(e.to_string(), "server error queue_full: queue 'jobs' is full");
/// assert_eq!(e.code(), Some(agora_client::ErrorCode::QueueFull));
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// Connecting, reading or writing failed.
    Io(io::Error),
    /// The broker sent bytes that are not a valid frame, or a frame out of place.
    Protocol(ProtocolError),
    /// The broker sent something the handshake did not expect.
    UnexpectedFrame(&'static str),
    /// The broker refused the request with `ERR <code> <message>`.
    Server {
        /// The stable error code, e.g. [`ErrorCode::QueueFull`].
        code: ErrorCode,
        /// The broker's text for people.
        message: String,
    },
    /// The broker refused the credentials (`ERR auth_failed` to `CONNECT`, or `ERR
    /// not_authenticated` when none were given and it requires them; see
    /// [`ClientBuilder::credentials`](crate::ClientBuilder::credentials)) and closed the
    /// connection.
    AuthFailed {
        /// The broker's address, as given to `connect`.
        addr: String,
        /// The broker's text for people.
        message: String,
    },
    /// TLS is on and the broker's certificate is not one this client trusts: not signed
    /// by a CA it trusts (see [`ClientBuilder::ca_file`](crate::ClientBuilder::ca_file)),
    /// expired or not yet valid, or not issued for the server name.
    CertificateNotTrusted {
        /// The broker's address, as given to `connect`.
        addr: String,
        /// rustls's reason: a `rustls::Error`, to downcast to.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// TLS is on and the handshake or a later TLS record failed for another reason: the
    /// broker refused the client certificate or wanted one (an alert), it does not
    /// speak TLS on that port, or the system has no CA certificates to trust.
    Tls {
        /// The broker's address, as given to `connect`.
        addr: String,
        /// What failed: a `rustls::Error` (to downcast to) or an `io::Error`.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A CA, certificate or key file given to the builder cannot be used: it cannot be
    /// read, holds no certificate or key, or the key is not the certificate's. Nothing
    /// was sent.
    TlsFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        source: io::Error,
    },
    /// The TLS server name (given, or the address's host) is neither a DNS name nor an
    /// IP address. Nothing was sent.
    InvalidServerName(String),
    /// Connecting to a broker failed (refused, unreachable, silent, or a server that
    /// is not an Agora broker); `source` says how. Refused credentials and TLS
    /// failures are their own variants, which name the address too.
    Connect {
        /// The broker's address, as given to `connect`.
        addr: String,
        /// What went wrong: [`Error::Io`], [`Error::Timeout`] (no `INFO` within the
        /// connect timeout), [`Error::NotAgora`], or a refusal from the broker.
        source: Box<Error>,
    },
    /// The server at the address does not speak Agora's protocol: its first bytes are
    /// no `INFO` line.
    NotAgora {
        /// What it sent first (at most 64 bytes, shown escaped).
        sent: String,
    },
    /// The client was closed (by [`Client::close`](crate::Client::close), or because
    /// the connection was lost and reconnecting is off or gave up).
    Closed,
    /// The connection was lost while this request was waiting for its answer. With a
    /// reconnect policy the client reconnects; the request may or may not have been
    /// carried out, so retry only what is safe to do twice.
    Disconnected,
    /// No answer within the connect or request timeout.
    Timeout,
    /// An `ACK`/`NACK` of a delivery received on an earlier connection: its delivery id
    /// meant nothing to the new one. The broker delivers the message again.
    StaleDelivery,
    /// A destination name that breaks the naming rules.
    InvalidName(NameError),
    /// A payload (header block included) larger than the client's or broker's limit.
    PayloadTooLarge {
        /// The payload's size, in bytes.
        size: usize,
        /// The limit, in bytes.
        max: usize,
    },
    /// [`respond`](crate::Message::respond) to a message that is not a request: it
    /// carries no reply address (`agora-reply-to`), or it was not received by a client.
    NoReplyAddress,
    /// [`request`](crate::Client::request) to a broker that offers no inbox for replies
    /// (its `INFO` names none: a broker older than request-reply).
    NoInbox,
    /// A typed payload (or the broker's `STATS` document) did not deserialize from
    /// JSON.
    Decode(serde_json::Error),
    /// A typed value did not serialize to JSON.
    Encode(serde_json::Error),
}

impl Error {
    /// The broker's error code, for [`Error::Server`] and [`Error::AuthFailed`].
    ///
    /// ```
    /// assert_eq!(agora_client::Error::Timeout.code(), None);
    /// ```
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Error::Server { code, .. } => Some(*code),
            Error::AuthFailed { .. } => Some(ErrorCode::AuthFailed),
            Error::Connect { source, .. } => source.code(),
            _ => None,
        }
    }

    /// What kind of failure it is, for the common decision: try again, or not.
    ///
    /// ```
    /// use agora_client::{Error, ErrorCode, ErrorKind};
    /// let full = Error::Server { code: ErrorCode::QueueFull, message: "full".into() };
    /// assert_eq!(full.kind(), ErrorKind::Transient);
    /// assert!(full.is_retryable());
    /// let denied = Error::Server { code: ErrorCode::NotPermitted, message: "no".into() };
    /// assert_eq!(denied.kind(), ErrorKind::Refused);
    /// assert_eq!(Error::Closed.kind(), ErrorKind::Closed);
    /// ```
    pub fn kind(&self) -> ErrorKind {
        use ErrorCode as C;
        match self {
            Error::Io(_) | Error::Disconnected | Error::Timeout => ErrorKind::Transient,
            Error::Connect { source, .. } => match source.kind() {
                ErrorKind::Protocol => ErrorKind::Protocol,
                k => k,
            },
            Error::Server { code, .. } => match code {
                C::QueueFull
                | C::MemoryLimit
                | C::TooManyConnections
                | C::TooManyDestinations
                | C::TooManySubscriptions
                | C::ShuttingDown
                | C::Timeout
                | C::Internal
                | C::StorageFailed
                | C::StorageFull
                | C::SlowConsumer
                | C::NoResponders => ErrorKind::Transient,
                C::AuthFailed | C::NotAuthenticated => ErrorKind::Auth,
                _ => ErrorKind::Refused,
            },
            Error::AuthFailed { .. } | Error::CertificateNotTrusted { .. } | Error::Tls { .. } => {
                ErrorKind::Auth
            }
            Error::Protocol(_) | Error::UnexpectedFrame(_) | Error::NotAgora { .. } => {
                ErrorKind::Protocol
            }
            Error::Closed => ErrorKind::Closed,
            Error::StaleDelivery => ErrorKind::Refused,
            _ => ErrorKind::Invalid,
        }
    }

    /// Whether the same call may succeed if made again later
    /// ([`ErrorKind::Transient`]). Whether it is *safe* to make again is the caller's
    /// question: a publish that failed with `Timeout` or `Disconnected` may have been
    /// kept.
    ///
    /// ```
    /// assert!(agora_client::Error::Disconnected.is_retryable());
    /// assert!(!agora_client::Error::Closed.is_retryable());
    /// ```
    pub fn is_retryable(&self) -> bool {
        self.kind() == ErrorKind::Transient
    }
}

/// The kind of an [`Error`]: what a caller decides on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// It may succeed later: the connection failed or was lost, an answer did not come
    /// in time, or the broker refused for now (a full queue, a spent budget, its
    /// limits, shutting down, nobody listening).
    Transient,
    /// The broker refused it for what it is (no right, a bad name or argument, an
    /// unknown destination or delivery): the same call will be refused again.
    Refused,
    /// Credentials or TLS: refused, not trusted, or failed.
    Auth,
    /// The peer broke the protocol, or is not an Agora broker.
    Protocol,
    /// The client is closed.
    Closed,
    /// The call itself is wrong: a bad name, a payload too large, unreadable TLS files,
    /// a message that is no request, JSON that does not (de)serialize.
    Invalid,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io(e) => write!(f, "i/o error: {e}"),
            Error::Protocol(e) => write!(f, "protocol error: {e}"),
            Error::UnexpectedFrame(w) => write!(f, "unexpected {w} frame from the broker"),
            Error::Server { code, message } => write!(f, "server error {code}: {message}"),
            Error::AuthFailed { addr, message } => {
                write!(
                    f,
                    "auth_failed: the broker at {addr} did not accept the connection: {message}"
                )
            }
            Error::CertificateNotTrusted { addr, source } => {
                write!(
                    f,
                    "certificate not trusted, from the broker at {addr}: {source}"
                )?;
                // webpki's reason for a self-signed certificate made as a CA (what
                // `openssl req -x509` makes unless told otherwise) says little; rustls
                // carries it as text only, so it is recognised as text.
                if source.to_string().contains("CaUsedAsEndEntity") {
                    f.write_str(
                        " (the broker's certificate is a CA certificate; a self-signed one \
                         needs basicConstraints CA:FALSE)",
                    )?;
                }
                Ok(())
            }
            Error::Tls { addr, source } => {
                write!(f, "tls with the broker at {addr} failed: {source}")
            }
            Error::TlsFile { path, source } => write!(f, "tls file {}: {source}", path.display()),
            Error::InvalidServerName(n) => {
                write!(
                    f,
                    "tls server name {n:?} is neither a dns name nor an ip address"
                )
            }
            Error::Connect { addr, source } => write!(f, "connecting to {addr}: {source}"),
            Error::NotAgora { sent } => write!(
                f,
                "the server is not an Agora broker: its first bytes are no INFO line but {sent}"
            ),
            Error::Closed => f.write_str("client closed"),
            Error::Disconnected => f.write_str("connection to the broker lost"),
            Error::Timeout => f.write_str("timed out"),
            Error::StaleDelivery => {
                f.write_str("delivery belongs to an earlier connection and cannot be settled")
            }
            Error::InvalidName(e) => write!(f, "invalid destination name: {e}"),
            Error::PayloadTooLarge { size, max } => {
                write!(f, "payload of {size} bytes is over the limit of {max}")
            }
            Error::NoReplyAddress => {
                f.write_str("the message is not a request: it names no reply address")
            }
            Error::NoInbox => f.write_str(
                "the broker offers no inbox for replies (it is older than request-reply)",
            ),
            Error::Decode(e) => write!(f, "payload is not the expected json: {e}"),
            Error::Encode(e) => write!(f, "value does not serialize to json: {e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(e) => Some(e),
            Error::CertificateNotTrusted { source, .. } | Error::Tls { source, .. } => {
                Some(&**source)
            }
            Error::TlsFile { source, .. } => Some(source),
            Error::Protocol(e) => Some(e),
            Error::InvalidName(e) => Some(e),
            Error::Connect { source, .. } => Some(&**source),
            Error::Decode(e) | Error::Encode(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Error {
        Error::Io(e)
    }
}

impl From<NameError> for Error {
    fn from(e: NameError) -> Error {
        Error::InvalidName(e)
    }
}

/// A `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error the broker sent that no request was waiting for: a refused publish that
/// was not confirmed, an `ACK` of an unknown delivery, a subscription the broker
/// cancelled. Read them from [`Client::errors`](crate::Client::errors).
///
/// ```
/// let e = agora_client::ServerError {
///     code: agora_client::ErrorCode::QueueFull,
///     message: "queue 'jobs' is full".into(),
///     request_id: None,
/// };
/// assert_eq!(e.to_string(), "queue_full: queue 'jobs' is full");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerError {
    /// The stable error code.
    pub code: ErrorCode,
    /// The broker's text for people.
    pub message: String,
    /// The request id the `ERR` carried, if any.
    pub request_id: Option<u64>,
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for ServerError {}

/// Errors from [`Client::errors`](crate::Client::errors): a [`Stream`](futures_core::Stream) of
/// [`ServerError`].
///
/// ```no_run
/// # futures_lite::future::block_on(async {
/// use futures_lite::StreamExt;
/// let client = agora_client::Client::connect("127.0.0.1:48879").await?;
/// let mut errors = client.errors();
/// while let Some(e) = errors.next().await {
///     eprintln!("{e}");
/// }
/// # Ok::<(), agora_client::Error>(())
/// # });
/// ```
#[derive(Debug)]
pub struct ErrorStream {
    rx: std::pin::Pin<Box<Receiver<ServerError>>>,
}

impl ErrorStream {
    pub(crate) fn new(rx: Receiver<ServerError>) -> ErrorStream {
        ErrorStream { rx: Box::pin(rx) }
    }

    /// The next error if one is waiting, without waiting.
    ///
    /// ```no_run
    /// # futures_lite::future::block_on(async {
    /// let client = agora_client::Client::connect("127.0.0.1:48879").await?;
    /// assert!(client.errors().try_next().is_none());
    /// # Ok::<(), agora_client::Error>(())
    /// # });
    /// ```
    pub fn try_next(&mut self) -> Option<ServerError> {
        self.rx.try_recv().ok()
    }
}

impl futures_core::Stream for ErrorStream {
    type Item = ServerError;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<ServerError>> {
        self.rx.as_mut().poll_next(cx)
    }
}
