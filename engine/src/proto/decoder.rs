//! [`Decoder`]: bytes in, [`Event`]s out, every rule of RFC 6455 section 5 enforced.
//!
//! The decoder is given whatever bytes arrived (any split: one byte at a time or many
//! frames at once) and hands back at most one event per call. Payloads are borrowed:
//! a whole frame that sits in the input is unmasked in place and handed out with no
//! copy; only a frame split across reads, or a fragmented or compressed message, is
//! gathered in the decoder's own buffer. A partial header (at most 14 bytes) is kept
//! inline. Nothing is allocated up front for a declared length: memory grows only with
//! bytes actually received, and never past the read limit.

use super::deflate::Inflater;
use super::error::ProtocolError;
use super::{MessageType, Role};

/// Default read limit: 64 MiB. The seed's library has none; ringcast has one so that a
/// peer cannot make a connection buffer without bound. Set it with
/// [`Decoder::set_read_limit`] (or the Conn/engine settings).
pub const DEFAULT_READ_LIMIT: u64 = 64 << 20;

/// One thing the peer said.
#[derive(Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// A whole data message (text is already checked to be UTF-8, compressed messages
    /// are already inflated). Only in the default, assembling mode.
    Message(MessageType, &'a [u8]),
    /// A piece of a data message, in streaming mode ([`Decoder::set_streaming`]).
    /// Pieces come in order; `first` marks the first, `last` the end of the message.
    /// Text pieces may split a code point; the whole is checked incrementally.
    Part {
        /// Text or binary.
        message_type: MessageType,
        /// The bytes of this piece (may be empty).
        data: &'a [u8],
        /// This is the first piece of the message.
        first: bool,
        /// This is the last piece of the message.
        last: bool,
    },
    /// A ping with its application data (at most 125 bytes).
    Ping(&'a [u8]),
    /// A pong with its application data (at most 125 bytes).
    Pong(&'a [u8]),
    /// A close frame: `None` when it had no body, else a code valid on the wire and a
    /// UTF-8 reason.
    Close(Option<(super::CloseCode, &'a str)>),
}

/// Turns received bytes into [`Event`]s for one connection.
#[derive(Debug)]
pub struct Decoder {
    // Filled in by the implementation.
    _private: (),
}

impl Decoder {
    /// A decoder for the side `role` of a connection: a [`Role::Server`] decoder
    /// requires masked frames, a [`Role::Client`] decoder requires unmasked ones.
    /// Read limit [`DEFAULT_READ_LIMIT`], no compression, assembling mode.
    pub fn new(role: Role) -> Decoder {
        let _ = role;
        todo!()
    }

    /// The largest message (after inflation) accepted; a larger one fails with
    /// [`ProtocolError::MessageTooBig`] as soon as its size is known, before its bytes
    /// are buffered. `0` means no limit.
    pub fn set_read_limit(&mut self, limit: u64) {
        let _ = limit;
        todo!()
    }

    /// The read limit in force.
    pub fn read_limit(&self) -> u64 {
        todo!()
    }

    /// Whether permessage-deflate was negotiated: RSV1 is then allowed on the first
    /// frame of a data message and marks it compressed.
    pub fn set_compression(&mut self, negotiated: bool) {
        let _ = negotiated;
        todo!()
    }

    /// Streaming mode: data messages come as [`Event::Part`]s as their bytes arrive,
    /// never gathered whole (the blocking `next_reader` uses this). Compressed messages
    /// are the exception: they are gathered, inflated and handed out as one last part.
    pub fn set_streaming(&mut self, streaming: bool) {
        let _ = streaming;
        todo!()
    }

    /// Decode from `input`. Returns how many bytes of `input` were used and at most one
    /// event. When no event is returned, all of `input` was used (a partial frame is
    /// kept); when an event is returned, call again with the rest of the input.
    ///
    /// `input` is mutable so that masked payloads are unmasked in place. `inflater` is
    /// only touched for compressed messages; the engine shares one per worker.
    ///
    /// After an error the connection must be closed with the error's close code; later
    /// calls keep returning the same error.
    pub fn decode<'a>(
        &'a mut self,
        input: &'a mut [u8],
        inflater: &'a mut Inflater,
    ) -> Result<(usize, Option<Event<'a>>), ProtocolError> {
        let _ = (input, inflater);
        todo!()
    }

    /// Whether a frame or a message is partly received.
    pub fn is_idle(&self) -> bool {
        todo!()
    }

    /// Free the message buffer if nothing is in progress, so an idle connection holds no
    /// read buffer. The engine calls it after each batch of received bytes.
    pub fn release_idle_memory(&mut self) {
        todo!()
    }
}
