//! permessage-deflate (RFC 7692): negotiation, compression and bounded inflation.
//!
//! Each message is compressed on its own (flate2, sync flush, the compressor reset per
//! message) and inflated on its own (flate2's streaming inflate, reset per message), so
//! no sliding window is kept between messages: ringcast always asks for (and answers with)
//! no context takeover both ways. That is also what lets one compressed frame serve every
//! subscriber of a broadcast. Inflation streams into a growing buffer bounded by the read
//! limit, and can stop at a budget and resume, so that an event loop inflates a large or
//! hostile message a slice per turn.

use std::cell::RefCell;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

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
    ///
    /// ```
    /// use ringcast::proto::deflate::PerMessageDeflate;
    /// let agreed = PerMessageDeflate {
    ///     server_no_context_takeover: true,
    ///     client_no_context_takeover: true,
    ///     ..PerMessageDeflate::default()
    /// };
    /// assert_eq!(
    ///     agreed.to_header_value(),
    ///     "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
    /// );
    /// ```
    pub fn to_header_value(&self) -> String {
        let mut value = String::from("permessage-deflate");
        if self.server_no_context_takeover {
            value.push_str("; server_no_context_takeover");
        }
        if self.client_no_context_takeover {
            value.push_str("; client_no_context_takeover");
        }
        if let Some(bits) = self.server_max_window_bits {
            value.push_str(&format!("; server_max_window_bits={bits}"));
        }
        match self.client_max_window_bits {
            Some(Some(bits)) => value.push_str(&format!("; client_max_window_bits={bits}")),
            Some(None) => value.push_str("; client_max_window_bits"),
            None => {}
        }
        value
    }
}

/// The client's offer: gorilla/websocket's (no context takeover both ways), plus
/// `client_max_window_bits` so a server may ask for a smaller client window, which
/// ringcast can keep to (RFC 7692 section 7.1.2.2).
pub const CLIENT_OFFER: &str =
    "permessage-deflate; server_no_context_takeover; client_no_context_takeover; client_max_window_bits";

/// Parse one extension's parameters (the text after its name). `None`: malformed.
fn parse_params<'a>(params: impl Iterator<Item = &'a str>) -> Option<PerMessageDeflate> {
    let mut out = PerMessageDeflate::default();
    for param in params {
        let (name, value) = match param.split_once('=') {
            Some((name, value)) => (name.trim(), Some(value.trim().trim_matches('"'))),
            None => (param.trim(), None),
        };
        let flag = |seen: &mut bool| -> Option<()> {
            // RFC 7692 section 7: no value, and at most once.
            if value.is_some() || *seen {
                return None;
            }
            *seen = true;
            Some(())
        };
        match name.to_ascii_lowercase().as_str() {
            "server_no_context_takeover" => flag(&mut out.server_no_context_takeover)?,
            "client_no_context_takeover" => flag(&mut out.client_no_context_takeover)?,
            "server_max_window_bits" => {
                if out.server_max_window_bits.is_some() {
                    return None;
                }
                out.server_max_window_bits = Some(window_bits(value?)?);
            }
            "client_max_window_bits" => {
                if out.client_max_window_bits.is_some() {
                    return None;
                }
                out.client_max_window_bits = Some(match value {
                    Some(v) => Some(window_bits(v)?),
                    None => None,
                });
            }
            _ => return None,
        }
    }
    Some(out)
}

/// A window size: a plain decimal 8..=15 (RFC 7692 section 7.1.2).
fn window_bits(value: &str) -> Option<u8> {
    if value.is_empty() || value.len() > 2 || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let bits: u8 = value.parse().ok()?;
    (8..=15).contains(&bits).then_some(bits)
}

/// Split an extension list into (name, params) per extension.
fn extensions(value: &str) -> impl Iterator<Item = (&str, std::str::Split<'_, char>)> {
    value
        .split(',')
        .filter(|e| !e.trim().is_empty())
        .map(|ext| {
            let mut parts = ext.split(';');
            let name = parts.next().unwrap_or("").trim();
            (name, parts)
        })
}

