//! Agora through agora-client, the SDK applications use.

use std::future::Future;
use std::time::{Duration, Instant};

use agora_client::{Client, Consumer, Queue, Subscription, Topic};
use bytes::Bytes;
use futures_lite::StreamExt;

use super::{Dest, Mode, Result};

#[derive(Clone)]
pub(crate) struct Agora {
    pub(crate) addr: String,
    /// The SDK's threads: shared (what an application gets by default) or dedicated.
    pub(crate) threads: agora_client::Threads,
}

enum Target {
    Topic(Topic),
    Queue(Queue),
}

pub(crate) struct Pub {
    client: Client,
    target: Target,
}

pub(crate) struct Sub {
    kind: SubKind,
    /// The wait of `next`, armed again only when half of it is gone: arming an
    /// `async-io` timer wakes the reactor's thread, so a timer per call would cost
    /// every message that is not already there a wake-up (the NATS driver's tokio
    /// timeout has no such cost). A wait that ends early only means the caller asks
    /// again.
    timer: Option<Wait>,
}

enum SubKind {
    Topic(Client, Subscription),
    Queue(Client, Consumer, bool),
}

fn err(e: agora_client::Error) -> String {
    format!("agora: {e}")
}

/// The client address of the node that leads the replicated queue `queue` and
/// serves it: the queue is made on the first node (a consumer that leaves at once),
/// its group elects a leader, and the leader's own `STATS` says it serves.
pub(crate) fn cluster_leader(nodes: &[String], queue: &str) -> Result<String> {
    let first = nodes.first().ok_or("a cluster with no nodes")?;
    futures_lite::future::block_on(async {
        let client = Client::builder()
            .name("bench-cluster")
            .connect(first)
            .await
            .map_err(err)?;
        client
            .consume(queue, 1)
            .await
            .map_err(err)?
            .unsubscribe()
            .await
            .map_err(err)?;
        let end = std::time::Instant::now() + Duration::from_secs(30);
        let mut seen = 0;
        while std::time::Instant::now() < end {
            let stats = client.stats().await.map_err(err)?;
            seen = stats
                .cluster
                .and_then(|c| c.replicated.get(queue).map(|r| r.leader))
                .unwrap_or(0);
            if let Some(addr) = nodes.get((seen as usize).wrapping_sub(1)) {
                let there = Client::builder()
                    .name("bench-cluster")
                    .connect(addr)
                    .await
                    .map_err(err)?;
                let serving = there
                    .stats()
                    .await
                    .map_err(err)?
                    .cluster
                    .is_some_and(|c| c.replicated.get(queue).is_some_and(|r| r.serving));
                let _ = there.close().await;
                if serving {
                    let _ = client.close().await;
                    return Ok(addr.clone());
                }
            }
            async_io::Timer::after(Duration::from_millis(50)).await;
        }
        Err(format!(
            "agora-cluster: no node served {queue} within 30 s (last leader seen: {seen})"
        ))
    })
}

impl super::Driver for Agora {
    type Pub = Pub;
    type Sub = Sub;

    async fn publisher(&self, dest: &Dest) -> Result<Pub> {
        let client = Client::builder()
            .name("bench-pub")
            .threads(self.threads)
            .connect(&self.addr)
            .await
            .map_err(err)?;
        let target = if dest.queue {
            Target::Queue(client.queue(&dest.name).map_err(err)?)
        } else {
            Target::Topic(client.topic(&dest.name).map_err(err)?)
        };
        Ok(Pub { client, target })
    }

    async fn subscriber(&self, dest: &Dest, mode: Mode) -> Result<Sub> {
        // A buffer far above the bench's window, so the SDK never drops on our account.
        let client = Client::builder()
            .name("bench-sub")
            .threads(self.threads)
            .subscription_buffer(65_536)
            .connect(&self.addr)
            .await
            .map_err(err)?;
        let kind = match mode {
            Mode::Topic => {
                let sub = client.subscribe(&dest.name).await.map_err(err)?;
                SubKind::Topic(client, sub)
            }
            Mode::AutoAck { prefetch } => {
                let c = client
                    .consume_auto_ack(&dest.name, prefetch)
                    .await
                    .map_err(err)?;
                SubKind::Queue(client, c, false)
            }
            Mode::Ack { prefetch } => {
                let c = client.consume(&dest.name, prefetch).await.map_err(err)?;
                SubKind::Queue(client, c, true)
            }
        };
        Ok(Sub { kind, timer: None })
    }
}

