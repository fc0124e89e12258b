//! Which MQTT connection holds each client id: a second connection with a client id in
//! use takes it over, and the first is disconnected, as MQTT requires (3.1.1 §3.1.4,
//! 5.0 §3.1.4: "session taken over").

use std::collections::HashMap;
use std::sync::Mutex;

use async_channel::Sender;

/// The connections holding client ids, broker-wide.
#[derive(Default)]
pub(crate) struct Sessions {
    /// Client id -> (the connection's number, closed to make it go).
    live: Mutex<HashMap<String, (u64, Sender<()>)>>,
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (u64, Sender<()>)>> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Connection `number` now holds `id`; the one that held it is told to go.
    pub(crate) fn enter(&self, id: &str, number: u64, kick: Sender<()>) {
        if let Some((_, old)) = self.lock().insert(id.to_owned(), (number, kick)) {
            old.close();
        }
    }

    /// Connection `number` is gone; `id` is free unless another took it over since.
    pub(crate) fn leave(&self, id: &str, number: u64) {
        let mut live = self.lock();
        if live.get(id).is_some_and(|(n, _)| *n == number) {
            live.remove(id);
        }
    }

    /// How many client ids are held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_takes_over_and_the_first_leaving_frees_nothing() {
        let s = Sessions::default();
        let (first, first_rx) = async_channel::bounded(1);
        let (second, second_rx) = async_channel::bounded(1);
        s.enter("dev", 1, first);
        assert!(!first_rx.is_closed());
        s.enter("dev", 2, second);
        assert!(first_rx.is_closed(), "the first is told to go");
        s.leave("dev", 1);
        assert_eq!(s.len(), 1, "the second still holds it");
        assert!(!second_rx.is_closed());
        s.leave("dev", 2);
        assert_eq!(s.len(), 0);
    }
}
