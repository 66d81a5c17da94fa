//! [`Encoder`]: messages to frame bytes, appended to a buffer the caller owns.
//!
//! A client encoder masks every frame with a fresh random key (RFC 6455 section 5.3);
//! a server encoder never masks. Compression is the caller's choice per message: pass
//! the already compressed payload with `compressed = true` (see
//! [`Deflater`](super::deflate::Deflater)).

use super::{OpCode, Role};

/// Encodes frames for one side of a connection.
#[derive(Debug, Clone)]
pub struct Encoder {
    // Filled in by the implementation (role, mask key generator).
    _private: (),
}

impl Encoder {
    /// An encoder for `role`; a client one masks with keys from a fast generator
    /// seeded from the operating system's randomness.
    pub fn new(role: Role) -> Encoder {
        let _ = role;
        todo!()
    }

    /// The side this encoder writes for.
    pub fn role(&self) -> Role {
        todo!()
    }

    /// Append one frame: header, then payload (masked for a client). `compressed` sets
    /// RSV1 (only on the first frame of a data message).
    pub fn encode_frame(
        &mut self,
        opcode: OpCode,
        fin: bool,
        compressed: bool,
        payload: &[u8],
        out: &mut Vec<u8>,
    ) {
        let _ = (opcode, fin, compressed, payload, out);
        todo!()
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
        let _ = (opcode, fin, compressed, payload_len, out);
        todo!()
    }
}
