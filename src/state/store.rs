//! `Store`: the one RocksDB database of a Weir data directory, with key
//! prefixes per owner (`c/` catalog, `t/<id>/` table rows), and beside it
//! the files of values too large for its log (`files/`, see `files.rs`).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use rocksdb::checkpoint::Checkpoint;
use rocksdb::{
    BlockBasedOptions, DBCompressionType, DBRecoveryMode, Direction, IngestExternalFileOptions,
    IteratorMode, Options, ReadOptions, SstFileWriter, WriteBatch, DB,
};

use super::prefetch::{prefetch, AHEAD};
use super::{files, io, StateError};

/// Key-value pairs read from the store.
pub type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

/// The RocksDB database. Writes through [`Store::write`] are atomic.
pub struct Store {
    db: DB,
    /// The options the store was opened with, compression off: for the
    /// files it ingests.
    opts: Options,
    /// Files staged for ingestion so far (names them).
    staged: AtomicU64,
    /// Held while a copy links the value files and while files are
    /// removed, so a copy never refers to a file a DROP took away.
    files: Mutex<()>,
}

/// The directory, inside the store's, where files to ingest are written;
/// emptied on open (a crash can leave a file that was never ingested).
const STAGING: &str = "ingest";

impl Store {
    pub fn open(dir: &Path) -> Result<Store, StateError> {
        Store::open_with(dir, None)
    }

    /// Opens the store with its memtables (RocksDB's write buffers) held to
    /// `memtables` bytes in all, when given; RocksDB's defaults otherwise
    /// (two of 64 MiB).
    pub fn open_with(dir: &Path, memtables: Option<usize>) -> Result<Store, StateError> {
        let mut opts = Options::default();
        if let Some(total) = memtables {
            // One memtable filling, one being flushed.
            opts.set_write_buffer_size(total / 2);
            opts.set_max_write_buffer_number(2);
            opts.set_db_write_buffer_size(total);
        }
        // Only a new (absent or empty) directory becomes a new store: a store
        // that lost its files must be an error, not silently start empty.
        let is_new = std::fs::read_dir(dir).map_or(true, |mut d| d.next().is_none());
        opts.create_if_missing(is_new);
        // A record cut short at the end of the log (a crash mid-write) is
        // dropped; damage anywhere before it is an error, never skipped.
        opts.set_wal_recovery_mode(DBRecoveryMode::TolerateCorruptedTailRecords);
        // Operator state read back key by key (beyond the memory budget)
        // mostly asks for keys never stored: a bloom filter answers those
        // without reading a block.
        let mut tables = BlockBasedOptions::default();
        tables.set_bloom_filter(10.0, false);
        opts.set_block_based_table_factory(&tables);
        // Large values (an append-only view's Arrow segments) go to blob
        // files when the memtable is flushed, so compactions move a pointer
        // instead of rewriting them; blobs of deleted keys are collected.
        opts.set_enable_blob_files(true);
        opts.set_min_blob_size(64 * 1024);
        opts.set_enable_blob_gc(true);
        let db = DB::open(&opts, dir)?;
        // Epoch files are written uncompressed, on the checkpoint's time
        // (the job's cores); compaction compresses what it rewrites. On the
        // 1M-key checkpoint benchmark compression made them only 0-8%
        // smaller and the run with checkpoints 3% slower.
        opts.set_compression_type(DBCompressionType::None);
        let staging = dir.join(STAGING);
        if staging.exists() {
            std::fs::remove_dir_all(&staging).map_err(io(&staging))?;
        }
        std::fs::create_dir(&staging).map_err(io(&staging))?;
        let files = dir.join(files::DIR);
        std::fs::create_dir_all(&files).map_err(io(&files))?;
        Ok(Store {
            db,
            opts,
            staged: AtomicU64::new(0),
            files: Mutex::new(()),
        })
    }

