//! `agora-cli`: talk to an Agora broker from the shell.
//!
//! ```text
//! agora-cli [--server HOST:PORT] ping
//! agora-cli [--server HOST:PORT] pub --topic NAME [MESSAGE]...   # no MESSAGE: one per stdin line
//! agora-cli [--server HOST:PORT] pub --queue NAME [--confirm] [MESSAGE]...
//! agora-cli [--server HOST:PORT] sub --topic NAME [--count N]
//! agora-cli [--server HOST:PORT] consume --queue NAME [--count N] [--prefetch N]
//! agora-cli [--server HOST:PORT] stats [--json]
//! agora-cli [--server HOST:PORT] pub --udp (--topic NAME | --queue NAME) [MESSAGE]...
//! agora-cli [--server HOST:PORT] list
//! agora-cli [--server HOST:PORT] purge --queue NAME
//! agora-cli [--server HOST:PORT] delete (--queue NAME | --topic NAME)
//! agora-cli [--server HOST:PORT] bind --queue NAME --topic PATTERN
//! agora-cli [--server HOST:PORT] unbind --queue NAME --topic PATTERN
//! agora-cli [--server HOST:PORT] request (--topic NAME | --queue NAME) [--timeout SECS] [PAYLOAD]
//! agora-cli [--server HOST:PORT] reply (--topic NAME | --queue NAME) [--count N] -- CMD [ARGS]...
//! ```
//!
//! TLS and credentials, before or after the command: `--tls` (the system's CAs),
//! `--ca FILE` (implies `--tls`), `--cert FILE --key FILE` (a client certificate),
//! `--tls-server-name NAME`, `--user NAME` with `AGORA_PASSWORD` (or `--password`, which
//! other users of the machine can see in the process list).
//!
//! Received payloads go to stdout, one per line, and nothing else does; diagnostics go
//! to stderr, and any failure exits non-zero. The book's *agora-cli* page has more.

use std::io::{BufRead, Write};
use std::process::ExitCode;

use agora_client::{Client, Error};
use clap::{Parser, Subcommand};
use futures_lite::StreamExt;
use print::{print_connections, print_line, print_list, print_stats};
use publish::{publish_one, publish_udp};
use secure::Secure;

mod print;
mod publish;
mod reply;
mod secure;

