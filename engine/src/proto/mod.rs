//! The sans-IO protocol core: bytes and settings in, events and bytes out.
//!
//! Rules of the room: nothing here touches a socket, a thread, a clock or `unsafe`.
//! Every other part of ringcast (the blocking [`Conn`](crate::Conn), the
//! `Dialer`, the engine) is a thin driver around these types, and
//! this is where the fuzz targets point.
//!
//! - [`frame`]: the 2..14-byte frame header.
//! - [`mask`]: XOR masking, the hottest loop of the read path.
//! - [`utf8`]: incremental UTF-8 checking that fails on the first bad prefix.
//! - [`close`]: close codes and close payloads.
//! - [`decoder`]: bytes in, [`Event`]s out, with every rule of RFC 6455 section 5.
//! - [`encoder`]: messages to frame bytes in a buffer the caller owns.
//! - [`handshake`]: the opening handshake, both sides.
//! - [`deflate`]: permessage-deflate (RFC 7692) negotiation, compression, bounded inflation.
#![forbid(unsafe_code)]

pub mod close;
pub mod decoder;
pub mod deflate;
pub mod encoder;
pub mod error;
pub mod frame;
pub mod handshake;
pub mod mask;
pub mod utf8;

pub use close::CloseCode;
pub use decoder::{Decoder, Event};
pub use encoder::Encoder;
pub use error::ProtocolError;
pub use frame::FrameHeader;

/// Which end of the connection this side is. The rules differ: a client masks what it
/// sends and expects unmasked frames; a server expects masked frames and sends them bare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// The side that dialed and sent the opening request.
    Client,
    /// The side that accepted and answered with 101.
    Server,
}

/// A frame opcode (RFC 6455 section 5.2). Reserved values are rejected by
/// [`OpCode::from_u8`] so they never reach this type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum OpCode {
    /// `0x0`: the next fragment of the message in progress.
    Continuation = 0x0,
    /// `0x1`: the first frame of a text message.
    Text = 0x1,
    /// `0x2`: the first frame of a binary message.
    Binary = 0x2,
    /// `0x8`: a close frame.
    Close = 0x8,
    /// `0x9`: a ping frame.
    Ping = 0x9,
    /// `0xA`: a pong frame.
    Pong = 0xA,
}

impl OpCode {
    /// The opcode for a 4-bit value, or `None` for the reserved values
    /// `0x3..=0x7` and `0xB..=0xF`.
    pub fn from_u8(value: u8) -> Option<OpCode> {
        Some(match value {
            0x0 => OpCode::Continuation,
            0x1 => OpCode::Text,
            0x2 => OpCode::Binary,
            0x8 => OpCode::Close,
            0x9 => OpCode::Ping,
            0xA => OpCode::Pong,
            _ => return None,
        })
    }

    /// Whether this is a control opcode (close, ping, pong): at most 125 bytes and
    /// never fragmented (RFC 6455 section 5.5).
    pub fn is_control(self) -> bool {
        (self as u8) & 0x8 != 0
    }
}

/// The kind of a message, with gorilla/websocket's numbers: `TextMessage = 1`,
/// `BinaryMessage = 2`, `CloseMessage = 8`, `PingMessage = 9`, `PongMessage = 10`
/// (RFC 6455 section 11.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum MessageType {
    /// A UTF-8 text data message.
    Text = 1,
    /// A binary data message.
    Binary = 2,
    /// A close control message; format its payload with
    /// [`format_close_message`](crate::format_close_message).
    Close = 8,
    /// A ping control message.
    Ping = 9,
    /// A pong control message.
    Pong = 10,
}

impl MessageType {
    /// The opcode of the first frame of a message of this type.
    pub fn opcode(self) -> OpCode {
        match self {
            MessageType::Text => OpCode::Text,
            MessageType::Binary => OpCode::Binary,
            MessageType::Close => OpCode::Close,
            MessageType::Ping => OpCode::Ping,
            MessageType::Pong => OpCode::Pong,
        }
    }

    /// Whether this is a control message type (close, ping, pong).
    pub fn is_control(self) -> bool {
        self.opcode().is_control()
    }

    /// The message type with gorilla/websocket's number, or `None` for any other number.
    pub fn from_u8(value: u8) -> Option<MessageType> {
        Some(match value {
            1 => MessageType::Text,
            2 => MessageType::Binary,
            8 => MessageType::Close,
            9 => MessageType::Ping,
            10 => MessageType::Pong,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_opcodes_have_no_opcode() {
        for v in (0x3..=0x7).chain(0xB..=0xF) {
            assert_eq!(OpCode::from_u8(v), None, "opcode {v:#x}");
        }
    }

    #[test]
    fn message_types_keep_the_seed_numbers() {
        assert_eq!(MessageType::Text as u8, 1);
        assert_eq!(MessageType::Binary as u8, 2);
        assert_eq!(MessageType::Close as u8, 8);
        assert_eq!(MessageType::Ping as u8, 9);
        assert_eq!(MessageType::Pong as u8, 10);
    }
}
