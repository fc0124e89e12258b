//! The MQTT front door (`--mqtt-port`): MQTT 3.1.1 and 5.0 clients, through the same
//! session as native ones.
//!
//! Each MQTT connection is two halves joined by in-process pipes: its native session
//! (`conn::serve_client`, exactly as a TCP client's, with its permissions, limits and
//! shipper) and its bridge (`bridge::Bridge`, a plain value that turns MQTT packets
//! into native frames and back), moved by the task in `conn`. The codec and the
//! topic mapping are in `agora_protocol::mqtt`.

mod accept;
mod bridge;
mod conn;
pub(crate) mod persistent;
pub(crate) mod retained;
pub(crate) mod sessions;
pub(crate) mod state;

pub(crate) use accept::accept_loop;
pub(crate) use conn::{serve_over, Shut};
