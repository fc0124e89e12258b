//! Request-reply: a responder takes requests from a queue and answers each; a requester
//! asks and waits for the reply.
//!
//! ```text
//! cargo run --release --bin agora            # terminal 1: the broker on 127.0.0.1:48879
//! cargo run --example request-reply          # terminal 2 (AGORA_SERVER=host:port to change)
//! ```

use agora_client::{Client, Error, ErrorCode};
use futures_lite::StreamExt;

fn main() -> Result<(), Error> {
    let server = std::env::var("AGORA_SERVER").unwrap_or(agora_client::DEFAULT_SERVER.into());
    futures_lite::future::block_on(async {
        // ANCHOR: respond
        let responder = Client::connect(&server).await?;
        // Consume before anyone asks: a request nobody listens on fails at once.
        let mut requests = responder.consume("upper", 4).await?;
        let serve = async {
            while let Some(req) = requests.next().await {
                let answer = String::from_utf8_lossy(req.payload()).to_uppercase();
                // Publishes the reply to the request's reply address, then ACKs.
                req.respond(answer).await?;
            }
            Ok::<(), Error>(())
        };
        // ANCHOR_END: respond

        // ANCHOR: request
        let client = Client::connect(&server).await?;
        let ask = async {
            for word in ["hello", "request", "reply"] {
                // Waits for the reply, within the request timeout (10 s by default).
                let reply = client.request("queue:upper", word).await?;
                println!("{word} -> {}", String::from_utf8_lossy(reply.payload()));
            }
            // Nobody consumes this queue: refused at once, and not kept.
            match client.request("queue:nobody-home", "anyone?").await {
                Err(e) if e.code() == Some(ErrorCode::NoResponders) => println!("{e}"),
                Err(e) => return Err(e),
                Ok(_) => println!("someone answered after all"),
            }
            Ok(())
        };
        // ANCHOR_END: request

        // The responder serves until the requester is done.
        futures_lite::future::or(ask, serve).await?;
        client.close().await?;
        responder.close().await
    })
}