/// Parse the `Sec-WebSocket-Extensions` values of a request into permessage-deflate
/// offers, in order. Other extensions are skipped; an offer with an unknown, malformed
/// or duplicate parameter is dropped (RFC 7692 section 5: the server declines it).
pub fn parse_offers<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> Vec<PerMessageDeflate> {
    let mut offers = Vec::new();
    for value in values {
        let Ok(value) = std::str::from_utf8(value) else {
            continue;
        };
        for (name, params) in extensions(value) {
            if name.eq_ignore_ascii_case("permessage-deflate") {
                offers.extend(parse_params(params));
            }
        }
    }
    offers
}

/// The server's answer to a list of offers: the first one, answered with
/// `server_no_context_takeover; client_no_context_takeover` and the window the client
/// asked the server to keep to (any of 8..=15: see [`Deflater::with_settings`]).
pub fn negotiate(offers: &[PerMessageDeflate]) -> Option<PerMessageDeflate> {
    offers.first().map(|offer| PerMessageDeflate {
        server_no_context_takeover: true,
        client_no_context_takeover: true,
        server_max_window_bits: offer.server_max_window_bits,
        client_max_window_bits: None,
    })
}

/// Parse and check a server's answer to [`CLIENT_OFFER`]: exactly one permessage-deflate
/// extension with valid, non-duplicate parameters, with server_no_context_takeover.
/// A `client_max_window_bits` answer must carry a value. Errors say what was wrong.
pub fn parse_answer(value: &[u8]) -> Result<PerMessageDeflate, String> {
    let value =
        std::str::from_utf8(value).map_err(|_| "extension answer is not utf-8".to_string())?;
    let mut found = None;
    for (name, params) in extensions(value) {
        if !name.eq_ignore_ascii_case("permessage-deflate") {
            return Err(format!(
                "server answered with extension {name:?}, which was not offered"
            ));
        }
        if found.is_some() {
            return Err("server answered permessage-deflate twice".into());
        }
        let params = parse_params(params)
            .ok_or_else(|| format!("invalid permessage-deflate answer {value:?}"))?;
        if params.client_max_window_bits == Some(None) {
            return Err("server answered client_max_window_bits without a value".into());
        }
        if !params.server_no_context_takeover {
            // Whole-message inflation cannot follow a window kept across messages.
            return Err("server did not accept server_no_context_takeover".into());
        }
        found = Some(params);
    }
    found.ok_or_else(|| "empty extension answer".into())
}

/// Compresses whole messages at one level, each on its own (no context takeover), the
/// way zlib-based peers do: non-final blocks ended by a sync flush, whose `00 00 ff ff`
/// is then removed (RFC 7692 section 7.2.1).
///
/// Why not libdeflate here: it always ends with a final (BFINAL) block. RFC 7692
/// section 7.2.3.5 allows that, but inflaters that keep feeding input after the end of
/// the stream (seen in the Autobahn suite's own client) stall on it, while sync-flushed
/// output is what browsers and every library produce and expect.
///
/// Holds a compressor, created on first use: keep one per thread or per worker, not per
/// idle connection.
pub struct Deflater {
    level: i32,
    window_bits: u8,
    compressor: Option<Compress>,
}

impl std::fmt::Debug for Deflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deflater")
            .field("level", &self.level)
            .finish()
    }
}

/// The compression level used unless set: 1, as in gorilla/websocket (fast, most of the gain).
pub const DEFAULT_COMPRESSION_LEVEL: i32 = 1;

/// How one side compresses: level and window. Connections with equal settings can share
/// compressed frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DeflateSettings {
    /// Gorilla/websocket's flate level, -2..=9.
    pub level: i32,
    /// The window, 8..=15 bits (15 unless the peer asked for less).
    pub window_bits: u8,
}

