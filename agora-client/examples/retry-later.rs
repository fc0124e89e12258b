//! A worker that gives jobs back three ways: to try again later (its service is down), to
//! the dead-letter queue (a job it can never do), or at once (the plain `nack`).
//!
//! ```text
//! cargo run --release --bin agora            # terminal 1: the broker on 127.0.0.1:48879
//! cargo run --example retry-later            # terminal 2 (AGORA_SERVER=host:port to change)
//! ```

use agora_client::Nack;
use futures_lite::StreamExt;
use std::time::Duration;

fn main() -> Result<(), agora_client::Error> {
    let server = std::env::var("AGORA_SERVER").unwrap_or(agora_client::DEFAULT_SERVER.into());
    futures_lite::future::block_on(async {
        let client = agora_client::Client::connect(server.as_str()).await?;
        let orders = client.queue("retry-later.orders")?;
        for order in ["42", "not a number", "7"] {
            orders.publish_confirmed(order).await?;
        }
        let mut jobs = orders.consume(8).await?;
        let mut service_up = false; // the service job 42 needs is down at first
        let mut done = 0;
        // ANCHOR: nack
        while let Some(job) = jobs.next().await {
            let Ok(order) = std::str::from_utf8(job.payload())
                .unwrap_or("")
                .parse::<u32>()
            else {
                // It will never parse: to the dead-letter queue now (reason `rejected`),
                // not round and round to every worker.
                job.nack_with(Nack::DeadLetter).await?;
                continue;
            };
            if order == 42 && !service_up {
                // Its service is down: no worker gets it for 200 ms, then it comes again
                // (redelivered, its count raised).
                job.nack_with(Nack::Delay(Duration::from_millis(200)))
                    .await?;
                service_up = true;
                continue;
            }
            println!("order {order} done (delivery {})", job.delivery_count());
            job.ack().await?;
            // ANCHOR_END: nack
            done += 1;
            if done == 2 {
                break;
            }
        }
        drop(jobs);
        client.close().await
    })
}
