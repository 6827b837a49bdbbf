//! One side of a join: its rows by join key (row-encoded, each with how
//! many times it is there), kept for the other side's rows to meet.
//!
//! A key's rows are checkpointed as records: a checkpoint writes the rows a
//! key gained since the last one as its next record, so rows that stay are
//! not written again each epoch. A key whose stored rows changed (a row
//! removed, or counted again), or that has `MAX_RECORDS` records, is written
//! whole as record 0 and its other records are deleted.
//!
//! An interval join's append-only side, whose rows only leave by expiring,
//! is checkpointed by time instead: the rows its keys gained in an epoch
//! (those still held at the checkpoint) are written as one segment per key
//! group, deleted once the watermark has passed every row in it, so that a
//! row is neither written per key nor deleted per key. A restore reads the
//! segments back; rows that expired since go at the next watermark.
//!
//! Under a memory budget, keys unchanged since a committed checkpoint can
//! leave memory (their records stay in the store) and are read back when a
//! row for them comes again. Such a budget reads a key's rows back by key,
//! so under one every side is written by key (segments read back are
//! rewritten by key).
//!
//! The side of an interval join also keeps, per row, the watermark at which
//! the row expires (not stored: recomputed from the row when it is read back),
//! and its keys in a queue by when their first row expires. A key whose
//! rows all expire before any checkpoint stored them leaves memory at once.
//! The side an outer join keeps every row of also keeps, per row, how many
//! rows of the other side it meets (not stored either: recounted from both
//! sides' rows of the key when they are read back).

use std::collections::{BTreeMap, VecDeque};
use std::hash::BuildHasher;

use hashbrown::{DefaultHashBuilder, HashMap, HashTable};
use smallvec::SmallVec;

use crate::runtime::RuntimeError;
use crate::state::{key_group, OperatorWriter};

/// Records a key's rows may be split into before a checkpoint rewrites them as one.
const MAX_RECORDS: u8 = 16;

/// A key of an updating side with this many rows finds a row through a
/// hash index instead of comparing it with each (a window's counts joined
/// with its maximum: thousands of rows per key, each updated often).
const INDEX_FROM: usize = 8;

/// A stored row and how many times it is there.
pub type Counted = (Box<[u8]>, u32);

/// Estimated bytes of a key's entry besides its rows (slot, index entry,
/// key, fields), and of a row besides its bytes (box, count, vector slot,
/// index entry when there is one).
const KEY_BASE: usize = 128;
const ROW_BASE: usize = 48;

/// A key's place in [`SideRows::slots`]. The dirty list and the expiry
/// queue hold these instead of copies of the key: an entry left behind by
/// a key that has gone names a free slot (skipped) or the slot's next key
/// (for which looking again is harmless).
type Slot = u32;

#[derive(Default)]
struct KeyRows {
    /// Short keys (a BIGINT's is 9 bytes) are kept in the slot.
    key: SmallVec<[u8; 16]>,
    /// In use (else on the free list).
    live: bool,
    /// Most keys of a large side hold one row: it is kept in the slot.
    rows: SmallVec<[Counted; 1]>,
    /// Per row, when it expires (an interval join's side; else empty).
    expiry: SmallVec<[i64; 1]>,
    /// When the key is next looked at for expired rows (it is queued then).
    next_due: Option<i64>,
    /// Per row, how many rows of the other side it meets (an outer join's
    /// kept side; else empty).
    degree: Vec<u32>,
    /// How many of `rows` (a prefix) committed records hold.
    flushed: usize,
    /// The key's records: entries 0..records.
    records: u8,
    /// A row the records hold changed: the next checkpoint writes them all.
    rewrite: bool,
    /// Listed in `SideRows::dirty`.
    dirty: bool,
    /// Each row's position in `rows`, once a row was looked for among many
    /// (rows of an updating side are unique: equal ones are counted).
    index: Option<Box<HashMap<Box<[u8]>, usize>>>,
    /// Estimated bytes of its rows.
    bytes: usize,
    /// When it was last touched (the side's count of touches).
    touched: u64,
    /// The epoch whose checkpoint last wrote it (0: restored).
    written: u64,
}