impl Default for DeflateSettings {
    fn default() -> Self {
        DeflateSettings {
            level: DEFAULT_COMPRESSION_LEVEL,
            window_bits: 15,
        }
    }
}

/// The sync-flush marker a sender removes (RFC 7692 section 7.2.1).
const SYNC_MARKER: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

impl Deflater {
    /// A deflater at `level` (see [`Deflater::set_level`]) with a 32 KiB window.
    pub fn new(level: i32) -> Result<Deflater, String> {
        Deflater::with_settings(DeflateSettings {
            level,
            window_bits: 15,
        })
    }

    /// A deflater with `settings` (window 8..=15 bits, as agreed with the peer). zlib
    /// cannot keep raw deflate within 8 bits (256 bytes), so with an 8-bit window the
    /// message goes out as stored blocks, which refer back to nothing and so fit any window.
    pub fn with_settings(settings: DeflateSettings) -> Result<Deflater, String> {
        if !(8..=15).contains(&settings.window_bits) {
            return Err(format!(
                "window of {} bits outside 8..=15",
                settings.window_bits
            ));
        }
        let mut d = Deflater {
            level: DEFAULT_COMPRESSION_LEVEL,
            window_bits: settings.window_bits,
            compressor: None,
        };
        d.set_level(settings.level)?;
        Ok(d)
    }

    /// The settings this deflater compresses with.
    pub fn settings(&self) -> DeflateSettings {
        DeflateSettings {
            level: self.level,
            window_bits: self.window_bits,
        }
    }

    /// Set the level: gorilla/websocket's flate levels -2..=9 (-2, huffman-only, maps to 1; -1,
    /// the default, to 6; 0 stores).
    pub fn set_level(&mut self, level: i32) -> Result<(), String> {
        if !(-2..=9).contains(&level) {
            return Err(format!("compression level {level} outside -2..=9"));
        }
        if level != self.level {
            self.compressor = None;
        }
        self.level = level;
        Ok(())
    }

    /// The level as set.
    pub fn level(&self) -> i32 {
        self.level
    }

    /// Append the RFC 7692 payload for `message` to `out`.
    ///
    /// ```
    /// use ringcast::proto::deflate::Deflater;
    /// let mut out = Vec::new();
    /// Deflater::new(1)?.compress(b"Hello", &mut out);
    /// assert_eq!(out, [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]); // RFC 7692 section 7.2.3.1
    /// # Ok::<(), String>(())
    /// ```
    pub fn compress(&mut self, message: &[u8], out: &mut Vec<u8>) {
        let level = match (self.window_bits, self.level) {
            (8, _) => 0,
            (_, -2) => 1,
            (_, -1) => 6,
            (_, other) => other.unsigned_abs(),
        };
        let window_bits = self.window_bits.max(9);
        let compressor = self.compressor.get_or_insert_with(|| {
            Compress::new_with_window_bits(Compression::new(level), false, window_bits)
        });
        compressor.reset();
        let start = out.len();
        let base_in = compressor.total_in();
        out.reserve(message.len() / 2 + 64);
        loop {
            let consumed = (compressor.total_in() - base_in) as usize;
            if out.len() == out.capacity() {
                out.reserve(out.capacity().max(64));
            }
            let status = compressor.compress_vec(&message[consumed..], out, FlushCompress::Sync);
            let done = (compressor.total_in() - base_in) as usize == message.len();
            // A sync flush is complete once all input is in and output room is left over.
            if status.is_err() || (done && out.len() < out.capacity()) {
                break;
            }
        }
        if out[start..].ends_with(&SYNC_MARKER) {
            out.truncate(out.len() - SYNC_MARKER.len());
        }
    }
}

