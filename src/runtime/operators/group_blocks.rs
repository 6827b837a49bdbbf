//! Which blocks of an in-memory keyed operator's state the store holds, by
//! key group, and when a key group's blocks are replaced by one block of
//! its whole state (see [`crate::state::Block`]).

use std::collections::BTreeMap;

use crate::state::{Block, OperatorWriter, BLOCK_FILE_MIN_BYTES, KEY_GROUPS};

/// A key group's blocks.
#[derive(Default, Clone)]
struct KeyGroup {
    /// Epochs of its stored blocks, oldest first, and their entries.
    epochs: Vec<(u64, usize)>,
    /// Entries in them.
    entries: usize,
    /// Keys it holds: as many as when it was last written whole (or
    /// restored), plus those added since, less those deleted.
    live: usize,
}

/// A key group is written whole, its other blocks deleted, once its blocks
/// hold more than this many times as many entries as it has keys (a key
/// written again in every epoch piles up entries; a new key adds one entry
/// and one key, so growth alone never rewrites it). Writing whole is the
/// blocks' garbage collection: keys rewritten at a steady rate cost
/// `1 / (WHOLE_AT - 1)` of their own writes again in rewrites, and the
/// store holds (and a restore reads) up to `WHOLE_AT` entries a key. At
/// three, rewrites cost half the epochs' own writes (at two, as much).
const WHOLE_AT: usize = 3;

/// A key group is also written whole once it holds this many blocks
/// (restores read each) plus its number modulo [`SPREAD`]: key groups that
/// gain a block every epoch are then not all written whole by the same
/// checkpoint.
const MAX_BLOCKS: usize = 256;

const SPREAD: usize = 64;

/// Entries a key group may always hold before it is written whole.
const MIN_ENTRIES: usize = 1024;

/// An epoch's blocks written as one file stay on disk while any of them
/// is live: once fewer than one entry in this many of an epoch's is in a
/// live block, the key groups still holding its blocks are written whole,
/// and its file goes (a key group written to now and then would otherwise
/// keep whole epochs' files).
const LIVE_SHARE: usize = 4;

/// Entries an epoch's blocks hold: written, and still in live blocks.
#[derive(Default, Clone, Copy, Debug, PartialEq)]
struct EpochEntries {
    written: usize,
    live: usize,
}

pub struct GroupBlocks {
    groups: Vec<KeyGroup>,
    /// The epochs of the live blocks.
    epochs: BTreeMap<u64, EpochEntries>,
    /// Bytes per entry in the blocks last written (sizes the next ones,
    /// which would otherwise grow by copying themselves over and over).
    entry_bytes: usize,
    /// Every key group is written whole at the next checkpoint (its state
    /// was restored from one key each, and those keys go).
    all: bool,
}

impl GroupBlocks {
    pub fn new() -> Self {
        GroupBlocks {
            groups: vec![KeyGroup::default(); KEY_GROUPS as usize],
            epochs: BTreeMap::new(),
            entry_bytes: 64,
            all: false,
        }
    }

    /// The next checkpoint writes every key group whole.
    pub fn rewrite_all(&mut self) {
        self.all = true;
    }

    /// Which key groups the checkpoint writing `entries[kg]` entries of
    /// each, `made[kg]` of them for new keys, writes whole.
    pub fn whole(&self, entries: &[usize], made: &[usize]) -> Vec<bool> {
        // Epochs of files mostly dead (as far as this operator's blocks show).
        let min_file_entries = BLOCK_FILE_MIN_BYTES / self.entry_bytes.max(1);
        let sparse: Vec<u64> = (self.epochs.iter())
            .filter(|(_, e)| e.written >= min_file_entries && e.live * LIVE_SHARE < e.written)
            .map(|(&epoch, _)| epoch)
            .collect();
        (self.groups.iter().zip(entries).zip(made).enumerate())
            .map(|(kg, ((g, &n), &made))| {
                self.all
                    || g.epochs.len() >= MAX_BLOCKS + kg % SPREAD
                    || (n > 0 && g.entries + n > (WHOLE_AT * (g.live + made)).max(MIN_ENTRIES))
                    || (!sparse.is_empty() && g.epochs.iter().any(|(e, _)| sparse.contains(e)))
            })
            .collect()
    }

    /// Empty blocks for a checkpoint, one per key group, sized for the
    /// `entries[kg]` entries it writes, and for the whole key group where
    /// `whole[kg]`.
    pub fn blocks(&self, entries: &[usize], whole: &[bool]) -> Vec<Block> {
        (0..self.groups.len())
            .map(|kg| self.block(kg, entries[kg], whole[kg]))
            .collect()
    }

