//! `request` and `reply`: request-reply from the shell. `reply` runs a command for each
//! request, its payload on the command's stdin, and answers with what the command
//! wrote to stdout (as `nats reply --command` does).

use std::io::{Read, Write};
use std::process::{Command, Stdio};

use agora_client::{Client, Delivery, Message};
use futures_lite::StreamExt;

use crate::print::print_line;
use crate::CliError;

/// `topic:<name>` or `queue:<name>` from the two options (clap requires one).
pub(crate) fn destination(topic: Option<String>, queue: Option<String>) -> String {
    match (topic, queue) {
        (Some(t), _) => format!("topic:{t}"),
        (None, Some(q)) => format!("queue:{q}"),
        (None, None) => unreachable!("clap requires --topic or --queue"),
    }
}

/// `request`: sends the payload (or all of stdin) and prints the reply's payload.
pub(crate) async fn request(
    client: &Client,
    dest: &str,
    payload: Option<String>,
) -> Result<(), CliError> {
    let payload = match payload {
        Some(p) => p.into_bytes(),
        None => {
            let mut all = Vec::new();
            std::io::stdin().lock().read_to_end(&mut all)?;
            all
        }
    };
    let reply = client.request(dest, payload).await?;
    print_line(reply.payload())
}

/// `reply`: answers `count` requests (or every one) on `dest` by running `cmd`.
pub(crate) async fn reply(
    client: &Client,
    dest: &str,
    count: Option<u64>,
    cmd: &[String],
) -> Result<(), CliError> {
    let (program, args) = cmd
        .split_first()
        .ok_or_else(|| CliError::Other("reply needs a command after --".to_owned()))?;
    let mut n = 0;
    if let Some(queue) = dest.strip_prefix("queue:") {
        // One request at a time: the next waits in the queue for this or another
        // responder.
        let mut work = client.consume(queue, 1).await?;
        while count.is_none_or(|c| n < c) {
            let Some(d) = work.next().await else {
                return Err(ended(dest, n));
            };
            if d.reply_to().is_none() {
                // It cannot be answered; given back, it would come straight back here.
                skipped();
                d.ack().await?;
                n += 1;
                continue;
            }
            answer_delivery(d, program, args).await?;
            n += 1;
        }
    } else {
        let name = dest.strip_prefix("topic:").unwrap_or(dest);
        let mut sub = client.subscribe(name).await?;
        while count.is_none_or(|c| n < c) {
            let Some(m) = sub.next().await else {
                return Err(ended(dest, n));
            };
            if m.reply_to().is_none() {
                skipped();
                n += 1;
                continue;
            }
            if let Some(out) = run(program, args, &m)? {
                m.respond(out).await?;
            }
            n += 1;
        }
    }
    client.flush().await?;
    Ok(())
}

/// A queue's request: answered and acknowledged when the command succeeds; given back
/// (to be tried again, by this or another responder, up to the queue's delivery limit)
/// when it fails.
async fn answer_delivery(d: Delivery, program: &str, args: &[String]) -> Result<(), CliError> {
    match run(program, args, &d)? {
        Some(out) => Ok(d.respond(out).await?),
        None => Ok(d.nack().await?),
    }
}

/// A message that is no request is not answered (from a queue it is acknowledged: given
/// back, it would only come back to this responder); a line on stderr says so.
fn skipped() {
    eprintln!("agora-cli: skipped a message that is not a request (no agora-reply-to)");
}

/// Runs the command with the request's payload on stdin: its stdout when it exits 0;
/// `None` (and its status on stderr) when it fails. Failing to start it at all ends
/// the tool.
fn run(program: &str, args: &[String], req: &Message) -> Result<Option<Vec<u8>>, CliError> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| CliError::Other(format!("cannot run {program}: {e}")))?;
    let mut stdin = child.stdin.take().expect("piped");
    let payload = req.payload().clone();
    // Written from a thread of its own, so a command that writes much before reading
    // all of its input cannot block both sides.
    let feeder = std::thread::spawn(move || {
        let _ = stdin.write_all(&payload);
    });
    let out = child.wait_with_output()?;
    let _ = feeder.join();
    if out.status.success() {
        return Ok(Some(out.stdout));
    }
    eprintln!("agora-cli: {program} failed ({}); not answered", out.status);
    Ok(None)
}

fn ended(dest: &str, n: u64) -> CliError {
    CliError::Other(format!("subscription to {dest} ended after {n} requests"))
}