thread_local! {
    /// Compressors are large (about 300 KiB of zlib state) and costly to set up: each
    /// thread keeps one per settings, shared by every connection and message it sends
    /// (blocking connections, prepared messages, the engine's workers).
    static DEFLATERS: RefCell<Vec<Deflater>> = const { RefCell::new(Vec::new()) };
}

/// Run `f` with this thread's deflater for `settings` (settings already checked by the
/// caller; invalid ones fall back to the defaults rather than fail a send).
pub(crate) fn with_deflater<R>(settings: DeflateSettings, f: impl FnOnce(&mut Deflater) -> R) -> R {
    DEFLATERS.with(|cell| {
        let mut deflaters = cell.borrow_mut();
        let index = match deflaters.iter().position(|d| d.settings() == settings) {
            Some(index) => index,
            None => {
                let deflater = Deflater::with_settings(settings).unwrap_or_else(|_| {
                    Deflater::with_settings(DeflateSettings::default())
                        .expect("the default deflate settings are valid")
                });
                deflaters.push(deflater);
                deflaters.len() - 1
            }
        };
        f(&mut deflaters[index])
    })
}

/// Messages above this size free the thread's deflater once compressed (see
/// [`with_message_deflater`]).
const DROP_DEFLATER_ABOVE: usize = 64 * 1024;

/// [`with_deflater`] for one message of a blocking connection, `message_len` bytes long.
/// After a message above 64 KiB the deflater is dropped: with one thread per connection,
/// a connection that sent one large message would otherwise keep it while idle, and
/// next to a large message's compression, making a fresh one costs little. Small
/// messages keep it, so chat-sized traffic never rebuilds it.
pub(crate) fn with_message_deflater<R>(
    settings: DeflateSettings,
    message_len: usize,
    f: impl FnOnce(&mut Deflater) -> R,
) -> R {
    let result = with_deflater(settings, f);
    if message_len > DROP_DEFLATER_ABOVE {
        DEFLATERS.with(|cell| cell.borrow_mut().retain(|d| d.settings() != settings));
    }
    result
}

/// Fed after a received payload: the `00 00 ff ff` the sender removed (RFC 7692 section
/// 7.2.2), then an empty final stored block, so that a stream flushed with sync flushes
/// (browsers, zlib) ends like one with a final block, and a message is whole exactly when
/// the stream ends. A stream cut inside a block does not end: it fails.
const TAIL: [u8; 9] = [0x00, 0x00, 0xff, 0xff, 0x01, 0x00, 0x00, 0xff, 0xff];

/// What an [`Inflater`] keeps between messages at most, after [`Inflater::trim`]: 1 MiB,
/// room for the messages of ordinary traffic.
pub const RETAINED_BYTES: usize = 1 << 20;

/// The most bytes one call into the inflate stream may read or write. It is what a
/// budget is counted in, and it keeps each step short whatever the budget.
const STEP: usize = 64 * 1024;

/// Output room taken at first for a message: enough for most, then grown by doubling.
const FIRST_OUTPUT: usize = 16 * 1024;

/// Past this output, the buffer takes room for the whole limit at once instead of
/// doubling: room not yet written costs no memory, and nothing is copied again.
const WHOLE_LIMIT_FROM: usize = 1 << 20;

/// Where [`Inflater::inflate_some`] left a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inflated {
    /// The message is whole: [`Inflater::output`] holds it.
    Done,
    /// The budget ran out first ([`Inflater::set_budget`]): call again with the same
    /// payload to go on from where it stopped.
    Paused,
}

/// Inflates whole messages with the output bounded, streaming: the output grows as the
/// message inflates and is never inflated again from the start, so the work is linear in
/// the bytes read and written, and a decompression bomb stops at the limit. With a budget
/// it stops after that many bytes and resumes on the next call, so a large or hostile
/// message can be inflated a slice at a time. Allocates nothing until used.
pub struct Inflater {
    stream: Option<Box<Decompress>>,
    /// The output, initialised up to its length: `..len` is the message so far.
    output: Vec<u8>,
    len: usize,
    /// Bytes of payload and tail fed to the stream for the message in progress.
    fed: usize,
    /// Whether a message is in progress (started and neither done nor failed).
    inflating: bool,
    /// Bytes (read and written) the next calls may process before pausing.
    budget: usize,
    /// Bytes read and written in all, for the tests that check the work is linear.
    #[cfg(test)]
    processed: u64,
}

