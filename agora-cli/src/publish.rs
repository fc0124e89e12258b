//! `pub`: over TCP (one message at a time, confirmed or not) and over UDP.

use super::*;

/// `pub --udp`: no TCP connection, no answers; messages packed into datagrams.
pub(crate) async fn publish_udp(
    server: &str,
    topic: Option<String>,
    queue: Option<String>,
    messages: Vec<String>,
) -> Result<(), CliError> {
    let mut udp = agora_client::UdpPublisher::connect(server)
        .await
        .map_err(|e| CliError::Other(format!("cannot reach {server} over UDP: {e}")))?;
    let dest = match (topic, queue) {
        (Some(t), _) => agora_client::Destination::topic(&t),
        (None, Some(q)) => agora_client::Destination::queue(&q),
        (None, None) => unreachable!("clap requires --topic or --queue"),
    }
    .map_err(|e| CliError::Other(format!("bad name: {e}")))?;
    let headers = agora_client::Headers::new();
    if messages.is_empty() {
        for line in std::io::stdin().lock().lines() {
            udp.publish(&dest, &headers, line?).await?;
        }
    } else {
        for m in messages {
            udp.publish(&dest, &headers, m).await?;
        }
    }
    udp.flush().await?;
    Ok(())
}

pub(crate) async fn publish_one(
    client: &Client,
    topic: Option<&str>,
    queue: Option<&str>,
    confirm: bool,
    m: String,
) -> Result<(), CliError> {
    match (topic, queue) {
        (Some(t), _) => client.publish(t, m).await?,
        (None, Some(q)) if confirm => client.queue(q)?.publish_confirmed(m).await?,
        (None, Some(q)) => client.queue(q)?.publish(m).await?,
        (None, None) => unreachable!("clap requires --topic or --queue"),
    }
    Ok(())
}
