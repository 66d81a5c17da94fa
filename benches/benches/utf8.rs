//! How fast is text checked, ASCII and multi-byte, whole and in 100-byte pieces?
// criterion_group! generates undocumented functions.
#![allow(missing_docs)]

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ringcast::proto::utf8::Utf8Validator;

fn utf8(c: &mut Criterion) {
    let mut group = c.benchmark_group("utf8");
    let ascii = "hello world, ".repeat(5000);
    let multi = "κόσμε ἀγαθός 世界 🌍 ".repeat(2000);
    for (name, text) in [("ascii", ascii.as_bytes()), ("multibyte", multi.as_bytes())] {
        for size in [1024usize, 64 * 1024] {
            let input = &text[..size.min(text.len())];
            group.throughput(Throughput::Bytes(input.len() as u64));
            group.bench_function(BenchmarkId::new(format!("{name}-whole"), size), |b| {
                b.iter(|| {
                    let mut v = Utf8Validator::new();
                    let _ = v.feed(black_box(input));
                    v.finish()
                })
            });
            group.bench_function(BenchmarkId::new(format!("{name}-pieces"), size), |b| {
                b.iter(|| {
                    let mut v = Utf8Validator::new();
                    for piece in black_box(input).chunks(100) {
                        let _ = v.feed(piece);
                    }
                    v.finish()
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, utf8);
criterion_main!(benches);
