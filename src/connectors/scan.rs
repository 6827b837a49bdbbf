//! Where a buffer's structural bytes are, 64 bytes at a time (AVX-512 or
//! AVX2 where the CPU has it, `memchr` elsewhere): every delimiter, quote and newline
//! of a CSV batch, found in one pass over all its records, and the lines
//! of text read from a file, counted 64 bytes at a time. Cutting fields
//! from such a pass costs a few instructions each, where a search per
//! record and per field paid a call and a set-up for every short one.

/// What [`structural`] found besides the offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Structure {
    /// Every byte is ASCII (then the text is UTF-8 with no further check).
    pub(crate) ascii: bool,
    /// How many of the offsets are of quotes and newlines (the others are
    /// of delimiters).
    pub(crate) breaks: usize,
}

/// Appends to `out` the offset in `text` of every byte equal to
/// `delimiter`, `"` or `\n`, in increasing order. `text` must be shorter
/// than 4 GiB (offsets are `u32`).
pub(crate) fn structural(text: &[u8], delimiter: u8, out: &mut Vec<u32>) -> Structure {
    debug_assert!(text.len() < u32::MAX as usize);
    #[cfg(target_arch = "x86_64")]
    {
        if avx512::usable() {
            // SAFETY: the CPU has what `avx512` needs, checked just above.
            return unsafe { avx512::structural(text, delimiter, out) };
        }
        if avx2::usable() {
            // SAFETY: the CPU has what `avx2` needs, checked just above.
            return unsafe { avx2::structural(text, delimiter, out) };
        }
    }
    Structure {
        ascii: text.is_ascii(),
        breaks: portable(text, delimiter, out, 0),
    }
}

/// [`structural`] from `base` on, byte by byte; returns the count of
/// quotes and newlines.
fn portable(text: &[u8], delimiter: u8, out: &mut Vec<u32>, base: usize) -> usize {
    let mut breaks = 0;
    for i in memchr::memchr3_iter(delimiter, b'"', b'\n', text) {
        breaks += usize::from(text[i] != delimiter);
        out.push((base + i) as u32);
    }
    breaks
}

/// Counts the lines of `text` up to `max` of them: returns how many
/// newlines it passed and the bytes up to and with the last of them. With
/// `stop_at_quote`, stops at the first `"` instead of passing it: a newline
/// after a quote may be inside a quoted CSV field, which only a reading
/// record by record can tell.
pub(crate) fn lines(text: &[u8], stop_at_quote: bool, max: usize) -> (usize, usize) {
    #[cfg(target_arch = "x86_64")]
    {
        if avx512::usable() {
            // SAFETY: the CPU has what `avx512` needs, checked just above.
            return unsafe { avx512::lines(text, stop_at_quote, max) };
        }
        if avx2::usable() {
            // SAFETY: the CPU has what `avx2` needs, checked just above.
            return unsafe { avx2::lines(text, stop_at_quote, max) };
        }
    }
    portable_lines(text, stop_at_quote, max, (0, 0), 0)
}

/// [`lines`] from `base` on, byte by byte, with `found` lines (and the
/// bytes up to them) counted before `base`.
fn portable_lines(
    text: &[u8],
    stop_at_quote: bool,
    max: usize,
    mut found: (usize, usize),
    base: usize,
) -> (usize, usize) {
    let quote = if stop_at_quote { b'"' } else { b'\n' };
    for i in memchr::memchr2_iter(b'\n', quote, text) {
        if found.0 == max || text[i] != b'\n' {
            break;
        }
        found = (found.0 + 1, base + i + 1);
    }
    found
}

/// Adds the lines of the 64-byte block at `offset` (`newlines` and
/// `quotes`: its bytes that are, as bits) to `found` (lines counted, bytes
/// up to the last of them), up to `max` lines and before the first quote.
/// True when done: a quote met or `max` reached.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn count_block(
    found: &mut (usize, usize),
    offset: usize,
    mut newlines: u64,
    quotes: u64,
    max: usize,
) -> bool {
    if quotes != 0 {
        // Only the line ends before the first quote.
        newlines &= (quotes & quotes.wrapping_neg()) - 1;
    }
    let here = newlines.count_ones() as usize;
    if found.0 + here >= max {
        // The block holds the last line wanted: drop the newlines after it.
        for _ in 0..found.0 + here - max {
            newlines &= !(1 << (63 - newlines.leading_zeros()));
        }
        found.0 = max;
    } else {
        found.0 += here;
    }
    if newlines != 0 {
        found.1 = offset + 64 - newlines.leading_zeros() as usize;
    }
    quotes != 0 || found.0 == max
}

