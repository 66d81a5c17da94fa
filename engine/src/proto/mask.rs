//! [`apply_mask`]: XOR a payload with a masking key (RFC 6455 section 5.3).
//!
//! This is the hottest loop of the read path, so it works eight bytes at a time in
//! safe code, which the compiler turns into SIMD.

/// XOR `buf` in place with `key`, as if the payload started `offset` bytes into the
/// frame (so a payload that arrives in pieces is unmasked piece by piece).
pub fn apply_mask_offset(buf: &mut [u8], key: [u8; 4], offset: usize) {
    let mut key = key;
    key.rotate_left(offset % 4);
    let wide = u64::from_ne_bytes([
        key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3],
    ]);
    // Eight is a multiple of four, so the key phase is the same at the start of every
    // chunk and at the start of the remainder.
    let mut chunks = buf.chunks_exact_mut(32);
    for chunk in &mut chunks {
        for word in chunk.chunks_exact_mut(8) {
            xor_word(word, wide);
        }
    }
    let rest = chunks.into_remainder();
    let mut words = rest.chunks_exact_mut(8);
    for word in &mut words {
        xor_word(word, wide);
    }
    for (i, byte) in words.into_remainder().iter_mut().enumerate() {
        *byte ^= key[i % 4];
    }
}

#[inline(always)]
fn xor_word(word: &mut [u8], key: u64) {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(word);
    word.copy_from_slice(&(u64::from_ne_bytes(bytes) ^ key).to_ne_bytes());
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn naive(buf: &mut [u8], key: [u8; 4], offset: usize) {
        for (i, b) in buf.iter_mut().enumerate() {
            *b ^= key[(offset + i) % 4];
        }
    }

    #[test]
    fn rfc_hello_example_unmasks() {
        let mut data = [0x7f, 0x9f, 0x4d, 0x51, 0x58];
        apply_mask(&mut data, [0x37, 0xfa, 0x21, 0x3d]);
        assert_eq!(&data, b"Hello");
    }

    proptest! {
        #[test]
        fn word_at_a_time_equals_byte_at_a_time(data in proptest::collection::vec(any::<u8>(), 0..300), key in any::<[u8; 4]>(), offset in 0usize..8) {
            let mut fast = data.clone();
            let mut slow = data;
            apply_mask_offset(&mut fast, key, offset);
            naive(&mut slow, key, offset);
            prop_assert_eq!(fast, slow);
        }

        #[test]
        fn masking_in_pieces_equals_masking_whole(data in proptest::collection::vec(any::<u8>(), 0..200), key in any::<[u8; 4]>(), cut in 0usize..200) {
            let cut = cut.min(data.len());
            let mut whole = data.clone();
            apply_mask(&mut whole, key);
            let mut pieces = data;
            let (a, b) = pieces.split_at_mut(cut);
            apply_mask_offset(a, key, 0);
            apply_mask_offset(b, key, cut);
            prop_assert_eq!(whole, pieces);
        }
    }
}
