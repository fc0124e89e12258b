//! A durable subscription: a queue bound to a topic pattern keeps what is published to
//! the matching topics while nobody consumes it, and hands it over when a consumer comes.
//!
//! ```text
//! cargo run --release --bin agora                  # terminal 1: the broker on 127.0.0.1:48879
//! cargo run --example durable-subscription         # terminal 2 (AGORA_SERVER=host:port to change)
//! ```

use futures_lite::StreamExt;

fn main() -> Result<(), agora_client::Error> {
    let server = std::env::var("AGORA_SERVER").unwrap_or(agora_client::DEFAULT_SERVER.into());
    futures_lite::future::block_on(async {
        let client = agora_client::Client::connect(&server).await?;
        // ANCHOR: bind
        // From now on a copy of every message published to a topic the pattern matches
        // goes into queue:alarms, whoever else gets it. BIND makes the queue, so what is
        // routed to it is kept before any consumer comes. Needs admin once users exist.
        client.bind("alarms", "sensors.*.alarm").await?;
        // ANCHOR_END: bind

        // ANCHOR: publish
        // Nobody consumes queue:alarms yet. A confirmed publish returns once the copy is
        // in the queue (stored where --fsync says, for a durable queue).
        for (room, alarm) in [("kitchen", "smoke"), ("garage", "door open")] {
            let topic = client.topic(&format!("sensors.{room}.alarm"))?;
            topic.publish_confirmed(alarm).await?;
        }
        // No binding matches this one: it reaches the topic's current subscribers (none),
        // and nothing keeps it.
        let temp = client.topic("sensors.kitchen.temp")?;
        temp.publish_confirmed("21.5").await?;
        // ANCHOR_END: publish

        // ANCHOR: consume
        // The consumer that comes later finds both alarms waiting, in order. Deliveries
        // name the queue, not the topic each was published to.
        let mut alarms = client.consume("alarms", 16).await?;
        for _ in 0..2 {
            let Some(alarm) = alarms.next().await else {
                break;
            };
            let text = String::from_utf8_lossy(alarm.payload()).into_owned();
            println!("{}: {text}", alarm.destination());
            alarm.ack().await?;
        }
        // ANCHOR_END: consume

        // ANCHOR: unbind
        // Nothing more is routed to the queue; what it holds stays.
        client.unbind("alarms", "sensors.*.alarm").await?;
        // ANCHOR_END: unbind
        alarms.unsubscribe().await?;
        client.close().await
    })
}