#[derive(Parser, Debug)]
#[command(
    name = "agora-cli",
    version,
    about = "Talk to an Agora broker from the shell"
)]
struct Cli {
    /// The broker's address.
    #[arg(long, global = true, env = "AGORA_SERVER", default_value = agora_client::DEFAULT_SERVER)]
    server: String,
    /// Seconds to wait for the connection and for each answer.
    #[arg(long, global = true, default_value_t = 5)]
    timeout: u64,
    #[command(flatten)]
    secure: Secure,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum ChainAction {
    Get,
    Set,
    Clear,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Check the broker answers; prints the round-trip time.
    Ping,
    /// Publish messages (the arguments, or else one per line of stdin).
    Pub {
        /// Publish to this topic.
        #[arg(long, conflicts_with = "queue", required_unless_present = "queue")]
        topic: Option<String>,
        /// Publish to this queue.
        #[arg(long)]
        queue: Option<String>,
        /// Wait for the broker's confirmation of each message (queues).
        #[arg(long, conflicts_with = "udp")]
        confirm: bool,
        /// Send over UDP: fire-and-forget, many messages per datagram, no answer read.
        #[arg(long)]
        udp: bool,
        /// The messages; none: read stdin, one message per line.
        messages: Vec<String>,
    },
    /// Print the payload of each message published to a topic, one per line.
    Sub {
        /// The topic.
        #[arg(long)]
        topic: String,
        /// Exit after this many messages.
        #[arg(long)]
        count: Option<u64>,
    },
    /// Print and acknowledge each message of a queue, one per line.
    Consume {
        /// The queue.
        #[arg(long)]
        queue: String,
        /// Exit after this many messages.
        #[arg(long)]
        count: Option<u64>,
        /// Most unacknowledged messages held at once.
        #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..))]
        prefetch: u32,
    },
    /// Print the broker's statistics.
    Stats {
        /// Print the raw JSON document instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// List the destinations, one per line: `kind:name depth unacked consumers`.
    List,
    /// List the connections, one per line: `id address protocol name= user= subs= in= out=`
    /// (an admin sees all; another user its own).
    Connections,
    /// Drop every pending message of a queue.
    Purge {
        /// The queue.
        #[arg(long)]
        queue: String,
    },
    /// Show, set or clear a queue's or topic's mutator chain.
    ///
    /// `get` prints the chain (nothing for none); `set` takes the chain as one argument,
    /// e.g. `agora-cli chain set --topic t 'threshold /temp > 30 | sample 10'`.
    Chain {
        /// get, set or clear.
        action: ChainAction,
        /// The topic.
        #[arg(long, conflicts_with = "queue", required_unless_present = "queue")]
        topic: Option<String>,
        /// The queue.
        #[arg(long)]
        queue: Option<String>,
        /// The chain (for `set`).
        chain: Option<String>,
    },
    /// Bind a queue to a topic name or pattern: what is published to a matching topic
    /// is also put in the queue (a durable subscription).
    Bind {
        /// The queue.
        #[arg(long)]
        queue: String,
        /// The topic name or pattern (`*` one token, `>` the rest).
        #[arg(long)]
        topic: String,
    },
    /// Remove a queue's binding to a topic name or pattern.
    Unbind {
        /// The queue.
        #[arg(long)]
        queue: String,
        /// The topic name or pattern.
        #[arg(long)]
        topic: String,
    },
    /// Send a request and print the reply's payload (fails at once with no_responders
    /// when nobody listens; waits --timeout seconds for the reply).
    Request {
        /// Ask every subscriber of this topic (the first reply wins).
        #[arg(long, conflicts_with = "queue", required_unless_present = "queue")]
        topic: Option<String>,
        /// Ask one consumer of this queue.
        #[arg(long)]
        queue: Option<String>,
        /// The request's payload; none: all of stdin.
        payload: Option<String>,
    },
    /// Answer requests by running a command: the request's payload on its stdin, its
    /// stdout the reply. A command that fails sends no reply (a queue's request is given
    /// back).
    Reply {
        /// Answer requests to this topic.
        #[arg(long, conflicts_with = "queue", required_unless_present = "queue")]
        topic: Option<String>,
        /// Answer requests from this queue, one at a time.
        #[arg(long)]
        queue: Option<String>,
        /// Exit after this many requests.
        #[arg(long)]
        count: Option<u64>,
        /// The command and its arguments, after `--`.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Delete a queue or topic (its subscribers are told).
    Delete {
        /// The queue.
        #[arg(long, conflicts_with = "topic", required_unless_present = "topic")]
        queue: Option<String>,
        /// The topic.
        #[arg(long)]
        topic: Option<String>,
    },
}

fn main() -> ExitCode {
    use clap::{CommandFactory, FromArgMatches};
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    if let Some((kind, why)) = usage_error(&cli, &matches) {
        Cli::command().error(kind, why).exit();
    }
    match futures_lite::future::block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("agora-cli: {e}");
            ExitCode::FAILURE
        }
    }
}

/// What clap's rules cannot say: options that do not go together.
fn usage_error(
    cli: &Cli,
    matches: &clap::ArgMatches,
) -> Option<(clap::error::ErrorKind, &'static str)> {
    use clap::error::ErrorKind;
    match cli.command {
        Command::Pub {
            topic: Some(_),
            confirm: true,
            ..
        } => {
            return Some((
                ErrorKind::ArgumentConflict,
                "--confirm applies to --queue only (topics take no confirmation here)",
            ))
        }
        Command::Pub { udp: true, .. } if cli.secure.given() => {
            return Some((
                ErrorKind::ArgumentConflict,
                "--udp is never encrypted or authenticated: it takes no --tls, --ca, --cert, \
                 --key, --tls-server-name, --user or --password",
            ))
        }
        _ => {}
    }
    // AGORA_PASSWORD alone is ignored (it may be set for other tools); --password alone
    // is a mistake.
    let typed = matches.value_source("password") == Some(clap::parser::ValueSource::CommandLine);
    if typed && cli.secure.user.is_none() {
        return Some((
            ErrorKind::MissingRequiredArgument,
            "--password needs --user",
        ));
    }
    None
}

/// Errors of the tool: the client's, or a line for people.
#[derive(Debug)]
enum CliError {
    Client(Error),
    Other(String),
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CliError::Client(e) => e.fmt(f),
            CliError::Other(s) => f.write_str(s),
        }
    }
}

impl From<Error> for CliError {
    fn from(e: Error) -> Self {
        CliError::Client(e)
    }
}

impl From<std::io::Error> for CliError {
    fn from(e: std::io::Error) -> Self {
        CliError::Other(format!("i/o error: {e}"))
    }
}

async fn run(cli: Cli) -> Result<(), CliError> {
    if let Command::Pub {
        topic,
        queue,
        udp: true,
        messages,
        ..
    } = cli.command
    {
        return publish_udp(&cli.server, topic, queue, messages).await;
    }
    let t = std::time::Duration::from_secs(cli.timeout.max(1));
    let builder = Client::builder()
        .name("agora-cli")
        .connect_timeout(t)
        .request_timeout(t);
    let client = cli
        .secure
        .apply(builder)
        .connect(&cli.server)
        .await
        .map_err(|e| match e {
            // These name the address already.
            Error::AuthFailed { .. } | Error::CertificateNotTrusted { .. } | Error::Tls { .. } => {
                CliError::Client(e)
            }
            Error::Connect { source, .. } => {
                CliError::Other(format!("cannot connect to {}: {source}", cli.server))
            }
            e => CliError::Other(format!("cannot connect to {}: {e}", cli.server)),
        })?;
    let result = command(&client, cli.command).await;
    let closed = client.close().await;
    result?;
    closed?;
    Ok(())
}

