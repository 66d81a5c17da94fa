//! How fast do messages compress and inflate (JSON-like text), per size?
// criterion_group! generates undocumented functions.
#![allow(missing_docs)]

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ringcast::proto::deflate::{Deflater, Inflater};

fn json_like(size: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(size + 64);
    let mut i = 0u64;
    while out.len() < size {
        out.extend_from_slice(
            format!(
                "{{\"user\":\"u{}\",\"room\":\"lobby\",\"seq\":{},\"text\":\"hello there\"}},",
                i % 97,
                i
            )
            .as_bytes(),
        );
        i += 1;
    }
    out.truncate(size);
    out
}

fn deflate(c: &mut Criterion) {
    for size in [64usize, 1024, 64 * 1024] {
        let input = json_like(size);
        let mut deflater = Deflater::new(1).expect("level 1");
        let mut compressed = Vec::new();
        deflater.compress(&input, &mut compressed);
        let mut group = c.benchmark_group("deflate");
        group.throughput(Throughput::Bytes(size as u64));
        let mut out = Vec::with_capacity(size);
        group.bench_function(BenchmarkId::new("compress", size), |b| {
            b.iter(|| {
                out.clear();
                deflater.compress(black_box(&input), &mut out);
            })
        });
        let mut inflater = Inflater::new();
        group.bench_function(BenchmarkId::new("inflate", size), |b| {
            b.iter(|| {
                inflater
                    .inflate(black_box(&compressed), 1 << 20)
                    .map(<[u8]>::len)
            })
        });
        group.finish();
    }
}

criterion_group!(benches, deflate);
criterion_main!(benches);
