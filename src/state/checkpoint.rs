//! Checkpoint storage of a job: everything an epoch changed — operator state
//! by key group, the view's rows, the source offset and the epoch record —
//! is written in one atomic RocksDB batch, so a crash leaves either the whole
//! epoch or none of it. Large values are files written and synced before
//! the batch, which holds references to them (see [`super::files`]).
//!
//! Keys, under `j/<job id>/`:
//! - `e` — the last committed [`EpochRecord`] (JSON, with a CRC-32 of its body);
//! - `o/<operator>/<key group: u16 BE>/<key>` — operator state;
//! - `o/<operator>e/<key group: u16 BE><key length: u32 BE><key><entry>` —
//!   entries of a key's state written one by one (a DISTINCT aggregate's
//!   values), so a checkpoint writes the entries that changed, not the whole map;
//! - `o/<operator>k/<key group: u16 BE><epoch: u64 BE>` — a block: the
//!   state of many keys of one key group written by one epoch, in one value
//!   (see [`Block`]), for operators that keep all their state in memory;
//!   an operator's blocks of an epoch of [`BLOCK_FILE_MIN_BYTES`] or more
//!   are one file, each key holding its block's reference;
//! - `v/<key>` — the view's rows.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::store::Pairs;
use super::{StateError, Store};

/// Key groups keyed state is split into (the largest parallelism).
pub const KEY_GROUPS: u16 = 128;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0100_0000_01b3;

/// The key group of a state key: a stable hash (FNV-1a) modulo [`KEY_GROUPS`].
pub fn key_group(key: &[u8]) -> u16 {
    let mut h = FNV_OFFSET;
    for b in key {
        h ^= *b as u64;
        h = h.wrapping_mul(FNV_PRIME);
    }
    (h % KEY_GROUPS as u64) as u16
}

/// [`key_group`] of each key, in order. FNV-1a is one chain of
/// multiplications per key, each waiting for the last; keys of equal
/// length are hashed eight at a time, eight independent chains in step, so
/// the multiplier is kept busy (a shuffle hashes every row it routes).
pub fn key_groups<'a>(keys: impl IntoIterator<Item = &'a [u8]>) -> Vec<u16> {
    const LANES: usize = 8;
    let keys: Vec<&[u8]> = keys.into_iter().collect();
    let mut out = Vec::with_capacity(keys.len());
    let mut blocks = keys.chunks_exact(LANES);
    for block in &mut blocks {
        let len = block[0].len();
        if block.iter().any(|k| k.len() != len) {
            out.extend(block.iter().map(|k| key_group(k)));
            continue;
        }
        let mut h = [FNV_OFFSET; LANES];
        for i in 0..len {
            for (h, key) in h.iter_mut().zip(block) {
                *h = (*h ^ key[i] as u64).wrapping_mul(FNV_PRIME);
            }
        }
        out.extend(h.iter().map(|h| (h % KEY_GROUPS as u64) as u16));
    }
    out.extend(blocks.remainder().iter().map(|k| key_group(k)));
    out
}

/// The subtask owning key group `kg` when an operator runs as `parallelism`
/// subtasks: contiguous ranges of key groups, as in Flink, so a change of
/// parallelism on restore moves whole groups.
pub fn subtask_of(kg: u16, parallelism: usize) -> usize {
    kg as usize * parallelism / KEY_GROUPS as usize
}

/// The key groups subtask `subtask` of `parallelism` owns: a contiguous
/// range, the inverse of [`subtask_of`].
pub fn key_groups_of(subtask: usize, parallelism: usize) -> std::ops::Range<u16> {
    let first = |s: usize| (s * KEY_GROUPS as usize).div_ceil(parallelism) as u16;
    first(subtask)..first(subtask + 1)
}

/// Per-entry state read back: (key, entry, value).
pub type Entries = Vec<(Vec<u8>, Vec<u8>, Vec<u8>)>;

/// What a committed epoch recorded besides state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    pub epoch: u64,
    /// Wall-clock commit time, ms since the Unix epoch.
    pub committed_at_ms: i64,
    /// How long writing the checkpoint took.
    pub duration_ms: u64,
    /// Bytes of state written by this epoch.
    pub bytes: u64,
    /// The source position after the last row the epoch includes.
    pub source_offset: serde_json::Value,
    /// Free-form per-job values that must survive with the state (source counters).
    pub extra: BTreeMap<String, i64>,
}

