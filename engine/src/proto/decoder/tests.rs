//! One test per rule of RFC 6455 section 5, plus split-anywhere property tests.

use proptest::prelude::*;

use super::*;
use crate::proto::deflate::Deflater;
use crate::proto::{CloseCode, Encoder};

/// Owned copy of an event, for comparing across calls.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Ev {
    Message(MessageType, Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<(u16, String)>),
}

/// Feed `bytes` cut at `cuts`, assembling mode; collect events or the first error.
fn run(decoder: &mut Decoder, bytes: &[u8], cuts: &[usize]) -> Result<Vec<Ev>, ProtocolError> {
    let mut inflater = Inflater::new();
    let mut events = Vec::new();
    let mut bounds: Vec<usize> = cuts.iter().map(|&c| c.min(bytes.len())).collect();
    bounds.sort_unstable();
    bounds.push(bytes.len());
    let mut start = 0;
    for end in bounds {
        let mut chunk = bytes[start..end].to_vec();
        start = end;
        let mut pos = 0;
        loop {
            let (used, event) = decoder.decode(&mut chunk[pos..], &mut inflater)?;
            pos += used;
            match event {
                None => {
                    assert_eq!(pos, chunk.len(), "no event but input left");
                    break;
                }
                Some(Event::Message(t, p)) => events.push(Ev::Message(t, p.to_vec())),
                Some(Event::Part { .. }) => panic!("part in assembling mode"),
                Some(Event::Ping(p)) => events.push(Ev::Ping(p.to_vec())),
                Some(Event::Pong(p)) => events.push(Ev::Pong(p.to_vec())),
                Some(Event::Close(c)) => {
                    events.push(Ev::Close(c.map(|(code, r)| (code.0, r.to_owned()))))
                }
            }
        }
    }
    Ok(events)
}

fn server() -> Decoder {
    Decoder::new(Role::Server)
}

fn client() -> Decoder {
    Decoder::new(Role::Client)
}

/// A frame as a client sends it (masked).
fn masked(first: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let opcode = OpCode::from_u8(first & 0x0f).expect("valid opcode in test");
    Encoder::new(Role::Client).encode_frame(
        opcode,
        first & 0x80 != 0,
        first & 0x40 != 0,
        payload,
        &mut out,
    );
    out
}

fn err(decoder: &mut Decoder, bytes: &[u8]) -> ProtocolError {
    run(decoder, bytes, &[]).expect_err("expected a protocol error")
}

#[test]
fn rfc_unmasked_hello_is_one_text_message() {
    let events = run(
        &mut client(),
        &[0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f],
        &[],
    )
    .unwrap();
    assert_eq!(
        events,
        vec![Ev::Message(MessageType::Text, b"Hello".to_vec())]
    );
}

#[test]
fn rfc_masked_hello_is_unmasked() {
    let bytes = [
        0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
    ];
    let events = run(&mut server(), &bytes, &[]).unwrap();
    assert_eq!(
        events,
        vec![Ev::Message(MessageType::Text, b"Hello".to_vec())]
    );
}

#[test]
fn rfc_fragmented_hello_is_assembled() {
    let bytes = [0x01, 0x03, 0x48, 0x65, 0x6c, 0x80, 0x02, 0x6c, 0x6f];
    let events = run(&mut client(), &bytes, &[]).unwrap();
    assert_eq!(
        events,
        vec![Ev::Message(MessageType::Text, b"Hello".to_vec())]
    );
}

