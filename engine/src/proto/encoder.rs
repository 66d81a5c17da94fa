//! [`Encoder`]: messages to frame bytes, appended to a buffer the caller owns.
//!
//! A client encoder masks every frame with a fresh key from the operating system's
//! random source (RFC 6455 sections 5.3 and 10.3: keys must not be predictable from
//! earlier ones, so a fast non-cryptographic generator will not do); a server encoder
//! never masks.
//!
//! [`Encoder::encode_message`] is the one way a whole message becomes a frame, for every
//! part of the crate (the blocking `Conn`, `PreparedMessage`, the engine): compressed
//! with the [`Deflater`] it is given (data frames only, RSV1 set), then framed and masked
//! in the caller's buffer ([`FrameBuf`]). [`Encoder::encode_frame`] and
//! [`Encoder::encode_header`] are for fragments and streaming writers.

use super::deflate::Deflater;
use super::frame::{FrameHeader, MAX_HEADER_LEN};
use super::mask::apply_mask;
use super::{OpCode, Role};

/// Where [`Encoder::encode_message`] builds a frame: a growable byte buffer whose
/// written bytes can be masked in place. `Vec<u8>` is one; the engine's write arena
/// is another.
pub trait FrameBuf {
    /// Bytes written so far.
    fn len(&self) -> usize;
    /// Whether nothing is written.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Room for `additional` more bytes, asked once per frame with its whole size.
    fn reserve(&mut self, additional: usize);
    /// Appends `bytes`.
    fn extend_from_slice(&mut self, bytes: &[u8]);
    /// The bytes written from `start` on, to mask in place.
    fn written_mut(&mut self, start: usize) -> &mut [u8];
}

impl FrameBuf for Vec<u8> {
    fn len(&self) -> usize {
        Vec::len(self)
    }
    fn reserve(&mut self, additional: usize) {
        Vec::reserve(self, additional)
    }
    fn extend_from_slice(&mut self, bytes: &[u8]) {
        Vec::extend_from_slice(self, bytes)
    }
    fn written_mut(&mut self, start: usize) -> &mut [u8] {
        &mut self[start..]
    }
}

/// Encodes frames for one side of a connection.
#[derive(Debug, Clone)]
pub struct Encoder {
    role: Role,
    /// Client only (servers never mask), boxed so a server's encoder stays small.
    keys: Option<Box<KeySource>>,
}

/// Masking keys from the OS random source, drawn 64 bytes (16 keys) per call.
#[derive(Clone)]
struct KeySource {
    batch: [u8; 64],
    used: usize,
}

impl std::fmt::Debug for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print keys still to be used.
        f.write_str("KeySource")
    }
}

impl KeySource {
    fn new() -> KeySource {
        let mut source = KeySource {
            batch: [0; 64],
            used: 0,
        };
        source.refill();
        source
    }

    fn refill(&mut self) {
        fill_random(&mut self.batch);
        self.used = 0;
    }

    fn next(&mut self) -> [u8; 4] {
        if self.used + 4 > self.batch.len() {
            self.refill();
        }
        let key = [
            self.batch[self.used],
            self.batch[self.used + 1],
            self.batch[self.used + 2],
            self.batch[self.used + 3],
        ];
        self.used += 4;
        key
    }
}

/// Fill `buf` from the OS random source (getrandom(2)). Should that ever fail (Linux
/// does not, once booted), fall back to a seeded fast generator rather than send frames
/// with a fixed key.
pub(crate) fn fill_random(buf: &mut [u8]) {
    if getrandom::fill(buf).is_err() {
        fastrand::fill(buf);
    }
}

impl Encoder {
    /// An encoder for `role`; a client one masks with keys from the OS random source.
    pub fn new(role: Role) -> Encoder {
        Encoder {
            role,
            keys: match role {
                Role::Client => Some(Box::new(KeySource::new())),
                Role::Server => None,
            },
        }
    }

    /// The side this encoder writes for.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Append one frame: header, then payload (masked for a client). `compressed` sets
    /// RSV1 (only on the first frame of a data message).
    ///
    /// ```
    /// use ringcast::proto::{Encoder, OpCode, Role};
    /// let mut out = Vec::new();
    /// Encoder::new(Role::Server).encode_frame(OpCode::Text, true, false, b"Hello", &mut out);
    /// assert_eq!(out, b"\x81\x05Hello"); // RFC 6455 section 5.7
    /// ```
    pub fn encode_frame(
        &mut self,
        opcode: OpCode,
        fin: bool,
        compressed: bool,
        payload: &[u8],
        out: &mut Vec<u8>,
    ) {
        out.reserve(MAX_HEADER_LEN + payload.len());
        let key = self.encode_header(opcode, fin, compressed, payload.len() as u64, out);
        let start = out.len();
        out.extend_from_slice(payload);
        if let Some(key) = key {
            apply_mask(&mut out[start..], key);
        }
    }

