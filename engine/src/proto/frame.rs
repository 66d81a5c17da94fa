//! [`FrameHeader`]: decode and encode the 2..14-byte frame header (RFC 6455 section 5.2).

use super::error::ProtocolError;
use super::OpCode;

/// The most bytes a frame header takes: 2 + 8 (64-bit length) + 4 (mask key).
pub const MAX_HEADER_LEN: usize = 14;

/// One frame header as it stands on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// FIN: this is the last frame of its message.
    pub fin: bool,
    /// RSV1, RSV2, RSV3 as bits 2, 1, 0 (RSV1 = 0b100 marks a compressed message).
    pub rsv: u8,
    /// The opcode; reserved opcodes never decode.
    pub opcode: OpCode,
    /// The masking key, present on every client-to-server frame.
    pub mask: Option<[u8; 4]>,
    /// The payload length, at most `i64::MAX`.
    pub payload_len: u64,
}

impl FrameHeader {
    /// Decode a header from the start of `buf`. `Ok(None)` means more bytes are needed;
    /// `Ok(Some((header, n)))` means the header took `n` bytes.
    ///
    /// Rejects reserved opcodes and a 64-bit length with its top bit set. Rules that
    /// depend on the connection (masking, RSV bits, control frame length, fragmentation)
    /// are checked by the [`Decoder`](super::Decoder).
    ///
    /// ```
    /// use ringcast::proto::{FrameHeader, OpCode};
    /// // RFC 6455 section 5.7: a single-frame unmasked text message "Hello".
    /// let (h, n) = FrameHeader::decode(&[0x81, 0x05, 0x48, 0x65]).unwrap().unwrap();
    /// assert_eq!((h.fin, h.opcode, h.payload_len, n), (true, OpCode::Text, 5, 2));
    /// ```
    pub fn decode(buf: &[u8]) -> Result<Option<(FrameHeader, usize)>, ProtocolError> {
        let [b0, b1, ..] = *buf else {
            return Ok(None);
        };
        let opcode = OpCode::from_u8(b0 & 0x0f)
            .ok_or(ProtocolError::ReservedOpcode { opcode: b0 & 0x0f })?;
        let masked = b1 & 0x80 != 0;
        let (payload_len, mut used) = match b1 & 0x7f {
            126 => match buf.get(2..4) {
                Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
                None => return Ok(None),
            },
            127 => match buf.get(2..10) {
                Some(b) => {
                    let mut raw = [0u8; 8];
                    raw.copy_from_slice(b);
                    let len = u64::from_be_bytes(raw);
                    // RFC 6455 section 5.2: the most significant bit must be 0.
                    if len >> 63 != 0 {
                        return Err(ProtocolError::LengthTopBitSet { len });
                    }
                    (len, 10)
                }
                None => return Ok(None),
            },
            short => (u64::from(short), 2),
        };
        let mask = if masked {
            match buf.get(used..used + 4) {
                Some(b) => {
                    used += 4;
                    Some([b[0], b[1], b[2], b[3]])
                }
                None => return Ok(None),
            }
        } else {
            None
        };
        let header = FrameHeader {
            fin: b0 & 0x80 != 0,
            rsv: (b0 >> 4) & 0x7,
            opcode,
            mask,
            payload_len,
        };
        Ok(Some((header, used)))
    }

    /// The number of bytes [`encode`](Self::encode) writes for this header.
    pub fn encoded_len(&self) -> usize {
        let len = match self.payload_len {
            0..=125 => 2,
            126..=0xffff => 4,
            _ => 10,
        };
        len + if self.mask.is_some() { 4 } else { 0 }
    }