impl EpochRecord {
    /// A record of `epoch` with no offset or counters (tests, tools).
    pub fn bare(epoch: u64) -> Self {
        EpochRecord {
            epoch,
            committed_at_ms: 0,
            duration_ms: 0,
            bytes: 0,
            source_offset: serde_json::Value::Null,
            extra: BTreeMap::new(),
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Sealed {
    crc: u32,
    body: String,
}

/// An operator's blocks of an epoch of at least this many bytes in all are
/// written as one file (see [`crate::state::files`]), the store holding a
/// reference to each: written once, straight from its buffer, never
/// compacted, and deleted as a file once no block in it is live. Smaller
/// ones go in the store, beside the epoch's other writes.
pub const BLOCK_FILE_MIN_BYTES: usize = 1 << 20;

/// An epoch writing at least this many keys is ingested as one SST file
/// instead of going through the write-ahead log and the memtable, whose
/// cost is per key: for 1M changed keys a second, 10–29% more rows/s with
/// checkpoints (benchmarks/CHECKPOINTS.md). Epochs of fewer keys keep the
/// shared memtable: many small views then do not each add a level-0 file
/// per second, and an append-only view's few, large segments still go to
/// blob files when the memtable is flushed (an ingested file holds its
/// values inline, and compactions would rewrite them).
pub const INGEST_MIN_KEYS: usize = 65_536;

/// An epoch writing at least this many bytes is ingested as one file too:
/// its blocks of state (see [`Block`]) are few keys but large, and through
/// the log and the memtable each is copied three times and written again
/// when the memtable is flushed. On the 1M-key benchmark over 6M rows (six
/// rows a key, nine checkpoints) this took the CPU the checkpoints cost from
/// 3.4 to 1.0 seconds.
pub const INGEST_MIN_BYTES: u64 = 16 << 20;

/// Collects one epoch's writes for a job.
pub struct EpochWriter {
    epoch: u64,
    prefix: Vec<u8>,
    ops: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    bytes: u64,
    /// Blocks by the block prefix of their operator.
    blocks: BTreeMap<Vec<u8>, Pairs>,
    /// Block prefixes of operators this epoch deletes blocks of.
    deleting: BTreeSet<Vec<u8>>,
}

/// The writes of one operator within an epoch.
pub struct OperatorWriter<'a> {
    writer: &'a mut EpochWriter,
    prefix: Vec<u8>,
    entries: Vec<u8>,
    blocks: Vec<u8>,
}

/// The state of many keys of one key group, as one value: each key's
/// value, or its deletion, in the order written (a later one of the same
/// key wins). Reading an operator's blocks in key-group and epoch order
/// and applying each gives its state.
#[derive(Default)]
pub struct Block {
    bytes: Vec<u8>,
    entries: usize,
}

/// Marks a deletion where a value's length would be.
const DELETED: u32 = u32::MAX;

impl Block {
    /// An empty block with room for `bytes` bytes.
    pub fn with_capacity(bytes: usize) -> Block {
        Block {
            bytes: Vec::with_capacity(bytes),
            entries: 0,
        }
    }

    /// Bytes written.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// `key`'s value, written by `value` into the block.
    #[inline]
    pub fn put<E>(
        &mut self,
        key: &[u8],
        value: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
    ) -> Result<(), E> {
        self.key(key);
        let at = self.bytes.len();
        self.bytes.extend_from_slice(&[0; 4]);
        value(&mut self.bytes)?;
        let len = u32::try_from(self.bytes.len() - at - 4).expect("a state value under 4 GiB");
        self.bytes[at..at + 4].copy_from_slice(&len.to_le_bytes());
        Ok(())
    }

    pub fn delete(&mut self, key: &[u8]) {
        self.key(key);
        self.bytes.extend_from_slice(&DELETED.to_le_bytes());
    }

    fn key(&mut self, key: &[u8]) {
        let len = u32::try_from(key.len()).expect("a state key under 4 GiB");
        self.bytes.extend_from_slice(&len.to_le_bytes());
        self.bytes.extend_from_slice(key);
        self.entries += 1;
    }

    /// Keys written.
    pub fn entries(&self) -> usize {
        self.entries
    }

    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    /// The entries of a stored block: (key, value or `None` if deleted).
    pub fn read(bytes: &[u8]) -> Result<Vec<BlockEntry<'_>>, StateError> {
        fn take<'a>(rest: &mut &'a [u8], n: usize) -> Result<&'a [u8], StateError> {
            if rest.len() < n {
                return Err(StateError::Corrupt {
                    key: "state block".into(),
                    message: "an entry runs past the block's end".into(),
                });
            }
            let (a, b) = rest.split_at(n);
            *rest = b;
            Ok(a)
        }
        fn len(rest: &mut &[u8]) -> Result<u32, StateError> {
            let b = take(rest, 4)?;
            Ok(u32::from_le_bytes(b.try_into().expect("four bytes")))
        }
        let mut out = Vec::new();
        let mut rest = bytes;
        while !rest.is_empty() {
            let n = len(&mut rest)? as usize;
            let key = take(&mut rest, n)?;
            let value = match len(&mut rest)? {
                DELETED => None,
                n => Some(take(&mut rest, n as usize)?),
            };
            out.push((key, value));
        }
        Ok(out)
    }
}