impl KeyRows {
    /// Empties a slot for its next key, keeping small vectors' room.
    fn clear(&mut self) {
        let room = |capacity: usize| capacity <= 4;
        self.key = SmallVec::new();
        self.live = false;
        self.rows.clear();
        if !room(self.rows.capacity()) {
            self.rows = SmallVec::new();
        }
        self.expiry.clear();
        if !room(self.expiry.capacity()) {
            self.expiry = SmallVec::new();
        }
        self.degree.clear();
        self.next_due = None;
        self.flushed = 0;
        self.records = 0;
        self.rewrite = false;
        self.dirty = false;
        self.index = None;
        self.bytes = 0;
        self.touched = 0;
        self.written = 0;
    }

    /// Where an equal row is.
    fn find(&mut self, row: &[u8]) -> Option<usize> {
        if self.index.is_none() && self.rows.len() >= INDEX_FROM {
            let index = self.rows.iter().enumerate();
            self.index = Some(Box::new(index.map(|(i, (r, _))| (r.clone(), i)).collect()));
        }
        match &self.index {
            Some(index) => index.get(row).copied(),
            None => self.rows.iter().position(|(r, _)| **r == *row),
        }
    }

    fn push(&mut self, row: &[u8], expires: Option<i64>, degree: Option<u32>) {
        if let Some(at) = expires {
            self.expiry.push(at);
        }
        if let Some(d) = degree {
            self.degree.push(d);
        }
        self.bytes += ROW_BASE + row.len();
        let row: Box<[u8]> = row.into();
        if let Some(index) = &mut self.index {
            index.insert(row.clone(), self.rows.len());
        }
        self.rows.push((row, 1));
    }

    /// Takes out the rows that expire at or before `watermark`, keeping the
    /// others in order, so that the stored ones stay a prefix; returns the
    /// bytes freed.
    fn take_expired(&mut self, watermark: i64) -> usize {
        let (mut kept, mut stored_gone, mut freed) = (0, 0, 0);
        for i in 0..self.rows.len() {
            if self.expiry[i] <= watermark {
                freed += ROW_BASE + self.rows[i].0.len();
                stored_gone += usize::from(i < self.flushed);
                continue;
            }
            self.rows.swap(kept, i);
            self.expiry.swap(kept, i);
            if !self.degree.is_empty() {
                self.degree.swap(kept, i);
            }
            kept += 1;
        }
        if kept < self.rows.len() {
            self.index = None;
        }
        self.rows.truncate(kept);
        self.expiry.truncate(kept);
        self.degree.truncate(kept);
        self.flushed -= stored_gone;
        self.rewrite |= stored_gone > 0;
        self.bytes -= freed;
        freed
    }

    /// Takes row `i` out; the last row takes its place.
    fn take(&mut self, i: usize) {
        let (row, _) = self.rows.swap_remove(i);
        if !self.expiry.is_empty() {
            self.expiry.swap_remove(i);
        }
        if !self.degree.is_empty() {
            self.degree.swap_remove(i);
        }
        self.bytes -= ROW_BASE + row.len();
        if let Some(index) = &mut self.index {
            index.remove(&row);
            if let Some((moved, _)) = self.rows.get(i) {
                index.insert(moved.clone(), i);
            }
        }
    }
}

/// Slots by when to look at them, in buckets of 2^27 ns (about 134 ms):
/// a vector per bucket, not one per distinct time.
#[derive(Default)]
struct DueQueue {
    buckets: BTreeMap<i64, Vec<(i64, Slot)>>,
}

const BUCKET_BITS: u32 = 27;

impl DueQueue {
    fn push(&mut self, at: i64, s: Slot) {
        let bucket = self.buckets.entry(at >> BUCKET_BITS).or_default();
        bucket.push((at, s));
    }

