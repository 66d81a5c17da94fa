//! permessage-deflate: negotiation rules, the RFC 7692 example, bounded inflation.

use proptest::prelude::*;

use super::*;

fn offers(value: &str) -> Vec<PerMessageDeflate> {
    parse_offers([value.as_bytes()])
}

#[test]
fn rfc7692_hello_example_round_trips() {
    // RFC 7692 section 7.2.3.1: "Hello" compressed is f2 48 cd c9 c9 07 00.
    let mut inflater = Inflater::new();
    let out = inflater
        .inflate(&[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00], 0)
        .unwrap();
    assert_eq!(out, b"Hello");
    // Section 7.2.3.5: a final block followed by one 00 byte also inflates.
    let out = inflater
        .inflate(&[0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00], 0)
        .unwrap();
    assert_eq!(out, b"Hello");
    let mut compressed = Vec::new();
    Deflater::new(1)
        .unwrap()
        .compress(b"Hello", &mut compressed);
    assert_eq!(inflater.inflate(&compressed, 0).unwrap(), b"Hello");
}

#[test]
fn rfc7692_stored_block_example_inflates() {
    // Section 7.2.3.3: "Hello" in a stored block, sync flushed.
    let mut inflater = Inflater::new();
    let out = inflater
        .inflate(
            &[
                0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00,
            ],
            0,
        )
        .unwrap();
    assert_eq!(out, b"Hello");
}

#[test]
fn inflates_zlib_sync_flush_stream() {
    use std::io::Write;
    let text = b"a message compressed the way browsers do, with a sync flush".repeat(4);
    let mut encoder =
        flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(&text).unwrap();
    encoder.flush().unwrap(); // Z_SYNC_FLUSH: ends with 00 00 ff ff
    let mut stream = encoder.get_ref().clone();
    assert!(stream.ends_with(&[0x00, 0x00, 0xff, 0xff]));
    stream.truncate(stream.len() - 4);
    assert_eq!(Inflater::new().inflate(&stream, 0).unwrap(), &text[..]);
}

#[test]
fn zlib_inflates_what_ringcast_compresses() {
    use std::io::Read;
    let text = b"ringcast to zlib ".repeat(30);
    let mut payload = Vec::new();
    Deflater::new(6).unwrap().compress(&text, &mut payload);
    payload.extend_from_slice(&[0x00, 0x00, 0xff, 0xff]);
    let mut out = Vec::new();
    let _ = flate2::read::DeflateDecoder::new(&payload[..]).read_to_end(&mut out);
    assert_eq!(out, text);
}

#[test]
fn decompression_bomb_fails_with_message_too_big() {
    let mut payload = Vec::new();
    Deflater::new(9)
        .unwrap()
        .compress(&vec![0u8; 8 << 20], &mut payload);
    assert!(payload.len() < 64 * 1024, "{}", payload.len());
    let mut inflater = Inflater::new();
    let limit = 64 * 1024;
    assert_eq!(
        inflater.inflate(&payload, limit),
        Err(ProtocolError::MessageTooBig { limit })
    );
    assert!(
        inflater.output.capacity() <= limit as usize + 1024,
        "{} {}",
        inflater.output.capacity(),
        payload.len()
    );
}

#[test]
fn message_one_byte_over_limit_fails() {
    let mut payload = Vec::new();
    Deflater::new(1)
        .unwrap()
        .compress(&[7u8; 1001], &mut payload);
    let mut inflater = Inflater::new();
    assert_eq!(
        inflater.inflate(&payload, 1000),
        Err(ProtocolError::MessageTooBig { limit: 1000 })
    );
    assert_eq!(inflater.inflate(&payload, 1001).map(<[u8]>::len), Ok(1001));
}

#[test]
fn compressed_output_is_sync_flushed_not_final() {
    // The first block header's BFINAL bit is clear: peers that inflate with a kept-open
    // stream never see an end of stream they do not expect.
    for text in [&b"x"[..], &b"Hello"[..], &[0u8; 100_000][..]] {
        let mut out = Vec::new();
        Deflater::new(6).unwrap().compress(text, &mut out);
        assert_eq!(
            out[0] & 1,
            0,
            "BFINAL set for a {}-byte message",
            text.len()
        );
    }
}

