//! Request-reply between tasks: a command that carries a one-shot reply channel, sent
//! to a task that owns its state (the registry, a queue), and the wait for the answer.
//! One helper instead of a hand-made `bounded(1)` pair at every call.

use async_channel::Sender;

/// Sends the command `make` builds around a reply channel to `to`, and waits for the
/// answer. `None` when the task is gone, or dropped the command without answering
/// (a queue that ended with it still in its channel).
pub(crate) async fn ask<C, T>(to: &Sender<C>, make: impl FnOnce(Sender<T>) -> C) -> Option<T> {
    let (reply, answer) = async_channel::bounded(1);
    to.send(make(reply)).await.ok()?;
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