    /// Takes the slots due at or before `watermark`.
    fn take(&mut self, watermark: i64) -> Vec<Slot> {
        let mut due = Vec::new();
        while let Some(mut first) = self.buckets.first_entry() {
            let start = *first.key() << BUCKET_BITS;
            if start > watermark {
                break;
            }
            if start | ((1 << BUCKET_BITS) - 1) <= watermark {
                due.extend(first.remove().into_iter().map(|(_, s)| s));
                continue;
            }
            // The watermark is inside this bucket: the rest wait.
            first.get_mut().retain(|&(at, s)| {
                if at <= watermark {
                    due.push(s);
                }
                at > watermark
            });
            if first.get().is_empty() {
                first.remove();
            }
            break;
        }
        due
    }
}

/// The rows of one side, by encoded join key.
#[derive(Default)]
pub struct SideRows {
    /// The slot of each key in memory, hashed by the slot's key.
    index: HashTable<Slot>,
    hasher: DefaultHashBuilder,
    slots: Vec<KeyRows>,
    /// Free slots, taken in the order they were freed: keys come and
    /// expire in about the same order, so that expiry walks the slots
    /// about in order.
    free: VecDeque<Slot>,
    /// Keys changed since the last checkpoint.
    dirty: Vec<Slot>,
    /// Keys in memory by when to look at them for expired rows: each is
    /// queued for when its first row expires (and may be queued again earlier).
    due: DueQueue,
    /// Keys left in the store (not in memory), by when their first row expires.
    stored_due: BTreeMap<i64, Vec<Box<[u8]>>>,
    /// Estimated bytes of the keys in memory.
    bytes: usize,
    /// Touches so far (orders keys by when they were last touched).
    touches: u64,
    /// Some keys' rows are only in the store.
    pub spilled: bool,
    /// Keys may leave memory (a budget with a limit): a key left without
    /// rows stays (empty) until its deletion is committed, so that it is
    /// not read back from the store as it was.
    pub keeps_emptied: bool,
    /// Each row counts the rows of the other side it meets.
    counts_matches: bool,
    /// Rows that only leave by expiring (an interval join's append-only
    /// side) are checkpointed by time: see [`Segment`]. Not under a
    /// memory budget, which reads a key's rows back by key.
    pub segmented: bool,
    /// The segments in the store, until every row in them has expired.
    segments: Vec<Segment>,
    /// The last watermark rows were expired at.
    watermark: Option<i64>,
}

/// The rows that keys of one key group gained in one epoch, still held at
/// its checkpoint: one entry instead of one per key, deleted once the
/// watermark has passed every row in it. A key whose rows are in segments
/// has no records of its own.
struct Segment {
    key_group: u16,
    epoch: u64,
    /// When its last row expires.
    last: i64,
}

/// A segment's entry: the side, a mark no record number takes, its key
/// group and epoch.
fn segment_entry(side: u8, key_group: u16, epoch: u64) -> Vec<u8> {
    let mut entry = vec![side, SEGMENT];
    entry.extend_from_slice(&key_group.to_be_bytes());
    entry.extend_from_slice(&epoch.to_be_bytes());
    entry
}

const SEGMENT: u8 = 0xff;

/// The key group and epoch of a segment's entry, if `entry` is one.
pub fn segment_of(entry: &[u8]) -> Option<(u16, u64)> {
    match entry {
        [_, SEGMENT, rest @ ..] if rest.len() == 10 => Some((
            u16::from_be_bytes([rest[0], rest[1]]),
            u64::from_be_bytes(rest[2..].try_into().ok()?),
        )),
        _ => None,
    }
}

impl SideRows {
    /// The rows of a side whose every row comes out of an outer join: each
    /// counts the rows of the other side it meets.
    pub fn counting_matches() -> Self {
        SideRows {
            counts_matches: true,
            ..SideRows::default()
        }
    }

    /// The slot of a key in memory.
    fn slot(&self, key: &[u8]) -> Option<Slot> {
        let hash = self.hasher.hash_one(key);
        let slots = &self.slots;
        self.index
            .find(hash, |&s| *slots[s as usize].key == *key)
            .copied()
    }

    /// A key's rows in memory, if it is there.
    fn rows_of(&self, key: &[u8]) -> Option<&KeyRows> {
        self.slot(key).map(|s| &self.slots[s as usize])
    }

    fn rows_of_mut(&mut self, key: &[u8]) -> Option<&mut KeyRows> {
        self.slot(key).map(|s| &mut self.slots[s as usize])
    }

