//! Helpers shared by unit tests.

/// A seeded xorshift generator: each call gives the next value below `n`,
/// the same sequence for the same seed, so that a failure repeats.
pub fn below(seed: u64) -> impl FnMut(u64) -> u64 {
    let mut x = seed;
    move |n| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    }
}