/// Calls `block(offset, room)` for each 64-byte block of the first
/// `blocks_end` bytes (a multiple of 64), in order; `room` is where `out`'s
/// next offset goes, with room for 64, and `block` writes the block's
/// offsets there (it may write past them, within the 64) and returns how
/// many it found. Room for 64 blocks is made at a time, so that the loop
/// over them calls nothing (a call would send the caller's vectors through
/// the stack at every block).
///
/// # Safety
/// `block` must write its first `n` offsets before returning `n <= 64`,
/// and write nothing past 64.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn by_blocks(
    out: &mut Vec<u32>,
    blocks_end: usize,
    mut block: impl FnMut(usize, *mut u32) -> usize,
) {
    let mut offset = 0;
    while offset < blocks_end {
        let end = blocks_end.min(offset + 64 * 64);
        out.reserve(end - offset);
        let (at, mut len) = (out.as_mut_ptr(), out.len());
        while offset < end {
            // SAFETY: `len` is at most 64 per block past the old length,
            // and room for 64 per block was reserved.
            len += block(offset, unsafe { at.add(len) });
            offset += 64;
        }
        // SAFETY: the first `len` are written: the old ones and those
        // `block` wrote.
        unsafe { out.set_len(len) };
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::{
        __m256i, _mm256_cmpeq_epi8, _mm256_loadu_si256, _mm256_movemask_epi8, _mm256_or_si256,
        _mm256_set1_epi8, _mm256_setzero_si256,
    };

    /// Whether the CPU has AVX2 and the bit instructions used with it
    /// (without POPCNT and LZCNT, counting bits is a dozen instructions).
    pub(super) fn usable() -> bool {
        std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("popcnt")
            && std::arch::is_x86_feature_detected!("lzcnt")
            && std::arch::is_x86_feature_detected!("bmi1")
    }

    /// The 64 bytes of `text` at `offset`, as two vectors.
    #[target_feature(enable = "avx2")]
    fn block(text: &[u8], offset: usize) -> (__m256i, __m256i) {
        let block = &text[offset..offset + 64];
        // SAFETY: both 32-byte loads lie within `block`, just checked to
        // hold 64 bytes; unaligned loads need no alignment.
        unsafe {
            let p = block.as_ptr();
            (
                _mm256_loadu_si256(p as *const __m256i),
                _mm256_loadu_si256(p.add(32) as *const __m256i),
            )
        }
    }

    /// # Safety
    /// The CPU must have what [`usable`] checks.
    #[target_feature(enable = "avx2,popcnt,lzcnt,bmi1")]
    pub(super) unsafe fn structural(
        text: &[u8],
        delimiter_byte: u8,
        out: &mut Vec<u32>,
    ) -> super::Structure {
        let delimiter = _mm256_set1_epi8(delimiter_byte as i8);
        // Every byte seen, or-ed together: its high bit is set if one was
        // not ASCII.
        let mut seen = _mm256_setzero_si256();
        let quote = _mm256_set1_epi8(b'"' as i8);
        let newline = _mm256_set1_epi8(b'\n' as i8);
        // The delimiters, and the quotes and newlines, of 32 bytes.
        let masks32 = |v: __m256i| {
            let breaks =
                _mm256_or_si256(_mm256_cmpeq_epi8(v, quote), _mm256_cmpeq_epi8(v, newline));
            (
                _mm256_movemask_epi8(_mm256_cmpeq_epi8(v, delimiter)) as u32 as u64,
                _mm256_movemask_epi8(breaks) as u32 as u64,
            )
        };
        let mut breaks = 0;
        let blocks_end = text.len() - text.len() % 64;
        let scan_block = |offset: usize, room: *mut u32| {
            let (lo, hi) = block(text, offset);
            seen = _mm256_or_si256(seen, _mm256_or_si256(lo, hi));
            let ((lo_delimiters, lo_breaks), (hi_delimiters, hi_breaks)) =
                (masks32(lo), masks32(hi));
            let block_breaks = lo_breaks | (hi_breaks << 32);
            breaks += block_breaks.count_ones() as usize;
            let mut mask = lo_delimiters | (hi_delimiters << 32) | block_breaks;
            // Eight offsets written whether or not there are as many (most
            // blocks have fewer), so that how many there are decides no
            // branch; the rest one by one.
            let count = mask.count_ones() as usize;
            for k in 0..count.max(8) {
                // SAFETY: at most 64, where `room` has room for 64.
                unsafe { room.add(k).write(offset as u32 + mask.trailing_zeros()) };
                mask &= mask.wrapping_sub(1);
            }
            count
        };
        // SAFETY: `block` writes its `count` offsets, and at most 64.
        unsafe { super::by_blocks(out, blocks_end, scan_block) };
        let offset = blocks_end;
        breaks += super::portable(&text[offset..], delimiter_byte, out, offset);
        super::Structure {
            ascii: _mm256_movemask_epi8(seen) == 0 && text[offset..].is_ascii(),
            breaks,
        }
    }

    /// # Safety
    /// The CPU must have what [`usable`] checks.
    #[target_feature(enable = "avx2,popcnt,lzcnt,bmi1")]
    pub(super) unsafe fn lines(text: &[u8], stop_at_quote: bool, max: usize) -> (usize, usize) {
        let quote = _mm256_set1_epi8(b'"' as i8);
        let newline = _mm256_set1_epi8(b'\n' as i8);
        let mask32 = |v: __m256i, byte: __m256i| {
            _mm256_movemask_epi8(_mm256_cmpeq_epi8(v, byte)) as u32 as u64
        };
        // Lines counted, and the bytes up to the last of them.
        let mut found = (0, 0);
        let mut offset = 0;
        while offset + 64 <= text.len() && found.0 < max {
            let (lo, hi) = block(text, offset);
            let newlines = mask32(lo, newline) | (mask32(hi, newline) << 32);
            let quotes = match stop_at_quote {
                true => mask32(lo, quote) | (mask32(hi, quote) << 32),
                false => 0,
            };
            if super::count_block(&mut found, offset, newlines, quotes, max) {
                return found;
            }
            offset += 64;
        }
        super::portable_lines(&text[offset..], stop_at_quote, max, found, offset)
    }
}

/// [`structural`] with AVX-512: each 64-byte block compared at once into
/// bit masks, and its offsets packed by one compress instruction and
/// written sixteen at a time, instead of one per set bit.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::{
        __m128i, __m512i, _mm512_add_epi32, _mm512_castsi512_si128, _mm512_cmpeq_epi8_mask,
        _mm512_cvtepu8_epi32, _mm512_extracti32x4_epi32, _mm512_loadu_si512,
        _mm512_maskz_compress_epi8, _mm512_movepi8_mask, _mm512_or_si512, _mm512_set1_epi32,
        _mm512_set1_epi8, _mm512_setzero_si512, _mm512_storeu_si512,
    };

    /// Whether the CPU has the AVX-512 parts used here (byte compares and
    /// byte compression among them).
    pub(super) fn usable() -> bool {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vbmi2")
            && std::arch::is_x86_feature_detected!("popcnt")
    }

    /// Byte `i` is `i`: compressed by a mask, the positions of its set bits.
    #[repr(align(64))]
    struct Positions([u8; 64]);
    static POSITIONS: Positions = {
        let mut p = [0u8; 64];
        let mut i = 0;
        while i < 64 {
            p[i] = i as u8;
            i += 1;
        }
        Positions(p)
    };

    /// # Safety
    /// The CPU must have what [`usable`] checks.
    #[target_feature(enable = "avx512f,avx512bw,avx512vbmi2,popcnt")]
    pub(super) unsafe fn structural(
        text: &[u8],
        delimiter_byte: u8,
        out: &mut Vec<u32>,
    ) -> super::Structure {
        let delimiter = _mm512_set1_epi8(delimiter_byte as i8);
        let quote = _mm512_set1_epi8(b'"' as i8);
        let newline = _mm512_set1_epi8(b'\n' as i8);
        // SAFETY: 64 aligned bytes.
        let positions = unsafe { _mm512_loadu_si512(POSITIONS.0.as_ptr() as *const __m512i) };
        // Every byte seen, or-ed together: a high bit set if one was not ASCII.
        let mut seen = _mm512_setzero_si512();
        let mut breaks = 0;
        let blocks_end = text.len() - text.len() % 64;
        let scan_block = |offset: usize, room: *mut u32| {
            // SAFETY: `offset + 64 <= blocks_end <= text.len()`.
            let v = unsafe { _mm512_loadu_si512(text.as_ptr().add(offset) as *const __m512i) };
            seen = _mm512_or_si512(seen, v);
            let block_breaks =
                _mm512_cmpeq_epi8_mask(v, quote) | _mm512_cmpeq_epi8_mask(v, newline);
            breaks += block_breaks.count_ones() as usize;
            let mask = _mm512_cmpeq_epi8_mask(v, delimiter) | block_breaks;
            let count = mask.count_ones() as usize;
            // The positions of the set bits, in order, in the low bytes.
            let packed = _mm512_maskz_compress_epi8(mask, positions);
            let base = _mm512_set1_epi32(offset as i32);
            let quarter = |q: __m128i| _mm512_add_epi32(_mm512_cvtepu8_epi32(q), base);
            // Sixteen offsets written whether or not there are as many (most
            // blocks have fewer), the next sixteen while there are more.
            let quarters = [
                _mm512_castsi512_si128(packed),
                _mm512_extracti32x4_epi32::<1>(packed),
                _mm512_extracti32x4_epi32::<2>(packed),
                _mm512_extracti32x4_epi32::<3>(packed),
            ];
            for (k, q) in quarters
                .into_iter()
                .enumerate()
                .take(count.div_ceil(16).max(1))
            {
                // SAFETY: at most four sixteens, where `room` has room for 64.
                unsafe { _mm512_storeu_si512(room.add(16 * k) as *mut __m512i, quarter(q)) };
            }
            count
        };
        // SAFETY: `block` writes its `count` offsets, and at most 64.
        unsafe { super::by_blocks(out, blocks_end, scan_block) };
        let offset = blocks_end;
        breaks += super::portable(&text[offset..], delimiter_byte, out, offset);
        super::Structure {
            ascii: _mm512_movepi8_mask(seen) == 0 && text[offset..].is_ascii(),
            breaks,
        }
    }

    /// [`super::lines`] with each block's newlines and quotes compared into
    /// bit masks at once.
    ///
    /// # Safety
    /// The CPU must have what [`usable`] checks.
    #[target_feature(enable = "avx512f,avx512bw,popcnt,lzcnt")]
    pub(super) unsafe fn lines(text: &[u8], stop_at_quote: bool, max: usize) -> (usize, usize) {
        let quote = _mm512_set1_epi8(if stop_at_quote { b'"' } else { b'\n' } as i8);
        let newline = _mm512_set1_epi8(b'\n' as i8);
        let mut found = (0, 0);
        let mut offset = 0;
        while offset + 64 <= text.len() && found.0 < max {
            // SAFETY: `offset + 64 <= text.len()`.
            let v = unsafe { _mm512_loadu_si512(text.as_ptr().add(offset) as *const __m512i) };
            let newlines = _mm512_cmpeq_epi8_mask(v, newline);
            let quotes = match stop_at_quote {
                true => _mm512_cmpeq_epi8_mask(v, quote),
                false => 0,
            };
            if super::count_block(&mut found, offset, newlines, quotes, max) {
                return found;
            }
            offset += 64;
        }
        super::portable_lines(&text[offset..], stop_at_quote, max, found, offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_the_lines_before_the_first_quote_up_to_the_most_asked() {
        for len in [0, 1, 5, 63, 64, 65, 127, 128, 129, 300] {
            let text: Vec<u8> = (0..len)
                .map(|i| match (i * 7 + len) % 13 {
                    0 | 5 => b'\n',
                    1 => b',',
                    4 => 0xc3,
                    _ => b'a' + (i % 26) as u8,
                })
                .collect();
            let newlines: Vec<usize> = (0..len).filter(|&i| text[i] == b'\n').collect();
            for quote_at in [None, Some(0), Some(len / 2), Some(len.saturating_sub(1))] {
                let mut text = text.clone();
                let mut expected = newlines.clone();
                if let Some(q) = quote_at.filter(|&q| q < len) {
                    text[q] = b'"';
                    expected.retain(|&i| i < q);
                }
                let every: Vec<usize> = (0..len).filter(|&i| text[i] == b'\n').collect();
                for max in [0, 1, 2, 3, 7, 11, 30, usize::MAX] {
                    for (stop, newlines) in [(false, &every), (true, &expected)] {
                        let count = max.min(newlines.len());
                        let bytes = count.checked_sub(1).map_or(0, |last| newlines[last] + 1);
                        let case =
                            format!("length {len}, quote at {quote_at:?}, stop {stop}, max {max}");
                        assert_eq!(lines(&text, stop, max), (count, bytes), "{case}");
                        #[cfg(target_arch = "x86_64")]
                        {
                            // SAFETY: the CPU has what each needs, checked first.
                            if avx2::usable() {
                                let avx2 = unsafe { avx2::lines(&text, stop, max) };
                                assert_eq!(avx2, (count, bytes), "avx2, {case}");
                            }
                            if avx512::usable() {
                                let avx512 = unsafe { avx512::lines(&text, stop, max) };
                                assert_eq!(avx512, (count, bytes), "avx512, {case}");
                            }
                        }
                        let portable = portable_lines(&text, stop, max, (0, 0), 0);
                        assert_eq!(portable, (count, bytes), "portable, {case}");
                    }
                }
            }
        }
    }

    #[test]
    fn finds_every_structural_byte_in_order() {
        // Lengths around the 64-byte blocks and the 4 kB runs of them,
        // structural bytes at every position of a block, other bytes
        // (including UTF-8) in between.
        for len in [
            0, 1, 5, 63, 64, 65, 127, 128, 129, 300, 4095, 4096, 4160, 9000,
        ] {
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
                let breaks = text.iter().filter(|b| [b'"', b'\n'].contains(b)).count();
                for (name, structural) in implementations() {
                    let mut found = Vec::new();
                    let structure = structural(&text, delimiter, &mut found);
                    let case = format!("{name}, length {len}, delimiter {delimiter}");
                    assert_eq!(found, expected, "{case}");
                    assert_eq!(structure.breaks, breaks, "{case}");
                }
                let mut found = Vec::new();
                let counted = portable(&text, delimiter, &mut found, 0);
                assert_eq!(found, expected, "portable, length {len}");
                assert_eq!(counted, breaks, "portable, length {len}");
            }
        }
    }

    type Structural = fn(&[u8], u8, &mut Vec<u32>) -> Structure;

    /// The dispatching scan, and each vector one the CPU can run.
    fn implementations() -> Vec<(&'static str, Structural)> {
        let mut all: Vec<(&'static str, Structural)> = vec![("dispatched", structural)];
        #[cfg(target_arch = "x86_64")]
        {
            if avx2::usable() {
                // SAFETY: the CPU has what each needs, checked first.
                all.push(("avx2", |t, d, o| unsafe { avx2::structural(t, d, o) }));
            }
            if avx512::usable() {
                all.push(("avx512", |t, d, o| unsafe { avx512::structural(t, d, o) }));
            }
        }
        all
    }

    #[test]
    fn finds_blocks_full_of_structural_bytes() {
        // 0 to 64 structural bytes in a block, at the block's start, its
        // end or spread out, after offsets already found.
        for count in 0..=64usize {
            for layout in 0..3 {
                let mut text = vec![b'a'; 64 * 3];
                let at: Vec<usize> = (0..count)
                    .map(|i| match layout {
                        0 => 64 + i,
                        1 => 128 - count + i,
                        _ => 64 + i * 64 / count.max(1),
                    })
                    .collect();
                for &i in &at {
                    text[i] = [b',', b'\n', b'"'][i % 3];
                }
                let expected: Vec<u32> = [7]
                    .into_iter()
                    .chain(at.iter().map(|&i| i as u32))
                    .collect();
                for (name, structural) in implementations() {
                    let mut found = vec![7];
                    structural(&text, b',', &mut found);
                    assert_eq!(found, expected, "{name}, {count} in layout {layout}");
                }
            }
        }
    }

    #[test]
    fn tells_whether_every_byte_is_ascii() {
        // One byte with its high bit set, at each position of texts around
        // the 64-byte blocks (in a block or in the tail), and none.
        for len in [1, 63, 64, 65, 128, 130] {
            for (name, structural) in implementations() {
                let plain = vec![b'a'; len];
                assert!(
                    structural(&plain, b',', &mut Vec::new()).ascii,
                    "{name}, length {len}"
                );
                for at in 0..len {
                    let mut text = plain.clone();
                    text[at] = 0x80;
                    assert!(
                        !structural(&text, b',', &mut Vec::new()).ascii,
                        "{name}, {at} of {len}"
                    );
                }
            }
        }
    }
}
