//! nats-server through async-nats: topics are subjects, queues are queue groups (core
//! NATS: no persistence, no acknowledgements, no publisher confirms).

use std::future::Future;
use std::time::Duration;

use async_nats::{Client, Subscriber};
use bytes::Bytes;
use futures_lite::StreamExt;

use super::{Dest, Mode, Result};

#[derive(Clone)]
pub(crate) struct Nats {
    pub(crate) addr: String,
}

pub(crate) struct Pub {
    client: Client,
    subject: String,
}

pub(crate) struct Sub {
    _client: Client,
    sub: Subscriber,
}

fn err(e: impl std::fmt::Display) -> String {
    format!("nats: {e}")
}

/// A one-worker runtime: the client's connection task runs there, the role on the
/// calling thread, as with Agora's client and its driver thread.
pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

async fn connect(addr: &str) -> Result<Client> {
    async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(5))
        .connect(format!("nats://{addr}"))
        .await
        .map_err(err)
}

/// Returns once the server has handled everything this client sent before: a message
/// to a private subject, echoed back through the server.
async fn round_trip(client: &Client) -> Result<()> {
    let inbox = client.new_inbox();
    let mut echo = client.subscribe(inbox.clone()).await.map_err(err)?;
    client.publish(inbox, Bytes::new()).await.map_err(err)?;
    client.flush().await.map_err(err)?;
    match tokio::time::timeout(Duration::from_secs(10), echo.next()).await {
        Ok(Some(_)) => {
            let _ = echo.unsubscribe().await;
            Ok(())
        }
        _ => Err("nats: no echo from the server within 10 s".into()),
    }
}

impl super::Driver for Nats {
    type Pub = Pub;
    type Sub = Sub;

    fn block_on<T>(&self, fut: impl Future<Output = T>) -> T {
        runtime().block_on(fut)
    }

    async fn publisher(&self, dest: &Dest) -> Result<Pub> {
        Ok(Pub {
            client: connect(&self.addr).await?,
            subject: dest.name.clone(),
        })
    }

    async fn subscriber(&self, dest: &Dest, mode: Mode) -> Result<Sub> {
        let client = connect(&self.addr).await?;
        let sub = match mode {
            Mode::Topic => client.subscribe(dest.name.clone()).await,
            Mode::AutoAck { .. } => {
                client
                    .queue_subscribe(dest.name.clone(), "bench".to_owned())
                    .await
            }
            Mode::Ack { .. } => return Err("nats: core NATS has no consumer acks".into()),
        }
        .map_err(err)?;
        round_trip(&client).await?;
        Ok(Sub {
            _client: client,
            sub,
        })
    }
}

impl super::Publisher for Pub {
    async fn publish(&mut self, payload: Bytes) -> Result<()> {
        self.client
            .publish(self.subject.clone(), payload)
            .await
            .map_err(err)
    }

    async fn push(&mut self) -> Result<()> {
        self.client.flush().await.map_err(err)
    }

    async fn sync(&mut self) -> Result<()> {
        round_trip(&self.client).await
    }

    async fn publish_confirmed(&self, _payload: Bytes) -> Result<()> {
        Err("nats: core NATS has no publisher confirms".into())
    }

    async fn close(self) -> Result<()> {
        self.client.flush().await.map_err(err)?;
        self.client.drain().await.map_err(err)
    }
}

impl super::Subscriber for Sub {
    async fn next(&mut self, wait: Duration) -> Result<Option<Bytes>> {
        match tokio::time::timeout(wait, self.sub.next()).await {
            Err(_) => Ok(None),
            Ok(None) => Err("nats: subscription ended".into()),
            Ok(Some(m)) => Ok(Some(m.payload)),
        }
    }

    async fn close(mut self) -> Result<()> {
        let _ = self.sub.unsubscribe().await;
        Ok(())
    }
}
