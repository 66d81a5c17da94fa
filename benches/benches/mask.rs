//! How fast does unmasking run, per payload size?
// criterion_group! generates undocumented functions.
#![allow(missing_docs)]

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ringcast::proto::mask::apply_mask;

fn mask(c: &mut Criterion) {
    let mut group = c.benchmark_group("mask");
    for size in [64, 1024, 64 * 1024] {
        let mut buf = vec![0x5au8; size];
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(BenchmarkId::from_parameter(size), |b| {
            b.iter(|| apply_mask(black_box(&mut buf), [1, 2, 3, 4]))
        });
    }
    group.finish();
}

criterion_group!(benches, mask);
criterion_main!(benches);
