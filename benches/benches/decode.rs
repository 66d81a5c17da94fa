//! How fast does a server decode client frames: a whole masked text message per size,
//! and a message in 16 fragments?
// criterion_group! generates undocumented functions.
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use ringcast::proto::deflate::Inflater;
use ringcast::proto::{Decoder, Encoder, OpCode, Role};

fn decode_all(decoder: &mut Decoder, inflater: &mut Inflater, input: &mut [u8]) -> usize {
    let mut pos = 0;
    let mut events = 0;
    while let Ok((used, Some(_))) = decoder.decode(&mut input[pos..], inflater) {
        pos += used;
        events += 1;
    }
    events
}

fn decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode_text");
    for size in [16usize, 1024, 64 * 1024] {
        let mut frame = Vec::new();
        Encoder::new(Role::Client).encode_frame(
            OpCode::Text,
            true,
            false,
            &vec![b'a'; size],
            &mut frame,
        );
        let mut decoder = Decoder::new(Role::Server);
        let mut inflater = Inflater::new();
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(BenchmarkId::from_parameter(size), |b| {
            b.iter_batched_ref(
                || frame.clone(),
                |input| decode_all(&mut decoder, &mut inflater, input),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();

    let mut group = c.benchmark_group("decode_fragmented");
    let size = 16 * 1024;
    let mut frames = Vec::new();
    let mut encoder = Encoder::new(Role::Client);
    for i in 0..16 {
        let opcode = if i == 0 {
            OpCode::Binary
        } else {
            OpCode::Continuation
        };
        encoder.encode_frame(opcode, i == 15, false, &[7u8; 1024], &mut frames);
    }
    let mut decoder = Decoder::new(Role::Server);
    let mut inflater = Inflater::new();
    group.throughput(Throughput::Bytes(size as u64));
    group.bench_function("16x1KiB", |b| {
        b.iter_batched_ref(
            || frames.clone(),
            |input| decode_all(&mut decoder, &mut inflater, input),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, decode);
criterion_main!(benches);
