//! Publish to a topic and read the messages back.
//!
//! ```text
//! cargo run --release --bin agora            # terminal 1: the broker on 127.0.0.1:48879
//! cargo run --example pubsub                 # terminal 2 (AGORA_SERVER=host:port to change)
//! ```

use futures_lite::StreamExt;

fn main() -> Result<(), agora_client::Error> {
    let server = std::env::var("AGORA_SERVER").unwrap_or(agora_client::DEFAULT_SERVER.into());
    futures_lite::future::block_on(async {
        // ANCHOR: connect
        let client = agora_client::Client::builder()
            .name("pubsub-example")
            .connect(&server)
            .await?;
        let info = client.server_info();
        println!("connected to {} {}", info.server, info.version);
        // ANCHOR_END: connect

        // ANCHOR: subscribe
        // Subscribe first: a topic keeps nothing for subscribers that are not there.
        let mut prices = client.subscribe("prices.eu-west").await?;
        // ANCHOR_END: subscribe

        // ANCHOR: publish
        client.publish("prices.eu-west", "101.5").await?;
        let mut headers = agora_client::Headers::new();
        headers.insert("Currency", "EUR").expect("a valid header");
        client
            .publish_with_headers("prices.eu-west", headers, "101.7")
            .await?;
        // ANCHOR_END: publish

        // ANCHOR: receive
        for _ in 0..2 {
            let msg = prices.next().await.expect("the subscription is open");
            println!(
                "{}: {} (currency {:?})",
                msg.destination(),
                String::from_utf8_lossy(msg.payload()),
                msg.headers().get("currency"),
            );
        }
        // ANCHOR_END: receive

        // ANCHOR: close
        prices.unsubscribe().await?;
        client.close().await?;
        // ANCHOR_END: close
        Ok(())
    })
}
