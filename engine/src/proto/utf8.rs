//! [`Utf8Validator`]: incremental UTF-8 checking across fragments.
//!
//! It fails on the first byte that makes the text invalid, so an invalid prefix is
//! rejected before the rest of the message arrives (Autobahn section 6 wants this).
//! The bulk is checked by simdutf8; only the at most three bytes of a code point split
//! between pieces are carried over.

use simdutf8::compat::from_utf8;

use super::error::ProtocolError;

/// Checks text that arrives in pieces.
#[derive(Debug, Clone, Copy, Default)]
pub struct Utf8Validator {
    pending: [u8; 4],
    pending_len: u8,
}

/// The length of the sequence a leading byte starts (0 for a byte that cannot lead).
fn sequence_len(lead: u8) -> usize {
    match lead {
        0x00..=0x7f => 1,
        0xc2..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf4 => 4,
        _ => 0,
    }
}

impl Utf8Validator {
    /// A validator at the start of a message.
    pub fn new() -> Self {
        Self::default()
    }

    /// Check the next piece. Fails as soon as the bytes seen so far cannot be the
    /// prefix of valid UTF-8.
    pub fn feed(&mut self, mut piece: &[u8]) -> Result<(), ProtocolError> {
        if self.pending_len > 0 {
            let have = self.pending_len as usize;
            let want = sequence_len(self.pending[0]);
            let take = (want - have).min(piece.len());
            self.pending[have..have + take].copy_from_slice(&piece[..take]);
            let seq = &self.pending[..have + take];
            match from_utf8(seq) {
                Ok(_) => self.pending_len = 0,
                // Still a valid prefix: wait for more.
                Err(e) if e.error_len().is_none() => {
                    self.pending_len = (have + take) as u8;
                    return Ok(());
                }
                Err(_) => return Err(ProtocolError::InvalidUtf8),
            }
            piece = &piece[take..];
        }
        match from_utf8(piece) {
            Ok(_) => Ok(()),
            Err(e) if e.error_len().is_none() => {
                let tail = &piece[e.valid_up_to()..];
                self.pending[..tail.len()].copy_from_slice(tail);
                self.pending_len = tail.len() as u8;
                Ok(())
            }
            Err(_) => Err(ProtocolError::InvalidUtf8),
        }
    }

    /// The message ended: fails if a code point is left unfinished. Resets for the next
    /// message.
    pub fn finish(&mut self) -> Result<(), ProtocolError> {
        let unfinished = self.pending_len > 0;
        self.reset();
        if unfinished {
            Err(ProtocolError::InvalidUtf8)
        } else {
            Ok(())
        }
    }

    /// Forget any state (a new message starts).
    pub fn reset(&mut self) {
        self.pending_len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn check_in_pieces(bytes: &[u8], cuts: &[usize]) -> Result<(), ProtocolError> {
        let mut v = Utf8Validator::new();
        let mut start = 0;
        for &cut in cuts {
            let cut = cut.clamp(start, bytes.len());
            v.feed(&bytes[start..cut])?;
            start = cut;
        }
        v.feed(&bytes[start..])?;
        v.finish()
    }

    #[test]
    fn text_split_inside_a_code_point_is_accepted() {
        let text = "κόσμε€𝄞".as_bytes();
        for cut in 0..=text.len() {
            assert_eq!(check_in_pieces(text, &[cut]), Ok(()), "cut at {cut}");
        }
        // One byte at a time.
        let cuts: Vec<usize> = (1..text.len()).collect();
        assert_eq!(check_in_pieces(text, &cuts), Ok(()));
    }

    #[test]
    fn invalid_prefix_fails_before_the_message_ends() {
        // 0xF4 0x90 starts a code point above U+10FFFF: no continuation can save it.
        let mut v = Utf8Validator::new();
        assert_eq!(v.feed(b"ok \xf4"), Ok(()));
        assert_eq!(v.feed(b"\x90"), Err(ProtocolError::InvalidUtf8));
    }

    #[test]
    fn surrogate_is_rejected() {
        let mut v = Utf8Validator::new();
        assert_eq!(v.feed(b"\xed\xa0\x80"), Err(ProtocolError::InvalidUtf8));
    }

    #[test]
    fn overlong_is_rejected_at_its_first_byte() {
        let mut v = Utf8Validator::new();
        assert_eq!(v.feed(b"\xc0"), Err(ProtocolError::InvalidUtf8));
    }

    #[test]
    fn unfinished_code_point_at_message_end_is_invalid() {
        let mut v = Utf8Validator::new();
        assert_eq!(v.feed(b"a\xe2\x82"), Ok(()));
        assert_eq!(v.finish(), Err(ProtocolError::InvalidUtf8));
        // finish reset the validator.
        assert_eq!(v.feed(b"fine"), Ok(()));
        assert_eq!(v.finish(), Ok(()));
    }

    proptest! {
        #[test]
        fn pieces_agree_with_std(bytes in proptest::collection::vec(any::<u8>(), 0..64), cuts in proptest::collection::vec(0usize..64, 0..6)) {
            let mut cuts = cuts;
            cuts.sort_unstable();
            let expected = std::str::from_utf8(&bytes).is_ok();
            prop_assert_eq!(check_in_pieces(&bytes, &cuts).is_ok(), expected);
        }

        #[test]
        fn valid_strings_pass_in_any_split(s in "\\PC{0,40}", cut in 0usize..200) {
            let bytes = s.as_bytes();
            prop_assert_eq!(check_in_pieces(bytes, &[cut.min(bytes.len())]), Ok(()));
        }
    }
}