/// An entry of a block: (key, value or `None` if deleted).
pub type BlockEntry<'a> = (&'a [u8], Option<&'a [u8]>);

/// A stored block: (key group, epoch, its bytes).
pub type StoredBlock = (u16, u64, Vec<u8>);

fn block_key(blocks: &[u8], kg: u16, epoch: u64) -> Vec<u8> {
    [blocks, &kg.to_be_bytes(), &epoch.to_be_bytes()].concat()
}

impl OperatorWriter<'_> {
    /// The epoch being written.
    pub fn epoch(&self) -> u64 {
        self.writer.epoch
    }

    pub fn put(&mut self, key: &[u8], value: Vec<u8>) {
        let k = self.key(key);
        self.writer.bytes += (k.len() + value.len()) as u64;
        self.writer.ops.push((k, Some(value)));
    }

    pub fn delete(&mut self, key: &[u8]) {
        let k = self.key(key);
        self.writer.ops.push((k, None));
    }

    /// One entry of `key`'s state (stored in `key`'s key group).
    pub fn put_entry(&mut self, key: &[u8], entry: &[u8], value: Vec<u8>) {
        let k = self.entry_key(key, entry);
        self.writer.bytes += (k.len() + value.len()) as u64;
        self.writer.ops.push((k, Some(value)));
    }

    pub fn delete_entry(&mut self, key: &[u8], entry: &[u8]) {
        let k = self.entry_key(key, entry);
        self.writer.ops.push((k, None));
    }

    /// An entry of key group `kg` that belongs to no one key (read back
    /// with an empty key): state kept by time rather than by key, which
    /// still moves with its key group when the parallelism changes.
    pub fn put_group_entry(&mut self, kg: u16, entry: &[u8], value: Vec<u8>) {
        let k = self.group_entry_key(kg, entry);
        self.writer.bytes += (k.len() + value.len()) as u64;
        self.writer.ops.push((k, Some(value)));
    }

    pub fn delete_group_entry(&mut self, kg: u16, entry: &[u8]) {
        let k = self.group_entry_key(kg, entry);
        self.writer.ops.push((k, None));
    }

    /// Key group `kg`'s block of this epoch (see [`Block`]).
    pub fn put_block(&mut self, kg: u16, block: Block) {
        let k = block_key(&self.blocks, kg, self.writer.epoch);
        self.writer.bytes += (k.len() + block.bytes.len()) as u64;
        let blocks = self.writer.blocks.entry(self.blocks.clone());
        blocks.or_default().push((k, block.bytes));
    }

    /// Deletes key group `kg`'s block of epoch `epoch`.
    pub fn delete_block(&mut self, kg: u16, epoch: u64) {
        let k = block_key(&self.blocks, kg, epoch);
        self.writer.ops.push((k, None));
        if !self.writer.deleting.contains(&self.blocks) {
            self.writer.deleting.insert(self.blocks.clone());
        }
    }

    fn group_entry_key(&self, kg: u16, entry: &[u8]) -> Vec<u8> {
        [
            &self.entries[..],
            &kg.to_be_bytes(),
            &0u32.to_be_bytes(),
            entry,
        ]
        .concat()
    }

    fn entry_key(&self, key: &[u8], entry: &[u8]) -> Vec<u8> {
        [entries_of_key(&self.entries, key).as_slice(), entry].concat()
    }

    fn key(&self, key: &[u8]) -> Vec<u8> {
        let mut k = Vec::with_capacity(self.prefix.len() + 2 + key.len());
        k.extend_from_slice(&self.prefix);
        k.extend_from_slice(&key_group(key).to_be_bytes());
        k.extend_from_slice(key);
        k
    }
}

