//! [`Utf8Validator`]: incremental UTF-8 checking across fragments.
//!
//! It fails on the first byte that makes the text invalid, so an invalid prefix is
//! rejected before the rest of the message arrives (Autobahn section 6 wants this).

use super::error::ProtocolError;

/// Checks text that arrives in pieces. Keeps at most 3 bytes of an unfinished code point.
#[derive(Debug, Clone, Default)]
pub struct Utf8Validator {
    // implementation detail: the pending bytes of a split code point
    _private: (),
}

impl Utf8Validator {
    /// A validator at the start of a message.
    pub fn new() -> Self {
        Self::default()
    }

    /// Check the next piece. Fails as soon as the bytes seen so far cannot be the
    /// prefix of valid UTF-8.
    pub fn feed(&mut self, piece: &[u8]) -> Result<(), ProtocolError> {
        let _ = piece;
        todo!()
    }

    /// The message ended: fails if a code point is left unfinished. Resets for the next message.
    pub fn finish(&mut self) -> Result<(), ProtocolError> {
        todo!()
    }

    /// Forget any state (a new message starts).
    pub fn reset(&mut self) {
        todo!()
    }
}