    /// Reads every stored pair, checking RocksDB's block checksums and the
    /// files values refer to, and passes each to `check`; the first damage
    /// found is the error. Then removes the files nothing refers to.
    pub fn verify(
        &self,
        mut check: impl FnMut(&[u8], &[u8]) -> Result<(), StateError>,
    ) -> Result<(), StateError> {
        let mut ro = ReadOptions::default();
        ro.set_verify_checksums(true);
        ro.fill_cache(false);
        let dir = self.files_dir();
        let mut referenced = HashSet::new();
        for item in self.db.iterator_opt(IteratorMode::Start, ro) {
            let (k, v) = item?;
            if files::is_ref(&v) {
                referenced.insert(files::verify(&dir, &k, &v)?);
            }
            check(&k, &v)?;
        }
        files::sweep(&dir, &referenced)
    }

    /// Where values kept as files of their own are.
    fn files_dir(&self) -> PathBuf {
        self.db.path().join(files::DIR)
    }

    /// Writes the value for `key` as a file of its own with `write`, synced;
    /// returns the reference to store under `key` instead, and the file's
    /// length. For values too large for the write-ahead log and memtable.
    pub fn write_file(
        &self,
        key: &[u8],
        write: impl FnOnce(&mut dyn std::io::Write) -> Result<(), StateError>,
    ) -> Result<(Vec<u8>, u64), StateError> {
        files::write(&self.files_dir(), &files::name_of(key), write)
    }

    /// Writes `parts` as one file of its own, named for `key`, synced;
    /// returns the reference to store for each part (see
    /// [`files::write_parts`]).
    pub fn write_parts(&self, key: &[u8], parts: &[&[u8]]) -> Result<Vec<Vec<u8>>, StateError> {
        files::write_parts(&self.files_dir(), &files::name_of(key), parts)
    }

    /// Removes the files named for keys starting with `prefix` that no
    /// value stored under `prefix` refers to any more (their values were
    /// deleted).
    pub fn sweep_files(&self, prefix: &[u8]) -> Result<(), StateError> {
        let mut keep = HashSet::new();
        for (k, v) in self.scan_prefix(prefix)? {
            keep.extend(files::referenced(&k, &v)?);
        }
        let _files = self.files.lock();
        files::sweep_prefixed(&self.files_dir(), &files::name_of(prefix), &keep)
    }

    /// A stored value, with a reference to a file replaced by the file's
    /// checked content.
    pub fn resolve(&self, key: &[u8], value: Vec<u8>) -> Result<Vec<u8>, StateError> {
        if files::is_ref(&value) {
            return files::read(&self.files_dir(), key, &value);
        }
        Ok(value)
    }

    /// Removes the files of the values under keys starting with `prefix`
    /// (after the keys themselves are deleted).
    pub fn remove_files(&self, prefix: &[u8]) -> Result<(), StateError> {
        let _files = self.files.lock();
        files::remove_prefixed(&self.files_dir(), &files::name_of(prefix))
    }