impl EpochWriter {
    /// State of operator `index` in the job's chain.
    pub fn operator(&mut self, index: usize) -> OperatorWriter<'_> {
        let prefix = operator_prefix(&self.prefix, index, "/");
        let entries = operator_prefix(&self.prefix, index, "e/");
        let blocks = operator_prefix(&self.prefix, index, "k/");
        OperatorWriter {
            writer: self,
            prefix,
            entries,
            blocks,
        }
    }

    /// A row of the view.
    pub fn view_put(&mut self, key: &[u8], value: Vec<u8>) {
        let k = [self.prefix.as_slice(), b"v/", key].concat();
        self.bytes += (k.len() + value.len()) as u64;
        self.ops.push((k, Some(value)));
    }

    /// Counts `n` bytes written outside the epoch's batch (files).
    pub fn add_bytes(&mut self, n: u64) {
        self.bytes += n;
    }

    pub fn view_delete(&mut self, key: &[u8]) {
        let k = [self.prefix.as_slice(), b"v/", key].concat();
        self.ops.push((k, None));
    }

    /// Writes and deletes collected so far.
    #[cfg(test)]
    pub fn operations(&self) -> usize {
        self.ops.len() + self.blocks.values().map(Vec::len).sum::<usize>()
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Adds another writer's changes (another subtask's share of the epoch).
    pub fn append(&mut self, other: EpochWriter) {
        self.bytes += other.bytes;
        self.ops.extend(other.ops);
        for (prefix, blocks) in other.blocks {
            self.blocks.entry(prefix).or_default().extend(blocks);
        }
        self.deleting.extend(other.deleting);
    }

    /// Moves the blocks into the writes: each operator's, if large, as
    /// one file written now, the store holding references. Returns the
    /// bytes written to files.
    fn place_blocks(&mut self, store: &Store) -> Result<u64, StateError> {
        let mut in_files = 0;
        for (prefix, blocks) in std::mem::take(&mut self.blocks) {
            let bytes: usize = blocks.iter().map(|(k, b)| k.len() + b.len()).sum();
            if bytes < BLOCK_FILE_MIN_BYTES {
                self.ops
                    .extend(blocks.into_iter().map(|(k, b)| (k, Some(b))));
                continue;
            }
            let name = [prefix.as_slice(), &self.epoch.to_be_bytes()].concat();
            let parts: Vec<&[u8]> = blocks.iter().map(|(_, b)| b.as_slice()).collect();
            let refs = store.write_parts(&name, &parts)?;
            let keys = blocks.into_iter().map(|(k, _)| k);
            self.ops.extend(keys.zip(refs).map(|(k, r)| (k, Some(r))));
            in_files += bytes as u64;
        }
        Ok(in_files)
    }
}

/// A job's checkpoints in the store.
#[derive(Clone)]
pub struct JobState {
    store: Arc<Store>,
    prefix: Vec<u8>,
}

impl JobState {
    pub fn new(store: Arc<Store>, job_id: u64) -> Self {
        JobState {
            store,
            prefix: format!("j/{job_id:016x}/").into_bytes(),
        }
    }

    /// Starts collecting epoch `epoch`'s writes.
    pub fn begin(&self, epoch: u64) -> EpochWriter {
        EpochWriter {
            epoch,
            prefix: self.prefix.clone(),
            ops: Vec::new(),
            bytes: 0,
            blocks: BTreeMap::new(),
            deleting: BTreeSet::new(),
        }
    }

    /// Writes the epoch's state and its record atomically (synced).
    pub fn commit(&self, mut w: EpochWriter, record: &EpochRecord) -> Result<(), StateError> {
        let body = serde_json::to_string(record).expect("serialisable");
        let sealed = Sealed {
            crc: crc32(body.as_bytes()),
            body,
        };
        let key = [self.prefix.as_slice(), b"e"].concat();
        w.ops.push((
            key,
            Some(serde_json::to_vec(&sealed).expect("serialisable")),
        ));
        let in_files = w.place_blocks(&self.store)?;
        if w.ops.len() >= INGEST_MIN_KEYS || w.bytes - in_files >= INGEST_MIN_BYTES {
            self.store.write_ingested(w.ops)?;
        } else {
            self.store.write(w.ops)?;
        }
        self.sweep_block_files(&w.deleting);
        Ok(())
    }

    /// Removes the block files of the operators under `prefixes` that no
    /// block refers to any more (once the epoch deleting them committed; a
    /// crash before leaves them to the sweep on open). The epoch is
    /// committed by then: a file that cannot be removed is left to that
    /// sweep too, with a warning, not an error failing the job.
    fn sweep_block_files(&self, prefixes: &BTreeSet<Vec<u8>>) {
        for prefix in prefixes {
            if let Err(e) = self.store.sweep_files(prefix) {
                tracing::warn!(error = %e, "a state file no checkpoint refers to was not removed; the next start removes it");
            }
        }
    }

