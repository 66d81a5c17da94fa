//! Raw bytes as frames from a peer, cut in the places the first bytes choose, to a
//! decoder of either role, with compression on or off, assembling or streaming. Nothing
//! may panic, no event may exceed the read limit, and an error must be sticky.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringcast::proto::deflate::Inflater;
use ringcast::proto::{Decoder, Event, Role};

const LIMIT: u64 = 1 << 16;

fuzz_target!(|data: &[u8]| {
    let [flags, cut_a, cut_b, rest @ ..] = data else {
        return;
    };
    let role = if flags & 1 == 0 {
        Role::Server
    } else {
        Role::Client
    };
    let mut decoder = Decoder::new(role);
    decoder.set_compression(flags & 2 != 0);
    decoder.set_streaming(flags & 4 != 0);
    decoder.set_read_limit(LIMIT);
    let mut inflater = Inflater::new();
    let mut input = rest.to_vec();
    let a = (*cut_a as usize).min(input.len());
    let b = (a + *cut_b as usize).min(input.len());
    let mut failed = None;
    for range in [0..a, a..b, b..input.len()] {
        let chunk = &mut input[range];
        let mut pos = 0;
        loop {
            match decoder.decode(&mut chunk[pos..], &mut inflater) {
                Ok((used, event)) => {
                    assert!(failed.is_none(), "decoded after an error");
                    pos += used;
                    match event {
                        None => {
                            assert_eq!(pos, chunk.len());
                            break;
                        }
                        Some(Event::Message(_, payload)) => assert!(payload.len() as u64 <= LIMIT),
                        Some(Event::Part { data, .. }) => assert!(data.len() as u64 <= LIMIT),
                        Some(Event::Ping(p)) | Some(Event::Pong(p)) => assert!(p.len() <= 125),
                        Some(Event::Close(_)) => {}
                    }
                }
                Err(err) => {
                    if let Some(first) = failed {
                        assert_eq!(first, err, "error changed");
                    }
                    failed = Some(err);
                    break;
                }
            }
        }
    }
});
