//! Which systems run which scenarios, and why not where they do not.

use super::{Cell, Scenario};
use crate::System;

/// Why `system` has no run of `cell`, if it has none.
pub(crate) fn unsupported(system: System, cell: &Cell) -> Option<&'static str> {
    use Scenario::*;
    match (system.cluster(), cell.scenario.cluster()) {
        (true, true) => return None,
        (true, false) => return Some("the cluster systems run the cluster scenarios only"),
        (false, true) => {
            return Some(
                "one broker: the cluster rows are agora-cluster, jetstream-cluster and rabbitmq-cluster",
            )
        }
        (false, false) => {}
    }
    match (system.durable(), cell.scenario.durable()) {
        (false, true) => {
            return Some(
                "keeps nothing on disk: the durable rows are agora-durable, jetstream and rabbitmq",
            )
        }
        (true, true) => return None,
        (true, false) => {
            return Some(
                "the durable systems run the durable scenarios only (the rest are in memory)",
            )
        }
        (false, false) => {}
    }
    match (system, cell.scenario) {
        (s, Publish) if s.mqtt() && cell.variant == "queue" => Some("MQTT has no queues"),
        (s, Publish | Topic1x1 | Topic1x4 | Topic4x1 | Confirm | Rtt) if s.mqtt() => None,
        (s, _) if s.mqtt() => Some(
            "the MQTT rows run publish, topic-1-1, topic-1-4, topic-4-1, confirm (QoS 1) and rtt",
        ),
        (s, Topic1x1 | Rtt) if s.tls() || s.http() => None,
        (s, _) if s.http() => Some("the HTTP-load row measures topic-1-1 and rtt only"),
        (
            System::Agora | System::AgoraDedicated | System::AgoraLean | System::NatsLean,
            RequestReply,
        ) => None,
        (System::Nats, RequestReply) => Some(
            "request-reply is measured against nats-lean (async-nats's request() is not driven)",
        ),
        (_, RequestReply) => Some("no request-reply to compare (Redis, the relay, TLS rows)"),
        (System::Redis | System::RedisLean, WildcardFanout) => {
            Some("Redis PSUBSCRIBE patterns are globs over the whole name, not token wildcards")
        }
        (System::Raw, WildcardFanout) => Some("the null relay does not route by name"),
        (s, _) if s.tls() => Some("the TLS rows measure topic-1-1 and rtt only"),
        (System::Nats | System::NatsLean, Udp) => Some("nats-server has no UDP transport"),
        (System::Redis | System::RedisLean, Udp) => Some("redis-server has no UDP transport"),
        (System::Raw, Udp) => Some("the null relay is TCP only"),
        (System::AgoraLean, Udp) => {
            Some("UDP is measured on the agora row (no client library in it)")
        }
        (System::RedisLean, Confirm) => {
            Some("the lean client has no concurrent confirmed publishes; the redis row has them")
        }
        (System::AgoraLean, Confirm) => {
            Some("the lean client publishes without confirms; the agora row measures them")
        }
        (System::Nats | System::NatsLean, Publish) if cell.variant == "queue" => {
            Some("core NATS keeps nothing for a queue group with no members")
        }
        (System::Nats | System::NatsLean, Queue1Ack | Queue4Ack) => {
            Some("core NATS has no consumer acknowledgements")
        }
        (System::Nats | System::NatsLean, Confirm) => Some("core NATS has no publisher confirms"),
        (System::Redis | System::RedisLean, Queue1Ack | Queue4Ack) => {
            Some("Redis lists have no consumer acknowledgements (BRPOP removes the element)")
        }
        (System::Raw, Publish) if cell.variant == "queue" => Some("the null relay keeps no queue"),
        (System::Raw, Queue1 | Queue4 | Queue1Ack | Queue4Ack) => {
            Some("a relay that does not parse cannot share a byte stream among competing consumers")
        }
        (System::Raw, Topic4x1) => {
            Some("a relay that does not parse cannot interleave four publishers' byte streams")
        }
        (System::Raw, Confirm) => Some("the null relay confirms nothing"),
        (System::Raw, SlowConsumer) => {
            Some("the null relay has no per-subscriber buffer: one stalled reader stalls it all")
        }
        _ => None,
    }
}
