//! Publishing an order so that it is kept once, whatever happens to the connection: a
//! message id the application chooses, the SDK's own resends across a reconnect, and
//! the application's retry after a timeout.
//!
//! ```text
//! cargo run --release --bin agora            # terminal 1: the broker on 127.0.0.1:48879
//! cargo run --example retry                  # terminal 2 (AGORA_SERVER=host:port to change)
//! ```

use std::time::Duration;

use agora_client::{Client, Error, Headers, Reconnect};

fn main() -> Result<(), Error> {
    let server = std::env::var("AGORA_SERVER").unwrap_or(agora_client::DEFAULT_SERVER.into());
    futures_lite::future::block_on(async {
        // ANCHOR: retry
        // Under a reconnect policy, a confirmed publish whose connection is lost before
        // its PUBACK is published again on the next connection, with the same id.
        let client = Client::builder()
            .reconnect(Reconnect::default())
            .request_timeout(Duration::from_secs(5))
            .connect(server.as_str())
            .await?;
        let orders = client.queue("orders")?;
        let mut h = Headers::new();
        // The application's own id: its retries after a timeout carry the same one.
        h.insert("agora-msg-id", "order-7781").unwrap();
        for attempt in 1..=3 {
            match orders
                .publish_confirmed_with_headers(h.clone(), "2 x espresso")
                .await
            {
                Ok(()) => break, // kept, once
                Err(e @ Error::Timeout) if attempt < 3 => eprintln!("{e}; publishing again"),
                Err(e) => return Err(e),
            }
        }
        // A second publish with the same id within the window is confirmed, not kept.
        orders
            .publish_confirmed_with_headers(h, "2 x espresso")
            .await?;
        let stats = client.stats().await?;
        let q = stats.destinations.iter().find(|d| d.name == "orders");
        println!(
            "orders: {} waiting, {} duplicates",
            q.map_or(0, |d| d.depth),
            q.map_or(0, |d| d.duplicates)
        );
        // ANCHOR_END: retry
        client.close().await
    })
}