    /// An empty block for key group `kg`, as [`GroupBlocks::blocks`] makes.
    pub fn block(&self, kg: usize, entries: usize, whole: bool) -> Block {
        let n = entries + if whole { self.groups[kg].live } else { 0 };
        Block::with_capacity(n * self.entry_bytes * 9 / 8)
    }

    /// Blocks of `bytes` bytes in all, of `entries` entries, were written.
    pub fn sized(&mut self, bytes: usize, entries: usize) {
        if entries > 0 {
            self.entry_bytes = bytes.div_ceil(entries);
        }
    }

    /// Key group `kg`'s block of this epoch, of `entries` entries, was
    /// written; written `whole`, the older blocks are deleted.
    pub fn written(
        &mut self,
        state: &mut OperatorWriter<'_>,
        kg: u16,
        entries: usize,
        whole: bool,
    ) {
        let g = &mut self.groups[kg as usize];
        if whole {
            for (epoch, n) in g.epochs.drain(..) {
                state.delete_block(kg, epoch);
                if let Some(e) = self.epochs.get_mut(&epoch) {
                    e.live = e.live.saturating_sub(n);
                    if e.live == 0 {
                        self.epochs.remove(&epoch);
                    }
                }
            }
            g.entries = 0;
            g.live = entries;
        }
        if entries > 0 {
            g.epochs.push((state.epoch(), entries));
            g.entries += entries;
            self.count_live(state.epoch(), entries);
        }
    }

    /// A live block of `epoch` holds `entries` entries.
    fn count_live(&mut self, epoch: u64, entries: usize) {
        let e = self.epochs.entry(epoch).or_default();
        e.written += entries;
        e.live += entries;
    }

    /// Key group `kg`'s blocks of this epoch add `added` keys and delete
    /// `deleted` (before [`GroupBlocks::written`], which counts a key
    /// group written whole anew).
    pub fn keys_changed(&mut self, kg: u16, added: usize, deleted: usize) {
        let g = &mut self.groups[kg as usize];
        g.live = (g.live + added).saturating_sub(deleted);
    }

    /// The checkpoint wrote everything `whole` asked for.
    pub fn checkpointed(&mut self) {
        self.all = false;
    }

    /// A block of key group `kg` of `entries` entries was restored.
    pub fn restored(&mut self, kg: u16, epoch: u64, entries: usize) {
        let g = &mut self.groups[kg as usize];
        g.epochs.push((epoch, entries));
        g.entries += entries;
        g.live = g.entries;
        self.count_live(epoch, entries);
    }

    /// Key group `kg`'s restored blocks hold `keys` keys (the last entry
    /// of each not a deletion): its entries beyond them are garbage.
    pub fn restored_keys(&mut self, kg: u16, keys: usize) {
        self.groups[kg as usize].live = keys;
    }

    /// The blocks restored: (key group, epoch).
    pub fn stored(&self) -> Vec<(u16, u64)> {
        (0..KEY_GROUPS)
            .flat_map(|kg| {
                self.groups[kg as usize]
                    .epochs
                    .iter()
                    .map(move |&(e, _)| (kg, e))
            })
            .collect()
    }