#[test]
fn rfc_ping_and_masked_pong_carry_hello() {
    let ping = [0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
    assert_eq!(
        run(&mut client(), &ping, &[]).unwrap(),
        vec![Ev::Ping(b"Hello".to_vec())]
    );
    let pong = [
        0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
    ];
    assert_eq!(
        run(&mut server(), &pong, &[]).unwrap(),
        vec![Ev::Pong(b"Hello".to_vec())]
    );
}

#[test]
fn rfc_256_bytes_and_64kib_binary_lengths_decode() {
    for len in [256usize, 65536] {
        let mut bytes = Vec::new();
        Encoder::new(Role::Server).encode_frame(
            OpCode::Binary,
            true,
            false,
            &vec![9u8; len],
            &mut bytes,
        );
        let events = run(&mut client(), &bytes, &[3, 100]).unwrap();
        assert_eq!(
            events,
            vec![Ev::Message(MessageType::Binary, vec![9u8; len])]
        );
    }
}

#[test]
fn control_frame_of_126_bytes_is_protocol_error() {
    let e = err(&mut server(), &masked(0x89, &[0u8; 126]));
    assert_eq!(e, ProtocolError::ControlFrameTooLong { len: 126 });
    assert_eq!(e.close_code(), CloseCode::PROTOCOL_ERROR);
}

#[test]
fn fragmented_control_frame_is_protocol_error() {
    assert_eq!(
        err(&mut server(), &masked(0x09, b"x")),
        ProtocolError::ControlFrameFragmented
    );
}

#[test]
fn continuation_without_message_is_protocol_error() {
    assert_eq!(
        err(&mut server(), &masked(0x80, b"x")),
        ProtocolError::UnexpectedContinuation
    );
}

#[test]
fn new_data_frame_inside_fragmented_message_is_protocol_error() {
    let mut bytes = masked(0x01, b"a");
    bytes.extend(masked(0x81, b"b"));
    assert_eq!(
        err(&mut server(), &bytes),
        ProtocolError::DataFrameInsideFragmentedMessage
    );
}

#[test]
fn control_frame_between_fragments_is_accepted() {
    let mut bytes = masked(0x01, b"He");
    bytes.extend(masked(0x89, b"p"));
    bytes.extend(masked(0x80, b"llo"));
    let events = run(&mut server(), &bytes, &[]).unwrap();
    assert_eq!(
        events,
        vec![
            Ev::Ping(b"p".to_vec()),
            Ev::Message(MessageType::Text, b"Hello".to_vec())
        ]
    );
}

#[test]
fn reserved_opcode_is_protocol_error() {
    let e = err(&mut server(), &[0x83, 0x80, 0, 0, 0, 0]);
    assert_eq!(e, ProtocolError::ReservedOpcode { opcode: 3 });
    assert_eq!(e.close_code(), CloseCode::PROTOCOL_ERROR);
}

#[test]
fn rsv_bits_without_extension_are_protocol_error() {
    for first in [0xc1u8, 0xa1, 0x91] {
        let e = err(&mut server(), &[first, 0x80, 0, 0, 0, 0]);
        assert!(
            matches!(e, ProtocolError::ReservedBits { .. }),
            "{first:#x}: {e:?}"
        );
    }
}

#[test]
fn rsv1_on_continuation_is_protocol_error_even_with_compression() {
    let mut decoder = server();
    decoder.set_compression(true);
    let mut bytes = masked(0x01, b"a");
    bytes.extend(masked(0xc0, b"b"));
    assert_eq!(
        err(&mut decoder, &bytes),
        ProtocolError::CompressedBitMisplaced
    );
}

#[test]
fn unmasked_client_frame_is_protocol_error() {
    assert_eq!(
        err(&mut server(), b"\x81\x02hi"),
        ProtocolError::UnmaskedClientFrame
    );
}

#[test]
fn masked_server_frame_is_protocol_error() {
    assert_eq!(
        err(&mut client(), &masked(0x81, b"hi")),
        ProtocolError::MaskedServerFrame
    );
}

#[test]
fn invalid_utf8_text_is_1007() {
    let e = err(&mut server(), &masked(0x81, b"\xff"));
    assert_eq!(
        (e, e.close_code()),
        (
            ProtocolError::InvalidUtf8,
            CloseCode::INVALID_FRAME_PAYLOAD_DATA
        )
    );
}

#[test]
fn invalid_utf8_prefix_fails_before_message_ends() {
    // The first fragment already holds an impossible sequence; the rest never comes.
    let e = err(&mut server(), &masked(0x01, b"ok\xf4\x90"));
    assert_eq!(e, ProtocolError::InvalidUtf8);
}

#[test]
fn invalid_utf8_prefix_fails_inside_one_partial_frame() {
    let frame = masked(0x81, b"abc\xc0defghij");
    let mut decoder = server();
    let mut inflater = Inflater::new();
    // Only the header and the first four payload bytes have arrived.
    let mut first = frame[..6 + 4].to_vec();
    assert_eq!(
        decoder.decode(&mut first, &mut inflater),
        Err(ProtocolError::InvalidUtf8)
    );
}

#[test]
fn text_split_inside_a_code_point_is_accepted() {
    let text = "€uro".as_bytes();
    let mut bytes = masked(0x01, &text[..1]);
    bytes.extend(masked(0x80, &text[1..]));
    let events = run(&mut server(), &bytes, &[]).unwrap();
    assert_eq!(events, vec![Ev::Message(MessageType::Text, text.to_vec())]);
}

#[test]
fn close_payload_of_one_byte_is_protocol_error() {
    assert_eq!(
        err(&mut server(), &masked(0x88, &[3])),
        ProtocolError::CloseFrameTooShort
    );
}

#[test]
fn close_with_invalid_code_is_protocol_error() {
    let e = err(&mut server(), &masked(0x88, &1005u16.to_be_bytes()));
    assert_eq!(e, ProtocolError::InvalidCloseCode { code: 1005 });
}

#[test]
fn close_reason_must_be_utf8() {
    assert_eq!(
        err(&mut server(), &masked(0x88, b"\x03\xe8\xff")),
        ProtocolError::InvalidCloseReason
    );
}

#[test]
fn close_with_code_and_reason_is_an_event() {
    let events = run(&mut server(), &masked(0x88, b"\x03\xe8bye"), &[]).unwrap();
    assert_eq!(events, vec![Ev::Close(Some((1000, "bye".into())))]);
}

#[test]
fn message_at_the_limit_is_accepted() {
    let mut decoder = server();
    decoder.set_read_limit(10);
    let events = run(&mut decoder, &masked(0x82, &[1; 10]), &[]).unwrap();
    assert_eq!(events.len(), 1);
}

#[test]
fn message_one_byte_over_limit_is_rejected_not_truncated() {
    let mut decoder = server();
    decoder.set_read_limit(10);
    let e = err(&mut decoder, &masked(0x82, &[1; 11]));
    assert_eq!(
        (e, e.close_code()),
        (
            ProtocolError::MessageTooBig { limit: 10 },
            CloseCode::MESSAGE_TOO_BIG
        )
    );
}

#[test]
fn fragments_adding_up_past_the_limit_are_rejected() {
    let mut decoder = server();
    decoder.set_read_limit(10);
    let mut bytes = masked(0x02, &[1; 6]);
    bytes.extend(masked(0x80, &[1; 6]));
    assert_eq!(
        err(&mut decoder, &bytes),
        ProtocolError::MessageTooBig { limit: 10 }
    );
}

#[test]
fn huge_declared_length_allocates_nothing() {
    let mut decoder = server();
    decoder.set_read_limit(0);
    // A 2^62-byte frame header followed by a few payload bytes.
    let mut bytes = vec![0x82, 0xff];
    bytes.extend_from_slice(&(1u64 << 62).to_be_bytes());
    bytes.extend_from_slice(&[0, 0, 0, 0]);
    bytes.extend_from_slice(&[7; 100]);
    let mut inflater = Inflater::new();
    assert_eq!(decoder.decode(&mut bytes, &mut inflater).unwrap().1, None);
    assert!(
        decoder.buf.capacity() < 1024,
        "capacity {}",
        decoder.buf.capacity()
    );
}

#[test]
fn huge_declared_length_over_limit_fails_at_the_header() {
    let mut bytes = vec![0x82, 0xff];
    bytes.extend_from_slice(&(1u64 << 40).to_be_bytes());
    bytes.extend_from_slice(&[0, 0, 0, 0]);
    assert_eq!(
        err(&mut server(), &bytes),
        ProtocolError::MessageTooBig {
            limit: DEFAULT_READ_LIMIT
        }
    );
}

#[test]
fn errors_are_sticky() {
    let mut decoder = server();
    let mut inflater = Inflater::new();
    let mut bad = b"\x81\x02hi".to_vec();
    assert!(decoder.decode(&mut bad, &mut inflater).is_err());
    let mut good = masked(0x81, b"ok");
    assert_eq!(
        decoder.decode(&mut good, &mut inflater),
        Err(ProtocolError::UnmaskedClientFrame)
    );
}

#[test]
fn whole_frame_in_input_is_handed_out_without_copy() {
    let mut decoder = server();
    let mut inflater = Inflater::new();
    let mut bytes = masked(0x82, &[5; 64]);
    let start = bytes.as_ptr() as usize;
    let (_, event) = decoder.decode(&mut bytes, &mut inflater).unwrap();
    let Some(Event::Message(_, payload)) = event else {
        panic!("expected a message")
    };
    assert_eq!(payload.as_ptr() as usize, start + 6);
}

#[test]
fn flood_of_tiny_fragments_holds_only_their_bytes() {
    let mut bytes = masked(0x02, b"x");
    for _ in 0..10_000 {
        bytes.extend(masked(0x00, b"y"));
    }
    bytes.extend(masked(0x80, b"z"));
    let events = run(&mut server(), &bytes, &[]).unwrap();
    let Ev::Message(_, payload) = &events[0] else {
        panic!()
    };
    assert_eq!(payload.len(), 10_002);
}

#[test]
fn idle_decoder_releases_its_buffers() {
    let mut decoder = server();
    let mut bytes = masked(0x02, &[1; 1000]);
    bytes.extend(masked(0x80, &[2; 1000]));
    run(&mut decoder, &bytes, &[500]).unwrap();
    decoder.release_idle_memory();
    assert_eq!(decoder.buf.capacity(), 0);
    // It lives in every connection of the engine: keep it small.
    assert!(
        std::mem::size_of::<Decoder>() <= 160,
        "{}",
        std::mem::size_of::<Decoder>()
    );
}

#[test]
fn compressed_message_is_inflated() {
    let mut payload = Vec::new();
    Deflater::new(1)
        .unwrap()
        .compress("Hello, Hello, Hello".as_bytes(), &mut payload);
    let mut decoder = server();
    decoder.set_compression(true);
    let mut bytes = masked(0xc1, &payload);
    bytes.extend(masked(0x81, b"plain"));
    let events = run(&mut decoder, &bytes, &[]).unwrap();
    assert_eq!(
        events,
        vec![
            Ev::Message(MessageType::Text, b"Hello, Hello, Hello".to_vec()),
            Ev::Message(MessageType::Text, b"plain".to_vec())
        ]
    );
}

#[test]
fn compressed_fragmented_message_is_inflated_whole() {
    let text = "fragmented and compressed ".repeat(20);
    let mut payload = Vec::new();
    Deflater::new(6)
        .unwrap()
        .compress(text.as_bytes(), &mut payload);
    let (a, b) = payload.split_at(payload.len() / 2);
    let mut decoder = server();
    decoder.set_compression(true);
    let mut bytes = masked(0x41, a);
    bytes.extend(masked(0x80, b));
    let events = run(&mut decoder, &bytes, &[7]).unwrap();
    assert_eq!(
        events,
        vec![Ev::Message(MessageType::Text, text.into_bytes())]
    );
}

#[test]
fn decompression_bomb_fails_with_1009() {
    let mut payload = Vec::new();
    Deflater::new(9)
        .unwrap()
        .compress(&vec![0u8; 4 << 20], &mut payload);
    assert!(payload.len() < 16 * 1024);
    let mut decoder = server();
    decoder.set_compression(true);
    decoder.set_read_limit(64 * 1024);
    let e = err(&mut decoder, &masked(0xc2, &payload));
    assert_eq!(
        (e, e.close_code()),
        (
            ProtocolError::MessageTooBig { limit: 64 * 1024 },
            CloseCode::MESSAGE_TOO_BIG
        )
    );
}

#[test]
fn compressed_text_must_inflate_to_utf8() {
    let mut payload = Vec::new();
    Deflater::new(1)
        .unwrap()
        .compress(b"\xff\xfe", &mut payload);
    let mut decoder = server();
    decoder.set_compression(true);
    assert_eq!(
        err(&mut decoder, &masked(0xc1, &payload)),
        ProtocolError::InvalidUtf8
    );
}

#[test]
fn streaming_mode_hands_out_parts_as_bytes_arrive() {
    let mut decoder = server();
    decoder.set_streaming(true);
    let mut inflater = Inflater::new();
    let frame = masked(0x82, &[3; 100]);
    let mut got = Vec::new();
    let mut firsts = 0;
    let mut lasts = 0;
    for chunk in frame.chunks(30) {
        let mut chunk = chunk.to_vec();
        let mut pos = 0;
        loop {
            let (used, event) = decoder.decode(&mut chunk[pos..], &mut inflater).unwrap();
            pos += used;
            match event {
                Some(Event::Part {
                    data, first, last, ..
                }) => {
                    got.extend_from_slice(data);
                    firsts += usize::from(first);
                    lasts += usize::from(last);
                }
                Some(other) => panic!("unexpected {other:?}"),
                None => break,
            }
        }
    }
    assert_eq!((got, firsts, lasts), (vec![3; 100], 1, 1));
}

/// One frame of a generated conversation.
#[derive(Debug, Clone)]
enum Gen {
    Message { text: bool, fragments: Vec<Vec<u8>> },
    Ping(Vec<u8>),
    Close(u16, String),
}

fn gen_item() -> impl Strategy<Value = Gen> {
    prop_oneof![
        (
            any::<bool>(),
            prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 1..4)
        )
            .prop_map(|(text, fragments)| {
                let fragments = if text {
                    // Valid UTF-8 cut at arbitrary byte offsets.
                    let joined: Vec<u8> = fragments.concat();
                    let s = String::from_utf8_lossy(&joined).into_owned().into_bytes();
                    let n = fragments.len();
                    let step = s.len() / n + 1;
                    s.chunks(step).map(|c| c.to_vec()).collect::<Vec<_>>()
                } else {
                    fragments
                };
                let fragments = if fragments.is_empty() {
                    vec![Vec::new()]
                } else {
                    fragments
                };
                Gen::Message { text, fragments }
            }),
        prop::collection::vec(any::<u8>(), 0..125).prop_map(Gen::Ping),
        (
            prop::sample::select(vec![1000u16, 1001, 1011, 3000, 4999]),
            "[a-z ]{0,20}"
        )
            .prop_map(|(code, reason)| Gen::Close(code, reason)),
    ]
}

