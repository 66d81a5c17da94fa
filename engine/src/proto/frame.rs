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
        let _ = buf;
        todo!()
    }

    /// The number of bytes [`encode`](Self::encode) writes for this header.
    pub fn encoded_len(&self) -> usize {
        todo!()
    }

    /// Write this header into `out` (at least [`MAX_HEADER_LEN`] bytes), using the
    /// shortest length encoding; returns the number of bytes written.
    pub fn encode(&self, out: &mut [u8; MAX_HEADER_LEN]) -> usize {
        let _ = out;
        todo!()
    }
}