async fn command(client: &Client, command: Command) -> Result<(), CliError> {
    match command {
        Command::Ping => {
            let rtt = client.ping().await?;
            let info = client.server_info();
            println!("pong from {} {} in {rtt:?}", info.server, info.version);
        }
        Command::Pub {
            topic,
            queue,
            confirm,
            messages,
            ..
        } => {
            let mut errors = client.errors();
            let (topic, queue) = (topic.as_deref(), queue.as_deref());
            if messages.is_empty() {
                for line in std::io::stdin().lock().lines() {
                    publish_one(client, topic, queue, confirm, line?).await?;
                }
            } else {
                for m in messages {
                    publish_one(client, topic, queue, confirm, m).await?;
                }
            }
            // Refusals of unconfirmed publishes arrive before the flush's answer.
            client.flush().await?;
            if let Some(e) = errors.try_next() {
                return Err(CliError::Other(format!("broker refused a publish: {e}")));
            }
        }
        Command::Sub { topic, count } => {
            let mut sub = client.subscribe(&topic).await?;
            let mut n = 0;
            while count.is_none_or(|c| n < c) {
                let Some(m) = sub.next().await else {
                    return Err(CliError::Other(format!(
                        "subscription to {topic} ended after {n} messages"
                    )));
                };
                print_line(m.payload())?;
                n += 1;
            }
        }
        Command::Consume {
            queue,
            count,
            prefetch,
        } => {
            // Never hold more than will be printed: the rest stays for other consumers.
            let prefetch = count.map_or(prefetch, |c| {
                prefetch.min(c.clamp(1, u32::MAX as u64) as u32)
            });
            let mut consumer = client.consume(&queue, prefetch).await?;
            let mut n = 0;
            while count.is_none_or(|c| n < c) {
                let Some(d) = consumer.next().await else {
                    return Err(CliError::Other(format!(
                        "consumer of {queue} ended after {n} messages"
                    )));
                };
                print_line(d.payload())?;
                d.ack().await?;
                n += 1;
            }
            client.flush().await?;
        }
        Command::Stats { json } => {
            if json {
                let raw = client.stats_raw().await?;
                print_line(&raw)?;
            } else {
                print_stats(client).await?;
            }
        }
        Command::List => print_list(client).await?,
        Command::Connections => print_connections(client).await?,
        Command::Purge { queue } => {
            client.purge(&queue).await?;
            eprintln!("purged queue:{queue}");
        }
        Command::Chain {
            action,
            topic,
            queue,
            chain,
        } => {
            let dest = match (queue, topic) {
                (Some(q), _) => agora_client::Destination::queue(&q),
                (None, Some(t)) => agora_client::Destination::topic(&t),
                (None, None) => unreachable!("clap requires --queue or --topic"),
            }
            .map_err(|e| CliError::Other(format!("bad name: {e}")))?;
            match (action, chain) {
                (ChainAction::Get, None) => {
                    if let Some(c) = client.chain_get(dest).await? {
                        print_line(c.as_bytes())?;
                    }
                }
                (ChainAction::Set, Some(c)) => {
                    client.chain_set(dest.clone(), &c).await?;
                    eprintln!("chain of {dest} set");
                }
                (ChainAction::Clear, None) => {
                    client.chain_clear(dest.clone()).await?;
                    eprintln!("chain of {dest} cleared");
                }
                (ChainAction::Set, None) => {
                    return Err(CliError::Other("chain set needs the chain".to_owned()))
                }
                (_, Some(_)) => {
                    return Err(CliError::Other("only chain set takes a chain".to_owned()))
                }
            }
        }
        Command::Bind { queue, topic } => {
            client.bind(&queue, &topic).await?;
            eprintln!("queue:{queue} bound to topic:{topic}");
        }
        Command::Unbind { queue, topic } => {
            client.unbind(&queue, &topic).await?;
            eprintln!("queue:{queue} unbound from topic:{topic}");
        }
        Command::Request {
            topic,
            queue,
            payload,
        } => reply::request(client, &reply::destination(topic, queue), payload).await?,
        Command::Reply {
            topic,
            queue,
            count,
            command,
        } => reply::reply(client, &reply::destination(topic, queue), count, &command).await?,
        Command::Delete { queue, topic } => {
            let dest = match (queue, topic) {
                (Some(q), _) => agora_client::Destination::queue(&q),
                (None, Some(t)) => agora_client::Destination::topic(&t),
                (None, None) => unreachable!("clap requires --queue or --topic"),
            }
            .map_err(|e| CliError::Other(format!("bad name: {e}")))?;
            client.delete(dest.clone()).await?;
            eprintln!("deleted {dest}");
        }
    }
    Ok(())
}
