//! Raw bytes as a message from Redis, decoded with a limit the first bytes choose. Nothing
//! may panic; what is accepted is a data message within the limit, text is UTF-8, and it
//! encodes back to the very bytes it came from.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringcast::server::{decode_envelope, encode_envelope, EnvelopeError};
use ringcast::MessageType;

/// Bytes before the payload (docs/operations.md, "The envelope"): magic, version, node
/// id, message type.
const ENVELOPE_HEADER_LEN: usize = 11;

fuzz_target!(|data: &[u8]| {
    let [limit_hi, limit_lo, bytes @ ..] = data else {
        return;
    };
    let limit = u64::from(u16::from_be_bytes([*limit_hi, *limit_lo]));
    match decode_envelope(bytes, limit) {
        Ok(envelope) => {
            assert!(envelope.payload.len() as u64 <= limit);
            assert_eq!(envelope.payload.len() + ENVELOPE_HEADER_LEN, bytes.len());
            match envelope.message_type {
                MessageType::Text => assert!(std::str::from_utf8(envelope.payload).is_ok()),
                MessageType::Binary => {}
                other => panic!("{other:?} accepted"),
            }
            let mut again = Vec::new();
            encode_envelope(
                envelope.node_id,
                envelope.message_type,
                envelope.payload,
                &mut again,
            );
            assert_eq!(again, bytes);
        }
        Err(EnvelopeError::TooLarge { len, limit: said }) => {
            assert_eq!(said, limit);
            assert!(len as u64 > limit);
        }
        Err(EnvelopeError::Short { len }) => assert!(len < ENVELOPE_HEADER_LEN),
        Err(_) => {}
    }
});
