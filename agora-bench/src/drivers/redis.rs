//! redis-server through the redis crate: topics are pub/sub channels, queues are lists
//! (LPUSH, BRPOP). Publishes are pipelined in batches, as redis-benchmark's `-P` does;
//! each batch's replies are awaited, so a finished publish is one Redis has handled.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use futures_lite::StreamExt;
use redis::aio::{MultiplexedConnection, PubSubStream};

use super::{Dest, Mode, Result};

/// Commands sent in one pipeline before their replies are awaited.
const BATCH: usize = 64;

#[derive(Clone)]
pub(crate) struct Redis {
    pub(crate) addr: String,
}

pub(crate) struct Pub {
    conn: MultiplexedConnection,
    dest: Dest,
    batch: redis::Pipeline,
    queued: usize,
}

pub(crate) enum Sub {
    Topic(PubSubStream),
    Queue(MultiplexedConnection, String),
}

fn err(e: impl std::fmt::Display) -> String {
    format!("redis: {e}")
}

impl Redis {
    fn client(&self) -> Result<redis::Client> {
        redis::Client::open(format!("redis://{}/", self.addr)).map_err(err)
    }
}

impl super::Driver for Redis {
    type Pub = Pub;
    type Sub = Sub;

    fn block_on<T>(&self, fut: impl Future<Output = T>) -> T {
        super::nats::runtime().block_on(fut)
    }

    async fn publisher(&self, dest: &Dest) -> Result<Pub> {
        let conn = self
            .client()?
            .get_multiplexed_async_connection()
            .await
            .map_err(err)?;
        Ok(Pub {
            conn,
            dest: dest.clone(),
            batch: redis::pipe(),
            queued: 0,
        })
    }

    async fn subscriber(&self, dest: &Dest, mode: Mode) -> Result<Sub> {
        let client = self.client()?;
        match mode {
            Mode::Topic => {
                let mut ps = client.get_async_pubsub().await.map_err(err)?;
                // Returns after Redis confirmed the subscription.
                ps.subscribe(&dest.name).await.map_err(err)?;
                Ok(Sub::Topic(ps.into_on_message()))
            }
            Mode::AutoAck { .. } => Ok(Sub::Queue(
                client
                    .get_multiplexed_async_connection()
                    .await
                    .map_err(err)?,
                dest.name.clone(),
            )),
            Mode::Ack { .. } => Err("redis: lists have no consumer acks".into()),
        }
    }
}

impl Pub {
    async fn send_batch(&mut self) -> Result<()> {
        if self.queued == 0 {
            return Ok(());
        }
        let batch = std::mem::replace(&mut self.batch, redis::pipe());
        self.queued = 0;
        batch.query_async::<()>(&mut self.conn).await.map_err(err)
    }
}

impl super::Publisher for Pub {
    async fn publish(&mut self, payload: Bytes) -> Result<()> {
        let verb = if self.dest.queue { "LPUSH" } else { "PUBLISH" };
        self.batch
            .cmd(verb)
            .arg(&self.dest.name)
            .arg(payload.as_ref())
            .ignore();
        self.queued += 1;
        if self.queued >= BATCH {
            self.send_batch().await?;
        }
        Ok(())
    }

    async fn push(&mut self) -> Result<()> {
        self.send_batch().await
    }

    async fn sync(&mut self) -> Result<()> {
        self.send_batch().await
    }

    async fn publish_confirmed(&self, payload: Bytes) -> Result<()> {
        // LPUSH's reply is Redis's confirmation that the element is in the list.
        let verb = if self.dest.queue { "LPUSH" } else { "PUBLISH" };
        redis::cmd(verb)
            .arg(&self.dest.name)
            .arg(payload.as_ref())
            .query_async::<i64>(&mut self.conn.clone())
            .await
            .map(|_| ())
            .map_err(err)
    }

    async fn close(mut self) -> Result<()> {
        self.send_batch().await
    }
}

impl super::Subscriber for Sub {
    async fn next(&mut self, wait: Duration) -> Result<Option<Bytes>> {
        match self {
            Sub::Topic(stream) => match tokio::time::timeout(wait, stream.next()).await {
                Err(_) => Ok(None),
                Ok(None) => Err("redis: subscription ended".into()),
                Ok(Some(m)) => Ok(Some(Bytes::copy_from_slice(m.get_payload_bytes()))),
            },
            Sub::Queue(conn, key) => {
                // BRPOP's timeout is in seconds, fractions allowed since Redis 6.
                let secs = wait.as_secs_f64().max(0.01);
                let popped: Option<(String, Vec<u8>)> = redis::cmd("BRPOP")
                    .arg(&*key)
                    .arg(secs)
                    .query_async(conn)
                    .await
                    .map_err(err)?;
                Ok(popped.map(|(_, v)| Bytes::from(v)))
            }
        }
    }

    async fn close(self) -> Result<()> {
        Ok(())
    }
}