fn encode_all(role: Role, items: &[Gen]) -> (Vec<u8>, Vec<Ev>) {
    let mut encoder = Encoder::new(role);
    let mut bytes = Vec::new();
    let mut expected = Vec::new();
    for item in items {
        match item {
            Gen::Message { text, fragments } => {
                let n = fragments.len();
                for (i, fragment) in fragments.iter().enumerate() {
                    let opcode = match (i, text) {
                        (0, true) => OpCode::Text,
                        (0, false) => OpCode::Binary,
                        _ => OpCode::Continuation,
                    };
                    encoder.encode_frame(opcode, i + 1 == n, false, fragment, &mut bytes);
                }
                let t = if *text {
                    MessageType::Text
                } else {
                    MessageType::Binary
                };
                expected.push(Ev::Message(t, fragments.concat()));
            }
            Gen::Ping(p) => {
                encoder.encode_frame(OpCode::Ping, true, false, p, &mut bytes);
                expected.push(Ev::Ping(p.clone()));
            }
            Gen::Close(code, reason) => {
                let mut payload = code.to_be_bytes().to_vec();
                payload.extend_from_slice(reason.as_bytes());
                encoder.encode_frame(OpCode::Close, true, false, &payload, &mut bytes);
                expected.push(Ev::Close(Some((*code, reason.clone()))));
            }
        }
    }
    (bytes, expected)
}

