//! permessage-deflate (RFC 7692): negotiation, compression and bounded inflation.
//!
//! Compression is whole-message with libdeflater, so no sliding window is kept between
//! messages: ringcast always asks for (and answers with) no context takeover both ways.
//! That is also what lets one compressed frame serve every subscriber of a broadcast.

use super::error::ProtocolError;

/// permessage-deflate parameters, as offered or agreed (RFC 7692 section 7.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PerMessageDeflate {
    /// The server starts each message with an empty window.
    pub server_no_context_takeover: bool,
    /// The client starts each message with an empty window.
    pub client_no_context_takeover: bool,
    /// The largest window the server may compress with (8..=15).
    pub server_max_window_bits: Option<u8>,
    /// `Some(None)`: the client may be told a window size; `Some(Some(n))`: the
    /// largest window the client compresses with.
    pub client_max_window_bits: Option<Option<u8>>,
}

impl PerMessageDeflate {
    /// The header value for this set of parameters.
    pub fn to_header_value(&self) -> String {
        todo!()
    }
}

/// The client's offer, as the seed's library makes it.
pub const CLIENT_OFFER: &str =
    "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

/// Parse the `Sec-WebSocket-Extensions` values of a request into permessage-deflate
/// offers, in order. Other extensions are skipped; an offer with an unknown, malformed
/// or duplicate parameter is dropped (RFC 7692 section 5: the server declines it).
pub fn parse_offers<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> Vec<PerMessageDeflate> {
    let _ = values.into_iter();
    todo!()
}

/// The server's answer to a list of offers: the first one ringcast can honour, answered
/// with `server_no_context_takeover; client_no_context_takeover`. Offers asking the
/// server for a window under 15 bits are declined (libdeflater always uses 32 KiB).
pub fn negotiate(offers: &[PerMessageDeflate]) -> Option<PerMessageDeflate> {
    let _ = offers;
    todo!()
}

/// Parse and check a server's answer to [`CLIENT_OFFER`]: exactly one permessage-deflate
/// extension with valid, non-duplicate parameters, with server_no_context_takeover,
/// and no client_max_window_bits (not offered). Errors say what was wrong.
pub fn parse_answer(value: &[u8]) -> Result<PerMessageDeflate, String> {
    let _ = value;
    todo!()
}

/// Compresses whole messages at one level. Holds libdeflater's compressor, created on
/// first use (it is large: keep one per thread or per worker, not per idle connection).
pub struct Deflater {
    level: i32,
    compressor: Option<libdeflater::Compressor>,
}

impl std::fmt::Debug for Deflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deflater")
            .field("level", &self.level)
            .finish()
    }
}

/// The compression level used unless set: 1, as in the seed (fast, most of the gain).
pub const DEFAULT_COMPRESSION_LEVEL: i32 = 1;

impl Deflater {
    /// A deflater at `level` (see [`Deflater::set_level`]).
    pub fn new(level: i32) -> Result<Deflater, String> {
        let mut d = Deflater {
            level: DEFAULT_COMPRESSION_LEVEL,
            compressor: None,
        };
        d.set_level(level)?;
        Ok(d)
    }

    /// Set the level. Accepts the seed's flate levels -2..=9 (-2 huffman-only maps to 1,
    /// -1 default maps to 6, 0 stores) and libdeflate's 10..=12.
    pub fn set_level(&mut self, level: i32) -> Result<(), String> {
        let _ = level;
        todo!()
    }

    /// The level as set.
    pub fn level(&self) -> i32 {
        self.level
    }

    /// Append the RFC 7692 payload for `message` to `out` (a raw DEFLATE stream with the
    /// trailing `00 00 ff ff` removed, section 7.2.1).
    pub fn compress(&mut self, message: &[u8], out: &mut Vec<u8>) {
        let _ = (message, out, &mut self.compressor);
        todo!()
    }
}

/// Inflates whole messages with the output bounded. Allocates nothing until used.
#[derive(Default)]
pub struct Inflater {
    decompressor: Option<Box<libdeflater::Decompressor>>,
    input: Vec<u8>,
    output: Vec<u8>,
}

impl std::fmt::Debug for Inflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inflater").finish_non_exhaustive()
    }
}

impl Inflater {
    /// An inflater that holds no memory yet.
    pub fn new() -> Inflater {
        Inflater::default()
    }

    /// Inflate one message's payload (as received, without the `00 00 ff ff` tail).
    /// Output beyond `limit` bytes (0: no limit) fails with
    /// [`ProtocolError::MessageTooBig`] without growing past it, so a decompression
    /// bomb costs at most `limit` bytes; a corrupt stream fails with
    /// [`ProtocolError::BadDeflateStream`].
    pub fn inflate(&mut self, payload: &[u8], limit: u64) -> Result<&[u8], ProtocolError> {
        let _ = (
            payload,
            limit,
            &mut self.decompressor,
            &mut self.input,
            &mut self.output,
        );
        todo!()
    }

    /// Free the buffers (kept between messages for speed).
    pub fn release_memory(&mut self) {
        self.input = Vec::new();
        self.output = Vec::new();
    }
}
