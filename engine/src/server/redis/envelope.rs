//! The envelope a message travels in between nodes: who published it, its type, its
//! payload. Whatever comes back from a broker is untrusted input (anyone who may `PUBLISH`
//! on that Redis can write to the channels), so [`decode_envelope`] lets through only what
//! the engine itself would send to a client: a data message (text or binary), no larger
//! than the node takes from its own clients, text that is UTF-8.
//!
//! Pure functions over bytes: no I/O, no state.

use crate::proto::MessageType;

/// The first byte of every envelope: not a ringcast message when it differs.
pub(crate) const ENVELOPE_MAGIC: u8 = 0xB7;
/// The envelope layout version this code writes and reads.
pub(crate) const ENVELOPE_VERSION: u8 = 1;
/// Bytes before the payload: magic, version, 8-byte node id, message type.
pub(crate) const ENVELOPE_HEADER_LEN: usize = 11;

/// A message in its envelope: who published it, its type, its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Envelope<'a> {
    /// The node that published it.
    pub node_id: u64,
    /// The message type: [`Text`](MessageType::Text) or [`Binary`](MessageType::Binary)
    /// once decoded.
    pub message_type: MessageType,
    /// The payload, as published.
    pub payload: &'a [u8],
}

/// Why bytes from a broker are not a message to deliver. Each variant is one rule of
/// [`decode_envelope`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// Fewer bytes than the header.
    #[error("envelope of {len} bytes is shorter than its {ENVELOPE_HEADER_LEN}-byte header")]
    Short {
        /// The bytes received.
        len: usize,
    },
    /// Another first byte: another program publishing on the channel.
    #[error("first byte {found:#04x} is not the envelope magic {ENVELOPE_MAGIC:#04x}")]
    Foreign {
        /// The first byte received.
        found: u8,
    },
    /// Another layout version (a newer node, or garbage).
    #[error("envelope version {found}, this node reads {ENVELOPE_VERSION}")]
    Version {
        /// The version byte received.
        found: u8,
    },
    /// A message type other than text (1) or binary (2). Control frames (close, ping,
    /// pong) belong to one connection and are never relayed: a close or ping from a
    /// broker would reach every member of a room.
    #[error("message type {found} is not a data message (1 text, 2 binary)")]
    NotData {
        /// The type byte received.
        found: u8,
    },
    /// A payload larger than the node accepts from its own clients.
    #[error("payload of {len} bytes exceeds the {limit}-byte message limit")]
    TooLarge {
        /// The payload's length.
        len: usize,
        /// The limit in force ([`RedisConfig::max_message`](super::RedisConfig::max_message)).
        limit: u64,
    },
    /// A text payload that is not UTF-8 (RFC 6455 section 8.1: a client would have to
    /// fail the connection).
    #[error("text payload is not valid UTF-8")]
    BadUtf8,
}

/// Appends the envelope of a message to `out`: the magic byte 0xB7, the layout version 1,
/// the node id (8 bytes, big-endian), the message type (WebSocket opcode numbers: 1 text,
/// 2 binary), then the payload unchanged: 11 bytes before the payload.
///
/// ```
/// use ringcast::server::{decode_envelope, encode_envelope};
/// use ringcast::MessageType;
/// let mut out = Vec::new();
/// encode_envelope(7, MessageType::Text, b"hi", &mut out);
/// assert_eq!(out, b"\xb7\x01\0\0\0\0\0\0\0\x07\x01hi");
/// let envelope = decode_envelope(&out, 4096).unwrap();
/// assert_eq!((envelope.node_id, envelope.payload), (7, &b"hi"[..]));
/// ```
pub fn encode_envelope(node_id: u64, message_type: MessageType, payload: &[u8], out: &mut Vec<u8>) {
    out.reserve(ENVELOPE_HEADER_LEN + payload.len());
    out.push(ENVELOPE_MAGIC);
    out.push(ENVELOPE_VERSION);
    out.extend_from_slice(&node_id.to_be_bytes());
    out.push(message_type as u8);
    out.extend_from_slice(payload);
}

