//! What happens to a client's connection, as a stream: [`Client::events`]. The driver
//! and its reader thread send; the list is bounded (256, the oldest dropped when nobody
//! reads), so an application that never looks costs nothing but that.

use std::pin::Pin;
use std::task::{Context, Poll};

use agora_protocol::Destination;
use async_channel::Receiver;

use crate::error::ServerError;

/// Most events kept for the application; past it the oldest go first.
pub(crate) const EVENTS_KEPT: usize = 256;

/// Something that happened to the client's connection, from [`Client::events`](crate::Client::events).
///
/// ```
/// let e = agora_client::Event::Reconnected { addr: "127.0.0.1:48879".into(), generation: 2 };
/// assert_eq!(e.to_string(), "reconnected to 127.0.0.1:48879 (connection 2)");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// The connection was lost; with a reconnect policy the client tries again.
    Disconnected {
        /// The broker it was connected to.
        addr: String,
        /// Why, for people (the error that ended it).
        reason: String,
    },
    /// A new connection is up after a loss: subscriptions are made again, and
    /// deliveries carry this generation.
    Reconnected {
        /// The broker it is connected to now (the next of several, or the same).
        addr: String,
        /// The connection's generation ([`Client::generation`](crate::Client::generation)).
        generation: u64,
    },
    /// The client stopped for good: closed, or reconnecting gave up.
    Closed,
    /// A topic subscription's buffer in this client was full: its oldest messages were
    /// dropped to make room ([`Subscription::dropped`](crate::Subscription::dropped)
    /// counts them all).
    Dropped {
        /// The subscription's destination (a topic, or a pattern).
        destination: Destination,
        /// Messages dropped this time.
        count: u64,
    },
    /// An error the broker sent that no call was waiting for (also on
    /// [`Client::errors`](crate::Client::errors)).
    ServerError(ServerError),
}

impl std::fmt::Display for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Event::Disconnected { addr, reason } => {
                write!(f, "disconnected from {addr}: {reason}")
            }
            Event::Reconnected { addr, generation } => {
                write!(f, "reconnected to {addr} (connection {generation})")
            }
            Event::Closed => f.write_str("closed"),
            Event::Dropped { destination, count } => {
                write!(
                    f,
                    "{count} messages of {destination} dropped: the subscription's buffer was full"
                )
            }
            Event::ServerError(e) => write!(f, "broker error {e}"),
        }
    }
}

/// The client's [`Event`]s: a [`Stream`](futures_core::Stream). Every clone of the
/// client shares one list: each event goes to one reader.
///
/// ```no_run
/// # futures_lite::future::block_on(async {
/// use futures_lite::StreamExt;
/// let client = agora_client::Client::connect("127.0.0.1:48879").await?;
/// let mut events = client.events();
/// while let Some(e) = events.next().await {
///     eprintln!("agora: {e}");
/// }
/// # Ok::<(), agora_client::Error>(())
/// # });
/// ```
#[derive(Debug)]
pub struct EventStream {
    rx: Pin<Box<Receiver<Event>>>,
}

impl EventStream {
    pub(crate) fn new(rx: Receiver<Event>) -> EventStream {
        EventStream { rx: Box::pin(rx) }
    }

    /// The next event if one is waiting, without waiting.
    ///
    /// ```no_run
    /// # futures_lite::future::block_on(async {
    /// let client = agora_client::Client::connect("127.0.0.1:48879").await?;
    /// assert!(client.events().try_next().is_none());
    /// # Ok::<(), agora_client::Error>(())
    /// # });
    /// ```
    pub fn try_next(&mut self) -> Option<Event> {
        self.rx.try_recv().ok()
    }
}

impl futures_core::Stream for EventStream {
    type Item = Event;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        self.rx.as_mut().poll_next(cx)
    }
}
