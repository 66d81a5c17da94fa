//! How long does a frame header take to parse and to write, per header size?
// criterion_group! generates undocumented functions.
#![allow(missing_docs)]

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};
use ringcast::proto::frame::{FrameHeader, MAX_HEADER_LEN};
use ringcast::proto::OpCode;

fn header(len: u64, masked: bool) -> FrameHeader {
    FrameHeader {
        fin: true,
        rsv: 0,
        opcode: OpCode::Binary,
        mask: masked.then_some([1, 2, 3, 4]),
        payload_len: len,
    }
}

fn frame(c: &mut Criterion) {
    let cases = [
        ("2-byte", header(100, false)),
        ("4-byte", header(1000, false)),
        ("6-byte-masked", header(100, true)),
        ("14-byte-masked", header(1 << 20, true)),
    ];
    let mut group = c.benchmark_group("frame_header_decode");
    for (name, h) in cases {
        let mut bytes = [0u8; MAX_HEADER_LEN];
        let n = h.encode(&mut bytes);
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| FrameHeader::decode(black_box(&bytes[..n])))
        });
    }
    group.finish();
    let mut group = c.benchmark_group("frame_header_encode");
    for (name, h) in cases {
        let mut out = [0u8; MAX_HEADER_LEN];
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| black_box(h).encode(black_box(&mut out)))
        });
    }
    group.finish();
}

criterion_group!(benches, frame);
criterion_main!(benches);