proptest! {
    #[test]
    fn any_conversation_decodes_the_same_in_any_split(
        items in prop::collection::vec(gen_item(), 1..6),
        cuts in prop::collection::vec(0usize..4000, 0..8),
        server_side in any::<bool>(),
    ) {
        // What the other side sends: a client's frames reach a server decoder.
        let (sender, receiver) = if server_side { (Role::Client, Role::Server) } else { (Role::Server, Role::Client) };
        let (bytes, expected) = encode_all(sender, &items);
        let events = run(&mut Decoder::new(receiver), &bytes, &cuts).unwrap();
        prop_assert_eq!(events, expected);
    }

    #[test]
    fn streaming_parts_concatenate_to_the_message(
        items in prop::collection::vec(gen_item(), 1..4),
        cuts in prop::collection::vec(0usize..2000, 0..6),
    ) {
        let (bytes, expected) = encode_all(Role::Client, &items);
        let mut decoder = Decoder::new(Role::Server);
        decoder.set_streaming(true);
        let mut inflater = Inflater::new();
        let mut bounds = cuts.clone();
        bounds.sort_unstable();
        bounds.push(bytes.len());
        let mut start = 0;
        let mut got = Vec::new();
        let mut current: Option<(MessageType, Vec<u8>)> = None;
        for end in bounds {
            let end = end.min(bytes.len()).max(start);
            let mut chunk = bytes[start..end].to_vec();
            start = end;
            let mut pos = 0;
            loop {
                let (used, event) = decoder.decode(&mut chunk[pos..], &mut inflater).unwrap();
                pos += used;
                match event {
                    None => break,
                    Some(Event::Part { message_type, data, first, last }) => {
                        if first {
                            prop_assert!(current.is_none());
                            current = Some((message_type, Vec::new()));
                        }
                        let Some((_, buf)) = current.as_mut() else { panic!("part before first") };
                        buf.extend_from_slice(data);
                        if last {
                            let (t, b) = current.take().unwrap_or((message_type, Vec::new()));
                            got.push(Ev::Message(t, b));
                        }
                    }
                    Some(Event::Ping(p)) => got.push(Ev::Ping(p.to_vec())),
                    Some(Event::Close(c)) => got.push(Ev::Close(c.map(|(code, r)| (code.0, r.to_owned())))),
                    Some(other) => panic!("unexpected {other:?}"),
                }
            }
        }
        prop_assert_eq!(got, expected);
    }
}

