//! What finding a topic's subscriptions costs as subscriptions grow (issue 21): the
//! trie walk of a published name, and the same name answered from the match cache,
//! with 0, 10,000 and 100,000 subscriptions that do not match it (each its own pattern,
//! half wildcards) besides the 4 that do.
//!
//! `cargo bench -p agora-server --bench subindex -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;

use agora_server::auth::Pattern;
use agora_server::subindex::{MatchCache, SubIndex};
use criterion::{criterion_group, criterion_main, Criterion};

fn index(others: usize) -> SubIndex<u32> {
    let mut ix = SubIndex::default();
    for (i, p) in ["sensors.a.temp", "sensors.*.temp", "sensors.>", ">"]
        .iter()
        .enumerate()
    {
        ix.insert(&Pattern::parse(&format!("topic:{p}")).unwrap(), i as u32);
    }
    for i in 0..others {
        let p = match i % 2 {
            0 => format!("topic:device{i}.*.temp"),
            _ => format!("topic:device{i}.>"),
        };
        ix.insert(&Pattern::parse(&p).unwrap(), 1000 + i as u32);
    }
    ix
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("subindex");
    for others in [0usize, 10_000, 100_000] {
        let ix = index(others);
        assert_eq!(ix.matches("sensors.a.temp").len(), 4);
        g.bench_function(format!("walk/{others}"), |b| {
            b.iter(|| black_box(ix.matches(black_box("sensors.a.temp"))))
        });
        let mut cache = MatchCache::new(65_536);
        g.bench_function(format!("cached/{others}"), |b| {
            b.iter(|| black_box(cache.matches(&ix, black_box("sensors.a.temp"))))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