    /// The last committed epoch, if any. A record whose checksum does not
    /// match is an error naming the job, never silently ignored.
    pub fn last_epoch(&self) -> Result<Option<EpochRecord>, StateError> {
        let key = [self.prefix.as_slice(), b"e"].concat();
        match self.store.get(&key)? {
            Some(raw) => unseal(&key, &raw).map(Some),
            None => Ok(None),
        }
    }

    /// Operator `index`'s state: (key, value) in key-group order.
    pub fn operator_state(&self, index: usize) -> Result<Pairs, StateError> {
        self.operator_state_of(index, 0, 1)
    }

    /// The part of operator `index`'s state that subtask `subtask` of
    /// `parallelism` owns (its key groups).
    pub fn operator_state_of(
        &self,
        index: usize,
        subtask: usize,
        parallelism: usize,
    ) -> Result<Pairs, StateError> {
        let prefix = operator_prefix(&self.prefix, index, "/");
        // The key after the prefix and its two key-group bytes.
        self.scan_key_groups(&prefix, subtask, parallelism, prefix.len() + 2)
    }

    /// Operator `index`'s committed state of one key, if it has any.
    pub fn operator_get(&self, index: usize, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        let k = [
            operator_prefix(&self.prefix, index, "/").as_slice(),
            &key_group(key).to_be_bytes(),
            key,
        ]
        .concat();
        self.store.get(&k)
    }

    /// Operator `index`'s committed entries of one key: (entry, value).
    pub fn operator_key_entries(&self, index: usize, key: &[u8]) -> Result<Pairs, StateError> {
        let prefix = entries_of_key(&operator_prefix(&self.prefix, index, "e/"), key);
        Ok(strip(self.store.scan_prefix(&prefix)?, prefix.len()))
    }

    /// The entries (see [`OperatorWriter::put_entry`]) of operator `index`
    /// that subtask `subtask` of `parallelism` owns: (key, entry, value).
    pub fn operator_entries_of(
        &self,
        index: usize,
        subtask: usize,
        parallelism: usize,
    ) -> Result<Entries, StateError> {
        let prefix = operator_prefix(&self.prefix, index, "e/");
        let mut out = Vec::new();
        for (k, v) in self.scan_key_groups(&prefix, subtask, parallelism, 0)? {
            let rest = &k[prefix.len()..];
            let corrupt = || StateError::Corrupt {
                key: String::from_utf8_lossy(&k).into_owned(),
                message: "malformed state entry key".into(),
            };
            if rest.len() < 6 {
                return Err(corrupt());
            }
            // rest[0..2] is the key group, in this subtask's range.
            let len = u32::from_be_bytes([rest[2], rest[3], rest[4], rest[5]]) as usize;
            let key = rest.get(6..6 + len).ok_or_else(corrupt)?;
            out.push((key.to_vec(), rest[6 + len..].to_vec(), v));
        }
        Ok(out)
    }

    /// The blocks (see [`Block`]) of operator `index` that subtask
    /// `subtask` of `parallelism` owns, in key-group and epoch order.
    pub fn operator_blocks_of(
        &self,
        index: usize,
        subtask: usize,
        parallelism: usize,
    ) -> Result<Vec<StoredBlock>, StateError> {
        let prefix = operator_prefix(&self.prefix, index, "k/");
        let pairs = self.scan_key_groups(&prefix, subtask, parallelism, prefix.len())?;
        pairs
            .into_iter()
            .map(|(k, v)| match (k.get(..2), k.get(2..10)) {
                (Some(kg), Some(epoch)) if k.len() == 10 => Ok((
                    u16::from_be_bytes(kg.try_into().expect("two bytes")),
                    u64::from_be_bytes(epoch.try_into().expect("eight bytes")),
                    // A block in a file of its epoch's blocks, read from it.
                    self.store.resolve(&[prefix.as_slice(), &k].concat(), v)?,
                )),
                _ => Err(StateError::Corrupt {
                    key: String::from_utf8_lossy(&k).into_owned(),
                    message: "malformed state block key".into(),
                }),
            })
            .collect()
    }

    /// Moves operator `index`'s state from blocks to one key each, at
    /// once and atomically: `pairs` (key, value) are written, and the
    /// blocks `blocks` (key group, epoch) they were read from deleted.
    pub fn unblock(
        &self,
        index: usize,
        pairs: &[(Vec<u8>, Vec<u8>)],
        blocks: &[(u16, u64)],
    ) -> Result<(), StateError> {
        let mut w = self.begin(0);
        let mut op = w.operator(index);
        for (k, v) in pairs {
            op.put(k, v.clone());
        }
        for &(kg, epoch) in blocks {
            op.delete_block(kg, epoch);
        }
        self.store.write(w.ops)?;
        self.sweep_block_files(&w.deleting);
        Ok(())
    }

