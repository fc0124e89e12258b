//! Confirmed publishes across a reconnect: under a reconnect policy each carries a
//! message id (`agora-msg-id`, from [`MsgIds`] unless the application gave one), is kept
//! until its `PUBACK`, and is written again first thing on the next connection when the
//! lost one never answered it; the broker keeps it once.

use std::sync::atomic::{AtomicU64, Ordering::SeqCst};

use agora_protocol::bytes::{Bytes, BytesMut};
use agora_protocol::{encode, encode_pub, ClientFrame, Destination, Headers};

use super::{Driver, Pending};
use crate::lock;

/// Message ids (`agora-msg-id`) the client gives its confirmed publishes when it may
/// resend them: a random prefix per client, then a counter.
#[derive(Debug)]
pub(crate) struct MsgIds {
    prefix: String,
    next: AtomicU64,
}

impl MsgIds {
    pub(crate) fn new() -> MsgIds {
        use std::hash::{BuildHasher, Hasher};
        // 128 bits from the standard library's per-process random keys, the time and
        // the process id: unique per client, not secret.
        let mut bits = [0u64; 2];
        for (i, b) in bits.iter_mut().enumerate() {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u64(i as u64);
            h.write_u32(std::process::id());
            h.write_u128(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos()),
            );
            *b = h.finish();
        }
        MsgIds {
            prefix: format!("{:016x}{:016x}", bits[0], bits[1]),
            next: AtomicU64::new(1),
        }
    }

    /// The next id: `<32 hex digits>-<n>`.
    pub(crate) fn next(&self) -> String {
        format!("{}-{}", self.prefix, self.next.fetch_add(1, SeqCst))
    }
}

/// A confirmed publish to write again after a reconnect (it carries a message id, so
/// the broker keeps it once however many times it arrives).
pub(crate) struct Resend {
    pub(super) dest: Destination,
    pub(super) headers: Headers,
    pub(super) payload: Bytes,
}

impl Driver {
    /// Keeps, for the next connection, the confirmed publishes the lost one never
    /// answered whose callers still wait.
    pub(super) fn keep_resends(&self) {
        let mut pending = lock(&self.core.pending);
        let mut unanswered: Vec<u64> = pending
            .iter()
            .filter(|(_, p)| p.resend.is_some())
            .map(|(rid, _)| *rid)
            .collect();
        // In the order they were written (request ids count up).
        unanswered.sort_unstable();
        let mut resends = self.resends.borrow_mut();
        for rid in unanswered {
            if let Some(Pending {
                reply: Some(r),
                resend: Some(again),
                ..
            }) = pending.remove(&rid)
            {
                if !r.is_closed() {
                    resends.push((r, again));
                }
            }
        }
    }

    /// Writes again, first on a new connection, the confirmed publishes the lost one
    /// never answered (with confirms on, and their message ids).
    pub(super) fn write_resends(&self, out: &mut BytesMut) {
        let resends = self.resends.take();
        if resends.is_empty() {
            return;
        }
        log::debug!(
            "agora client: publishing {} unconfirmed messages again",
            resends.len()
        );
        encode(
            &ClientFrame::SetAck {
                rid: None,
                on: true,
            },
            out,
        );
        self.set_confirm(true);
        for (reply, again) in resends {
            let (dest, headers, payload) = (
                again.dest.clone(),
                again.headers.clone(),
                again.payload.clone(),
            );
            let rid = self.register_resend(Some(reply), None, Some(again));
            encode_pub(rid, &dest, &headers, &payload, out);
        }
    }
}