/// With a budget on the inflater, a compressed message pauses the decoder (no event, the
/// frames after it unused) and resumes where it stopped; the next frame follows in order.
#[test]
fn a_compressed_message_paused_at_the_budget_resumes_then_the_next_frame_follows() {
    let text = "paused and resumed ".repeat(20_000);
    let mut payload = Vec::new();
    Deflater::new(6)
        .unwrap()
        .compress(text.as_bytes(), &mut payload);
    let mut decoder = server();
    decoder.set_compression(true);
    decoder.set_read_limit(1 << 20);
    let mut bytes = masked(0xc1, &payload);
    bytes.extend(masked(0x81, b"next"));
    let mut inflater = Inflater::new();
    let mut pos = 0;
    let mut pauses = 0;
    let mut events = Vec::new();
    while pos < bytes.len() || decoder.is_paused() {
        inflater.set_budget(32 * 1024);
        let (used, event) = decoder.decode(&mut bytes[pos..], &mut inflater).unwrap();
        pos += used;
        match event {
            Some(Event::Message(t, p)) => events.push(Ev::Message(t, p.to_vec())),
            Some(other) => panic!("{other:?}"),
            None => {
                assert!(decoder.is_paused(), "no event and input left: paused");
                assert!(!decoder.is_idle());
                pauses += 1;
            }
        }
    }
    assert!(pauses > 5, "{pauses} pauses");
    assert_eq!(
        events,
        vec![
            Ev::Message(MessageType::Text, text.into_bytes()),
            Ev::Message(MessageType::Text, b"next".to_vec())
        ]
    );
    assert!(decoder.is_idle());
}
