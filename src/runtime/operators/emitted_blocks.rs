//! An epoch's blocks filled as the aggregate emits its groups, while each
//! group is in the cache, instead of by the checkpoint, which would read
//! every changed group again; and when that pays: when groups are emitted
//! about once an epoch (many keys, each seldom touched), so that few are
//! written twice.

use crate::state::{Block, KEY_GROUPS};

/// Emissions per changed group up to which an epoch's groups are written
/// as they are emitted (as a fraction: 3/2). Beyond it, the groups written
/// twice or more cost more than reading each once at the checkpoint.
const MOST_EMISSIONS: (usize, usize) = (3, 2);

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
}

impl EmittedBlocks {
    pub fn new(marker: u64) -> Self {
        EmittedBlocks {
            blocks: (0..KEY_GROUPS).map(|_| Block::with_capacity(0)).collect(),
            added: vec![0; KEY_GROUPS as usize],
            counts: EpochCounts::default(),
            marker,
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

    /// Entries put in each key group's block.
    pub fn entries(&self) -> impl Iterator<Item = usize> + '_ {
        self.blocks.iter().map(Block::entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Groups emitted once or twice in about equal numbers are written on
    /// emission (1.5 emissions a group is the bound); three times each,
    /// or too few groups, by the checkpoint.
    #[test]
    fn emissions_per_group_decide_the_next_epoch() {
        let counts = |emissions, groups| EpochCounts { emissions, groups };
        assert!(counts(870_000, 860_000).write_on_emission());
        assert!(counts(15_000, 10_000).write_on_emission());
        assert!(!counts(15_001, 10_000).write_on_emission());
        assert!(!counts(1_130_000, 700_000).write_on_emission());
        assert!(!counts(3_000, 3_000).write_on_emission());
        assert!(!counts(0, 0).write_on_emission());
    }

    /// A group is counted once an epoch however often it is emitted, and
    /// as added only the first time it is stored.
    #[test]
    fn each_group_counts_once_and_new_keys_are_added_once() {
        let mut e = EmittedBlocks::new(7);
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
