//! `GET /metrics`: the `STATS` document in Prometheus's text exposition format (0.0.4),
//! as a plain function of the document (unit-tested on its own).
//!
//! Every metric is `agora_…` with `# HELP` and `# TYPE`; counters end in `_total`.
//! Destinations are labelled `queue="…"` or `topic="…"`; the document holds at most
//! `--http-metrics-destinations` of them (queues first, by name), so a broker with
//! 100,000 names exports a bounded number of series, and
//! `agora_metrics_destinations_omitted` says how many were left out.

use std::fmt::Write;

use serde_json::Value;

struct Out(String);

impl Out {
    fn head(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    fn one(&mut self, name: &str, kind: &str, help: &str, v: f64) {
        self.head(name, kind, help);
        let _ = writeln!(self.0, "{name} {}", num(v));
    }
}

fn num(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// A label value as the format escapes it: `\`, `"` and newlines.
fn escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => o.push_str("\\\\"),
            '"' => o.push_str("\\\""),
            '\n' => o.push_str("\\n"),
            c => o.push(c),
        }
    }
    o
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or(0.0)
}

/// The per-destination metrics: (suffix, type, help, field of the document).
const QUEUE: &[(&str, &str, &str, &str)] = &[
    ("depth", "gauge", "Messages waiting in the queue.", "depth"),
    (
        "unacked",
        "gauge",
        "Messages delivered and not yet acknowledged.",
        "unacked",
    ),
    (
        "consumers",
        "gauge",
        "Consumers subscribed to the queue.",
        "consumers",
    ),
    (
        "messages_in_total",
        "counter",
        "Messages put in the queue.",
        "messages_in",
    ),
    (
        "messages_out_total",
        "counter",
        "Messages delivered from the queue.",
        "messages_out",
    ),
    (
        "redelivered_total",
        "counter",
        "Deliveries of messages delivered before.",
        "redelivered",
    ),
    (
        "dead_lettered_total",
        "counter",
        "Messages moved to the dead-letter queue.",
        "deadlettered",
    ),
    (
        "bytes_in_total",
        "counter",
        "Payload bytes put in the queue.",
        "bytes_in",
    ),
    (
        "bytes_out_total",
        "counter",
        "Payload bytes delivered from the queue.",
        "bytes_out",
    ),
];

const TOPIC: &[(&str, &str, &str, &str)] = &[
    (
        "subscribers",
        "gauge",
        "Subscriptions to the topic.",
        "consumers",
    ),
    (
        "messages_in_total",
        "counter",
        "Messages published to the topic.",
        "messages_in",
    ),
    (
        "messages_out_total",
        "counter",
        "Deliveries to the topic's subscribers.",
        "messages_out",
    ),
    (
        "dropped_total",
        "counter",
        "Deliveries dropped for slow subscribers.",
        "dropped",
    ),
    (
        "bytes_in_total",
        "counter",
        "Payload bytes published to the topic.",
        "bytes_in",
    ),
    (
        "bytes_out_total",
        "counter",
        "Payload bytes delivered to the topic's subscribers.",
        "bytes_out",
    ),
];

