//! What does preparing a broadcast cost: building each wire form once, then handing
//! the shared frame to each of N connections?
// criterion_group! generates undocumented functions.
#![allow(missing_docs)]

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};
use ringcast::proto::deflate::DeflateSettings;
use ringcast::proto::Role;
use ringcast::{MessageType, PreparedMessage};

fn prepared(c: &mut Criterion) {
    let payload = "{\"room\":\"lobby\",\"text\":\"hello everyone\"}".repeat(8);
    let mut group = c.benchmark_group("prepared_build");
    group.bench_function("plain", |b| {
        b.iter(|| {
            let message = PreparedMessage::new(MessageType::Text, payload.clone()).ok()?;
            Some(message.frame(Role::Server, None).len())
        })
    });
    group.bench_function("compressed", |b| {
        b.iter(|| {
            let message = PreparedMessage::new(MessageType::Text, payload.clone()).ok()?;
            Some(
                message
                    .frame(Role::Server, Some(DeflateSettings::default()))
                    .len(),
            )
        })
    });
    group.finish();
    let mut group = c.benchmark_group("prepared_fetch_per_connection");
    for n in [100usize, 1000] {
        let message = PreparedMessage::new(MessageType::Text, payload.clone()).expect("text");
        group.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter(|| {
                let mut total = 0;
                for _ in 0..n {
                    total +=
                        black_box(message.frame(Role::Server, Some(DeflateSettings::default())))
                            .len();
                }
                total
            })
        });
    }
    group.finish();
}

criterion_group!(benches, prepared);
criterion_main!(benches);
