//! How long does the server take to parse and validate a browser's upgrade request?
// criterion_group! generates undocumented functions.
#![allow(missing_docs)]

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use ringcast::proto::handshake::{
    parse_request, validate_request, write_response, Limits, ServerOptions,
};

const CHROME: &[u8] = b"GET /ws?room=lobby HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nConnection: Upgrade\r\n\
Pragma: no-cache\r\nCache-Control: no-cache\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 \
(KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36\r\nUpgrade: websocket\r\nOrigin: http://127.0.0.1:8080\r\n\
Sec-WebSocket-Version: 13\r\nAccept-Encoding: gzip, deflate, br, zstd\r\nAccept-Language: en-US,en;q=0.9\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n";

fn handshake(c: &mut Criterion) {
    let limits = Limits::default();
    let options = ServerOptions {
        subprotocols: &[],
        enable_compression: true,
        check_origin: None,
    };
    c.bench_function("handshake_parse_validate", |b| {
        b.iter(|| {
            let (request, _) = parse_request(black_box(CHROME), &limits).ok()??;
            validate_request(&request, &options).ok()
        })
    });
    let mut out = Vec::with_capacity(512);
    c.bench_function("handshake_parse_validate_respond", |b| {
        b.iter(|| {
            let (request, _) = parse_request(black_box(CHROME), &limits).ok()??;
            let accepted = validate_request(&request, &options).ok()?;
            out.clear();
            write_response(&accepted, &[], &mut out);
            Some(out.len())
        })
    });
}

criterion_group!(benches, handshake);
criterion_main!(benches);