/// The exposition of a `STATS` document.
pub(crate) fn render(doc: &Value) -> String {
    let mut o = Out(String::new());
    o.one(
        "agora_uptime_seconds",
        "gauge",
        "Seconds since the broker started.",
        f(&doc["uptime_s"]),
    );
    o.head(
        "agora_connections",
        "gauge",
        "Connections, by protocol (mqtt and ws are also counted in tcp).",
    );
    for p in ["tcp", "udp", "mqtt", "ws"] {
        let _ = writeln!(
            o.0,
            "agora_connections{{protocol=\"{p}\"}} {}",
            num(f(&doc["clients"][p]))
        );
    }
    let m = &doc["memory"];
    o.one(
        "agora_memory_used_bytes",
        "gauge",
        "Payload bytes held under the memory budget.",
        f(&m["used"]),
    );
    o.one(
        "agora_memory_limit_bytes",
        "gauge",
        "The memory budget (--memory-budget).",
        f(&m["limit"]),
    );
    let b = &doc["broker"];
    o.head(
        "agora_received_bytes_total",
        "counter",
        "Bytes read from clients, by transport.",
    );
    for (t, k) in [("tcp", "bytes_in_tcp"), ("udp", "bytes_in_udp")] {
        let _ = writeln!(
            o.0,
            "agora_received_bytes_total{{transport=\"{t}\"}} {}",
            num(f(&b[k]))
        );
    }
    o.one(
        "agora_sent_bytes_total",
        "counter",
        "Bytes written to clients.",
        f(&b["bytes_out"]),
    );
    o.one(
        "agora_connections_rejected_total",
        "counter",
        "Connections refused at --max-connections.",
        f(&b["connections_rejected"]),
    );
    o.one(
        "agora_resident_memory_bytes",
        "gauge",
        "The process's resident memory.",
        f(&b["rss_bytes"]),
    );
    o.one(
        "agora_cpu_seconds_total",
        "counter",
        "CPU time the process used.",
        f(&b["cpu_seconds"]),
    );
    if let Some(errors) = b["errors"].as_object().filter(|e| !e.is_empty()) {
        o.head(
            "agora_errors_total",
            "counter",
            "ERR replies sent, by code.",
        );
        for (code, n) in errors {
            let _ = writeln!(
                o.0,
                "agora_errors_total{{code=\"{}\"}} {}",
                escape(code),
                num(f(n))
            );
        }
    }
    if let Some(st) = doc["storage"].as_object() {
        o.one(
            "agora_disk_used_bytes",
            "gauge",
            "Bytes of the durable log on disk.",
            f(&st["disk_bytes"]),
        );
        o.one(
            "agora_disk_free_bytes",
            "gauge",
            "Bytes free on the data directory's file system.",
            f(&st["free_bytes"]),
        );
    }
    if let Some(peers) = doc["cluster"]["peers"].as_array() {
        cluster(&mut o, peers);
    }
    if let Some(queues) = doc["cluster"]["replicated"].as_object() {
        replicated(&mut o, queues);
    }
    let page = &doc["page"];
    o.one(
        "agora_destinations",
        "gauge",
        "Destinations (queues and topics) in the broker.",
        f(&page["total"]),
    );
    o.one(
        "agora_metrics_destinations_omitted",
        "gauge",
        "Destinations past --http-metrics-destinations, not exported one by one.",
        f(&page["total"]) - f(&page["listed"]),
    );
    let empty = Vec::new();
    let dests = doc["destinations"].as_array().unwrap_or(&empty);
    for (kind, table) in [("queue", QUEUE), ("topic", TOPIC)] {
        let these: Vec<&Value> = dests.iter().filter(|d| d["kind"] == kind).collect();
        if these.is_empty() {
            continue;
        }
        for (suffix, typ, help, field) in table {
            let name = format!("agora_{kind}_{suffix}");
            o.head(&name, typ, help);
            for d in &these {
                let label = escape(d["name"].as_str().unwrap_or(""));
                let _ = writeln!(o.0, "{name}{{{kind}=\"{label}\"}} {}", num(f(&d[field])));
            }
        }
    }
    o.0
}

