//! Request-reply between tasks: a command that carries a one-shot reply channel, sent
//! to a task that owns its state (the registry, a queue), and the wait for the answer.
//! One helper instead of a hand-made `bounded(1)` pair at every call.

use async_channel::Sender;

/// A task's command channel: the registry's (`async_channel`) or a queue's
/// ([`chan`](crate::chan)).
pub(crate) trait Commands<C> {
    /// Sends, waiting for room; false once the task is gone.
    async fn put(&self, c: C) -> bool;
}

impl<C> Commands<C> for Sender<C> {
    async fn put(&self, c: C) -> bool {
        self.send(c).await.is_ok()
    }
}

impl<C> Commands<C> for crate::chan::Tx<C> {
    async fn put(&self, c: C) -> bool {
        self.send(c).await.is_ok()
    }
}

/// Sends the command `make` builds around a reply channel to `to`, and waits for the
/// answer. `None` when the task is gone, or dropped the command without answering
/// (a queue that ended with it still in its channel).
pub(crate) async fn ask<C, T>(
    to: &impl Commands<C>,
    make: impl FnOnce(Sender<T>) -> C,
) -> Option<T> {
    let (reply, answer) = async_channel::bounded(1);
    if !to.put(make(reply)).await {
        return None;
    }
    answer.recv().await.ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    enum Cmd {
        Double(u32, Sender<u32>),
        Ignore(#[allow(dead_code)] Sender<u32>),
    }

    #[test]
    fn answers_and_silences() {
        let (tx, rx) = async_channel::bounded(4);
        let server = std::thread::spawn(move || {
            while let Ok(cmd) = rx.recv_blocking() {
                match cmd {
                    Cmd::Double(n, reply) => reply.send_blocking(2 * n).unwrap(),
                    Cmd::Ignore(_) => {}
                }
            }
        });
        futures_lite::future::block_on(async {
            assert_eq!(ask(&tx, |r| Cmd::Double(21, r)).await, Some(42));
            assert_eq!(ask(&tx, Cmd::Ignore).await, None, "dropped unanswered");
        });
        drop(tx);
        server.join().unwrap();
        let (gone, _) = async_channel::bounded::<Cmd>(1);
        gone.close();
        let answer = futures_lite::future::block_on(ask(&gone, |r| Cmd::Double(1, r)));
        assert_eq!(answer, None, "nobody to ask");
    }
}
