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
            .get_or_create_consumer(
                CONSUMER,
                consumer::pull::Config {
                    durable_name: Some(CONSUMER.to_owned()),
                    ack_policy: consumer::AckPolicy::Explicit,
                    ..Default::default()
                },
            )
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
