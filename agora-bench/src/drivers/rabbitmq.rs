//! RabbitMQ through lapin (AMQP 0-9-1): a destination is a durable queue of the same
//! name (a quorum queue, or a classic one), reached through the default exchange; a
//! confirmed publish is a persistent message on a channel in confirm mode, awaiting its
//! broker `basic.ack`. A consumer is `basic.consume` on a channel of its own with a
//! prefetch (`basic.qos`) and manual acks, one `basic.ack` per message. Only the durable
//! scenarios use it.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use futures_lite::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, Consumer};

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

pub(crate) struct Sub {
    conn: Connection,
    consumer: Consumer,
    /// The last ack handed to lapin, to wait for before closing.
    last_ack: Option<PendingAck>,
}

type PendingAck = std::pin::Pin<Box<dyn std::future::Future<Output = lapin::Result<bool>> + Send>>;

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
        let (conn, channel) = self.connect(dest).await?;
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

    async fn subscriber(&self, dest: &Dest, mode: Mode) -> Result<Sub> {
        let Mode::Ack { prefetch } = mode else {
            return Err("rabbitmq: the durable scenarios' consumers ack each message".into());
        };
        let (conn, channel) = self.connect(dest).await?;
        let prefetch = u16::try_from(prefetch).map_err(|_| err("prefetch over 65535"))?;
        channel
            .basic_qos(prefetch, BasicQosOptions::default())
            .await
            .map_err(err)?;
        // Manual acks (`no_ack` false); the server names the consumer.
        let consumer = channel
            .basic_consume(
                dest.name.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(err)?;
        Ok(Sub {
            conn,
            consumer,
            last_ack: None,
        })
    }
}

impl Rabbitmq {
    /// A connection and a channel, with the destination's queue declared (a run's
    /// publishers and consumers declare the same queue with the same arguments).
    async fn connect(&self, dest: &Dest) -> Result<(Connection, Channel)> {
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
        // One declaration at a time: RabbitMQ 3.10 answers a quorum queue's second
        // declaration as soon as the first has registered it, before its Raft member
        // runs, and a `basic.consume` then crashes the channel (`noproc`,
        // INTERNAL_ERROR). The first answer comes once the member runs.
        static DECLARE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
        let one_at_a_time = DECLARE.lock().await;
        channel
            .queue_declare(
                dest.name.as_str().into(),
                QueueDeclareOptions::durable(),
                args,
            )
            .await
            .map_err(err)?;
        drop(one_at_a_time);
        Ok((conn, channel))
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
    async fn next(&mut self, wait: Duration) -> Result<Option<Bytes>> {
        match tokio::time::timeout(wait, self.consumer.next()).await {
            Err(_) => Ok(None),
            Ok(None) => Err("rabbitmq: the consumer ended".into()),
            Ok(Some(Err(e))) => Err(err(e)),
            Ok(Some(Ok(d))) => {
                // The ack is handed to lapin's connection task and not waited for
                // (AMQP acks have no answer; waiting would only wait for lapin to write
                // it), as the other systems' clients queue theirs: its first poll hands
                // it over. The last one is kept, and waited for before the connection
                // closes (acks are written in order), so none is lost at the end.
                let acker = d.acker;
                let mut ack: PendingAck =
                    Box::pin(async move { acker.ack(BasicAckOptions::default()).await });
                if let Some(Err(e)) = futures_lite::future::poll_once(&mut ack).await {
                    return Err(err(e));
                }
                self.last_ack = Some(ack);
                Ok(Some(Bytes::from(d.data)))
            }
        }
    }

    async fn close(self) -> Result<()> {
        if let Some(ack) = self.last_ack {
            tokio::time::timeout(Duration::from_secs(10), ack)
                .await
                .map_err(|_| err("the last ack was not written within 10 s"))?
                .map_err(err)?;
        }
        // A clean close: the acks written so far are the server's before the socket goes.
        self.conn.close(200, "bye".into()).await.map_err(err)
    }
}
