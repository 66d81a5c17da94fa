//! How fast are frames written, unmasked (server) and masked (client), per size?
// criterion_group! generates undocumented functions.
#![allow(missing_docs)]

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ringcast::proto::{Encoder, OpCode, Role};

fn encode(c: &mut Criterion) {
    for (name, role) in [
        ("encode_server", Role::Server),
        ("encode_client", Role::Client),
    ] {
        let mut group = c.benchmark_group(name);
        for size in [16usize, 1024, 64 * 1024] {
            let payload = vec![b'a'; size];
            let mut encoder = Encoder::new(role);
            let mut out = Vec::with_capacity(size + 14);
            group.throughput(Throughput::Bytes(size as u64));
            group.bench_function(BenchmarkId::from_parameter(size), |b| {
                b.iter(|| {
                    out.clear();
                    encoder.encode_frame(
                        OpCode::Binary,
                        true,
                        false,
                        black_box(&payload),
                        &mut out,
                    );
                })
            });
        }
        group.finish();
    }
}

criterion_group!(benches, encode);
criterion_main!(benches);
