//! [`apply_mask`]: XOR a payload with a masking key (RFC 6455 section 5.3).
//!
//! This is the hottest loop of the read path, so it works a machine word at a time.

/// XOR `buf` in place with `key`, as if the payload started `offset` bytes into the
/// frame (so a payload that arrives in pieces is unmasked piece by piece).
pub fn apply_mask_offset(buf: &mut [u8], key: [u8; 4], offset: usize) {
    let _ = (buf, key, offset);
    todo!()
}

/// XOR `buf` in place with `key`, starting at the first byte of the payload.
///
/// ```
/// use ringcast::proto::mask::apply_mask;
/// let mut data = *b"Hello";
/// apply_mask(&mut data, [0x37, 0xfa, 0x21, 0x3d]);
/// assert_eq!(data, [0x7f, 0x9f, 0x4d, 0x51, 0x58]); // RFC 6455 section 5.7
/// ```
pub fn apply_mask(buf: &mut [u8], key: [u8; 4]) {
    apply_mask_offset(buf, key, 0)
}