    /// Write this header into `out`, using the shortest length encoding; returns the
    /// number of bytes written.
    ///
    /// ```
    /// use ringcast::proto::frame::{FrameHeader, MAX_HEADER_LEN};
    /// use ringcast::proto::OpCode;
    /// let header = FrameHeader { fin: true, rsv: 0, opcode: OpCode::Binary, mask: None, payload_len: 256 };
    /// let mut out = [0u8; MAX_HEADER_LEN];
    /// let n = header.encode(&mut out);
    /// assert_eq!(&out[..n], &[0x82, 0x7e, 0x01, 0x00]); // RFC 6455 section 5.7
    /// ```
    pub fn encode(&self, out: &mut [u8; MAX_HEADER_LEN]) -> usize {
        out[0] = (u8::from(self.fin) << 7) | ((self.rsv & 0x7) << 4) | self.opcode as u8;
        let mask_bit = if self.mask.is_some() { 0x80 } else { 0 };
        let mut used = match self.payload_len {
            len @ 0..=125 => {
                out[1] = mask_bit | len as u8;
                2
            }
            len @ 126..=0xffff => {
                out[1] = mask_bit | 126;
                out[2..4].copy_from_slice(&(len as u16).to_be_bytes());
                4
            }
            len => {
                out[1] = mask_bit | 127;
                out[2..10].copy_from_slice(&len.to_be_bytes());
                10
            }
        };
        if let Some(key) = self.mask {
            out[used..used + 4].copy_from_slice(&key);
            used += 4;
        }
        used
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rfc_masked_hello_header_decodes() {
        let bytes = [0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f];
        let (h, n) = FrameHeader::decode(&bytes).unwrap().unwrap();
        assert_eq!(n, 6);
        assert_eq!(h.mask, Some([0x37, 0xfa, 0x21, 0x3d]));
        assert_eq!(h.payload_len, 5);
    }

    #[test]
    fn rfc_64kib_binary_header_uses_64_bit_length() {
        let bytes = [0x82, 0x7f, 0, 0, 0, 0, 0, 1, 0, 0];
        let (h, n) = FrameHeader::decode(&bytes).unwrap().unwrap();
        assert_eq!((h.payload_len, n), (65536, 10));
    }

    #[test]
    fn length_with_top_bit_set_is_rejected() {
        let bytes = [0x82, 0x7f, 0x80, 0, 0, 0, 0, 0, 0, 1];
        assert!(matches!(
            FrameHeader::decode(&bytes),
            Err(ProtocolError::LengthTopBitSet { .. })
        ));
    }

    #[test]
    fn reserved_opcode_is_rejected() {
        for opcode in (0x3..=0x7).chain(0xB..=0xF) {
            assert_eq!(
                FrameHeader::decode(&[0x80 | opcode, 0]),
                Err(ProtocolError::ReservedOpcode { opcode })
            );
        }
    }

    #[test]
    fn short_input_asks_for_more() {
        let full = [0x82, 0x7f, 0, 0, 0, 0, 0, 1, 0, 0];
        for cut in 0..full.len() {
            assert_eq!(FrameHeader::decode(&full[..cut]), Ok(None), "cut {cut}");
        }
    }

    fn any_header() -> impl Strategy<Value = FrameHeader> {
        (
            any::<bool>(),
            0u8..8,
            prop::sample::select(vec![
                OpCode::Continuation,
                OpCode::Text,
                OpCode::Binary,
                OpCode::Close,
                OpCode::Ping,
                OpCode::Pong,
            ]),
            any::<Option<[u8; 4]>>(),
            prop_oneof![0u64..=125, 126u64..=0xffff, 0x1_0000u64..=(i64::MAX as u64)],
        )
            .prop_map(|(fin, rsv, opcode, mask, payload_len)| FrameHeader {
                fin,
                rsv,
                opcode,
                mask,
                payload_len,
            })
    }

    proptest! {
        #[test]
        fn any_header_round_trips(header in any_header()) {
            let mut out = [0u8; MAX_HEADER_LEN];
            let n = header.encode(&mut out);
            prop_assert_eq!(n, header.encoded_len());
            prop_assert_eq!(FrameHeader::decode(&out[..n]), Ok(Some((header, n))));
        }
    }
}