    /// Writes a consistent copy of the whole store to `dir` (which must not
    /// exist): a RocksDB checkpoint, whose table files are hard links.
    pub fn checkpoint_to(&self, dir: &Path) -> Result<(), StateError> {
        let _files = self.files.lock();
        Checkpoint::new(&self.db)?.create_checkpoint(dir)?;
        // The files the copy refers to were synced before it was taken; any
        // written since are linked too, and swept if the copy is ever opened.
        files::link_all(&self.files_dir(), &dir.join(files::DIR))
    }

    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        Ok(self.db.get(key)?)
    }

    /// Applies puts (`Some`) and deletes (`None`) atomically, synced to disk.
    pub fn write(
        &self,
        ops: impl IntoIterator<Item = (Vec<u8>, Option<Vec<u8>>)>,
    ) -> Result<(), StateError> {
        // In key order: RocksDB's memtable inserts neighbouring keys much
        // faster than scattered ones.
        let mut batch = WriteBatch::default();
        for (k, v) in sorted(ops) {
            match v {
                Some(v) => batch.put(k, v),
                None => batch.delete(k),
            }
        }
        let mut wo = rocksdb::WriteOptions::default();
        wo.set_sync(true);
        Ok(self.db.write_opt(batch, &wo)?)
    }

    /// Writes `ops` atomically and durably as one SST file ingested into
    /// the store: no write-ahead log, no memtable inserts, and nothing to
    /// flush later. For large batches (an epoch of many changed keys);
    /// RocksDB first flushes a memtable holding keys in the file's range,
    /// so the newest write of a key still wins.
    pub fn write_ingested(
        &self,
        ops: impl IntoIterator<Item = (Vec<u8>, Option<Vec<u8>>)>,
    ) -> Result<(), StateError> {
        let mut ops = sorted(ops);
        // A file holds each key once: the last write of a key wins.
        let mut last: Vec<Op> = Vec::with_capacity(ops.len());
        for i in 0..ops.len() {
            if let Some((k, _)) = ops.get(i + AHEAD) {
                prefetch(k);
            }
            let op = std::mem::take(&mut ops[i]);
            match last.last_mut() {
                Some(l) if l.0 == op.0 => *l = op,
                _ => last.push(op),
            }
        }
        if last.is_empty() {
            return Ok(());
        }
        let n = self.staged.fetch_add(1, Ordering::Relaxed);
        let path = self.db.path().join(STAGING).join(format!("{n}.sst"));
        let mut file = SstFileWriter::create(&self.opts);
        file.open(&path)?;
        for i in 0..last.len() {
            if let Some((k, v)) = last.get(i + AHEAD) {
                prefetch(k);
                prefetch(v.as_deref().unwrap_or_default());
            }
            // Taken, so each is freed while it is still in the cache.
            match std::mem::take(&mut last[i]) {
                (k, Some(v)) => file.put(&k, &v)?,
                (k, None) => file.delete(&k)?,
            }
        }
        // Synced when finished; the ingestion links it and syncs the manifest.
        file.finish()?;
        let mut ingest = IngestExternalFileOptions::default();
        ingest.set_move_files(true);
        Ok(self.db.ingest_external_file_opts(&ingest, vec![path])?)
    }

    /// Bytes in the memtables now.
    pub fn memtable_bytes(&self) -> Result<u64, StateError> {
        Ok(self
            .db
            .property_int_value("rocksdb.cur-size-all-mem-tables")?
            .unwrap_or(0))
    }

    /// Every key-value pair whose key starts with `prefix`, in key order.
    pub fn scan_prefix(&self, prefix: &[u8]) -> Result<Pairs, StateError> {
        let mut out = Vec::new();
        for item in self
            .db
            .iterator(IteratorMode::From(prefix, Direction::Forward))
        {
            let (k, v) = item?;
            if !k.starts_with(prefix) {
                break;
            }
            out.push((k.to_vec(), v.to_vec()));
        }
        Ok(out)
    }

    /// Every key-value pair with `from <= key < to`, in key order, each
    /// key without its first `skip` bytes (a key shorter is corrupt).
    pub fn scan_range(&self, from: &[u8], to: &[u8], skip: usize) -> Result<Pairs, StateError> {
        let mut out = Vec::new();
        for item in self
            .db
            .iterator(IteratorMode::From(from, Direction::Forward))
        {
            let (k, v) = item?;
            if k.as_ref() >= to {
                break;
            }
            let Some(rest) = k.get(skip..) else {
                return Err(StateError::Corrupt {
                    key: String::from_utf8_lossy(&k).into_owned(),
                    message: "a state key shorter than its prefix".into(),
                });
            };
            out.push((rest.to_vec(), v.to_vec()));
        }
        Ok(out)
    }

    /// Deletes every key starting with `prefix`.
    pub fn delete_prefix(&self, prefix: &[u8]) -> Result<(), StateError> {
        let keys = self.scan_prefix(prefix)?;
        self.write(keys.into_iter().map(|(k, _)| (k, None)))
    }
}

/// A put (`Some`) or delete (`None`) of a key.
type Op = (Vec<u8>, Option<Vec<u8>>);

