//! nats-server with JetStream through async-nats's JetStream API: a destination is a
//! stream of the same name capturing its subject, file storage; a confirmed publish
//! waits for the stream's publish ack (`PubAck`), which nats-server sends once the
//! message is stored as its `sync_interval` says. Only the durable scenarios use it.

use std::future::Future;
use std::time::Duration;

use async_nats::jetstream::{self, stream};
use bytes::Bytes;

use super::nats::runtime;
use super::{Dest, Mode, Result};

#[derive(Clone)]
pub(crate) struct Jetstream {
    pub(crate) addr: String,
}

pub(crate) struct Pub {
    client: async_nats::Client,
    js: jetstream::Context,
    subject: String,
}

pub(crate) struct Sub;

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
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(5))
            .connect(format!("nats://{}", self.addr))
            .await
            .map_err(err)?;
        let js = jetstream::new(client.clone());
        // One stream per destination; several publishers of one run share it.
        js.get_or_create_stream(stream::Config {
            name: dest.name.clone(),
            subjects: vec![dest.name.clone()],
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await
        .map_err(err)?;
        Ok(Pub {
            client,
            js,
            subject: dest.name.clone(),
        })
    }

    async fn subscriber(&self, _dest: &Dest, _mode: Mode) -> Result<Sub> {
        Err("jetstream: the durable scenarios measured so far have no consumer".into())
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
    async fn next(&mut self, _wait: Duration) -> Result<Option<Bytes>> {
        Err("jetstream: no consumer".into())
    }

    async fn close(self) -> Result<()> {
        Ok(())
    }
}
