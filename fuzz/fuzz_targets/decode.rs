//! Feeds arbitrary bytes to both directions' decoders, `decode_client` (what the broker
//! reads) and `decode_server` (what a client reads); see
//! `agora_protocol::testing::check_decode` for what is checked. `cargo xtask fuzz
//! --seconds N` runs it.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| agora_protocol::testing::check_decode(data));
