//! A cache hint for loops over many small allocations met in no particular
//! order (an epoch's keys and values, a table's groups): fetched a few
//! items ahead, their cache misses overlap instead of each stalling the
//! loop in turn.

/// How many items ahead of the one at hand such loops fetch.
pub const AHEAD: usize = 8;

/// Asks the CPU to bring the memory of `items` (at most its first 256
/// bytes) into the cache. A hint: it changes no result.
#[inline]
pub fn prefetch<T>(items: &[T]) {
    prefetch_bytes(
        items.as_ptr() as *const u8,
        std::mem::size_of_val(items).min(256),
    );
}

/// Asks the CPU to bring the cache lines of the first `bytes` of `item`
/// (at most its size) into the cache, for a value wider than [`prefetch`]
/// fetches (a group in its table's bucket).
#[inline]
pub fn prefetch_span<T>(item: &T, bytes: usize) {
    prefetch_bytes(
        item as *const T as *const u8,
        bytes.min(std::mem::size_of::<T>()),
    );
}

/// Asks the CPU to bring the cache lines of the `len` bytes at `start`
/// into the cache.
#[inline]
fn prefetch_bytes(start: *const u8, len: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let end = start as usize + len;
        let mut line = start as usize & !63;
        while line < end {
            // SAFETY: a prefetch reads nothing into the program and cannot
            // fault, whatever the address; these lines hold the bytes asked for.
            unsafe { _mm_prefetch(line as *const i8, _MM_HINT_T0) };
            line += 64;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (start, len);
}