impl Default for Inflater {
    fn default() -> Inflater {
        Inflater {
            stream: None,
            output: Vec::new(),
            len: 0,
            fed: 0,
            inflating: false,
            budget: usize::MAX,
            #[cfg(test)]
            processed: 0,
        }
    }
}

impl std::fmt::Debug for Inflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inflater")
            .field("inflating", &self.inflating)
            .field("budget", &self.budget)
            .finish_non_exhaustive()
    }
}

impl Inflater {
    /// An inflater that holds no memory yet, with no budget (it never pauses).
    pub fn new() -> Inflater {
        Inflater::default()
    }

    /// Inflate one message's payload (as received, without the `00 00 ff ff` tail),
    /// whatever the budget. Output beyond `limit` bytes (0: no limit) fails with
    /// [`ProtocolError::MessageTooBig`] without growing past it, so a decompression bomb
    /// costs at most `limit` bytes; a corrupt stream fails with
    /// [`ProtocolError::BadDeflateStream`].
    pub fn inflate(&mut self, payload: &[u8], limit: u64) -> Result<&[u8], ProtocolError> {
        let budget = std::mem::replace(&mut self.budget, usize::MAX);
        let done = self.inflate_some(payload, limit);
        self.budget = budget;
        done?;
        Ok(self.output())
    }

    /// Inflate one message's payload within the budget ([`set_budget`](Self::set_budget)):
    /// [`Inflated::Done`] with the message in [`output`](Self::output), or
    /// [`Inflated::Paused`] when the budget ran out first. Call again with the same
    /// payload to resume; the budget counts the bytes read and written. Errors as for
    /// [`inflate`](Self::inflate); a failed or finished message leaves none in progress.
    ///
    /// ```
    /// use ringcast::proto::deflate::{Deflater, Inflated, Inflater};
    /// let mut payload = Vec::new();
    /// Deflater::new(1)?.compress(&[b'a'; 300_000], &mut payload);
    /// let mut inflater = Inflater::new();
    /// let mut calls = 0;
    /// loop {
    ///     inflater.set_budget(64 * 1024); // a slice per turn of an event loop
    ///     calls += 1;
    ///     if inflater.inflate_some(&payload, 1 << 20).unwrap() == Inflated::Done {
    ///         break;
    ///     }
    /// }
    /// assert_eq!(inflater.output(), &[b'a'; 300_000][..]);
    /// assert!(calls >= 5);
    /// # Ok::<(), String>(())
    /// ```
    pub fn inflate_some(&mut self, payload: &[u8], limit: u64) -> Result<Inflated, ProtocolError> {
        if !self.inflating {
            self.start();
        }
        let done = self.step(payload, limit);
        if !matches!(done, Ok(Inflated::Paused)) {
            self.inflating = false;
        }
        if done.is_err() {
            self.len = 0;
        }
        done
    }

    fn start(&mut self) {
        match &mut self.stream {
            Some(stream) => stream.reset(false),
            None => self.stream = Some(Box::new(Decompress::new(false))),
        }
        self.len = 0;
        self.fed = 0;
        self.inflating = true;
    }