/// Writes in key order; the writes of one key keep their order.
///
/// An epoch's keys share a long prefix (job and operator) and live in
/// scattered heap blocks, so comparing them directly is a cache miss and a
/// `memcmp` per comparison. Instead the keys are sorted sixteen bytes at a
/// time after their common prefix: each is represented by the chunk at the
/// current offset, packed into a `u128`, beside how much of the key is left
/// and its position, and only runs that tie on a whole chunk are sorted
/// again on the next one.
fn sorted(ops: impl IntoIterator<Item = Op>) -> Vec<Op> {
    const CHUNK: usize = 16;
    let ops: Vec<_> = ops.into_iter().collect();
    let Some(first) = ops.first() else {
        return ops;
    };
    let mut common = first.0.len();
    for (k, _) in &ops[1..] {
        common = common.min(k.len());
        common = k[..common]
            .iter()
            .zip(&first.0[..common])
            .position(|(a, b)| a != b)
            .unwrap_or(common);
    }
    // (chunk, left << 40 | position): `left` is the key's length after the
    // chunk's offset, capped at CHUNK + 1. Two keys with equal zero-padded
    // chunks and `left` of at most CHUNK are equal, and of two with equal
    // chunks the shorter is a prefix of the longer, so it comes first.
    let entry = |i: usize, off: usize| {
        let rest = ops[i].0.get(off..).unwrap_or_default();
        let n = rest.len().min(CHUNK);
        let mut b = [0u8; CHUNK];
        b[..n].copy_from_slice(&rest[..n]);
        let left = rest.len().min(CHUNK + 1) as u64;
        (u128::from_be_bytes(b), left << 40 | i as u64)
    };
    let position = |e: &(u128, u64)| (e.1 & ((1 << 40) - 1)) as usize;
    let longer = |e: &(u128, u64)| e.1 >> 40 > CHUNK as u64;
    let mut order: Vec<(u128, u64)> = (0..ops.len()).map(|i| entry(i, common)).collect();
    let mut todo = vec![(0..order.len(), common)];
    while let Some((range, off)) = todo.pop() {
        let part = &mut order[range.clone()];
        if off != common {
            for e in part.iter_mut() {
                *e = entry(position(e), off);
            }
        }
        part.sort_unstable();
        // Runs tying on a whole chunk, with more key after it: the next chunk.
        let mut i = 0;
        while i < part.len() {
            let mut j = i + 1;
            if longer(&part[i]) {
                while j < part.len() && part[j].0 == part[i].0 && longer(&part[j]) {
                    j += 1;
                }
                if j - i > 1 {
                    todo.push((range.start + i..range.start + j, off + CHUNK));
                }
            }
            i = j;
        }
    }
    let mut slots: Vec<Option<Op>> = ops.into_iter().map(Some).collect();
    order
        .iter()
        .map(|e| slots[position(e)].take().expect("each position once"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The chunked sort orders keys as a stable byte-wise sort does: keys
    /// ending inside a chunk or exactly at its end, keys differing only in
    /// trailing zeros or only past their first or second chunk, and repeated keys (whose
    /// writes keep their order).
    #[test]
    fn sorted_matches_a_stable_bytewise_sort() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for prefix in [&b""[..], b"job/7/op/", b"j"] {
            let mut ops = Vec::new();
            for i in 0..3000u32 {
                let mut k = prefix.to_vec();
                // One of four stems of 0, 15, 16 and 33 bytes, then up to 20
                // of three values: keys tie on whole chunks and end at every
                // offset around a chunk's end.
                let stem = [0, 15, 16, 33][(next() % 4) as usize];
                k.extend((0..stem).map(|b| b as u8));
                let len = (next() % 21) as usize;
                k.extend((0..len).map(|_| [0u8, 1, 255][(next() % 3) as usize]));
                let v = (i % 5 != 0).then(|| i.to_le_bytes().to_vec());
                ops.push((k, v));
            }
            let mut expected = ops.clone();
            expected.sort_by(|a, b| a.0.cmp(&b.0));
            assert_eq!(sorted(ops), expected, "prefix {prefix:?}");
        }
        assert!(sorted(Vec::new()).is_empty());
        let one = vec![(b"k".to_vec(), None)];
        assert_eq!(sorted(one.clone()), one);
    }

    /// Ingested writes: the last write of a key in a batch wins, a deletion
    /// removes a key stored earlier, and writes through the memtable and
    /// through files keep their order whichever way each went; all of it
    /// survives a reopen, and a file a crash left staged is cleared.
    #[test]
    fn ingested_writes_keep_their_order_with_logged_ones() {
        let dir = tempfile::tempdir().unwrap();
        let kv =
            |k: &str, v: Option<&str>| (k.as_bytes().to_vec(), v.map(|v| v.as_bytes().to_vec()));
        let get = |s: &Store, k: &str| {
            s.get(k.as_bytes())
                .unwrap()
                .map(|v| String::from_utf8(v).unwrap())
        };
        {
            let s = Store::open(dir.path()).unwrap();
            s.write([
                kv("a", Some("logged")),
                kv("b", Some("logged")),
                kv("c", Some("logged")),
            ])
            .unwrap();
            // "a" is in the memtable: the ingested write comes after it.
            s.write_ingested([
                kv("a", Some("first")),
                kv("d", Some("ingested")),
                kv("a", Some("ingested")),
                kv("b", None),
            ])
            .unwrap();
            assert_eq!(get(&s, "a").as_deref(), Some("ingested"));
            assert_eq!(get(&s, "b"), None);
            s.write([kv("a", Some("logged again"))]).unwrap();
            s.write_ingested([kv("c", None), kv("e", Some("ingested"))])
                .unwrap();
            assert_eq!(get(&s, "a").as_deref(), Some("logged again"));
            assert_eq!(get(&s, "c"), None);
        }
        std::fs::write(dir.path().join(STAGING).join("99.sst"), b"left by a crash").unwrap();
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(
            s.scan_prefix(b"").unwrap(),
            vec![
                (b"a".to_vec(), b"logged again".to_vec()),
                (b"d".to_vec(), b"ingested".to_vec()),
                (b"e".to_vec(), b"ingested".to_vec()),
            ]
        );
        assert_eq!(
            std::fs::read_dir(dir.path().join(STAGING)).unwrap().count(),
            0
        );
        s.verify(|_, _| Ok(())).unwrap();
    }

    /// 40 MB written: a store whose memtables are held to 8 MiB flushes
    /// them as they fill; one with RocksDB's defaults still holds it all.
    #[test]
    fn memtables_stay_within_their_bound() {
        let held = |memtables: Option<usize>| {
            let dir = tempfile::tempdir().unwrap();
            let s = Store::open_with(dir.path(), memtables).unwrap();
            for batch in 0..40u32 {
                let writes = (0..1000u32).map(|i| {
                    let key = [batch.to_be_bytes(), i.to_be_bytes()].concat();
                    (key, Some(vec![b'x'; 1000]))
                });
                s.write(writes).unwrap();
            }
            s.memtable_bytes().unwrap() as usize
        };
        let bounded = held(Some(8 << 20));
        assert!(bounded <= 8 << 20, "{bounded} bytes");
        let unbounded = held(None);
        assert!(unbounded > 30 << 20, "{unbounded} bytes");
    }

    #[test]
    fn writes_scans_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open(dir.path()).unwrap();
            s.write(vec![
                (b"a/1".to_vec(), Some(b"x".to_vec())),
                (b"a/2".to_vec(), Some(b"y".to_vec())),
                (b"b/1".to_vec(), Some(b"z".to_vec())),
            ])
            .unwrap();
            s.write(vec![(b"a/1".to_vec(), None)]).unwrap();
        }
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(
            s.scan_prefix(b"a/").unwrap(),
            vec![(b"a/2".to_vec(), b"y".to_vec())]
        );
        assert_eq!(s.get(b"b/1").unwrap(), Some(b"z".to_vec()));
        s.delete_prefix(b"b/").unwrap();
        assert_eq!(s.get(b"b/1").unwrap(), None);
    }
}
