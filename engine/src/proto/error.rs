//! [`ProtocolError`]: one variant per rule of RFC 6455 / RFC 7692 a peer can break.

use super::close::CloseCode;

/// A rule of RFC 6455 (or RFC 7692) the peer broke. Each variant is one rule and
/// knows the close code to send back ([`ProtocolError::close_code`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// RFC 6455 section 5.2: opcodes 0x3-0x7 and 0xB-0xF are reserved.
    #[error("reserved opcode {opcode:#x}")]
    ReservedOpcode {
        /// The 4-bit opcode received.
        opcode: u8,
    },
    /// RFC 6455 section 5.2: RSV bits must be 0 unless an extension defines them
    /// (permessage-deflate defines RSV1 on the first frame of a data message).
    #[error("reserved bits {bits:#05b} set without a negotiated extension")]
    ReservedBits {
        /// RSV1, RSV2, RSV3 as bits 2, 1, 0.
        bits: u8,
    },
    /// RFC 6455 section 5.1: a server must close when a client frame is unmasked.
    #[error("frame from client is not masked")]
    UnmaskedClientFrame,
    /// RFC 6455 section 5.1: a client must close when a server frame is masked.
    #[error("frame from server is masked")]
    MaskedServerFrame,
    /// RFC 6455 section 5.2: the most significant bit of a 64-bit length must be 0.
    #[error("64-bit payload length {len:#x} has its top bit set")]
    LengthTopBitSet {
        /// The raw 64-bit length field.
        len: u64,
    },
    /// RFC 6455 section 5.5: control frames carry at most 125 bytes.
    #[error("control frame payload of {len} bytes exceeds 125")]
    ControlFrameTooLong {
        /// The declared payload length.
        len: u64,
    },
    /// RFC 6455 section 5.5: control frames must not be fragmented.
    #[error("control frame is fragmented")]
    ControlFrameFragmented,
    /// RFC 6455 section 5.4: a continuation frame needs a message in progress.
    #[error("continuation frame without a message in progress")]
    UnexpectedContinuation,
    /// RFC 6455 section 5.4: a new data frame cannot start inside a fragmented message.
    #[error("new data frame inside a fragmented message")]
    DataFrameInsideFragmentedMessage,
    /// RFC 6455 section 8.1: text messages must be valid UTF-8.
    #[error("text message is not valid utf-8")]
    InvalidUtf8,
    /// RFC 6455 section 5.5.1: a close body is empty or at least two bytes.
    #[error("close frame payload of 1 byte")]
    CloseFrameTooShort,
    /// RFC 6455 section 7.4: the close code is not one allowed on the wire.
    #[error("close code {code} is not allowed on the wire")]
    InvalidCloseCode {
        /// The code received.
        code: u16,
    },
    /// RFC 6455 section 5.5.1: the close reason must be UTF-8.
    #[error("close reason is not valid utf-8")]
    InvalidCloseReason,
    /// The message is larger than the read limit (gorilla/websocket's `ErrReadLimit`).
    #[error("message exceeds the read limit of {limit} bytes")]
    MessageTooBig {
        /// The read limit in force.
        limit: u64,
    },
    /// RFC 7692 section 6.1: RSV1 is set only on the first frame of a message.
    #[error("compressed bit set on a continuation or control frame")]
    CompressedBitMisplaced,
    /// RFC 7692: the compressed payload is not a valid DEFLATE stream.
    #[error("compressed payload is not a valid deflate stream")]
    BadDeflateStream,
}

impl ProtocolError {
    /// The close code sent to the peer when this rule is broken.
    pub fn close_code(self) -> CloseCode {
        match self {
            ProtocolError::InvalidUtf8
            | ProtocolError::InvalidCloseReason
            | ProtocolError::BadDeflateStream => CloseCode::INVALID_FRAME_PAYLOAD_DATA,
            ProtocolError::MessageTooBig { .. } => CloseCode::MESSAGE_TOO_BIG,
            _ => CloseCode::PROTOCOL_ERROR,
        }
    }
}