/// A series of a peer's: name, type, help, and its value from the peer's entry.
type PeerSeries = (&'static str, &'static str, &'static str, fn(&Value) -> f64);

/// A node of a cluster: its links with each other node, labelled `node="<id>"`.
fn cluster(o: &mut Out, peers: &[Value]) {
    let series: [PeerSeries; 5] = [
        (
            "agora_cluster_link_up",
            "gauge",
            "1 while this node's link to the node is up.",
            |p| f64::from(p["link_out"] == "up"),
        ),
        (
            "agora_cluster_link_in_up",
            "gauge",
            "1 while the node's link to this node is up.",
            |p| f64::from(p["link_in"] == "up"),
        ),
        (
            "agora_cluster_link_connects_total",
            "counter",
            "Times this node's link to the node came up.",
            |p| f(&p["connects"]),
        ),
        (
            "agora_cluster_received_messages_total",
            "counter",
            "Messages that came from the node over this node's link.",
            |p| f(&p["messages_in"]),
        ),
        (
            "agora_cluster_replies_lost_total",
            "counter",
            "Replies to the node's clients' inboxes this node could not send it.",
            |p| f(&p["replies_lost"]),
        ),
    ];
    for (name, kind, help, value) in series {
        o.head(name, kind, help);
        for p in peers {
            let _ = writeln!(
                o.0,
                "{name}{{node=\"{}\"}} {}",
                num(f(&p["node"])),
                num(value(p))
            );
        }
    }
}

/// The replicated queues this node runs, labelled `queue="<name>"` (and `node` for
/// each member's lag, on the leader).
fn replicated(o: &mut Out, queues: &serde_json::Map<String, Value>) {
    let series: [PeerSeries; 4] = [
        (
            "agora_replicated_queue_leader",
            "gauge",
            "The node this node knows leads the replicated queue (0: none known).",
            |q| f(&q["leader"]),
        ),
        (
            "agora_replicated_queue_serving",
            "gauge",
            "1 while this node leads the replicated queue under its lease and delivers it.",
            |q| f64::from(q["serving"] == true),
        ),
        (
            "agora_replicated_queue_term",
            "gauge",
            "The replicated queue's Raft term, as this node knows it.",
            |q| f(&q["term"]),
        ),
        (
            "agora_replicated_queue_commit_index",
            "gauge",
            "The highest entry of the replicated queue's log known committed here.",
            |q| f(&q["commit"]),
        ),
    ];
    for (name, kind, help, value) in series {
        o.head(name, kind, help);
        for (queue, q) in queues {
            let _ = writeln!(
                o.0,
                "{name}{{queue=\"{}\"}} {}",
                escape(queue),
                num(value(q))
            );
        }
    }
    let name = "agora_replicated_queue_lag_entries";
    o.head(
        name,
        "gauge",
        "On the leader: entries of the replicated queue's log a member lacks.",
    );
    for (queue, q) in queues {
        if let Some(lag) = q["lag"].as_object() {
            for (node, n) in lag {
                let _ = writeln!(
                    o.0,
                    "{name}{{queue=\"{}\",node=\"{}\"}} {}",
                    escape(queue),
                    escape(node),
                    num(f(n))
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_document_becomes_labelled_series_with_help_and_type() {
        let doc = serde_json::json!({
            "uptime_s": 12.5,
            "clients": {"tcp": 3, "udp": 0, "mqtt": 1, "ws": 0},
            "memory": {"used": 10, "limit": 100},
            "broker": {"bytes_in_tcp": 5, "bytes_in_udp": 0, "bytes_out": 7,
                       "errors": {"not_permitted": 2}, "rss_bytes": 1, "cpu_seconds": 0.25,
                       "connections_rejected": 0},
            "storage": null,
            "page": {"total": 3, "listed": 2},
            "cluster": {"name": "eu", "node": 1, "peers": [
                {"node": 2, "link_out": "up", "link_in": "down", "connects": 3,
                 "messages_in": 40, "replies_lost": 0}],
                "replicated": {"orders": {"leader": 1, "term": 3, "serving": true,
                    "commit": 17, "lag": {"2": 4, "3": 0}}}},
            "destinations": [
                {"kind": "queue", "name": "jobs", "depth": 100, "unacked": 0, "consumers": 0},
                {"kind": "topic", "name": "a\"b", "consumers": 2, "messages_in": 9},
            ],
        });
        let text = render(&doc);
        assert!(text
            .contains("# TYPE agora_queue_depth gauge\nagora_queue_depth{queue=\"jobs\"} 100\n"));
        assert!(text.contains("agora_topic_messages_in_total{topic=\"a\\\"b\"} 9\n"));
        assert!(text.contains("agora_connections{protocol=\"mqtt\"} 1\n"));
        assert!(text.contains("agora_errors_total{code=\"not_permitted\"} 2\n"));
        assert!(text.contains("agora_uptime_seconds 12.5\n"));
        assert!(text.contains("agora_metrics_destinations_omitted 1\n"));
        assert!(text.contains("agora_cluster_link_up{node=\"2\"} 1\n"));
        assert!(text.contains("agora_cluster_link_in_up{node=\"2\"} 0\n"));
        assert!(text.contains("agora_cluster_received_messages_total{node=\"2\"} 40\n"));
        assert!(text.contains("agora_replicated_queue_serving{queue=\"orders\"} 1\n"));
        assert!(text.contains("agora_replicated_queue_leader{queue=\"orders\"} 1\n"));
        assert!(
            text.contains("agora_replicated_queue_lag_entries{queue=\"orders\",node=\"2\"} 4\n")
        );
        assert!(
            !text.contains("agora_disk_used_bytes"),
            "no storage, no disk figures"
        );
        // Every series has its HELP and TYPE before it.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap();
            assert!(text.contains(&format!("# TYPE {name} ")), "{name}");
            assert!(text.contains(&format!("# HELP {name} ")), "{name}");
        }
    }
}