    /// Runs the stream until the message ends, the budget runs out, or it fails.
    fn step(&mut self, payload: &[u8], limit: u64) -> Result<Inflated, ProtocolError> {
        // One byte of room past the limit shows that the message is larger.
        let cap = match usize::try_from(limit) {
            Ok(0) | Err(_) => usize::MAX / 2,
            Ok(limit) => limit.saturating_add(1),
        };
        let Some(stream) = self.stream.as_deref_mut() else {
            return Err(ProtocolError::BadDeflateStream);
        };
        loop {
            if self.budget == 0 {
                return Ok(Inflated::Paused);
            }
            let step = self.budget.min(STEP);
            if self.len == self.output.len() {
                // No room left: grow by doubling from FIRST_OUTPUT, within the cap. Room is
                // taken only when the output is full, so a small message costs 16 KiB once
                // per inflater, not a step's 64 KiB zeroed each time.
                let grow = self
                    .output
                    .len()
                    .saturating_mul(2)
                    .max(FIRST_OUTPUT)
                    .min(cap);
                let room = if grow > WHOLE_LIMIT_FROM && cap < usize::MAX / 2 {
                    cap
                } else {
                    grow
                };
                if self.output.capacity() < room {
                    // Exact, so a bomb never gets more than the limit out of us.
                    self.output.reserve_exact(room - self.output.len());
                }
                self.output.resize(grow, 0);
            }
            // This step writes at most `step` bytes, into room already initialised, and never
            // past the cap (the room may be larger, left by a message with a larger limit).
            let end = self.output.len().min(self.len + step).min(cap);
            let input = if self.fed < payload.len() {
                &payload[self.fed..payload.len().min(self.fed + step)]
            } else {
                &TAIL[(self.fed - payload.len()).min(TAIL.len())..]
            };
            let (before_in, before_out) = (stream.total_in(), stream.total_out());
            let status = stream
                .decompress(
                    input,
                    &mut self.output[self.len..end],
                    FlushDecompress::None,
                )
                .map_err(|_| ProtocolError::BadDeflateStream)?;
            let read = (stream.total_in() - before_in) as usize;
            let written = (stream.total_out() - before_out) as usize;
            self.fed += read;
            self.len += written;
            self.budget = self.budget.saturating_sub(read + written);
            #[cfg(test)]
            {
                self.processed += (read + written) as u64;
            }
            if self.len == cap {
                // The byte past the limit was written: the message is larger than the
                // limit, even when the stream ended with that byte.
                return Err(ProtocolError::MessageTooBig { limit });
            }
            if status == Status::StreamEnd {
                return Ok(Inflated::Done);
            }
            if read == 0 && written == 0 {
                // Room to write and nothing read or written: every byte was fed and the
                // stream did not end (it was cut short), or it cannot go on.
                return Err(ProtocolError::BadDeflateStream);
            }
        }
    }

    /// Whether a message was paused in the middle ([`Inflated::Paused`]).
    pub fn is_inflating(&self) -> bool {
        self.inflating
    }

    /// Sets the bytes (read and written) the next calls to
    /// [`inflate_some`](Self::inflate_some) may process before pausing. Default: no
    /// bound.
    pub fn set_budget(&mut self, bytes: usize) {
        self.budget = bytes;
    }

    /// What is left of the budget.
    pub fn budget(&self) -> usize {
        self.budget
    }

    /// The output of the last message inflated whole.
    pub fn output(&self) -> &[u8] {
        &self.output[..self.len]
    }

    /// Bytes of buffer held between messages (the stream's own state, about 40 KiB once
    /// used, comes on top).
    pub fn held_bytes(&self) -> usize {
        self.output.capacity()
    }

    /// Frees the output buffer if it holds more than [`RETAINED_BYTES`]: one large message
    /// (or a bomb stopped at the read limit) must not pin up to the read limit for good.
    pub fn trim(&mut self) {
        if self.held_bytes() > RETAINED_BYTES && !self.inflating {
            self.output = Vec::new();
            self.len = 0;
        }
    }

    /// Free the buffer and the stream state (kept between messages for speed); a
    /// message in progress is abandoned.
    pub fn release_memory(&mut self) {
        *self = Inflater {
            budget: self.budget,
            ..Inflater::default()
        };
    }
}

#[cfg(test)]
mod tests;
