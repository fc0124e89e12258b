//! RabbitMQ through lapin (AMQP 0-9-1): a destination is a durable queue of the same
//! name (a quorum queue, or a classic one), reached through the default exchange; a
//! confirmed publish is a persistent message on a channel in confirm mode, awaiting its
//! broker `basic.ack`. Only the durable scenarios use it.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};

use super::nats::runtime;
use super::{Dest, Mode, Result};

#[derive(Clone)]
pub(crate) struct Rabbitmq {
    pub(crate) addr: String,
    /// A quorum queue (replicated log, here of one node) rather than a classic one.
    pub(crate) quorum: bool,
}

pub(crate) struct Pub {
    _conn: Connection,
    channel: Channel,
    queue: String,
}

pub(crate) struct Sub;

fn err(e: impl std::fmt::Display) -> String {
    format!("rabbitmq: {e}")
}

impl super::Driver for Rabbitmq {
    type Pub = Pub;
    type Sub = Sub;

    fn block_on<T>(&self, fut: impl Future<Output = T>) -> T {
        runtime().block_on(fut)
    }

    async fn publisher(&self, dest: &Dest) -> Result<Pub> {
        let conn = Connection::connect(
            &format!("amqp://guest:guest@{}/%2f", self.addr),
            ConnectionProperties::default(),
        )
        .await
        .map_err(err)?;
        let channel = conn.create_channel().await.map_err(err)?;
        let mut args = FieldTable::default();
        if self.quorum {
            args.insert(
                "x-queue-type".into(),
                AMQPValue::LongString("quorum".into()),
            );
        }
        // Several publishers of one run declare the same queue: the same arguments.
        channel
            .queue_declare(
                dest.name.as_str().into(),
                QueueDeclareOptions::durable(),
                args,
            )
            .await
            .map_err(err)?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(err)?;
        Ok(Pub {
            _conn: conn,
            channel,
            queue: dest.name.clone(),
        })
    }

    async fn subscriber(&self, _dest: &Dest, _mode: Mode) -> Result<Sub> {
        Err("rabbitmq: the durable scenarios measured so far have no consumer".into())
    }
}

impl super::Publisher for Pub {
    async fn publish(&mut self, _payload: Bytes) -> Result<()> {
        Err("rabbitmq: only confirmed publishes are measured".into())
    }

    async fn push(&mut self) -> Result<()> {
        Ok(())
    }

    async fn sync(&mut self) -> Result<()> {
        Ok(())
    }

    async fn publish_confirmed(&self, payload: Bytes) -> Result<()> {
        let confirm = self
            .channel
            .basic_publish(
                "".into(),
                self.queue.as_str().into(),
                BasicPublishOptions::default(),
                &payload,
                // Persistent.
                BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .map_err(err)?;
        let confirmation = tokio::time::timeout(Duration::from_secs(30), confirm)
            .await
            .map_err(|_| err("no confirm within 30 s"))?
            .map_err(err)?;
        if !confirmation.is_ack() {
            return Err(err(format!("not confirmed: {confirmation:?}")));
        }
        Ok(())
    }

    async fn close(self) -> Result<()> {
        Ok(())
    }
}

impl super::Subscriber for Sub {
    async fn next(&mut self, _wait: Duration) -> Result<Option<Bytes>> {
        Err("rabbitmq: no consumer".into())
    }

    async fn close(self) -> Result<()> {
        Ok(())
    }
}
