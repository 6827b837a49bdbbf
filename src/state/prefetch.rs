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