#[test]
fn level_outside_seed_range_is_refused() {
    assert!(Deflater::new(10).is_err());
    assert!(Deflater::new(-3).is_err());
}

#[test]
fn corrupt_stream_is_bad_deflate_stream() {
    let mut inflater = Inflater::new();
    assert_eq!(
        inflater.inflate(&[0xff, 0xff, 0xff, 0xff], 0),
        Err(ProtocolError::BadDeflateStream)
    );
}

#[test]
fn offer_with_all_four_parameters_parses() {
    let got = offers("permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=15; client_max_window_bits=\"10\"");
    assert_eq!(
        got,
        vec![PerMessageDeflate {
            server_no_context_takeover: true,
            client_no_context_takeover: true,
            server_max_window_bits: Some(15),
            client_max_window_bits: Some(Some(10)),
        }]
    );
}

#[test]
fn client_max_window_bits_without_value_parses() {
    assert_eq!(
        offers("permessage-deflate; client_max_window_bits")[0].client_max_window_bits,
        Some(None)
    );
}

#[test]
fn duplicate_deflate_parameter_declines_offer() {
    assert!(
        offers("permessage-deflate; server_no_context_takeover; server_no_context_takeover")
            .is_empty()
    );
    assert!(
        offers("permessage-deflate; client_max_window_bits=9; client_max_window_bits=9").is_empty()
    );
}

#[test]
fn malformed_parameters_decline_offer() {
    for bad in [
        "permessage-deflate; server_max_window_bits=7",
        "permessage-deflate; server_max_window_bits=16",
        "permessage-deflate; server_max_window_bits",
        "permessage-deflate; server_max_window_bits=1a",
        "permessage-deflate; server_no_context_takeover=1",
        "permessage-deflate; unknown",
    ] {
        assert!(offers(bad).is_empty(), "{bad}");
    }
}

#[test]
fn later_valid_offer_is_kept_after_a_malformed_one() {
    let got = offers("permessage-deflate; bogus, x-webkit-deflate-frame, permessage-deflate");
    assert_eq!(got.len(), 1);
    assert!(negotiate(&got).is_some());
}

#[test]
fn window_of_8_bits_is_kept_with_stored_blocks() {
    let agreed = negotiate(&offers("permessage-deflate; server_max_window_bits=8")).unwrap();
    assert_eq!(agreed.server_max_window_bits, Some(8));
    let input = b"abcabcabcabcabcabcabcabc".repeat(40);
    let mut out = Vec::new();
    let settings = DeflateSettings {
        level: 9,
        window_bits: 8,
    };
    Deflater::with_settings(settings)
        .unwrap()
        .compress(&input, &mut out);
    // Stored: no back-references at all, so the output is a little larger than the input.
    assert!(out.len() > input.len());
    assert_eq!(Inflater::new().inflate(&out, 0).unwrap(), &input[..]);
}

#[test]
fn server_max_window_bits_is_honoured_and_answered() {
    let agreed = negotiate(&offers("permessage-deflate; server_max_window_bits=9")).unwrap();
    assert_eq!(agreed.server_max_window_bits, Some(9));
    assert!(agreed
        .to_header_value()
        .contains("server_max_window_bits=9"));
    // A 9-bit compressor never reaches further back than 512 bytes: a repeat 600 bytes
    // back cannot be used, so this input compresses worse than with a 15-bit window.
    let mut text = Vec::new();
    for i in 0..2000u32 {
        text.extend_from_slice(format!("{:03}", (i * 7919) % 1000).as_bytes());
    }
    let block: Vec<u8> = text[..600].to_vec();
    let input = [block.clone(), block].concat();
    let (mut small, mut large) = (Vec::new(), Vec::new());
    Deflater::with_settings(DeflateSettings {
        level: 9,
        window_bits: 9,
    })
    .unwrap()
    .compress(&input, &mut small);
    Deflater::with_settings(DeflateSettings {
        level: 9,
        window_bits: 15,
    })
    .unwrap()
    .compress(&input, &mut large);
    assert!(
        small.len() > large.len(),
        "{} vs {}",
        small.len(),
        large.len()
    );
    assert_eq!(Inflater::new().inflate(&small, 0).unwrap(), &input[..]);
}

