//! A work queue: one producer, two consumers that share the jobs and acknowledge each.
//!
//! ```text
//! cargo run --release --bin agora            # terminal 1: the broker on 127.0.0.1:48879
//! cargo run --example work-queue             # terminal 2 (AGORA_SERVER=host:port to change)
//! ```

use futures_lite::StreamExt;

const JOBS: usize = 10;

fn main() -> Result<(), agora_client::Error> {
    let server = std::env::var("AGORA_SERVER").unwrap_or(agora_client::DEFAULT_SERVER.into());
    let (done_tx, done_rx) = async_channel::bounded::<()>(JOBS);

    // Two consumers, each with its own connection, on threads of their own.
    let workers: Vec<_> = ["worker-a", "worker-b"]
        .into_iter()
        .map(|name| {
            let server = server.clone();
            let done = done_tx.clone();
            let ready = async_channel::bounded::<()>(1);
            let handle = std::thread::spawn(move || {
                futures_lite::future::block_on(consume(name, &server, ready.0, done))
            });
            // Start producing only once both consumers are subscribed.
            let _ = futures_lite::future::block_on(ready.1.recv());
            handle
        })
        .collect();

    futures_lite::future::block_on(async {
        // ANCHOR: produce
        let client = agora_client::Client::connect(&server).await?;
        let jobs = client.queue("jobs")?;
        for i in 0..JOBS {
            // Confirmed: returns once the job is in the queue, or with the broker's
            // refusal (queue_full, ...) as Error::Server.
            jobs.publish_confirmed(format!("job {i}")).await?;
        }
        // ANCHOR_END: produce
        for _ in 0..JOBS {
            let _ = done_rx.recv().await;
        }
        done_rx.close(); // tells the workers to stop
        client.close().await
    })?;
    drop(done_tx);
    for w in workers {
        w.join().expect("worker panicked")?;
    }
    Ok(())
}

async fn consume(
    name: &str,
    server: &str,
    ready: async_channel::Sender<()>,
    done: async_channel::Sender<()>,
) -> Result<(), agora_client::Error> {
    // ANCHOR: consume
    let client = agora_client::Client::builder()
        .name(name)
        .connect(server)
        .await?;
    // At most 2 unacknowledged jobs at a time: the broker gives the rest to the other
    // worker.
    let mut jobs = client.consume("jobs", 2).await?;
    // ANCHOR_END: consume
    let _ = ready.send(()).await;
    // ANCHOR: work
    loop {
        let job = futures_lite::future::or(async { jobs.next().await }, async {
            // stop when the producer has seen every job done
            done.closed().await;
            None
        })
        .await;
        let Some(job) = job else { break };
        println!(
            "{name}: {}{}",
            String::from_utf8_lossy(job.payload()),
            if job.redelivered() { " (again)" } else { "" }
        );
        job.ack().await?; // done: the broker forgets it
        let _ = done.send(()).await;
    }
    // ANCHOR_END: work
    client.close().await
}