impl super::Publisher for Pub {
    async fn publish(&mut self, payload: Bytes) -> Result<()> {
        match &self.target {
            Target::Topic(t) => t.publish(payload).await.map_err(err),
            Target::Queue(q) => q.publish(payload).await.map_err(err),
        }
    }

    async fn push(&mut self) -> Result<()> {
        // The client's driver writes as soon as it has something: nothing waits here.
        Ok(())
    }

    async fn sync(&mut self) -> Result<()> {
        self.client.flush().await.map_err(err)?;
        match self.client.errors().try_next() {
            Some(e) => Err(format!("agora refused a publish: {e}")),
            None => Ok(()),
        }
    }

    async fn publish_confirmed(&self, payload: Bytes) -> Result<()> {
        match &self.target {
            Target::Topic(t) => t.publish_confirmed(payload).await.map_err(err),
            Target::Queue(q) => q.publish_confirmed(payload).await.map_err(err),
        }
    }

    async fn close(self) -> Result<()> {
        self.client.close().await.map_err(err)
    }
}

/// A wait's timer and when it fires.
struct Wait {
    timer: async_io::Timer,
    deadline: Instant,
}

/// `fut`, or `None` once `timer` fires: between `wait / 2` and `wait` from now.
async fn timeout<T>(
    timer: &mut Option<Wait>,
    wait: Duration,
    fut: impl Future<Output = T>,
) -> Option<T> {
    // The deadline must be counted from now, not from the first wait (a run that
    // lasted longer than `wait` once failed its rtt at a random round with "nothing
    // arrived within 2 s"); but arming an async-io timer (`set_after`, or a new one)
    // wakes the reactor's thread, the SDK's I/O thread: arming it for every message
    // cost each round trip that wake-up. So the timer is armed again only when less
    // than half the wait is left; polled again by the same task, it is not re-armed.
    let now = Instant::now();
    let w = match timer {
        Some(w) if w.deadline.saturating_duration_since(now) >= wait / 2 => w,
        _ => timer.insert(Wait {
            timer: async_io::Timer::at(now + wait),
            deadline: now + wait,
        }),
    };
    let r = futures_lite::future::or(async { Some(fut.await) }, async {
        (&mut w.timer).await;
        None
    })
    .await;
    if r.is_none() {
        *timer = None;
    }
    r
}

impl super::Subscriber for Sub {
    async fn next(&mut self, wait: Duration) -> Result<Option<Bytes>> {
        // What has arrived already is taken without touching the timer.
        let timer = &mut self.timer;
        match &mut self.kind {
            SubKind::Topic(_, s) => match s.try_next() {
                Some(m) => Ok(Some(m.into_payload())),
                None => match timeout(timer, wait, s.next()).await {
                    None => Ok(None),
                    Some(None) => Err("agora: subscription ended".into()),
                    Some(Some(m)) => Ok(Some(m.into_payload())),
                },
            },
            SubKind::Queue(_, c, ack) => {
                let d = match c.try_next() {
                    Some(d) => d,
                    None => match timeout(timer, wait, c.next()).await {
                        None => return Ok(None),
                        Some(None) => return Err("agora: consumer ended".into()),
                        Some(Some(d)) => d,
                    },
                };
                let payload = d.message().payload().clone();
                if *ack {
                    d.ack().await.map_err(err)?;
                }
                Ok(Some(payload))
            }
        }
    }

    fn dropped(&self) -> u64 {
        match &self.kind {
            SubKind::Topic(_, s) => s.dropped(),
            SubKind::Queue(..) => 0,
        }
    }

    async fn close(self) -> Result<()> {
        match self.kind {
            SubKind::Topic(c, s) => {
                let _ = s.unsubscribe().await;
                c.close().await.map_err(err)
            }
            SubKind::Queue(c, s, _) => {
                let _ = s.unsubscribe().await;
                c.close().await.map_err(err)
            }
        }
    }
}
