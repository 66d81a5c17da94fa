//! How long does one delivery take on a worker's real queueing path (topic look-up, shared
//! frame, outbox push under the cap, flush bookkeeping), with no socket in the way?
//! Throughput is in deliveries, so criterion reports ns per delivery.
// criterion_group! generates undocumented functions.
#![allow(missing_docs)]

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ringcast::server::bench::LocalFanout;
use ringcast::{MessageType, PreparedMessage};

fn fanout(c: &mut Criterion) {
    let mut group = c.benchmark_group("fanout");
    for (compressed, label) in [(false, "plain"), (true, "deflate")] {
        for subscribers in [100, 10_000] {
            let mut fanout = LocalFanout::new(subscribers, compressed);
            let payload = "x".repeat(64);
            group.throughput(Throughput::Elements(subscribers as u64));
            group.bench_function(BenchmarkId::new(label, subscribers), |b| {
                b.iter(|| {
                    // A new message per publish, as a real broadcast: its frame (and
                    // compression) is built once inside.
                    let message = PreparedMessage::new(MessageType::Text, payload.clone())
                        .expect("text message");
                    fanout.publish(Arc::new(message))
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, fanout);
criterion_main!(benches);