#[test]
fn answer_always_asks_for_no_context_takeover_both_ways() {
    let agreed = negotiate(&offers("permessage-deflate")).unwrap();
    assert_eq!(
        agreed.to_header_value(),
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
    );
}

#[test]
fn client_checks_the_server_answer() {
    assert!(parse_answer(
        b"permessage-deflate; server_no_context_takeover; client_no_context_takeover"
    )
    .is_ok());
    assert!(parse_answer(b"permessage-deflate; client_no_context_takeover").is_err());
    let answer =
        parse_answer(b"permessage-deflate; server_no_context_takeover; client_max_window_bits=10");
    assert_eq!(answer.unwrap().client_max_window_bits, Some(Some(10)));
    let bare =
        parse_answer(b"permessage-deflate; server_no_context_takeover; client_max_window_bits");
    assert!(bare.is_err());
    assert!(parse_answer(b"x-other").is_err());
    assert!(parse_answer(b"permessage-deflate; server_no_context_takeover, permessage-deflate; server_no_context_takeover").is_err());
}

proptest! {
    #[test]
    fn compress_then_inflate_round_trips_at_every_level(data in prop::collection::vec(any::<u8>(), 0..2000), level in -2i32..=9) {
        let mut payload = Vec::new();
        Deflater::new(level).unwrap().compress(&data, &mut payload);
        let mut inflater = Inflater::new();
        prop_assert_eq!(inflater.inflate(&payload, 0).unwrap(), &data[..]);
    }
}

/// A bomb of `size` zero bytes and its compressed payload.
fn bomb(size: usize) -> Vec<u8> {
    let mut payload = Vec::new();
    Deflater::new(9)
        .unwrap()
        .compress(&vec![0u8; size], &mut payload);
    payload
}

/// Issue 12: the old inflater started again from scratch each time its output buffer
/// doubled, so a bomb cost about twice its output and more. Now every byte is read and
/// written once: the bytes processed are the input plus the output, for any size.
#[test]
fn inflation_work_is_linear_in_the_output() {
    for size in [64 * 1024, 1 << 20, 16 << 20] {
        let payload = bomb(size);
        let mut inflater = Inflater::new();
        let out = inflater.inflate(&payload, 64 << 20).unwrap().len();
        assert_eq!(out, size);
        let input = (payload.len() + TAIL.len()) as u64;
        assert!(
            inflater.processed <= size as u64 + input,
            "{size}: {} bytes processed",
            inflater.processed
        );
    }
    // Stopped at the limit: at most the limit (and one byte) written.
    let payload = bomb(16 << 20);
    let mut inflater = Inflater::new();
    let limit = 1 << 20;
    assert_eq!(
        inflater.inflate(&payload, limit),
        Err(ProtocolError::MessageTooBig { limit })
    );
    assert!(inflater.processed <= limit + 1 + payload.len() as u64);
}

#[test]
fn a_paused_inflation_resumes_where_it_stopped_a_slice_at_a_time() {
    let text = "resumable inflation, a slice per turn ".repeat(40_000);
    let mut payload = Vec::new();
    Deflater::new(6)
        .unwrap()
        .compress(text.as_bytes(), &mut payload);
    let mut inflater = Inflater::new();
    let budget = 100 * 1024;
    let mut calls = 0;
    loop {
        inflater.set_budget(budget);
        let before = inflater.processed;
        calls += 1;
        let state = inflater.inflate_some(&payload, 8 << 20).unwrap();
        // A slice: the budget, overshot by one step at most.
        assert!(inflater.processed - before <= (budget + STEP) as u64);
        match state {
            Inflated::Paused => assert!(inflater.is_inflating()),
            Inflated::Done => break,
        }
    }
    assert_eq!(inflater.output(), text.as_bytes());
    assert!(!inflater.is_inflating());
    // Each byte once, whatever the number of slices.
    assert!(inflater.processed <= (text.len() + payload.len() + TAIL.len()) as u64);
    assert!(
        calls as usize >= text.len() / (budget + STEP),
        "{calls} calls"
    );
    // The next message starts afresh.
    inflater.set_budget(usize::MAX);
    assert_eq!(inflater.inflate(&bomb(10), 0).unwrap(), &[0u8; 10][..]);
}

