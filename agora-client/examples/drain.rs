//! A worker that stops cleanly: on a shutdown signal it takes no new jobs, finishes and
//! acknowledges the ones it holds, then closes.
//!
//! ```text
//! cargo run --release --bin agora            # terminal 1: the broker on 127.0.0.1:48879
//! cargo run --example drain                  # terminal 2 (AGORA_SERVER=host:port to change)
//! ```

use futures_lite::StreamExt;

fn main() -> Result<(), agora_client::Error> {
    let server = std::env::var("AGORA_SERVER").unwrap_or(agora_client::DEFAULT_SERVER.into());
    futures_lite::future::block_on(async {
        let client = agora_client::Client::connect(server.as_str()).await?;
        let jobs = client.queue("drain-demo")?;
        for i in 0..10 {
            jobs.publish_confirmed(format!("job {i}")).await?;
        }
        // ANCHOR: drain
        let mut consumer = jobs.consume(4).await?;
        let mut done = 0;
        while let Some(job) = consumer.next().await {
            job.ack().await?;
            done += 1;
            if done == 2 {
                // The shutdown signal: the broker gives this consumer nothing new; what
                // it already buffered still comes, then the stream ends.
                consumer.drain().await?;
            }
        }
        drop(consumer); // everything it took is acknowledged: UNSUB
        println!("{done} jobs done; the rest wait in the queue for another worker");
        // Or for every subscription at once: `client.drain().await?` (it closes too).
        // ANCHOR_END: drain
        client.close().await
    })
}
