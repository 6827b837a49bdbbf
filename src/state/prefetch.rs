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
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let bytes = std::mem::size_of_val(items).min(256);
        let start = items.as_ptr() as *const i8;
        let mut at = 0;
        while at < bytes {
            // SAFETY: a prefetch reads nothing into the program and cannot
            // fault, whatever the address; these are within `items` (or
            // its start when it is empty).
            unsafe { _mm_prefetch(start.wrapping_add(at), _MM_HINT_T0) };
            at += 64;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = items;
}

/// Asks the CPU to bring the cache lines of the first `bytes` of `item`
/// (at most its size) into the cache, for a value wider than [`prefetch`]
/// fetches (a group in its table's bucket).
#[inline]
pub fn prefetch_span<T>(item: &T, bytes: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let start = item as *const T as usize;
        let end = start + bytes.min(std::mem::size_of::<T>());
        let mut line = start & !63;
        while line < end {
            // SAFETY: as in `prefetch`; each line holds part of `item`.
            unsafe { _mm_prefetch(line as *const i8, _MM_HINT_T0) };
            line += 64;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (item, bytes);
}
