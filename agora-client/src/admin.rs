//! The client's administrative requests: `STATS`, `PURGE`, `DELETE` and the mutator
//! chains (`CHAIN GET|SET|CLEAR`). Each is one request and its answer; nothing here
//! keeps state.

use agora_protocol::bytes::Bytes;
use agora_protocol::{Destination, StatsPage};

use crate::client::Client;
use crate::driver::{Answer, Cmd};
use crate::error::{Error, Result};
use crate::stats::Stats;

impl Client {
    /// The broker's `STATS` document, as the JSON bytes it sent.
    ///
    /// ```no_run
    /// # futures_lite::future::block_on(async {
    /// let client = agora_client::Client::connect("127.0.0.1:48879").await?;
    /// let json = client.stats_raw().await?;
    /// println!("{}", String::from_utf8_lossy(&json));
    /// # Ok::<(), agora_client::Error>(())
    /// # });
    /// ```
    pub async fn stats_raw(&self) -> Result<Bytes> {
        self.stats_page_raw(StatsPage::default()).await
    }

    /// The broker's `STATS` document listing one page of its destinations: at most
    /// `limit` (the broker's default, 1,000, when `None`; at most 10,000) whose name
    /// starts with `prefix`, after `after`. The document's `page.next` says where the
    /// next page starts (`None` on the last page).
    pub async fn stats_page_raw(&self, page: StatsPage) -> Result<Bytes> {
        match self.call(|reply| Cmd::Stats { page, reply }).await? {
            Answer::Body(b) => Ok(b),
            _ => Err(Error::UnexpectedFrame("OK")),
        }
    }

    /// One page of the `STATS` document, parsed (see
    /// [`stats_page_raw`](Client::stats_page_raw)).
    ///
    /// ```no_run
    /// # futures_lite::future::block_on(async {
    /// use agora_client::StatsPage;
    /// let client = agora_client::Client::connect("127.0.0.1:48879").await?;
    /// // Every destination whose name starts with "sensors.", 500 at a time.
    /// let mut page = StatsPage { prefix: Some("sensors.".into()), limit: Some(500), ..StatsPage::default() };
    /// loop {
    ///     let stats = client.stats_page(page.clone()).await?;
    ///     for d in &stats.destinations {
    ///         println!("{}:{} depth {}", d.kind, d.name, d.depth);
    ///     }
    ///     match stats.page.next {
    ///         Some(next) => page.after = Some(next.parse()?),
    ///         None => break,
    ///     }
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # });
    /// ```
    pub async fn stats_page(&self, page: StatsPage) -> Result<Stats> {
        let json = self.stats_page_raw(page).await?;
        serde_json::from_slice(&json).map_err(Error::Decode)
    }

    /// The broker's `STATS` document, parsed (the schema is in the book's Protocol
    /// chapter), with the first page of destinations (1,000; see
    /// [`stats_page`](Client::stats_page) for the rest).
    ///
    /// ```no_run
    /// # futures_lite::future::block_on(async {
    /// let client = agora_client::Client::connect("127.0.0.1:48879").await?;
    /// let stats = client.stats().await?;
    /// for d in &stats.destinations {
    ///     println!("{}:{} depth {}", d.kind, d.name, d.depth);
    /// }
    /// # Ok::<(), agora_client::Error>(())
    /// # });
    /// ```
    pub async fn stats(&self) -> Result<Stats> {
        let json = self.stats_raw().await?;
        serde_json::from_slice(&json).map_err(Error::Decode)
    }

    /// Drops every pending (not yet delivered) message of a queue; the queue's
    /// consumers and their unacknowledged deliveries are untouched.
    ///
    /// ```no_run
    /// # futures_lite::future::block_on(async {
    /// let client = agora_client::Client::connect("127.0.0.1:48879").await?;
    /// client.purge("jobs").await?;
    /// # Ok::<(), agora_client::Error>(())
    /// # });
    /// ```
    pub async fn purge(&self, queue: &str) -> Result<()> {
        let dest = Destination::queue(queue).map_err(Error::InvalidName)?;
        self.call(|reply| Cmd::Request {
            frame: Box::new(move |rid| agora_protocol::ClientFrame::Purge { rid, dest }),
            reply,
        })
        .await
        .map(|_| ())
    }

    /// Deletes a queue or topic: its subscribers are told (`CANCEL`), its messages
    /// are dropped. Using the name again creates a new, empty destination. Fails with
    /// `unknown_destination` if there is none.
    ///
    /// ```no_run
    /// # futures_lite::future::block_on(async {
    /// use agora_client::Destination;
    /// let client = agora_client::Client::connect("127.0.0.1:48879").await?;
    /// client.delete(Destination::queue("old-jobs").unwrap()).await?;
    /// # Ok::<(), agora_client::Error>(())
    /// # });
    /// ```
    pub async fn delete(&self, dest: Destination) -> Result<()> {
        self.call(|reply| Cmd::Request {
            frame: Box::new(move |rid| agora_protocol::ClientFrame::Delete { rid, dest }),
            reply,
        })
        .await
        .map(|_| ())
    }

