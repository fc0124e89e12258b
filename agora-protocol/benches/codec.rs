//! Decode and encode speed of `PUB` frames at several payload sizes, and of `MSG`
//! frames at 128 B.
//!
//! `cargo bench -p agora-protocol --bench codec`. Each iteration decodes a buffer of
//! 1,000 back-to-back frames, as a connection's read buffer holds them, so the figure is
//! per frame in a batch (throughput in elements is frames).

use std::hint::black_box;

use agora_protocol::bytes::{Bytes, BytesMut};
use agora_protocol::{
    encode, encode_msg, ClientFrame, Destination, Frame, Headers, Limits, Publish, ServerFrame,
};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

const FRAMES: usize = 1000;
const SIZES: [usize; 4] = [16, 128, 1024, 64 * 1024];

fn frame(size: usize) -> ClientFrame {
    ClientFrame::Pub(Publish {
        rid: None,
        dest: Destination::topic("bench.prices").unwrap(),
        headers: Headers::new(),
        payload: Bytes::from(vec![b'x'; size]),
    })
}

fn wire(size: usize) -> BytesMut {
    let f = frame(size);
    let mut b = BytesMut::new();
    for _ in 0..FRAMES {
        encode(&f, &mut b);
    }
    b
}

/// Decodes the 1,000 frames of `w` per iteration, as frames of `F`'s direction.
fn decode_all<F: Frame>(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    w: &BytesMut,
) {
    g.throughput(Throughput::Elements(FRAMES as u64));
    g.bench_function(name, |b| {
        b.iter_batched_ref(
            || w.clone(),
            |buf| {
                let mut n = 0;
                while let Some(f) = F::decode_with(buf, &Limits::default()).unwrap() {
                    black_box(&f);
                    n += 1;
                }
                assert_eq!(n, FRAMES);
            },
            BatchSize::PerIteration,
        )
    });
}

fn bench_decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("decode_pub");
    for size in SIZES {
        decode_all::<ClientFrame>(&mut g, &format!("{size}B"), &wire(size));
    }
    g.finish();
    // What a subscribing client decodes: `MSG` frames of 128 B.
    let mut g = c.benchmark_group("decode_msg");
    let dest = Destination::topic("bench.prices").unwrap();
    let mut w = BytesMut::new();
    for i in 0..FRAMES as u64 {
        encode_msg(&dest, 1, i, 1, &Headers::new(), &[b'x'; 128], &mut w);
    }
    decode_all::<ServerFrame>(&mut g, "128B", &w);
    g.finish();
}

fn bench_encode(c: &mut Criterion) {
    let mut g = c.benchmark_group("encode_pub");
    for size in SIZES {
        let f = frame(size);
        let mut buf = BytesMut::with_capacity(FRAMES * (size + 64));
        g.throughput(Throughput::Elements(FRAMES as u64));
        g.bench_function(format!("{size}B"), |b| {
            b.iter(|| {
                buf.clear();
                for _ in 0..FRAMES {
                    encode(black_box(&f), &mut buf);
                }
                black_box(buf.len())
            })
        });
    }
    g.finish();
    let mut g = c.benchmark_group("encode_msg");
    let dest = Destination::topic("bench.prices").unwrap();
    let payload = vec![b'x'; 128];
    let mut buf = BytesMut::with_capacity(FRAMES * 200);
    g.throughput(Throughput::Elements(FRAMES as u64));
    g.bench_function("128B", |b| {
        b.iter(|| {
            buf.clear();
            for i in 0..FRAMES as u64 {
                encode_msg(&dest, 1, i, 1, &Headers::new(), &payload, &mut buf);
            }
            black_box(buf.len())
        })
    });
    g.finish();
}

criterion_group!(benches, bench_decode, bench_encode);
criterion_main!(benches);