    /// The slot of a key, a new empty one (counted in `bytes`) if it has none.
    fn slot_or_new(&mut self, key: &[u8]) -> Slot {
        let hash = self.hasher.hash_one(key);
        let Self {
            index,
            hasher,
            slots,
            free,
            ..
        } = self;
        if let Some(&s) = index.find(hash, |&s| *slots[s as usize].key == *key) {
            return s;
        }
        self.bytes += KEY_BASE + key.len();
        let s = match free.pop_front() {
            Some(s) => s,
            None => {
                slots.push(KeyRows::default());
                (slots.len() - 1) as Slot
            }
        };
        let k = &mut slots[s as usize];
        k.key = SmallVec::from_slice(key);
        k.live = true;
        index.insert_unique(hash, s, |&s| hasher.hash_one(&slots[s as usize].key[..]));
        s
    }

    /// Takes a key out of memory; its slot goes back on the free list.
    fn free_slot(&mut self, s: Slot) {
        let k = &mut self.slots[s as usize];
        let hash = self.hasher.hash_one(&k.key[..]);
        if let Ok(entry) = self.index.find_entry(hash, |&x| x == s) {
            entry.remove();
        }
        self.bytes -= KEY_BASE + k.key.len() + k.bytes;
        k.clear();
        self.free.push_back(s);
    }

    /// A key in memory whose rows do not know how many they meet (read
    /// back from the store, or restored).
    pub fn matches_unknown(&self, key: &[u8]) -> bool {
        self.counts_matches
            && self
                .rows_of(key)
                .is_some_and(|k| k.degree.len() != k.rows.len())
    }

    /// Sets how many rows of the other side each row of a key meets.
    pub fn set_matches(&mut self, key: &[u8], degree: Vec<u32>) {
        if let Some(k) = self.rows_of_mut(key) {
            debug_assert_eq!(degree.len(), k.rows.len());
            k.degree = degree;
        }
    }

    /// Row `i` of a key meets `delta` more rows; returns how many it met before.
    pub fn add_matches(&mut self, key: &[u8], i: usize, delta: i64) -> u32 {
        let Some(d) = self.rows_of_mut(key).and_then(|k| k.degree.get_mut(i)) else {
            return 0;
        };
        let before = *d;
        *d = (before as i64 + delta).max(0) as u32;
        before
    }

    /// Marks a key touched and changed (listed for the next checkpoint).
    fn touch(&mut self, s: Slot) -> &mut KeyRows {
        self.touches += 1;
        let k = &mut self.slots[s as usize];
        k.touched = self.touches;
        if !k.dirty {
            k.dirty = true;
            self.dirty.push(s);
        }
        k
    }

    /// Whether a key's rows are in memory (or it has none anywhere).
    pub fn has(&self, key: &[u8]) -> bool {
        !self.spilled || self.holds(key)
    }

    /// Whether a key is in memory.
    pub fn holds(&self, key: &[u8]) -> bool {
        self.slot(key).is_some()
    }

    /// Estimated bytes in memory.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The keys that may leave memory (unchanged since a checkpoint that is
    /// committed): (last touched, key, bytes).
    pub fn evictable(&self, committed: u64) -> Vec<(u64, &[u8], usize)> {
        self.slots
            .iter()
            .filter(|k| k.live && !k.dirty && k.written <= committed)
            .map(|k| (k.touched, &k.key[..], KEY_BASE + k.key.len() + k.bytes))
            .collect()
    }

    /// Drops a key from memory (its records stay in the store; if its rows
    /// expire, it is queued to be read back then).
    pub fn evict(&mut self, key: &[u8]) {
        if let Some(s) = self.slot(key) {
            if let Some(at) = self.slots[s as usize].next_due {
                self.stored_due.entry(at).or_default().push(key.into());
            }
            self.free_slot(s);
            self.spilled = true;
        }
    }

