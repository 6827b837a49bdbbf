//! An epoch's blocks filled as the aggregate emits its groups, while each
//! group is in the cache, instead of by the checkpoint, which would read
//! every changed group again; and when that pays: when groups are emitted
//! about once an epoch (many keys, each seldom touched), so that few are
//! written twice. The writes are timed (one in [`TIMED_ONE_IN`]) and
//! counted as checkpoint work.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::state::{Block, KEY_GROUPS};

/// One group written in this many is timed, and counts for them all (a
/// clock read costs about what writing a group in the cache does).
const TIMED_ONE_IN: u32 = 32;

/// Emissions per changed group up to which an epoch's groups are written
/// as they are emitted (as a fraction: 5/4). Beyond it, the groups written
/// twice or more (each a write, and an entry to commit and compact) cost
/// more than reading each once at the checkpoint. Ten emissions an epoch
/// over keys each touched r times give 10(1 - e^(-r/10)) / (1 - e^(-r))
/// emissions a group: 1.04 where r is 0.09 (10M keys), 1.74 where it is
/// 1.4 (1M keys, 6 rows each), 1.25 at r = 0.5.
const MOST_EMISSIONS: (usize, usize) = (5, 4);

/// Changed groups below which an epoch is written by its checkpoint:
/// too few for the reads to matter.
const FEWEST_GROUPS: usize = 4096;

/// Groups emitted and changed in an epoch: what decides how the next one
/// is written.
#[derive(Default, Clone, Copy, Debug, PartialEq, Eq)]
pub struct EpochCounts {
    /// Groups emitted (each emission of a group counts).
    pub emissions: usize,
    /// Groups changed (each once).
    pub groups: usize,
}

impl EpochCounts {
    /// Whether the next epoch writes its groups as it emits them.
    pub fn write_on_emission(&self) -> bool {
        let (num, den) = MOST_EMISSIONS;
        self.groups >= FEWEST_GROUPS && self.emissions * den <= self.groups * num
    }
}

/// One block per key group, for the epoch after checkpoint `marker - 1`.
pub struct EmittedBlocks {
    pub blocks: Vec<Block>,
    /// Keys the store did not hold before, by key group.
    pub added: Vec<usize>,
    pub counts: EpochCounts,
    /// An epoch number above the last checkpoint's and at most the next
    /// one's: a group written at or after it is written in this epoch.
    pub marker: u64,
    /// Time (ns) spent writing them, from the writes timed.
    pub work_ns: u64,
    /// Writes until the next one timed.
    until_timed: u32,
}

impl EmittedBlocks {
    /// An epoch's writes as emitted, into `blocks` (empty, one per key
    /// group, sized for what the epoch will likely write).
    pub fn new(marker: u64, blocks: Vec<Block>) -> Self {
        debug_assert_eq!(blocks.len(), KEY_GROUPS as usize);
        EmittedBlocks {
            blocks,
            added: vec![0; KEY_GROUPS as usize],
            counts: EpochCounts::default(),
            marker,
            work_ns: 0,
            until_timed: 0,
        }
    }

    /// Counts a group of key group `kg` emitted and put in its block:
    /// `written` is the epoch it was last written in, and becomes the
    /// marker; `stored`, whether the store held it, becomes true.
    pub fn count(&mut self, kg: u16, written: &mut u64, stored: &mut bool) {
        self.counts.emissions += 1;
        if *written < self.marker {
            self.counts.groups += 1;
            *written = self.marker;
        }
        if !*stored {
            self.added[kg as usize] += 1;
            *stored = true;
        }
    }

    /// The start of a group's write if it is one of those timed.
    #[inline]
    pub fn timer(&mut self) -> Option<Instant> {
        if self.until_timed > 0 {
            self.until_timed -= 1;
            return None;
        }
        self.until_timed = TIMED_ONE_IN - 1;
        Some(Instant::now())
    }

    /// A write ends: if it was timed (from `timer`), its time, less what
    /// reading the clock costs, counts for it and the untimed ones.
    #[inline]
    pub fn timed(&mut self, timer: Option<Instant>) {
        if let Some(start) = timer {
            let spent = start.elapsed().saturating_sub(clock_cost());
            self.work_ns += spent.as_nanos() as u64 * u64::from(TIMED_ONE_IN);
        }
    }

    /// Entries put in each key group's block.
    pub fn entries(&self) -> impl Iterator<Item = usize> + '_ {
        self.blocks.iter().map(Block::entries)
    }
}

/// What timing nothing measures: the least of many back-to-back clock
/// reads, found once.
fn clock_cost() -> Duration {
    static COST: OnceLock<Duration> = OnceLock::new();
    *COST.get_or_init(|| {
        (0..256)
            .map(|_| Instant::now().elapsed())
            .min()
            .unwrap_or_default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn empty_blocks() -> Vec<Block> {
        (0..KEY_GROUPS).map(|_| Block::with_capacity(0)).collect()
    }

    /// Groups emitted about once each are written on emission (1.25
    /// emissions a group is the bound); more often, or too few groups, by
    /// the checkpoint.
    #[test]
    fn emissions_per_group_decide_the_next_epoch() {
        let counts = |emissions, groups| EpochCounts { emissions, groups };
        assert!(counts(870_000, 860_000).write_on_emission());
        assert!(counts(12_500, 10_000).write_on_emission());
        assert!(!counts(12_501, 10_000).write_on_emission());
        assert!(!counts(1_130_000, 700_000).write_on_emission());
        assert!(!counts(3_000, 3_000).write_on_emission());
        assert!(!counts(0, 0).write_on_emission());
    }

    /// One write in 32 is timed, and its time counts for 32: two timed
    /// writes of 2 ms or more, among 64, make at least 128 ms.
    #[test]
    fn one_write_in_32_is_timed_for_all_32() {
        let mut e = EmittedBlocks::new(1, empty_blocks());
        let mut timed = 0;
        for _ in 0..64 {
            let timer = e.timer();
            if timer.is_some() {
                timed += 1;
                std::thread::sleep(Duration::from_millis(2));
            }
            e.timed(timer);
        }
        assert_eq!(timed, 2);
        assert!(e.work_ns >= 128_000_000, "{} ns", e.work_ns);
    }

    /// A group is counted once an epoch however often it is emitted, and
    /// as added only the first time it is stored.
    #[test]
    fn each_group_counts_once_and_new_keys_are_added_once() {
        let mut e = EmittedBlocks::new(7, empty_blocks());
        let (mut written, mut stored) = (3, true);
        e.count(5, &mut written, &mut stored);
        e.count(5, &mut written, &mut stored);
        let (mut new_written, mut new_stored) = (0, false);
        e.count(9, &mut new_written, &mut new_stored);
        e.count(9, &mut new_written, &mut new_stored);
        assert_eq!(
            e.counts,
            EpochCounts {
                emissions: 4,
                groups: 2
            }
        );
        assert_eq!((written, new_written, new_stored), (7, 7, true));
        assert_eq!((e.added[5], e.added[9]), (0, 1));
    }
}