    /// Binds a queue to a topic name or pattern (`*` one token, `>` one or more at the
    /// end): from now on every message published to a matching topic is also put in
    /// the queue, so a consumer that is offline finds it there (a durable
    /// subscription). The queue is made if it does not exist; the binding is kept
    /// across restarts with a data directory. Binding twice is one binding. Needs
    /// `admin` once users exist.
    ///
    /// ```no_run
    /// # futures_lite::future::block_on(async {
    /// let client = agora_client::Client::connect("127.0.0.1:48879").await?;
    /// client.bind("alerts", "sensors.*.alarm").await?;
    /// # Ok::<(), agora_client::Error>(())
    /// # });
    /// ```
    pub async fn bind(&self, queue: &str, topic_pattern: &str) -> Result<()> {
        self.binding(queue, topic_pattern, true).await
    }

    /// Removes the binding of a queue to a topic name or pattern; fails with
    /// `unknown_destination` if there is no such binding. Messages already in the
    /// queue stay.
    ///
    /// ```no_run
    /// # futures_lite::future::block_on(async {
    /// let client = agora_client::Client::connect("127.0.0.1:48879").await?;
    /// client.unbind("alerts", "sensors.*.alarm").await?;
    /// # Ok::<(), agora_client::Error>(())
    /// # });
    /// ```
    pub async fn unbind(&self, queue: &str, topic_pattern: &str) -> Result<()> {
        self.binding(queue, topic_pattern, false).await
    }

    async fn binding(&self, queue: &str, pattern: &str, on: bool) -> Result<()> {
        let queue = Destination::queue(queue).map_err(Error::InvalidName)?;
        let topic = Destination::topic_pattern(pattern).map_err(Error::InvalidName)?;
        self.call(|reply| Cmd::Request {
            frame: Box::new(move |rid| match on {
                true => agora_protocol::ClientFrame::Bind { rid, queue, topic },
                false => agora_protocol::ClientFrame::Unbind { rid, queue, topic },
            }),
            reply,
        })
        .await
        .map(|_| ())
    }

    /// A destination's mutator chain (the book's Mutators chapter has the syntax), or
    /// `None` if it has none.
    ///
    /// ```no_run
    /// # futures_lite::future::block_on(async {
    /// use agora_client::Destination;
    /// let client = agora_client::Client::connect("127.0.0.1:48879").await?;
    /// let t = Destination::topic("telemetry").unwrap();
    /// client.chain_set(t.clone(), "threshold /temp > 30 | sample 10").await?;
    /// assert_eq!(client.chain_get(t.clone()).await?.as_deref(), Some("threshold /temp > 30 | sample 10"));
    /// client.chain_clear(t).await?;
    /// # Ok::<(), agora_client::Error>(())
    /// # });
    /// ```
    pub async fn chain_get(&self, dest: Destination) -> Result<Option<String>> {
        let answer = self
            .call(|reply| Cmd::Request {
                frame: Box::new(move |rid| agora_protocol::ClientFrame::ChainGet { rid, dest }),
                reply,
            })
            .await?;
        match answer {
            Answer::Body(b) if b.is_empty() => Ok(None),
            Answer::Body(b) => Ok(Some(String::from_utf8_lossy(&b).into_owned())),
            _ => Err(Error::UnexpectedFrame("OK")),
        }
    }

    /// Attaches a mutator chain to a destination, replacing any it had; it runs on
    /// every message published from then on. A chain that does not parse, or whose
    /// `enrich` names a database the broker's config file does not declare, fails with
    /// `bad_chain` and changes nothing. Blank text removes the chain.
    ///
    /// ```no_run
    /// # futures_lite::future::block_on(async {
    /// use agora_client::Destination;
    /// let client = agora_client::Client::connect("127.0.0.1:48879").await?;
    /// client.chain_set(Destination::queue("jobs").unwrap(), "set header:seen=now").await?;
    /// # Ok::<(), agora_client::Error>(())
    /// # });
    /// ```
    pub async fn chain_set(&self, dest: Destination, chain: &str) -> Result<()> {
        let chain = Bytes::copy_from_slice(chain.as_bytes());
        self.call(|reply| Cmd::Request {
            frame: Box::new(move |rid| agora_protocol::ClientFrame::ChainSet { rid, dest, chain }),
            reply,
        })
        .await
        .map(|_| ())
    }

    /// Removes a destination's mutator chain (there need not be one).
    ///
    /// ```no_run
    /// # futures_lite::future::block_on(async {
    /// use agora_client::Destination;
    /// let client = agora_client::Client::connect("127.0.0.1:48879").await?;
    /// client.chain_clear(Destination::topic("telemetry").unwrap()).await?;
    /// # Ok::<(), agora_client::Error>(())
    /// # });
    /// ```
    pub async fn chain_clear(&self, dest: Destination) -> Result<()> {
        self.call(|reply| Cmd::Request {
            frame: Box::new(move |rid| agora_protocol::ClientFrame::ChainClear { rid, dest }),
            reply,
        })
        .await
        .map(|_| ())
    }
}