    /// Adds a row. `merge`: count it with an equal row already there
    /// (an updating input, whose rows come and go) instead of appending it.
    /// `expires`: the watermark at which it expires (every row of a side
    /// has one, or none has).
    pub fn add(&mut self, key: &[u8], row: &[u8], merge: bool, expires: Option<i64>, matches: u32) {
        let counts = self.counts_matches;
        let s = self.slot_or_new(key);
        let k = self.touch(s);
        if merge {
            if let Some(i) = k.find(row) {
                k.rows[i].1 += 1;
                k.rewrite |= i < k.flushed;
                return;
            }
        }
        k.push(row, expires, counts.then_some(matches));
        let queue = match (expires, k.next_due) {
            (Some(at), Some(due)) if due <= at => None,
            (Some(at), _) => {
                k.next_due = Some(at);
                Some(at)
            }
            (None, _) => None,
        };
        self.bytes += ROW_BASE + row.len();
        if let Some(at) = queue {
            self.due.push(at, s);
        }
    }

    /// Takes away one occurrence of a row; returns how many rows of the
    /// other side it met (0 when not counted), None when it was not there.
    pub fn remove(&mut self, key: &[u8], row: &[u8]) -> Option<u32> {
        let s = self.slot_or_new(key);
        let k = self.touch(s);
        let i = k.find(row)?;
        let met = k.degree.get(i).copied().unwrap_or(0);
        if k.rows[i].1 > 1 {
            k.rows[i].1 -= 1;
            k.rewrite |= i < k.flushed;
        } else {
            // The last row moves into its place: a stored row going means
            // the key is written whole at the next checkpoint. (Taking an
            // unstored row moves only unstored rows.)
            k.rewrite |= i < k.flushed;
            let len = k.rows[i].0.len();
            k.take(i);
            self.bytes -= ROW_BASE + len;
        }
        Some(met)
    }

    /// The keys left in the store whose first row expires by `watermark`,
    /// to be read back (and given their expiry) before [`SideRows::expire`].
    pub fn stored_due(&mut self, watermark: i64) -> Vec<Box<[u8]>> {
        let mut keys = Vec::new();
        while let Some(first) = self.stored_due.first_entry() {
            if *first.key() > watermark {
                break;
            }
            keys.extend(first.remove());
        }
        keys
    }

    /// Queues a key left in the store for when its first row expires.
    pub fn queue_stored(&mut self, at: i64, key: &[u8]) {
        self.stored_due.entry(at).or_default().push(key.into());
    }

    /// Takes out every row in memory that expires at or before `watermark`.
    pub fn expire(&mut self, watermark: i64) {
        self.watermark = self.watermark.max(Some(watermark));
        let slots = self.due.take(watermark);
        // A key queued twice is looked at once: the second time, it is
        // queued for later (or not at all).
        for s in slots {
            self.expire_slot(s, watermark);
        }
    }

    fn expire_slot(&mut self, s: Slot, watermark: i64) {
        let k = &self.slots[s as usize];
        // Gone, queued for later than this, or not timed yet: another entry stands.
        if !k.live || k.next_due.is_none_or(|due| due > watermark) || k.expiry.len() != k.rows.len()
        {
            return;
        }
        let k = self.touch(s);
        let freed = k.take_expired(watermark);
        k.next_due = k.expiry.iter().copied().min();
        let (next, gone) = (k.next_due, k.rows.is_empty() && k.records == 0);
        self.bytes -= freed;
        if let Some(at) = next {
            self.due.push(at, s);
        } else if gone && !self.keeps_emptied {
            // Nothing stored and nothing left: no checkpoint needs it.
            self.free_slot(s);
        }
    }

    /// The keys in memory whose rows have no expiry yet (read from the store).
    pub fn without_expiry(&self) -> Vec<Box<[u8]>> {
        self.slots
            .iter()
            .filter(|k| k.live && k.expiry.len() != k.rows.len())
            .map(|k| k.key[..].into())
            .collect()
    }

    /// Sets when each row of a key expires, in the order of
    /// [`SideRows::get`], and queues the key for the first.
    pub fn set_expiry(&mut self, key: &[u8], expiry: Vec<i64>) {
        let Some(s) = self.slot(key) else {
            return;
        };
        let k = &mut self.slots[s as usize];
        debug_assert_eq!(expiry.len(), k.rows.len());
        k.next_due = expiry.iter().copied().min();
        k.expiry = SmallVec::from_vec(expiry);
        if let Some(at) = k.next_due {
            self.due.push(at, s);
        }
    }