    /// The pairs under `prefix` whose key group (the two bytes after it)
    /// subtask `subtask` of `parallelism` owns: one range scan (keys without
    /// their first `skip` bytes).
    fn scan_key_groups(
        &self,
        prefix: &[u8],
        subtask: usize,
        parallelism: usize,
        skip: usize,
    ) -> Result<Pairs, StateError> {
        let groups = key_groups_of(subtask, parallelism);
        let from = [prefix, &groups.start.to_be_bytes()].concat();
        let to = [prefix, &groups.end.to_be_bytes()].concat();
        self.store.scan_range(&from, &to, skip)
    }

    /// The view's committed rows: (key, row), a segment kept as a file
    /// read from it.
    pub fn view_rows(&self) -> Result<Pairs, StateError> {
        let prefix = [self.prefix.as_slice(), b"v/"].concat();
        let rows = self
            .store
            .scan_prefix(&prefix)?
            .into_iter()
            .map(|(k, v)| {
                let v = self.store.resolve(&k, v)?;
                Ok((k, v))
            })
            .collect::<Result<Pairs, StateError>>()?;
        Ok(strip(rows, prefix.len()))
    }

    /// Writes a value of the view too large for the store's log as a file
    /// of its own (see [`Store::write_file`]); returns what to put under
    /// `key` instead, and the file's length.
    pub fn write_view_file(
        &self,
        key: &[u8],
        write: impl FnOnce(&mut dyn std::io::Write) -> Result<(), StateError>,
    ) -> Result<(Vec<u8>, u64), StateError> {
        let full = [self.prefix.as_slice(), b"v/", key].concat();
        self.store.write_file(&full, write)
    }

    /// The keys of the view's stored rows.
    pub fn view_keys(&self) -> Result<Vec<Vec<u8>>, StateError> {
        let prefix = [self.prefix.as_slice(), b"v/"].concat();
        let rows = self.store.scan_prefix(&prefix)?;
        Ok(rows
            .into_iter()
            .map(|(k, _)| k[prefix.len()..].to_vec())
            .collect())
    }

    /// Removes every checkpoint of the job (DROP), and its files.
    pub fn destroy(&self) -> Result<(), StateError> {
        self.store.delete_prefix(&self.prefix)?;
        self.store.remove_files(&self.prefix)
    }
}

/// The pairs with the first `n` bytes of each key cut off.
fn strip(pairs: Pairs, n: usize) -> Pairs {
    pairs
        .into_iter()
        .map(|(k, v)| (k[n..].to_vec(), v))
        .collect()
}

/// Where the entries of `key` start under an operator's entry prefix:
/// `<entries><key group><key length: u32 BE><key>`.
fn entries_of_key(entries: &[u8], key: &[u8]) -> Vec<u8> {
    let len = u32::try_from(key.len()).expect("a state key under 4 GiB");
    [
        entries,
        &key_group(key).to_be_bytes(),
        &len.to_be_bytes(),
        key,
    ]
    .concat()
}

/// An epoch record read back, its checksum checked.
fn unseal(key: &[u8], raw: &[u8]) -> Result<EpochRecord, StateError> {
    let corrupt = |message: String| StateError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        message,
    };
    let sealed: Sealed = serde_json::from_slice(raw).map_err(|e| corrupt(e.to_string()))?;
    if crc32(sealed.body.as_bytes()) != sealed.crc {
        return Err(corrupt("checksum mismatch".into()));
    }
    serde_json::from_str(&sealed.body).map_err(|e| corrupt(e.to_string()))
}

/// Checks one stored pair that belongs to a checkpoint: an epoch record
/// (`j/<job>/e`) must carry a matching checksum. Other pairs are covered by
/// RocksDB's own block checksums.
pub fn check_stored(key: &[u8], value: &[u8]) -> Result<(), StateError> {
    let is_record = key.len() == 2 + 16 + 2
        && key.starts_with(b"j/")
        && key.ends_with(b"/e")
        && key[2..18].iter().all(u8::is_ascii_hexdigit);
    if is_record {
        unseal(key, value)?;
    }
    Ok(())
}

/// `<job>o/<operator>` + `tail`: where an operator's state (`/`) or its
/// per-entry state (`e/`) is kept.
fn operator_prefix(job: &[u8], index: usize, tail: &str) -> Vec<u8> {
    [job, format!("o/{index:04}{tail}").as_bytes()].concat()
}

