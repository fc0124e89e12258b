//! nats-server with JetStream through async-nats's JetStream API: a destination is a
//! stream of the same name capturing its subject, file storage; a confirmed publish
//! waits for the stream's publish ack (`PubAck`), which nats-server sends once the
//! message is stored as its `sync_interval` says. Consumers share one durable pull
//! consumer with explicit acks on a work-queue stream (an acknowledged message leaves
//! it, as from a queue); each pulls batches of its prefetch and acks every message.
//! Only the durable scenarios use it.

use std::future::Future;
use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use bytes::Bytes;
use futures_lite::StreamExt;

use super::nats::runtime;
use super::{Dest, Mode, Result};

#[derive(Clone)]
pub(crate) struct Jetstream {
    pub(crate) addr: String,
    /// Work-queue retention (an acknowledged message is removed) rather than the
    /// default limits retention (kept until a limit): for the scenarios that consume.
    pub(crate) work_queue: bool,
    /// Copies of each stream (1, or 3 on a cluster).
    pub(crate) replicas: usize,
}

pub(crate) struct Pub {
    client: async_nats::Client,
    js: jetstream::Context,
    subject: String,
}

pub(crate) struct Sub {
    client: async_nats::Client,
    messages: consumer::pull::Stream,
}

/// The durable consumer every consumer of a stream shares (one stream per run).
const CONSUMER: &str = "bench";

/// The run's consumer: durable, pulled, every message acknowledged.
fn consumer_config() -> consumer::pull::Config {
    consumer::pull::Config {
        durable_name: Some(CONSUMER.to_owned()),
        ack_policy: consumer::AckPolicy::Explicit,
        ..Default::default()
    }
}

fn err(e: impl std::fmt::Display) -> String {
    format!("jetstream: {e}")
}

impl super::Driver for Jetstream {
    type Pub = Pub;
    type Sub = Sub;

    fn block_on<T>(&self, fut: impl Future<Output = T>) -> T {
        runtime().block_on(fut)
    }

    async fn publisher(&self, dest: &Dest) -> Result<Pub> {
        let (client, js, _) = self.connect(dest).await?;
        Ok(Pub {
            client,
            js,
            subject: dest.name.clone(),
        })
    }

    async fn subscriber(&self, dest: &Dest, mode: Mode) -> Result<Sub> {
        let Mode::Ack { prefetch } = mode else {
            return Err("jetstream: the durable scenarios' consumers ack each message".into());
        };
        let (client, _, stream) = self.connect(dest).await?;
        // Creating a consumer that exists with the same configuration is not an error:
        // the run's consumers may race to make it.
        let consumer: consumer::PullConsumer = stream
            .get_or_create_consumer(CONSUMER, consumer_config())
            .await
            .map_err(err)?;
        let messages = consumer
            .stream()
            .max_messages_per_batch(prefetch as usize)
            .messages()
            .await
            .map_err(err)?;
        Ok(Sub { client, messages })
    }
}

impl Jetstream {
    /// A driver for a stream named `name` with `replicas` copies on the cluster whose
    /// nodes' client addresses are `nodes` (servers named `n1`, `n2`, ...), connected to
    /// the node that leads it: the stream is made first (retried while the cluster's
    /// meta leader is being elected), then its leader is read from its info.
    /// With `consumed`, the run's consumer is made too, and has a leader of its own
    /// (until it has, pulling from it gets "no responders").
    pub(crate) fn on_leader(
        nodes: &[String],
        name: &str,
        replicas: usize,
        consumed: bool,
    ) -> Result<Jetstream> {
        let first = nodes.first().ok_or("a cluster with no nodes")?;
        let mut driver = Jetstream {
            addr: first.clone(),
            work_queue: true,
            replicas,
        };
        let dest = Dest {
            queue: true,
            name: name.to_owned(),
        };
        let leader = runtime().block_on(async {
            let end = std::time::Instant::now() + Duration::from_secs(60);
            let mut last = String::new();
            while std::time::Instant::now() < end {
                match driver.connect(&dest).await {
                    Ok((client, _, mut stream)) => {
                        let info = stream.info().await.map_err(err)?;
                        let leader = info.cluster.as_ref().and_then(|c| c.leader.clone());
                        let consumer_led = match consumed {
                            false => true,
                            true => {
                                let mut c: consumer::PullConsumer = stream
                                    .get_or_create_consumer(CONSUMER, consumer_config())
                                    .await
                                    .map_err(err)?;
                                let info = c.info().await.map_err(err)?;
                                info.cluster.as_ref().is_some_and(|c| c.leader.is_some())
                            }
                        };
                        drop(client);
                        match leader {
                            Some(l) if consumer_led => return Ok(l),
                            _ => last = "the stream or its consumer has no leader yet".to_owned(),
                        }
                    }
                    Err(e) => last = e,
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(format!(
                "jetstream-cluster: no stream leader within 60 s: {last}"
            ))
        })?;
        let index: usize = leader
            .strip_prefix('n')
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| format!("jetstream-cluster: a leader named {leader:?}"))?;
        driver.addr = nodes
            .get(index.wrapping_sub(1))
            .ok_or_else(|| format!("jetstream-cluster: no node {leader}"))?
            .clone();
        Ok(driver)
    }

    /// A connection and the destination's stream, made if it is not there yet (one
    /// stream per destination; a run's publishers and consumers share it).
    async fn connect(
        &self,
        dest: &Dest,
    ) -> Result<(async_nats::Client, jetstream::Context, stream::Stream)> {
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(5))
            .connect(format!("nats://{}", self.addr))
            .await
            .map_err(err)?;
        let js = jetstream::new(client.clone());
        let stream = js
            .get_or_create_stream(stream::Config {
                name: dest.name.clone(),
                subjects: vec![dest.name.clone()],
                storage: stream::StorageType::File,
                num_replicas: self.replicas,
                retention: if self.work_queue {
                    stream::RetentionPolicy::WorkQueue
                } else {
                    stream::RetentionPolicy::Limits
                },
                ..Default::default()
            })
            .await
            .map_err(err)?;
        Ok((client, js, stream))
    }
}

impl super::Publisher for Pub {
    async fn publish(&mut self, _payload: Bytes) -> Result<()> {
        Err("jetstream: only confirmed publishes are measured".into())
    }

    async fn push(&mut self) -> Result<()> {
        self.client.flush().await.map_err(err)
    }

    async fn sync(&mut self) -> Result<()> {
        self.client.flush().await.map_err(err)
    }

    async fn publish_confirmed(&self, payload: Bytes) -> Result<()> {
        let ack = self
            .js
            .publish(self.subject.clone(), payload)
            .await
            .map_err(err)?;
        ack.await.map_err(err)?;
        Ok(())
    }

    async fn close(self) -> Result<()> {
        self.client.flush().await.map_err(err)
    }
}

impl super::Subscriber for Sub {
    async fn next(&mut self, wait: Duration) -> Result<Option<Bytes>> {
        match tokio::time::timeout(wait, self.messages.next()).await {
            Err(_) => Ok(None),
            Ok(None) => Err("jetstream: the consumer's messages ended".into()),
            Ok(Some(Err(e))) => Err(err(e)),
            Ok(Some(Ok(m))) => {
                // An explicit ack, sent without waiting for the server's reply (as the
                // other systems' acks are).
                m.ack().await.map_err(|e| err(e.to_string()))?;
                Ok(Some(m.message.payload))
            }
        }
    }

    async fn close(self) -> Result<()> {
        // The last acks go out before the connection does.
        self.client.flush().await.map_err(err)
    }
}