    /// The rows of a key.
    pub fn get(&self, key: &[u8]) -> &[Counted] {
        self.rows_of(key).map_or(&[], |k| k.rows.as_slice())
    }

    /// Writes what changed since the last checkpoint; `side` tells the
    /// sides' records apart.
    pub fn checkpoint(&mut self, side: u8, w: &mut OperatorWriter<'_>) {
        let epoch = w.epoch();
        let segmented = self.segmented && !self.keeps_emptied;
        // Per key group: the segment's bytes (when its last row expires, then
        // each key and its new rows) and when its last row expires.
        let mut groups: HashMap<u16, (Vec<u8>, i64)> = HashMap::new();
        for s in std::mem::take(&mut self.dirty) {
            let k = &mut self.slots[s as usize];
            // Listed again after it went and its slot was taken by another key.
            if !k.live || !k.dirty {
                continue;
            }
            k.dirty = false;
            k.written = epoch;
            if segmented && k.records == 0 {
                if k.rows.is_empty() {
                    self.free_slot(s);
                    continue;
                }
                if k.flushed < k.rows.len() {
                    let group = groups
                        .entry(key_group(&k.key))
                        .or_insert_with(|| (vec![0; 8], i64::MIN));
                    let last = match k.expiry.len() == k.rows.len() {
                        true => k.expiry[k.flushed..].iter().copied().max(),
                        false => None,
                    };
                    group.1 = group.1.max(last.unwrap_or(i64::MAX));
                    let out = &mut group.0;
                    out.extend_from_slice(&(k.key.len() as u32).to_le_bytes());
                    out.extend_from_slice(&k.key);
                    // The rows' length, once they are written after it.
                    let at = out.len();
                    out.extend_from_slice(&[0; 4]);
                    encode_into(&k.rows[k.flushed..], out);
                    let len = (out.len() - at - 4) as u32;
                    out[at..at + 4].copy_from_slice(&len.to_le_bytes());
                    k.flushed = k.rows.len();
                }
                k.rewrite = false;
                continue;
            }
            if k.rows.is_empty() {
                for r in 0..k.records {
                    w.delete_entry(&k.key, &[side, r]);
                }
                k.records = 0;
                if !self.keeps_emptied {
                    self.free_slot(s);
                }
                continue;
            }
            if k.rewrite || k.records >= MAX_RECORDS {
                w.put_entry(&k.key, &[side, 0], encode(&k.rows));
                for r in 1..k.records {
                    w.delete_entry(&k.key, &[side, r]);
                }
                k.records = 1;
            } else if k.flushed < k.rows.len() {
                w.put_entry(&k.key, &[side, k.records], encode(&k.rows[k.flushed..]));
                k.records += 1;
            }
            k.flushed = k.rows.len();
            k.rewrite = false;
        }
        for (key_group, (mut bytes, last)) in groups {
            bytes[..8].copy_from_slice(&last.to_le_bytes());
            w.put_group_entry(key_group, &segment_entry(side, key_group, epoch), bytes);
            self.segments.push(Segment {
                key_group,
                epoch,
                last,
            });
        }
        let watermark = self.watermark;
        self.segments.retain(|s| {
            // (A segment read back to be written by key has `last` MIN.)
            let expired = s.last == i64::MIN || watermark.is_some_and(|w| s.last <= w);
            if expired {
                w.delete_group_entry(s.key_group, &segment_entry(side, s.key_group, s.epoch));
            }
            !expired
        });
    }

