//! One module per command family: each holds its frames' grammar (in its `//!`), their
//! decode from a tokenized line and their encode, side by side. The command table
//! ([`COMMANDS`](crate::COMMANDS)) ties a command word to its module's parser; the
//! framing (lines, sizes, payloads) is `decode.rs`'s, shared by all.

pub(crate) mod admin;
pub(crate) mod chain;
pub(crate) mod publish;
pub(crate) mod session;
pub(crate) mod subscribe;