    /// Append one whole message as one frame: with `deflater`, a data message is
    /// compressed into `scratch` first (RFC 7692: RSV1 set; control frames are never
    /// compressed); a client frame is masked with a fresh key. `out` is asked for room
    /// once, for the whole frame.
    ///
    /// ```
    /// use ringcast::proto::deflate::Deflater;
    /// use ringcast::proto::{Encoder, OpCode, Role};
    /// let (mut out, mut scratch) = (Vec::new(), Vec::new());
    /// let mut deflater = Deflater::new(1)?;
    /// let mut encoder = Encoder::new(Role::Server);
    /// encoder.encode_message(OpCode::Text, b"Hello", Some(&mut deflater), &mut scratch, &mut out);
    /// // RFC 7692 section 7.2.3.1: RSV1, and the compressed "Hello".
    /// assert_eq!(out, [0xc1, 0x07, 0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]);
    /// # Ok::<(), String>(())
    /// ```
    pub fn encode_message<B: FrameBuf + ?Sized>(
        &mut self,
        opcode: OpCode,
        payload: &[u8],
        deflater: Option<&mut Deflater>,
        scratch: &mut Vec<u8>,
        out: &mut B,
    ) {
        let (compressed, body) = match deflater {
            Some(deflater) if !opcode.is_control() => {
                scratch.clear();
                deflater.compress(payload, scratch);
                (true, &scratch[..])
            }
            _ => (false, payload),
        };
        let mask = self.keys.as_mut().map(|keys| keys.next());
        let header = FrameHeader {
            fin: true,
            rsv: if compressed { 0b100 } else { 0 },
            opcode,
            mask,
            payload_len: body.len() as u64,
        };
        let mut bytes = [0u8; MAX_HEADER_LEN];
        let n = header.encode(&mut bytes);
        out.reserve(n + body.len());
        out.extend_from_slice(&bytes[..n]);
        let start = out.len();
        out.extend_from_slice(body);
        if let Some(key) = mask {
            apply_mask(out.written_mut(start), key);
        }
    }

    /// Append just a frame header for a payload of `payload_len` bytes; returns the
    /// masking key used (client) so the caller can mask the payload it writes itself
    /// (streaming writers, vectored sends).
    pub fn encode_header(
        &mut self,
        opcode: OpCode,
        fin: bool,
        compressed: bool,
        payload_len: u64,
        out: &mut Vec<u8>,
    ) -> Option<[u8; 4]> {
        let mask = self.keys.as_mut().map(|keys| keys.next());
        let header = FrameHeader {
            fin,
            rsv: if compressed { 0b100 } else { 0 },
            opcode,
            mask,
            payload_len,
        };
        let mut bytes = [0u8; MAX_HEADER_LEN];
        let n = header.encode(&mut bytes);
        out.extend_from_slice(&bytes[..n]);
        mask
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_frames_are_masked_with_fresh_keys() {
        let mut encoder = Encoder::new(Role::Client);
        let (mut a, mut b) = (Vec::new(), Vec::new());
        encoder.encode_frame(OpCode::Text, true, false, b"Hello", &mut a);
        encoder.encode_frame(OpCode::Text, true, false, b"Hello", &mut b);
        assert_eq!(a[1], 0x80 | 5);
        assert_ne!(a[2..6], b[2..6], "two frames got the same key");
        let mut payload = a[6..].to_vec();
        apply_mask(&mut payload, [a[2], a[3], a[4], a[5]]);
        assert_eq!(payload, b"Hello");
    }

    #[test]
    fn keys_keep_coming_past_a_batch_and_differ() {
        let mut encoder = Encoder::new(Role::Client);
        let mut keys = std::collections::HashSet::new();
        for _ in 0..100 {
            let mut out = Vec::new();
            let key = encoder.encode_header(OpCode::Binary, true, false, 0, &mut out);
            keys.insert(key.expect("a client masks"));
        }
        // 100 random 32-bit keys collide with probability about 1e-6.
        assert!(keys.len() >= 99);
        assert!(std::mem::size_of::<Encoder>() <= 16);
    }

    #[test]
    fn a_whole_message_is_one_frame_compressed_only_when_data() {
        use crate::proto::deflate::Deflater;
        let mut deflater = Deflater::new(1).expect("level 1");
        let (mut scratch, mut data, mut ping) = (Vec::new(), Vec::new(), Vec::new());
        let mut encoder = Encoder::new(Role::Client);
        let text = b"compressible ".repeat(20);
        encoder.encode_message(
            OpCode::Text,
            &text,
            Some(&mut deflater),
            &mut scratch,
            &mut data,
        );
        encoder.encode_message(
            OpCode::Ping,
            b"p",
            Some(&mut deflater),
            &mut scratch,
            &mut ping,
        );
        assert_eq!(data[0], 0xC1, "FIN, RSV1, text");
        assert!(data.len() < text.len() / 4);
        assert_eq!(ping[0], 0x89, "a control frame is never compressed");
        // Masked, and unmasks to the compressed body.
        let key = [data[2], data[3], data[4], data[5]];
        let mut body = data[6..].to_vec();
        apply_mask(&mut body, key);
        let mut expected = Vec::new();
        Deflater::new(1)
            .expect("level 1")
            .compress(&text, &mut expected);
        assert_eq!(body, expected);
    }

    #[test]
    fn compressed_sets_rsv1() {
        let mut out = Vec::new();
        Encoder::new(Role::Server).encode_frame(OpCode::Binary, true, true, b"x", &mut out);
        assert_eq!(out[0], 0xC2);
    }

    #[test]
    fn rfc_256_byte_binary_uses_16_bit_length() {
        let mut out = Vec::new();
        Encoder::new(Role::Server).encode_frame(OpCode::Binary, true, false, &[0u8; 256], &mut out);
        assert_eq!(&out[..4], &[0x82, 0x7e, 0x01, 0x00]);
        assert_eq!(out.len(), 260);
    }
}