    /// Loads a segment (see [`Segment`]). Not checkpointing by segments (a
    /// memory budget), its keys are written by key at the next checkpoint
    /// and it is deleted then.
    pub fn restore_segment(
        &mut self,
        key_group: u16,
        epoch: u64,
        value: &[u8],
    ) -> Result<(), RuntimeError> {
        let corrupt = || RuntimeError::Internal("a join state segment is cut short".into());
        let (head, mut bytes) = value.split_first_chunk::<8>().ok_or_else(corrupt)?;
        let mut last = i64::from_le_bytes(*head);
        let by_key = !self.segmented || self.keeps_emptied;
        while !bytes.is_empty() {
            let key = length_prefixed(&mut bytes).ok_or_else(corrupt)?;
            let rows = length_prefixed(&mut bytes).ok_or_else(corrupt)?;
            let s = self.load_rows(key, rows)?;
            if by_key {
                self.touch(s).rewrite = true;
            }
        }
        if by_key {
            last = i64::MIN;
        }
        self.segments.push(Segment {
            key_group,
            epoch,
            last,
        });
        Ok(())
    }

    /// Loads record `record` of a key (records of a key in order).
    pub fn restore(&mut self, key: &[u8], record: u8, value: &[u8]) -> Result<(), RuntimeError> {
        let s = self.load_rows(key, value)?;
        let k = &mut self.slots[s as usize];
        k.records = k.records.max(record + 1);
        Ok(())
    }

    /// Adds stored rows (encoded as [`encode`] does) to a key's; returns its slot.
    fn load_rows(&mut self, key: &[u8], encoded: &[u8]) -> Result<Slot, RuntimeError> {
        let s = self.slot_or_new(key);
        let k = &mut self.slots[s as usize];
        let before = k.rows.len();
        decode(encoded, |row| k.rows.push(row))?;
        let added: usize = k.rows[before..]
            .iter()
            .map(|(r, _)| ROW_BASE + r.len())
            .sum();
        k.bytes += added;
        k.flushed = k.rows.len();
        self.bytes += added;
        Ok(s)
    }

    /// Reads a key that left memory back from its records in the store
    /// (`records`: this side's, in order); a key with none comes back empty.
    pub fn load(&mut self, key: &[u8], records: &[(u8, Vec<u8>)]) -> Result<(), RuntimeError> {
        self.slot_or_new(key);
        for (r, value) in records {
            self.restore(key, *r, value)?;
        }
        Ok(())
    }
}

/// Rows as (u32 length, row, u32 count)*, little-endian.
fn encode(rows: &[Counted]) -> Vec<u8> {
    let mut out = Vec::with_capacity(rows.iter().map(|(r, _)| r.len() + 8).sum());
    encode_into(rows, &mut out);
    out
}

fn encode_into(rows: &[Counted], out: &mut Vec<u8>) {
    for (row, count) in rows {
        out.extend_from_slice(&(row.len() as u32).to_le_bytes());
        out.extend_from_slice(row);
        out.extend_from_slice(&count.to_le_bytes());
    }
}

/// The next (u32 length, bytes) part of `bytes`, little-endian; None when
/// cut short.
fn length_prefixed<'a>(bytes: &mut &'a [u8]) -> Option<&'a [u8]> {
    let (len, rest) = bytes.split_first_chunk::<4>()?;
    let part = rest.get(..u32::from_le_bytes(*len) as usize)?;
    *bytes = &rest[part.len()..];
    Some(part)
}

/// The rows of one stored record.
pub fn decode_rows(bytes: &[u8]) -> Result<Vec<Counted>, RuntimeError> {
    let mut rows = Vec::new();
    decode(bytes, |row| rows.push(row))?;
    Ok(rows)
}