/// Reads an envelope written by [`encode_envelope`], refusing what a node must not deliver:
/// too short, another magic byte or version, a type other than text or binary, a payload
/// over `max_payload` bytes, text that is not UTF-8. The checks cost at most one pass over
/// the payload (the UTF-8 check, done last).
///
/// ```
/// use ringcast::server::{decode_envelope, encode_envelope, EnvelopeError};
/// use ringcast::MessageType;
/// let mut ping = Vec::new();
/// encode_envelope(7, MessageType::Ping, b"x", &mut ping);
/// assert_eq!(decode_envelope(&ping, 4096), Err(EnvelopeError::NotData { found: 9 }));
/// let mut big = Vec::new();
/// encode_envelope(7, MessageType::Binary, &[0; 5000], &mut big);
/// assert_eq!(
///     decode_envelope(&big, 4096),
///     Err(EnvelopeError::TooLarge { len: 5000, limit: 4096 })
/// );
/// ```
pub fn decode_envelope(bytes: &[u8], max_payload: u64) -> Result<Envelope<'_>, EnvelopeError> {
    let Some((header, payload)) = bytes.split_first_chunk::<ENVELOPE_HEADER_LEN>() else {
        return Err(EnvelopeError::Short { len: bytes.len() });
    };
    let [magic, version, id @ .., kind] = *header;
    if magic != ENVELOPE_MAGIC {
        return Err(EnvelopeError::Foreign { found: magic });
    }
    if version != ENVELOPE_VERSION {
        return Err(EnvelopeError::Version { found: version });
    }
    let message_type = match MessageType::from_u8(kind) {
        Some(data @ (MessageType::Text | MessageType::Binary)) => data,
        _ => return Err(EnvelopeError::NotData { found: kind }),
    };
    if payload.len() as u64 > max_payload {
        return Err(EnvelopeError::TooLarge {
            len: payload.len(),
            limit: max_payload,
        });
    }
    // What reaches browsers must be what ringcast itself would send.
    if message_type == MessageType::Text && simdutf8::basic::from_utf8(payload).is_err() {
        return Err(EnvelopeError::BadUtf8);
    }
    Ok(Envelope {
        node_id: u64::from_be_bytes(id),
        message_type,
        payload,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: u64 = 4096;

    fn envelope(kind: MessageType, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_envelope(9, kind, payload, &mut out);
        out
    }

    #[test]
    fn envelope_round_trips_both_data_types() {
        for kind in [MessageType::Text, MessageType::Binary] {
            let mut out = Vec::new();
            encode_envelope(0x0102_0304_0506_0708, kind, b"payload", &mut out);
            assert_eq!(out.len(), ENVELOPE_HEADER_LEN + 7);
            let envelope = decode_envelope(&out, LIMIT).expect("an envelope");
            assert_eq!(envelope.node_id, 0x0102_0304_0506_0708);
            assert_eq!(envelope.message_type, kind);
            assert_eq!(envelope.payload, b"payload");
        }
    }

    #[test]
    fn envelope_payload_is_binary_safe() {
        let payload: Vec<u8> = (0..=255).collect();
        let out = envelope(MessageType::Binary, &payload);
        assert_eq!(
            decode_envelope(&out, LIMIT).expect("an envelope").payload,
            &payload[..]
        );
        let empty = envelope(MessageType::Binary, b"");
        assert_eq!(
            decode_envelope(&empty, LIMIT).expect("an envelope").payload,
            b""
        );
    }

    #[test]
    fn control_types_are_refused_whatever_their_body() {
        // A 1-byte close body is invalid on the wire (RFC 6455 section 5.5.1); a valid
        // one is refused all the same: no broker may close or ping a room.
        for (kind, body) in [
            (MessageType::Close, &b"x"[..]),
            (MessageType::Close, &b"\x03\xe8"[..]),
            (MessageType::Ping, &b"x"[..]),
            (MessageType::Pong, &b""[..]),
        ] {
            assert_eq!(
                decode_envelope(&envelope(kind, body), LIMIT),
                Err(EnvelopeError::NotData { found: kind as u8 })
            );
        }
    }

    #[test]
    fn payload_over_the_limit_is_refused_and_at_the_limit_accepted() {
        let at = envelope(MessageType::Binary, &[7; LIMIT as usize]);
        assert!(decode_envelope(&at, LIMIT).is_ok());
        let over = envelope(MessageType::Text, &[b'a'; LIMIT as usize + 1]);
        assert_eq!(
            decode_envelope(&over, LIMIT),
            Err(EnvelopeError::TooLarge {
                len: LIMIT as usize + 1,
                limit: LIMIT
            })
        );
    }

    #[test]
    fn foreign_or_broken_envelopes_are_refused() {
        let good = envelope(MessageType::Text, b"ok");
        assert_eq!(
            decode_envelope(&good[..ENVELOPE_HEADER_LEN - 1], LIMIT),
            Err(EnvelopeError::Short { len: 10 })
        );
        assert_eq!(
            decode_envelope(b"", LIMIT),
            Err(EnvelopeError::Short { len: 0 })
        );
        let mut magic = good.clone();
        magic[0] = b'{';
        assert_eq!(
            decode_envelope(&magic, LIMIT),
            Err(EnvelopeError::Foreign { found: b'{' }),
            "another program's JSON"
        );
        let mut version = good.clone();
        version[1] = ENVELOPE_VERSION + 1;
        assert_eq!(
            decode_envelope(&version, LIMIT),
            Err(EnvelopeError::Version { found: 2 }),
            "a newer layout"
        );
        let mut kind = good.clone();
        kind[10] = 3;
        assert_eq!(
            decode_envelope(&kind, LIMIT),
            Err(EnvelopeError::NotData { found: 3 }),
            "a reserved opcode"
        );
        assert_eq!(
            decode_envelope(&envelope(MessageType::Text, b"\xff\xfe"), LIMIT),
            Err(EnvelopeError::BadUtf8)
        );
    }
}
