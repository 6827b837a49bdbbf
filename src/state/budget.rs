//! The memory budget of keyed operator state (`--state-memory-mb`). Keyed
//! operators report how much of their state they hold in memory; when the
//! total passes the limit, each moves its share of state that is unchanged
//! and already committed out of memory — it stays in RocksDB, where the
//! checkpoint put it — and reads a key back when a row for it comes again.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Shared by every job of a database.
#[derive(Debug, Default)]
pub struct MemoryBudget {
    limit: Option<usize>,
    used: AtomicUsize,
    evicted: AtomicU64,
    loaded: AtomicU64,
}

impl MemoryBudget {
    /// A budget of `limit` bytes; `None` never moves state out of memory.
    pub fn new(limit: Option<usize>) -> MemoryBudget {
        MemoryBudget {
            limit,
            ..MemoryBudget::default()
        }
    }

    pub fn limit(&self) -> Option<usize> {
        self.limit
    }

    /// Bytes of state held in memory now (as the operators estimate it).
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Moves an operator's report from `from` to `to` bytes.
    pub fn report(&self, from: usize, to: usize) {
        if to >= from {
            self.used.fetch_add(to - from, Ordering::Relaxed);
        } else {
            self.used.fetch_sub(from - to, Ordering::Relaxed);
        }
    }

    /// Whether `more` bytes would still fit.
    pub fn fits(&self, more: usize) -> bool {
        self.limit.is_none_or(|l| self.used() + more <= l)
    }

    /// How many of its `own` bytes an operator should keep when the total
    /// is over the limit: its proportional share of 90% of the limit (the
    /// rest is headroom for the next epoch's new keys). `None` when under.
    pub fn share_of(&self, own: usize) -> Option<usize> {
        let limit = self.limit?;
        let used = self.used();
        (used > limit).then(|| (own as u128 * limit as u128 * 9 / 10 / used as u128) as usize)
    }

    pub fn count_evicted(&self, n: u64) {
        self.evicted.fetch_add(n, Ordering::Relaxed);
    }

    pub fn count_loaded(&self, n: u64) {
        self.loaded.fetch_add(n, Ordering::Relaxed);
    }

    /// Keys moved out of memory so far.
    pub fn evicted(&self) -> u64 {
        self.evicted.load(Ordering::Relaxed)
    }

    /// Keys read back from the store so far.
    pub fn loaded(&self) -> u64 {
        self.loaded.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_are_proportional_below_the_limit() {
        let b = MemoryBudget::new(Some(1000));
        b.report(0, 600);
        b.report(0, 200);
        assert_eq!(b.share_of(600), None, "under the limit");
        assert!(b.fits(200) && !b.fits(201));
        b.report(200, 1400);
        assert_eq!(b.used(), 2000);
        // 600 of 2000 used: 30% of 900.
        assert_eq!(b.share_of(600), Some(270));
        assert_eq!(b.share_of(1400), Some(630));
        assert_eq!(MemoryBudget::new(None).share_of(10), None);
    }
}
