//! Typed payloads: a topic of `Order`s, as JSON through serde.
//!
//! ```text
//! cargo run --release --bin agora            # terminal 1: the broker on 127.0.0.1:48879
//! cargo run --example typed                  # terminal 2 (AGORA_SERVER=host:port to change)
//! ```

use futures_lite::StreamExt;

// ANCHOR: type
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Order {
    id: u64,
    item: String,
    quantity: u32,
}
// ANCHOR_END: type

fn main() -> Result<(), agora_client::Error> {
    let server = std::env::var("AGORA_SERVER").unwrap_or(agora_client::DEFAULT_SERVER.into());
    futures_lite::future::block_on(async {
        let client = agora_client::Client::connect(&server).await?;
        // ANCHOR: typed
        let orders = client.typed_topic::<Order>("orders")?;
        let mut incoming = orders.subscribe().await?;
        orders
            .publish(&Order {
                id: 1,
                item: "lamp".into(),
                quantity: 2,
            })
            .await?;
        // Someone publishes bytes that are not an Order: the subscriber gets an Err
        // item and carries on.
        orders.topic().publish("not an order").await?;
        orders
            .publish(&Order {
                id: 2,
                item: "desk".into(),
                quantity: 1,
            })
            .await?;
        for _ in 0..3 {
            match incoming.next().await.expect("the subscription is open") {
                Ok(order) => println!("order {}: {} x {}", order.id, order.quantity, order.item),
                Err(e) => eprintln!("skipped a message: {e}"),
            }
        }
        // ANCHOR_END: typed
        client.close().await
    })
}