#[test]
fn a_stream_cut_inside_a_block_fails() {
    let text: Vec<u8> = (0..100_000u32).flat_map(|i| i.to_le_bytes()).collect();
    let mut payload = Vec::new();
    Deflater::new(6).unwrap().compress(&text, &mut payload);
    let mut inflater = Inflater::new();
    assert_eq!(
        inflater.inflate(&payload[..payload.len() / 2], 0),
        Err(ProtocolError::BadDeflateStream)
    );
    assert!(!inflater.is_inflating());
    assert_eq!(inflater.inflate(&payload, 0).unwrap(), &text[..]);
}

#[test]
fn small_messages_take_their_first_room_once_and_large_ones_grow_by_doubling() {
    let mut deflater = Deflater::new(6).unwrap();
    let mut inflater = Inflater::new();
    let mut compressed = Vec::new();
    for round in 0..3 {
        compressed.clear();
        deflater.compress(b"a small chat message", &mut compressed);
        assert_eq!(
            inflater.inflate(&compressed, 0).unwrap(),
            b"a small chat message"
        );
        // The first room is taken once and kept: not a 64 KiB step per message, and
        // nothing past it (a connection that frees buffers past 64 KiB keeps this one).
        assert_eq!(inflater.held_bytes(), FIRST_OUTPUT, "round {round}");
    }
    // A message of 100 000 bytes grows the room 16, 32, 64, 128 KiB, and no further.
    let large: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
    compressed.clear();
    deflater.compress(&large, &mut compressed);
    assert_eq!(inflater.inflate(&compressed, 0).unwrap(), &large[..]);
    assert_eq!(inflater.held_bytes(), 8 * FIRST_OUTPUT);
}

/// `data` as one raw deflate stream that ends (a final block), as a peer may send it.
fn deflate_final(data: &[u8]) -> Vec<u8> {
    let mut compress = flate2::Compress::new(flate2::Compression::fast(), false);
    let mut out = Vec::with_capacity(data.len() / 2 + 1024);
    compress
        .compress_vec(data, &mut out, flate2::FlushCompress::Finish)
        .unwrap();
    out
}

#[test]
fn a_stream_that_ends_one_byte_past_the_limit_is_too_big() {
    // Found by the inflate fuzz target: the byte past the limit and the end of the stream
    // came in one step, and the message was handed out one byte too long.
    let limit = 64 * 1024;
    for size in [limit - 1, limit, limit + 1, limit + 2] {
        let payload = deflate_final(&vec![b'a'; size]);
        let mut inflater = Inflater::new();
        match inflater.inflate(&payload, limit as u64) {
            Ok(message) => {
                assert!(size <= limit, "{size} bytes accepted");
                assert_eq!(message.len(), size);
            }
            Err(err) => {
                assert!(size > limit, "{size} bytes refused: {err:?}");
                assert_eq!(
                    err,
                    ProtocolError::MessageTooBig {
                        limit: limit as u64
                    }
                );
            }
        }
    }
}

#[test]
fn room_left_by_a_larger_limit_does_not_lift_a_smaller_one() {
    let mut inflater = Inflater::new();
    let big = deflate_final(&vec![b'b'; 1 << 20]);
    assert_eq!(inflater.inflate(&big, 0).unwrap().len(), 1 << 20);
    for size in [1000, 1001, 4096] {
        let payload = deflate_final(&vec![b'c'; size]);
        match inflater.inflate(&payload, 1000) {
            Ok(message) => assert!(size <= 1000 && message.len() == size, "{size}"),
            Err(err) => assert_eq!(err, ProtocolError::MessageTooBig { limit: 1000 }),
        }
    }
}