fn decode(mut bytes: &[u8], mut push: impl FnMut(Counted)) -> Result<(), RuntimeError> {
    let corrupt = || RuntimeError::Internal("a join state record is cut short".into());
    while !bytes.is_empty() {
        let row = length_prefixed(&mut bytes).ok_or_else(corrupt)?;
        let (count, rest) = bytes.split_first_chunk::<4>().ok_or_else(corrupt)?;
        bytes = rest;
        push((row.into(), u32::from_le_bytes(*count)));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn an_updating_side_counts_rows_as_a_multiset_does() {
        // Rows come and go, many to a key so that they are found through
        // the index; after each change the key holds what a plain count
        // per row holds.
        let mut side = SideRows::default();
        let mut model: BTreeMap<Vec<u8>, u32> = BTreeMap::new();
        let mut x: u64 = 7;
        for step in 0..3000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let row = vec![(x % 40) as u8, 1, 2];
            if x.is_multiple_of(3) {
                let there = model.get(&row).copied().unwrap_or(0) > 0;
                assert_eq!(side.remove(b"k", &row).is_some(), there, "step {step}");
                if there {
                    *model.get_mut(&row).unwrap() -= 1;
                }
            } else {
                side.add(b"k", &row, true, None, 0);
                *model.entry(row).or_default() += 1;
            }
            let mut got: Vec<(Vec<u8>, u32)> = side
                .get(b"k")
                .iter()
                .map(|(r, c)| (r.to_vec(), *c))
                .collect();
            got.sort();
            let want: Vec<(Vec<u8>, u32)> = model
                .iter()
                .filter(|(_, c)| **c > 0)
                .map(|(r, c)| (r.clone(), *c))
                .collect();
            assert_eq!(got, want, "step {step}");
        }
    }

    #[test]
    fn expired_rows_leave_and_emptied_keys_free_their_slots() {
        // Rows with random expiry times under a few keys, the watermark
        // advancing now and then: each key holds what a plain list of
        // unexpired rows holds, keys left empty leave memory at once (no
        // checkpoint has stored them), and their slots are used again
        // without the queue entries they leave behind doing harm.
        let mut side = SideRows::default();
        let mut model: BTreeMap<u8, Vec<(Vec<u8>, i64)>> = BTreeMap::new();
        let mut next = crate::testing::below(11);
        let mut watermark = 0;
        for step in 0..5000 {
            if next(5) == 0 {
                watermark += next(8) as i64;
                side.expire(watermark);
                for rows in model.values_mut() {
                    rows.retain(|(_, at)| *at > watermark);
                }
            } else {
                let key = next(12) as u8;
                let row = vec![key, next(256) as u8];
                let at = watermark + 1 + next(20) as i64;
                side.add(&[key], &row, false, Some(at), 0);
                model.entry(key).or_default().push((row, at));
            }
            for key in 0..12u8 {
                let mut got: Vec<Vec<u8>> =
                    side.get(&[key]).iter().map(|(r, _)| r.to_vec()).collect();
                let mut want: Vec<Vec<u8>> = model
                    .get(&key)
                    .map(|rows| rows.iter().map(|(r, _)| r.clone()).collect())
                    .unwrap_or_default();
                got.sort();
                want.sort();
                assert_eq!(got, want, "step {step}, key {key}");
                assert_eq!(
                    side.holds(&[key]),
                    !want.is_empty(),
                    "step {step}, key {key}"
                );
            }
        }
        assert!(side.slots.len() <= 12, "{} slots", side.slots.len());
        side.expire(i64::MAX);
        assert_eq!(side.bytes(), 0);
    }

    #[test]
    fn the_due_queue_gives_each_slot_once_when_its_time_is_passed() {
        // Times spread over several buckets and around zero; the watermark
        // stops inside buckets and on their edges.
        let mut queue = DueQueue::default();
        let mut next = crate::testing::below(5);
        let step = 1i64 << BUCKET_BITS;
        let mut waiting: Vec<(i64, Slot)> = Vec::new();
        let mut watermark = -3 * step;
        let mut slot = 0;
        while watermark < 6 * step {
            for _ in 0..next(20) {
                let at = watermark + 1 + next(3 * step as u64) as i64;
                queue.push(at, slot);
                waiting.push((at, slot));
                slot += 1;
            }
            watermark += match next(4) {
                0 => step,
                1 => next(step as u64) as i64,
                // Exactly to a waiting slot's time.
                2 if !waiting.is_empty() => {
                    let (at, _) = waiting[next(waiting.len() as u64) as usize];
                    at - watermark
                }
                _ => step - watermark.rem_euclid(step) - 1,
            };
            let mut got = queue.take(watermark);
            got.sort_unstable();
            let mut want: Vec<Slot> = waiting
                .iter()
                .filter(|(at, _)| *at <= watermark)
                .map(|(_, s)| *s)
                .collect();
            want.sort_unstable();
            waiting.retain(|(at, _)| *at > watermark);
            assert_eq!(got, want, "watermark {watermark}");
        }
        assert!(slot > 100, "{slot}");
    }
}