    /// Forgets every block (their state went elsewhere).
    pub fn clear(&mut self) {
        *self = GroupBlocks::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A job's checkpoint store in a temporary directory (kept while the guard lives).
    fn temp_job() -> (tempfile::TempDir, crate::state::JobState) {
        let dir = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(crate::state::Store::open(dir.path()).unwrap());
        (dir, crate::state::JobState::new(store, 1))
    }

    /// Every key group gains a block of one entry each epoch: each is
    /// written whole once it has some 256 blocks, never more than 320, and
    /// no checkpoint writes more than a few of them whole.
    #[test]
    fn key_groups_gaining_a_block_each_epoch_are_written_whole_apart() {
        let (_dir, job) = temp_job();
        let mut blocks = GroupBlocks::new();
        let kgs = KEY_GROUPS as usize;
        let mut most = 0;
        let mut rewritten = vec![0; kgs];
        for epoch in 1..=700 {
            let entries = vec![1; kgs];
            let whole = blocks.whole(&entries, &vec![0; kgs]);
            most = most.max(whole.iter().filter(|&&w| w).count());
            let mut w = job.begin(epoch);
            let mut op = w.operator(0);
            for (kg, &whole) in whole.iter().enumerate() {
                // A key group written whole holds its one key.
                blocks.written(&mut op, kg as u16, 1, whole);
                rewritten[kg] += whole as usize;
            }
            blocks.checkpointed();
            assert!(blocks
                .groups
                .iter()
                .all(|g| g.epochs.len() <= MAX_BLOCKS + SPREAD));
        }
        assert!(
            most <= kgs.div_ceil(SPREAD),
            "{most} key groups written whole at once"
        );
        assert!(rewritten.iter().all(|&n| n >= 2), "{rewritten:?}");
    }

    /// Key group 0 gains 5,000 new keys an epoch; key group 1 holds 5,000
    /// keys and rewrites all of them each epoch; key group 2 gains 5,000
    /// new keys an epoch and rewrites 1,000 of its old ones. Growth is
    /// never written whole, nor is key group 2: its entries (5,000 + 6,000
    /// an epoch after the first) never pass three times its keys (5,000
    /// an epoch). Key group 1 is, once its blocks would hold more than
    /// three times its keys: 5,000 entries after the first epoch, 15,000
    /// after the third, and the fourth's 20,000 would pass 15,000; from
    /// then on every third epoch (the whole block's 5,000 entries and two
    /// epochs' more).
    #[test]
    fn growth_alone_is_never_written_whole() {
        let (_dir, job) = temp_job();
        let mut blocks = GroupBlocks::new();
        let mut wholes = Vec::new();
        for epoch in 1..=8 {
            let mut entries = vec![0; KEY_GROUPS as usize];
            let mut made = vec![0; KEY_GROUPS as usize];
            entries[0] = 5_000;
            entries[1] = 5_000;
            entries[2] = if epoch == 1 { 5_000 } else { 6_000 };
            made[0] = 5_000;
            made[1] = if epoch == 1 { 5_000 } else { 0 };
            made[2] = 5_000;
            let whole = blocks.whole(&entries, &made);
            let mut w = job.begin(epoch);
            let mut op = w.operator(0);
            for kg in [0, 1, 2] {
                blocks.keys_changed(kg, made[kg as usize], 0);
                let n = entries[kg as usize];
                blocks.written(&mut op, kg, n, whole[kg as usize]);
            }
            blocks.checkpointed();
            wholes.push((whole[0], whole[1], whole[2]));
        }
        assert!(wholes.iter().all(|w| !w.0 && !w.2), "{wholes:?}");
        let rewrites: Vec<bool> = wholes.iter().map(|w| w.1).collect();
        assert_eq!(
            rewrites,
            [false, false, false, true, false, false, true, false],
            "{wholes:?}"
        );
        assert_eq!(blocks.groups[0].live, 40_000);
    }

    /// Every key group writes 200 entries in epoch 1 (a file's worth);
    /// then key groups are written whole one by one. While a quarter or
    /// more of epoch 1's entries are live nothing else is; once fewer
    /// are, the key groups still holding epoch 1's blocks are written
    /// whole, and after that no epoch is kept for them.
    #[test]
    fn key_groups_keeping_a_mostly_dead_epoch_are_written_whole() {
        let (_dir, job) = temp_job();
        let mut blocks = GroupBlocks::new();
        let kgs = KEY_GROUPS as usize;
        let none = vec![0; kgs];
        let mut w = job.begin(1);
        let mut op = w.operator(0);
        for kg in 0..KEY_GROUPS {
            blocks.keys_changed(kg, 200, 0);
            blocks.written(&mut op, kg, 200, false);
        }
        blocks.checkpointed();
        assert!(200 * kgs >= BLOCK_FILE_MIN_BYTES / blocks.entry_bytes);
        let mut w = job.begin(2);
        let mut op = w.operator(0);
        // 96 of 128 written whole: a quarter of epoch 1 live, not less.
        for kg in 0..96 {
            blocks.written(&mut op, kg, 200, true);
        }
        assert_eq!(blocks.whole(&none, &none), vec![false; kgs]);
        blocks.written(&mut op, 96, 200, true);
        let whole = blocks.whole(&none, &none);
        let want: Vec<bool> = (0..kgs).map(|kg| kg > 96).collect();
        assert_eq!(whole, want);
        let mut w = job.begin(3);
        let mut op = w.operator(0);
        for (kg, &whole) in whole.iter().enumerate() {
            if whole {
                blocks.written(&mut op, kg as u16, 200, true);
            }
        }
        assert!(!blocks.epochs.contains_key(&1), "epoch 1 has no live block");
        assert_eq!(blocks.whole(&none, &none), vec![false; kgs]);
    }
}
