//! Per-message cost of each built-in mutator and of a three-mutator chain, against no
//! chain, on a 128-byte JSON payload (enrichment with a warm cache).
//!
//! `cargo bench -p agora-server --bench mutators`
//!
//! These are CPU costs of `Chain::run` alone; the broker-level figures (ratios of
//! topic throughput with and without a chain) come from agora-bench.

use std::collections::HashMap;

use agora_protocol::bytes::Bytes;
use agora_protocol::Headers;
use agora_server::mutators::{Chain, Env, Msg, Verdict};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};

/// 128 bytes.
const PAYLOAD: &[u8] =
    br#"{"site":"s1","temp":31.5,"hum":40,"id":"abcdef0123456789","ts":1700000000000,"unit":"C","pad":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}"#;

fn bench(c: &mut Criterion) {
    assert_eq!(PAYLOAD.len(), 128);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sensors.db");
    let db = rusqlite::Connection::open(&file).unwrap();
    db.execute_batch(
        "CREATE TABLE sites (site TEXT PRIMARY KEY, city TEXT, alt INTEGER);
         INSERT INTO sites VALUES ('s1', 'Oslo', 23);",
    )
    .unwrap();
    let mut dbs = HashMap::new();
    dbs.insert("sensors".to_owned(), file);
    let env = Env::new(&dbs);
    let payload = Bytes::from_static(PAYLOAD);
    let cases = [
        ("none", ""),
        ("threshold_json", "threshold /temp > 30"),
        ("threshold_header", "threshold header:temp > 30"),
        ("sample", "sample 10"),
        ("set_header_now", "set header:seen=now"),
        ("set_json_field", "set /seen=now_ms"),
        ("remove_json_field", "remove /pad"),
        ("enrich_warm_json", "enrich db=sensors table=sites key=/site"),
        ("enrich_warm_header", "enrich db=sensors table=sites key=/site into=header"),
        (
            "chain3_threshold_enrich_set",
            "threshold /temp > 30 | enrich db=sensors table=sites key=/site into=header | set header:seen=now",
        ),
    ];
    let mut g = c.benchmark_group("mutators");
    for (name, text) in cases {
        let chain = Chain::parse(text, &env).unwrap();
        let mut h = Headers::new();
        h.insert("temp", "31.5").unwrap();
        // Warm the enrichment cache.
        let mut m = Msg::new(h.clone(), payload.clone());
        assert_eq!(
            futures_lite::future::block_on(chain.run(&mut m)),
            Verdict::Keep
        );
        g.bench_function(name, |b| {
            b.iter_batched(
                || Msg::new(h.clone(), payload.clone()),
                |mut m| {
                    let v = futures_lite::future::block_on(chain.run(&mut m));
                    (v, m.into_parts())
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
