//! Watching the connection: a client that reconnects, and logs what happens to its
//! connection (lost, back, closed, messages dropped, errors no call waits for).
//!
//! ```text
//! cargo run --release --bin agora            # terminal 1: the broker on 127.0.0.1:48879
//! cargo run --example events                 # terminal 2 (AGORA_SERVER=host:port to change)
//! ```
//!
//! Stop the broker and start it again while the example runs: it prints the loss and the
//! return, and its subscription carries on.

use agora_client::{Event, Reconnect};
use futures_lite::StreamExt;
use std::time::Duration;

fn main() -> Result<(), agora_client::Error> {
    let server = std::env::var("AGORA_SERVER").unwrap_or(agora_client::DEFAULT_SERVER.into());
    futures_lite::future::block_on(async {
        // ANCHOR: events
        let client = agora_client::Client::builder()
            .name("events-demo")
            .reconnect(Reconnect::default())
            .connect(server.as_str())
            .await?;
        let mut events = client.events();
        // The events on a thread of their own, for logs, metrics and health checks.
        let watcher = std::thread::spawn(move || {
            futures_lite::future::block_on(async {
                while let Some(event) = events.next().await {
                    match event {
                        Event::Disconnected { addr, reason } => {
                            eprintln!("lost {addr}: {reason}; reconnecting")
                        }
                        Event::Reconnected { addr, generation } => {
                            eprintln!("connected to {addr} again (connection {generation})")
                        }
                        Event::Dropped { destination, count } => {
                            eprintln!("{destination}: {count} messages dropped in this client")
                        }
                        Event::ServerError(e) => eprintln!("the broker said: {e}"),
                        Event::Closed => break, // the client stopped for good
                        _ => {}
                    }
                }
            })
        });
        // ANCHOR_END: events
        let mut ticks = client.subscribe("events-demo.ticks").await?;
        let topic = client.topic("events-demo.ticks")?;
        for i in 0..16 {
            if client.is_connected() {
                topic.publish(format!("tick {i}")).await?;
            }
            let next = futures_lite::future::or(async { ticks.next().await }, async {
                async_io::Timer::after(Duration::from_millis(500)).await;
                None
            });
            if let Some(tick) = next.await {
                println!("{}", String::from_utf8_lossy(tick.payload()));
            }
            async_io::Timer::after(Duration::from_millis(500)).await;
        }
        client.close().await?;
        let _ = watcher.join();
        Ok(())
    })
}