/// CRC-32 (IEEE) of `data`.
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xedb8_8320 & mask);
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    #[test]
    fn key_groups_eight_at_a_time_are_each_keys_own() {
        // Keys of one length in blocks of eight, blocks mixing lengths, and a remainder.
        let keys: Vec<Vec<u8>> = (0..43u32)
            .map(|i| {
                let len = if (16..24).contains(&i) {
                    1 + i as usize % 5
                } else {
                    27
                };
                (0..len).map(|j| (i * 31 + j as u32 * 7) as u8).collect()
            })
            .collect();
        let each: Vec<u16> = keys.iter().map(|k| key_group(k)).collect();
        assert_eq!(key_groups(keys.iter().map(|k| k.as_slice())), each);
        // FNV-1a of "a" (0xaf63dc4c8601ec8c) modulo 128.
        assert_eq!(key_group(b"a"), 0x0c);
    }

    use super::*;

    #[test]
    fn key_group_ranges_invert_subtask_of() {
        for p in 1..=KEY_GROUPS as usize {
            let mut next = 0;
            for s in 0..p {
                let r = key_groups_of(s, p);
                assert_eq!(r.start, next, "p={p} s={s}");
                for kg in r.clone() {
                    assert_eq!(subtask_of(kg, p), s, "p={p} kg={kg}");
                }
                next = r.end;
            }
            assert_eq!(next, KEY_GROUPS, "p={p}");
        }
    }

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
    }

    /// An epoch of [`INGEST_MIN_KEYS`] keys is ingested as a file: its state
    /// and record are there after a reopen, and a smaller epoch after it
    /// (through the log) still overrides it.
    #[test]
    fn a_large_epoch_is_ingested_with_its_record() {
        let dir = tempfile::tempdir().unwrap();
        let n = INGEST_MIN_KEYS as u32;
        let key = |i: u32| i.to_be_bytes().to_vec();
        {
            let store = Arc::new(Store::open(dir.path()).unwrap());
            let job = JobState::new(store.clone(), 4);
            let mut w = job.begin(1);
            for i in 0..n {
                w.operator(0).put(&key(i), b"first".to_vec());
            }
            job.commit(w, &EpochRecord::bare(1)).unwrap();
            let staged = dir.path().join("ingest");
            assert_eq!(std::fs::read_dir(staged).unwrap().count(), 0, "moved in");
            assert!(
                store.memtable_bytes().unwrap() < 1 << 20,
                "not through the memtable"
            );
            let mut w = job.begin(2);
            w.operator(0).put(&key(0), b"second".to_vec());
            w.operator(0).delete(&key(1));
            job.commit(w, &EpochRecord::bare(2)).unwrap();
        }
        let job = JobState::new(Arc::new(Store::open(dir.path()).unwrap()), 4);
        assert_eq!(job.last_epoch().unwrap().map(|r| r.epoch), Some(2));
        let state: BTreeMap<Vec<u8>, Vec<u8>> =
            job.operator_state(0).unwrap().into_iter().collect();
        assert_eq!(state.len(), n as usize - 1);
        assert!(state[&key(0)] == b"second", "the later epoch's value");
        assert!(!state.contains_key(&key(1)), "deleted by the later epoch");
        assert!((2..n).all(|i| state[&key(i)] == b"first"));
    }

    #[test]
    fn an_epoch_commits_state_and_record_together() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let job = JobState::new(store.clone(), 3);
        assert_eq!(job.last_epoch().unwrap(), None);
        let mut w = job.begin(1);
        w.operator(1).put(b"k1", b"v1".to_vec());
        w.operator(1).put(b"k2", b"v2".to_vec());
        w.view_put(b"r", b"row".to_vec());
        let record = EpochRecord {
            epoch: 7,
            committed_at_ms: 1,
            duration_ms: 0,
            bytes: w.bytes(),
            source_offset: serde_json::json!({"row": 5}),
            extra: BTreeMap::new(),
        };
        job.commit(w, &record).unwrap();
        assert_eq!(job.last_epoch().unwrap(), Some(record));
        let mut state = job.operator_state(1).unwrap();
        state.sort();
        assert_eq!(
            state,
            vec![
                (b"k1".to_vec(), b"v1".to_vec()),
                (b"k2".to_vec(), b"v2".to_vec())
            ]
        );
        assert_eq!(
            job.view_rows().unwrap(),
            vec![(b"r".to_vec(), b"row".to_vec())]
        );
        let mut w = job.begin(1);
        w.operator(1).delete(b"k1");
        job.commit(
            w,
            &EpochRecord {
                epoch: 8,
                ..job.last_epoch().unwrap().unwrap()
            },
        )
        .unwrap();
        assert_eq!(job.operator_state(1).unwrap().len(), 1);
        // A damaged record is reported, not taken for "no checkpoint".
        store
            .write([(
                [b"j/0000000000000003/".as_slice(), b"e"].concat(),
                Some(br#"{"crc":1,"body":"{}"}"#.to_vec()),
            )])
            .unwrap();
        assert!(job.last_epoch().is_err());
        job.destroy().unwrap();
        assert_eq!(job.last_epoch().unwrap(), None);
    }

    /// Large blocks go to a file of their epoch, small ones into the
    /// store; both read back. Once no block of an epoch's file is live
    /// the file goes, and a file damaged after the commit is found when
    /// the store is verified. DROP removes the rest.
    #[test]
    fn large_epochs_of_blocks_are_files_removed_once_no_block_is_live() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let job = JobState::new(store.clone(), 5);
        let files = || {
            let mut names: Vec<String> = std::fs::read_dir(dir.path().join("files"))
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            names.sort();
            names
        };
        // Key group `kg`'s block of `epoch`: `keys` keys, 1 KiB each.
        let block = |kg: u16, epoch: u64, keys: u16| {
            let mut b = Block::with_capacity(0);
            for k in 0..keys {
                let value = vec![(kg as u64 * 7 + epoch) as u8; 1024];
                b.put(&[kg.to_be_bytes(), k.to_be_bytes()].concat(), |out| {
                    out.extend_from_slice(&value);
                    Ok::<_, StateError>(())
                })
                .unwrap();
            }
            b
        };
        let commit = |epoch: u64, keys: u16, deleted: &[(u16, u64)]| {
            let mut w = job.begin(epoch);
            let mut op = w.operator(2);
            for kg in 0..4 {
                op.put_block(kg, block(kg, epoch, keys));
            }
            for &(kg, e) in deleted {
                op.delete_block(kg, e);
            }
            job.commit(w, &EpochRecord::bare(epoch)).unwrap();
        };
        let bytes_of = |kg: u16, epoch: u64, keys: u16| block(kg, epoch, keys).bytes;
        // 4 x 300 KiB: a file. 4 x 2 KiB: in the store.
        commit(1, 300, &[]);
        commit(2, 2, &[]);
        assert_eq!(files().len(), 1);
        let read = || job.operator_blocks_of(2, 0, 1).unwrap();
        let want: Vec<StoredBlock> = (0..4)
            .flat_map(|kg| [(kg, 1, bytes_of(kg, 1, 300)), (kg, 2, bytes_of(kg, 2, 2))])
            .collect();
        assert!(read() == want, "every block as it was written");
        // Epoch 3 writes another file and deletes three of epoch 1's
        // blocks: its file stays for the fourth; then that goes too.
        commit(3, 300, &[(0, 1), (1, 1), (2, 1)]);
        assert_eq!(files().len(), 2);
        let first = files()[0].clone();
        commit(4, 2, &[(3, 1)]);
        assert_eq!(files().len(), 1);
        assert!(!files().contains(&first), "epoch 1's file removed");
        let blocks = read();
        assert_eq!(blocks.len(), 12);
        assert!(blocks.iter().all(|(_, e, _)| *e != 1));
        assert!(blocks.contains(&(1, 3, bytes_of(1, 3, 300))));
        // The file of an epoch that never committed (a crash) is removed
        // when the store is verified on open; the others stay and read.
        let stray = [
            operator_prefix(&job.prefix, 2, "k/").as_slice(),
            &9u64.to_be_bytes(),
        ]
        .concat();
        store.write_parts(&stray, &[&[1u8; 10]]).unwrap();
        assert_eq!(files().len(), 2);
        store.verify(|_, _| Ok(())).unwrap();
        assert_eq!(files().len(), 1);
        assert!(read() == blocks);
        // A damaged file is an error naming it, on read and on verify.
        let path = dir.path().join("files").join(&files()[0]);
        let mut damaged = std::fs::read(&path).unwrap();
        damaged[400_000] ^= 1;
        std::fs::write(&path, damaged).unwrap();
        assert!(job.operator_blocks_of(2, 0, 1).is_err());
        assert!(store.verify(|_, _| Ok(())).is_err());
        job.destroy().unwrap();
        assert_eq!(files(), Vec::<String>::new());
    }
}
