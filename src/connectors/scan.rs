//! Where a CSV buffer's structural bytes are: every delimiter, quote and
//! newline, found in one pass over all the records of a batch, 64 bytes at
//! a time (AVX2 where the CPU has it, `memchr` elsewhere). Cutting fields
//! from this list costs a few instructions per field, where a search per
//! record and per field paid a call and a set-up for every short field.

/// Appends to `out` the offset in `text` of every byte equal to
/// `delimiter`, `"` or `\n`, in increasing order. `text` must be shorter
/// than 4 GiB (offsets are `u32`).
pub(crate) fn structural(text: &[u8], delimiter: u8, out: &mut Vec<u32>) {
    debug_assert!(text.len() < u32::MAX as usize);
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2, checked just above.
            unsafe { avx2::structural(text, delimiter, out) };
            return;
        }
    }
    portable(text, delimiter, out, 0);
}

fn portable(text: &[u8], delimiter: u8, out: &mut Vec<u32>, base: usize) {
    out.extend(memchr::memchr3_iter(delimiter, b'"', b'\n', text).map(|i| (base + i) as u32));
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::{
        __m256i, _mm256_cmpeq_epi8, _mm256_loadu_si256, _mm256_movemask_epi8, _mm256_or_si256,
        _mm256_set1_epi8,
    };

    /// # Safety
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn structural(text: &[u8], delimiter_byte: u8, out: &mut Vec<u32>) {
        let delimiter = _mm256_set1_epi8(delimiter_byte as i8);
        let quote = _mm256_set1_epi8(b'"' as i8);
        let newline = _mm256_set1_epi8(b'\n' as i8);
        let mask32 = |v: __m256i| {
            let hits = _mm256_or_si256(
                _mm256_or_si256(_mm256_cmpeq_epi8(v, delimiter), _mm256_cmpeq_epi8(v, quote)),
                _mm256_cmpeq_epi8(v, newline),
            );
            _mm256_movemask_epi8(hits) as u32 as u64
        };
        let mut offset = 0;
        while offset + 64 <= text.len() {
            // SAFETY: both 32-byte loads lie within `text` (offset + 64 <= len);
            // unaligned loads need no alignment.
            let (lo, hi) = unsafe {
                let p = text.as_ptr().add(offset);
                (
                    _mm256_loadu_si256(p as *const __m256i),
                    _mm256_loadu_si256(p.add(32) as *const __m256i),
                )
            };
            let mut mask = mask32(lo) | (mask32(hi) << 32);
            while mask != 0 {
                out.push(offset as u32 + mask.trailing_zeros());
                mask &= mask - 1;
            }
            offset += 64;
        }
        super::portable(&text[offset..], delimiter_byte, out, offset);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_every_structural_byte_in_order() {
        // Lengths around the 64-byte blocks, structural bytes at every
        // position of a block, other bytes (including UTF-8) in between.
        for len in [0, 1, 5, 63, 64, 65, 127, 128, 129, 300] {
            let text: Vec<u8> = (0..len)
                .map(|i| match (i * 7 + len) % 11 {
                    0 => b',',
                    1 => b'"',
                    2 => b'\n',
                    3 => b';',
                    4 => 0xc3,
                    _ => b'a' + (i % 26) as u8,
                })
                .collect();
            for delimiter in [b',', b';', b'\t'] {
                let expected: Vec<u32> = text
                    .iter()
                    .enumerate()
                    .filter(|(_, b)| [delimiter, b'"', b'\n'].contains(b))
                    .map(|(i, _)| i as u32)
                    .collect();
                let mut found = Vec::new();
                structural(&text, delimiter, &mut found);
                assert_eq!(found, expected, "length {len}, delimiter {delimiter}");
                let mut found = Vec::new();
                portable(&text, delimiter, &mut found, 0);
                assert_eq!(found, expected, "portable, length {len}");
            }
        }
    }
}
