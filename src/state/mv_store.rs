//! `MvStore`: the current content of a materialized view, updated by its job
//! one chunk at a time and read as a consistent snapshot.
//!
//! A view with a key holds its rows by key (row-encoded), so updates and
//! deletes replace rows; its checkpoint writes each changed row. An
//! append-only view without a key keeps the Arrow batches it received, as
//! they are (no per-row encoding), and its checkpoint writes the batches
//! appended since the last one as one Arrow IPC segment.
//!
//! Under a memory budget a keyed view keeps only its changes in memory: its
//! committed rows are read from the checkpoint store (`v/<key>` of the job),
//! overlaid with the changes of epochs not yet committed and of the current
//! one. A read holds the view's lock for its whole scan, so no checkpoint
//! takes changes meanwhile, and the store can only gain epochs whose changes
//! the overlay already holds: every read is of one consistent state.

use std::hash::BuildHasher;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, AsArray, RecordBatch, StringViewArray};
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;
use hashbrown::{HashMap, HashSet};
use parking_lot::RwLock;

use super::{JobState, RowCodec, StateError};

/// Key prefix of an append-only view's checkpoint segments.
const SEGMENT: &[u8] = b"seg/";

/// A view's rows: keyed, or in arrival order for an append-only view.
/// Each applied chunk is atomic for readers.
pub struct MvStore {
    codec: RowCodec,
    key: Option<(Vec<usize>, RowCodec)>,
    append_only: bool,
    inner: RwLock<Inner>,
}

#[derive(Default)]
struct Inner {
    rows: HashMap<Vec<u8>, Vec<u8>>,
    next_seq: u64,
    /// Keys of rows put or removed since the last checkpoint (the
    /// checkpoint writes their rows as they are then).
    changed: HashSet<Vec<u8>>,
    /// Append-only views: the batches received, and how many of them the
    /// checkpoints already hold.
    batches: Vec<RecordBatch>,
    appended_rows: usize,
    checkpointed: usize,
    /// A keyed view whose committed rows are in the store, not in `rows`.
    spilled: Option<Spilled>,
    /// The rows are rebuilt from the job's operator state on recovery
    /// (see [`MvStore::derive`]): changes are not tracked, checkpoints
    /// write none.
    derived: bool,
    /// A keyless view that takes rows back: row numbers by the hash of
    /// their row, so a retraction finds an equal row without a scan.
    by_value: HashMap<u64, Vec<u64>>,
    hasher: hashbrown::DefaultHashBuilder,
}

/// Changes by key: the new row, or `None` for a removed one.
type Overlay = HashMap<Vec<u8>, Option<Vec<u8>>>;

/// A keyed view read from the store plus its uncommitted changes.
struct Spilled {
    job: JobState,
    /// Changes since the last checkpoint.
    pending: Overlay,
    /// Changes taken by checkpoints whose commit has not completed, oldest first.
    inflight: Vec<(u64, Overlay)>,
    /// Rows in the view (committed, plus additions less removals since).
    rows: i64,
}

impl Inner {
    /// Notes that row number `seq` of a keyless view holds `value`.
    fn index(&mut self, seq: u64, value: &[u8]) {
        let h = self.hasher.hash_one(value);
        self.by_value.entry(h).or_default().push(seq);
    }

    /// Forgets, and returns, the number of a row of a keyless view equal to `value`.
    fn unindex(&mut self, value: &[u8]) -> Option<u64> {
        let h = self.hasher.hash_one(value);
        let seqs = self.by_value.get_mut(&h)?;
        let rows = &self.rows;
        let at = seqs
            .iter()
            .rposition(|s| rows.get(&s.to_be_bytes()[..]).is_some_and(|v| v == value))?;
        let seq = seqs.swap_remove(at);
        if seqs.is_empty() {
            self.by_value.remove(&h);
        }
        Some(seq)
    }

    fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        if !self.derived {
            self.changed
                .get_or_insert_with(key.as_slice(), <[u8]>::to_vec);
        }
        self.rows.insert(key, value);
    }

    fn remove(&mut self, key: &[u8]) {
        if self.rows.remove(key).is_some() && !self.derived {
            self.changed.get_or_insert_with(key, <[u8]>::to_vec);
        }
    }
}

/// Writes to the view's part of a checkpoint: (key, value, or None to delete).
pub type Writes = Vec<(Vec<u8>, Option<Vec<u8>>)>;

/// What a view changed since the last checkpoint.
pub enum ViewChanges {
    /// Rows put (`Some`) or removed (`None`), by key.
    Rows(Writes),
    /// Batches appended, stored under one segment key.
    Segment {
        key: Vec<u8>,
        schema: SchemaRef,
        batches: Vec<RecordBatch>,
    },
}

/// `batch` with each string-view column that references far more bytes
/// than its strings hold (a slice of a longer input string keeps that
/// input's whole buffer) copied into buffers of its own, so that the view
/// neither keeps nor checkpoints the input's other bytes.
fn compact(batch: &RecordBatch) -> Result<RecordBatch, StateError> {
    let loose = |v: &StringViewArray| {
        let held: usize = v.data_buffers().iter().map(|b| b.len()).sum();
        // A view's low 32 bits are its length; up to 12 bytes live in the view.
        let used: usize = v
            .views()
            .iter()
            .map(|&w| w as u32 as usize)
            .filter(|&n| n > 12)
            .sum();
        held > 2 * used + 4096
    };
    let mut compacted = false;
    let columns = batch
        .columns()
        .iter()
        .map(|a| match a.as_string_view_opt() {
            Some(v) if loose(v) => {
                compacted = true;
                Arc::new(v.gc()) as ArrayRef
            }
            _ => a.clone(),
        })
        .collect();
    if !compacted {
        return Ok(batch.clone());
    }
    Ok(RecordBatch::try_new(batch.schema(), columns)?)
}

/// Segments from this size (in memory) up are written as files of their
/// own instead of through the store's log (see `files.rs`); smaller ones,
/// such as a slow stream's, stay in the store, so views do not each add a
/// small file per epoch.
const SEGMENT_FILE_MIN: usize = 1 << 20;

impl ViewChanges {
    /// The (key, value or deletion) writes, encoding a segment as Arrow IPC:
    /// into the value, or into a file of `job`'s when large. Returns the
    /// writes and the bytes written to files.
    pub fn into_writes(self, job: &JobState) -> Result<(Writes, u64), StateError> {
        match self {
            ViewChanges::Rows(rows) => Ok((rows, 0)),
            ViewChanges::Segment { batches, .. } if batches.is_empty() => Ok((Vec::new(), 0)),
            ViewChanges::Segment {
                key,
                schema,
                batches,
            } => {
                let encode = |out: &mut dyn std::io::Write| -> Result<(), StateError> {
                    let mut w = StreamWriter::try_new(out, &schema)?;
                    for b in &batches {
                        w.write(b)?;
                    }
                    w.finish()?;
                    Ok(())
                };
                let size: usize = batches.iter().map(|b| b.get_array_memory_size()).sum();
                if size >= SEGMENT_FILE_MIN {
                    let (reference, len) = job.write_view_file(&key, encode)?;
                    return Ok((vec![(key, Some(reference))], len));
                }
                // Sized up front: growing by doubling would copy the segment
                // and touch fresh pages several times over.
                let mut buf = Vec::with_capacity(size + size / 8 + 4096);
                encode(&mut buf)?;
                Ok((vec![(key, Some(buf))], 0))
            }
        }
    }
}

impl MvStore {
    /// `key` = the view's unique key columns; empty when it has none.
    /// `append_only`: the view only ever receives inserts.
    pub fn new(
        schema: SchemaRef,
        key: Vec<usize>,
        append_only: bool,
    ) -> Result<MvStore, StateError> {
        let key = if key.is_empty() {
            None
        } else {
            let codec = RowCodec::new(Arc::new(schema.project(&key)?))?;
            Some((key, codec))
        };
        Ok(MvStore {
            append_only: append_only && key.is_none(),
            codec: RowCodec::new(schema)?,
            key,
            inner: RwLock::new(Inner::default()),
        })
    }

    pub fn schema(&self) -> &SchemaRef {
        self.codec.schema()
    }

    /// Applies a chunk: `is_addition(i)` tells whether row `i` is added
    /// (insert, update-after) or removed (delete, update-before).
    pub fn apply(
        &self,
        batch: &RecordBatch,
        is_addition: impl Fn(usize) -> bool,
    ) -> Result<(), StateError> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        if self.append_only {
            if let Some(i) = (0..batch.num_rows()).find(|&i| !is_addition(i)) {
                return Err(StateError::Corrupt {
                    key: "view".into(),
                    message: format!("row {i} retracts from an append-only view"),
                });
            }
            let batch = compact(batch)?;
            let mut inner = self.inner.write();
            inner.appended_rows += batch.num_rows();
            inner.batches.push(batch);
            return Ok(());
        }
        let values = self.codec.encode(batch.columns())?;
        let keys = match &self.key {
            Some((cols, kc)) => {
                let cols: Vec<ArrayRef> = cols.iter().map(|&i| batch.column(i).clone()).collect();
                Some(kc.encode(&cols)?)
            }
            None => None,
        };
        let mut inner = self.inner.write();
        if let Some(keys) = keys {
            if let Some(sp) = &mut inner.spilled {
                // A keyed changelog: each removal takes away a row that is there.
                for (i, (key, value)) in keys.into_iter().zip(values).enumerate() {
                    let add = is_addition(i);
                    sp.pending.insert(key, add.then_some(value));
                    sp.rows += if add { 1 } else { -1 };
                }
                return Ok(());
            }
            // An update arrives as its old row's removal, then the new row.
            let mut rows = keys.into_iter().zip(values).enumerate().peekable();
            while let Some((i, (key, value))) = rows.next() {
                if is_addition(i) {
                    inner.put(key, value);
                    continue;
                }
                // Put over the old row: one lookup instead of a removal too.
                match rows.next_if(|(j, (next, _))| *next == key && is_addition(*j)) {
                    Some((_, (key, value))) => inner.put(key, value),
                    None => inner.remove(&key),
                }
            }
            return Ok(());
        }
        for (i, value) in values.into_iter().enumerate() {
            match is_addition(i) {
                true => {
                    let seq = inner.next_seq;
                    inner.next_seq += 1;
                    inner.index(seq, &value);
                    inner.put(seq.to_be_bytes().to_vec(), value);
                }
                false => {
                    // A retraction in a keyless view removes one equal row.
                    if let Some(seq) = inner.unindex(&value) {
                        inner.remove(&seq.to_be_bytes());
                    }
                }
            }
        }
        Ok(())
    }

    /// Makes room for `additional` more keyed rows at once (a view rebuilt
    /// on recovery: its map grows once, not by doubling again and again).
    pub fn reserve(&self, additional: usize) {
        if self.key.is_some() && !self.append_only {
            self.inner.write().rows.reserve(additional);
        }
    }

    /// The view's rows now: in arrival order for a view without a key, in
    /// no particular order for a keyed one (as a table's rows in SQL).
    pub fn snapshot(&self) -> Result<RecordBatch, StateError> {
        let inner = self.inner.read();
        if self.append_only {
            return Ok(concat_batches(self.schema(), &inner.batches)?);
        }
        if let Some(sp) = &inner.spilled {
            return self.spilled_snapshot(sp);
        }
        if self.key.is_some() {
            return self.codec.decode(inner.rows.values().map(|v| v.as_slice()));
        }
        let mut rows: Vec<_> = inner.rows.iter().collect();
        rows.sort_unstable_by(|a, b| a.0.cmp(b.0));
        self.codec
            .decode(rows.into_iter().map(|(_, v)| v.as_slice()))
    }

    /// Committed rows from the store, overlaid with the changes not yet
    /// committed (newest wins).
    fn spilled_snapshot(&self, sp: &Spilled) -> Result<RecordBatch, StateError> {
        let mut overlay: HashMap<&[u8], Option<&[u8]>> = HashMap::new();
        for changes in sp.inflight.iter().map(|(_, c)| c).chain([&sp.pending]) {
            for (k, v) in changes {
                overlay.insert(k.as_slice(), v.as_deref());
            }
        }
        let committed = sp.job.view_rows()?;
        let rows = committed
            .iter()
            .filter(|(k, _)| !overlay.contains_key(k.as_slice()))
            .map(|(_, v)| v.as_slice())
            .chain(overlay.values().filter_map(|v| *v));
        self.codec.decode(rows)
    }

    /// From now on, keeps only changes in memory and reads committed rows
    /// from `job`'s checkpoints (a keyed view; others are left as they are).
    /// Call before [`MvStore::load_spilled`] and before any change.
    pub fn spill_to(&self, job: JobState) {
        if self.key.is_none() || self.append_only {
            return;
        }
        self.inner.write().spilled = Some(Spilled {
            job,
            pending: Overlay::new(),
            inflight: Vec::new(),
            rows: 0,
        });
    }

    pub fn is_spilled(&self) -> bool {
        self.inner.read().spilled.is_some()
    }

    pub fn is_append_only(&self) -> bool {
        self.append_only
    }

    /// From now on the view's rows are not written by checkpoints: the job
    /// rebuilds them from its operators' state on recovery (the view is
    /// their output through operators that keep nothing). A keyed or
    /// keyless view that takes updates, not spilled; call before any change.
    pub fn derive(&self) {
        let mut inner = self.inner.write();
        if inner.spilled.is_none() && !self.append_only {
            inner.derived = true;
        }
    }

    pub fn is_derived(&self) -> bool {
        self.inner.read().derived
    }

    /// On recovery of a spilled view: the number of committed rows, or
    /// `None` to count them in the store.
    pub fn load_spilled(&self, rows: Option<i64>) -> Result<(), StateError> {
        let mut inner = self.inner.write();
        if let Some(sp) = &mut inner.spilled {
            sp.rows = match rows {
                Some(n) => n,
                None => sp.job.view_rows()?.len() as i64,
            };
        }
        Ok(())
    }

    /// Epoch `epoch` is durable: its changes are now read from the store.
    pub fn committed(&self, epoch: u64) {
        if let Some(sp) = &mut self.inner.write().spilled {
            sp.inflight.retain(|(e, _)| *e > epoch);
        }
    }

    pub fn len(&self) -> usize {
        let inner = self.inner.read();
        if let Some(sp) = &inner.spilled {
            return sp.rows.max(0) as usize;
        }
        if self.append_only {
            inner.appended_rows
        } else {
            inner.rows.len()
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// What changed since the last call, for checkpoint `epoch`.
    pub fn take_changes(&self, epoch: u64) -> ViewChanges {
        let mut inner = self.inner.write();
        if let Some(sp) = &mut inner.spilled {
            let changes = std::mem::take(&mut sp.pending);
            let writes = changes
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            sp.inflight.push((epoch, changes));
            return ViewChanges::Rows(writes);
        }
        if self.append_only {
            let from = inner.checkpointed;
            inner.checkpointed = inner.batches.len();
            let seq = inner.next_seq;
            inner.next_seq += 1;
            return ViewChanges::Segment {
                key: [SEGMENT, &seq.to_be_bytes()].concat(),
                schema: self.schema().clone(),
                batches: inner.batches[from..].to_vec(),
            };
        }
        if inner.derived {
            return ViewChanges::Rows(Vec::new());
        }
        let changed = std::mem::take(&mut inner.changed);
        ViewChanges::Rows(
            changed
                .into_iter()
                .map(|k| {
                    let row = inner.rows.get(&k).cloned();
                    (k, row)
                })
                .collect(),
        )
    }

    /// Replaces the content with committed rows (on recovery).
    pub fn load(&self, rows: Vec<(Vec<u8>, Vec<u8>)>) -> Result<(), StateError> {
        let mut inner = self.inner.write();
        let spilled = inner.spilled.take();
        *inner = Inner {
            spilled,
            derived: inner.derived,
            ..Inner::default()
        };
        for (k, v) in rows {
            if self.append_only {
                let seq = k
                    .strip_prefix(SEGMENT)
                    .and_then(|s| s.try_into().ok())
                    .map(u64::from_be_bytes)
                    .ok_or_else(|| StateError::Corrupt {
                        key: String::from_utf8_lossy(&k).into_owned(),
                        message: "not a segment of an append-only view".into(),
                    })?;
                inner.next_seq = inner.next_seq.max(seq + 1);
                for batch in StreamReader::try_new(std::io::Cursor::new(v), None)? {
                    let batch = batch?;
                    inner.appended_rows += batch.num_rows();
                    inner.batches.push(batch);
                }
                continue;
            }
            if self.key.is_none() {
                let seq = k.as_slice().try_into().map(u64::from_be_bytes).unwrap_or(0);
                inner.next_seq = inner.next_seq.max(seq + 1);
                inner.index(seq, &v);
            }
            inner.rows.insert(k, v);
        }
        inner.checkpointed = inner.batches.len();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    /// The writes of a checkpoint's changes (files to a scratch store).
    fn writes_of(changes: ViewChanges) -> Writes {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(super::super::Store::open(dir.path()).unwrap());
        changes.into_writes(&JobState::new(store, 1)).unwrap().0
    }

    #[test]
    fn keyed_updates_replace_rows() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, false),
            Field::new("n", DataType::Int64, false),
        ]));
        let mv = MvStore::new(schema.clone(), vec![0], false).unwrap();
        let b = |k: Vec<i64>, n: Vec<i64>| {
            RecordBatch::try_new(
                schema.clone(),
                vec![Arc::new(Int64Array::from(k)), Arc::new(Int64Array::from(n))],
            )
            .unwrap()
        };
        mv.apply(&b(vec![2, 1], vec![1, 1]), |_| true).unwrap();
        // update k=1: before (1,1), after (1,2)
        mv.apply(&b(vec![1, 1], vec![1, 2]), |i| i == 1).unwrap();
        let mut rows = mv.snapshot().unwrap();
        rows = datafusion::arrow::compute::take_record_batch(
            &rows,
            &datafusion::arrow::compute::sort_to_indices(rows.column(0), None, None).unwrap(),
        )
        .unwrap();
        assert_eq!(rows, b(vec![1, 2], vec![2, 1]));
        // The checkpoint writes each changed row once, as it is now.
        let mut writes = writes_of(mv.take_changes(1));
        writes.sort();
        assert_eq!(writes.len(), 2);
        assert_eq!(writes_of(mv.take_changes(1)), vec![]);
        // Next epoch: k=1 updated in place (removal, then addition of the
        // same key); k=2 removed and k=3 added right after it.
        mv.apply(&b(vec![1, 1, 2, 3], vec![2, 5, 1, 7]), |i| i % 2 == 1)
            .unwrap();
        let mut writes = writes_of(mv.take_changes(2));
        writes.sort();
        let codec = RowCodec::new(schema.clone()).unwrap();
        let row = |k: i64, n: i64| {
            let cols: Vec<ArrayRef> = vec![
                Arc::new(Int64Array::from(vec![k])),
                Arc::new(Int64Array::from(vec![n])),
            ];
            codec.encode(&cols).unwrap().remove(0)
        };
        let values: Vec<_> = writes.iter().map(|(_, v)| v.clone()).collect();
        assert_eq!(values, vec![Some(row(1, 5)), None, Some(row(3, 7))]);
        mv.apply(&b(vec![3], vec![7]), |_| false).unwrap();
        mv.apply(&b(vec![2], vec![1]), |_| false).unwrap();
        assert_eq!(mv.snapshot().unwrap(), b(vec![1], vec![5]));
    }

    #[test]
    fn appended_string_views_keep_only_their_own_bytes() {
        use datafusion::arrow::array::StringViewArray;
        let schema = Arc::new(Schema::new(vec![Field::new(
            "s",
            DataType::Utf8View,
            false,
        )]));
        let long: Vec<String> = (0..10_000).map(|i| format!("{i:0>100}")).collect();
        let all = StringViewArray::from_iter_values(long.iter().map(String::as_str));
        // One row of it still references the whole million-byte buffer.
        let one = Arc::new(all.slice(7, 1)) as ArrayRef;
        let held = |a: &ArrayRef| -> usize {
            a.as_string_view()
                .data_buffers()
                .iter()
                .map(|b| b.len())
                .sum()
        };
        assert!(held(&one) >= 1_000_000);
        let mv = MvStore::new(schema.clone(), vec![], true).unwrap();
        mv.apply(
            &RecordBatch::try_new(schema.clone(), vec![one]).unwrap(),
            |_| true,
        )
        .unwrap();
        let stored = mv.snapshot().unwrap();
        assert_eq!(stored.column(0).as_string_view().value(0), long[7]);
        assert!(held(stored.column(0)) < 1_000, "{}", held(stored.column(0)));
        let writes = writes_of(mv.take_changes(1));
        let segment = writes[0].1.as_ref().unwrap();
        assert!(segment.len() < 10_000, "{} bytes", segment.len());
    }

    #[test]
    fn a_keyless_view_takes_back_one_equal_row_per_retraction() {
        let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
        let b = |n: Vec<i64>| {
            RecordBatch::try_new(schema.clone(), vec![Arc::new(Int64Array::from(n))]).unwrap()
        };
        let sorted = |mv: &MvStore| {
            let rows = mv.snapshot().unwrap();
            let mut n: Vec<i64> = rows
                .column(0)
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap()
                .values()
                .to_vec();
            n.sort();
            n
        };
        let mv = MvStore::new(schema.clone(), vec![], false).unwrap();
        mv.apply(&b(vec![7, 7, 8, 7, 9]), |_| true).unwrap();
        // One 7 goes, a 6 that is not there takes nothing, 8 goes.
        mv.apply(&b(vec![7, 6, 8]), |_| false).unwrap();
        assert_eq!(sorted(&mv), vec![7, 7, 9]);
        // Restored from its checkpoint, the view still finds equal rows.
        let rows = writes_of(mv.take_changes(1))
            .into_iter()
            .filter_map(|(k, v)| Some((k, v?)))
            .collect();
        let restored = MvStore::new(schema.clone(), vec![], false).unwrap();
        restored.load(rows).unwrap();
        assert_eq!(sorted(&restored), vec![7, 7, 9]);
        restored.apply(&b(vec![7, 9, 7, 7]), |_| false).unwrap();
        assert_eq!(sorted(&restored), Vec::<i64>::new());
        restored.apply(&b(vec![9, 5]), |i| i == 0).unwrap();
        assert_eq!(sorted(&restored), vec![9]);
    }

    #[test]
    fn append_only_views_checkpoint_segments_and_reload_them() {
        let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
        let b = |n: Vec<i64>| {
            RecordBatch::try_new(schema.clone(), vec![Arc::new(Int64Array::from(n))]).unwrap()
        };
        let mv = MvStore::new(schema.clone(), vec![], true).unwrap();
        mv.apply(&b(vec![1, 2]), |_| true).unwrap();
        let first = writes_of(mv.take_changes(1));
        mv.apply(&b(vec![3]), |_| true).unwrap();
        mv.apply(&b(vec![4, 5]), |_| true).unwrap();
        let second = writes_of(mv.take_changes(1));
        assert_eq!(writes_of(mv.take_changes(1)), vec![]);
        assert_eq!((first.len(), second.len()), (1, 1));
        assert_ne!(first[0].0, second[0].0, "each checkpoint adds a segment");
        assert!(
            mv.apply(&b(vec![1]), |_| false).is_err(),
            "an append-only view takes no retraction"
        );

        let restored = MvStore::new(schema.clone(), vec![], true).unwrap();
        let rows = first
            .into_iter()
            .chain(second)
            .map(|(k, v)| (k, v.unwrap()))
            .collect();
        restored.load(rows).unwrap();
        assert_eq!(restored.len(), 5);
        assert_eq!(restored.snapshot().unwrap(), b(vec![1, 2, 3, 4, 5]));
        // New segments do not overwrite the loaded ones.
        restored.apply(&b(vec![6]), |_| true).unwrap();
        let next = writes_of(restored.take_changes(2));
        assert!(next[0].0 > [SEGMENT, &1u64.to_be_bytes()].concat());
    }

    /// A segment of a megabyte or more is written as a file of its own:
    /// the store holds a reference, the view loads from the file after a
    /// reopen, a file no epoch refers to is removed when the store is
    /// verified, a damaged file fails verification and the load, and DROP
    /// removes the job's files.
    #[test]
    fn large_segments_are_checked_files() {
        let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
        let n = 200_000i64;
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(Int64Array::from_iter_values(0..n))],
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let files = dir.path().join("files");
        let count = || std::fs::read_dir(&files).unwrap().count();
        let open = || Arc::new(super::super::Store::open(dir.path()).unwrap());
        {
            let store = open();
            let job = JobState::new(store.clone(), 7);
            let mv = MvStore::new(schema.clone(), vec![], true).unwrap();
            mv.apply(&batch, |_| true).unwrap();
            let (writes, bytes) = mv.take_changes(1).into_writes(&job).unwrap();
            assert!(bytes >= 8 * n as u64, "{bytes} bytes in files");
            let reference = writes[0].1.as_ref().unwrap();
            assert!(reference.len() < 200, "a reference of {}", reference.len());
            let mut w = job.begin(1);
            for (k, v) in writes {
                w.view_put(&k, v.unwrap());
            }
            job.commit(w, &super::super::EpochRecord::bare(1)).unwrap();
            // As a crash would leave a file of an epoch that never committed.
            std::fs::write(files.join("stray"), b"x").unwrap();
            assert_eq!(count(), 2);
        }
        {
            let store = open();
            store.verify(|_, _| Ok(())).unwrap();
            assert_eq!(count(), 1, "the stray file is removed");
            let restored = MvStore::new(schema.clone(), vec![], true).unwrap();
            restored
                .load(JobState::new(store, 7).view_rows().unwrap())
                .unwrap();
            assert_eq!(restored.snapshot().unwrap(), batch);
        }
        let path = std::fs::read_dir(&files)
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[1000] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        let store = open();
        let err = store.verify(|_, _| Ok(())).unwrap_err().to_string();
        assert!(err.contains("CRC-32"), "{err}");
        let job = JobState::new(store, 7);
        assert!(job.view_rows().is_err());
        job.destroy().unwrap();
        assert_eq!(count(), 0, "DROP removes the files");
    }

    #[test]
    fn a_spilled_view_reads_committed_rows_under_its_changes() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, false),
            Field::new("n", DataType::Int64, false),
        ]));
        let b = |k: Vec<i64>, n: Vec<i64>| {
            RecordBatch::try_new(
                schema.clone(),
                vec![Arc::new(Int64Array::from(k)), Arc::new(Int64Array::from(n))],
            )
            .unwrap()
        };
        // (k, n) pairs of a snapshot, sorted.
        let rows = |mv: &MvStore| {
            let s = mv.snapshot().unwrap();
            let k = s.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
            let n = s.column(1).as_any().downcast_ref::<Int64Array>().unwrap();
            let mut v: Vec<(i64, i64)> = (0..s.num_rows())
                .map(|i| (k.value(i), n.value(i)))
                .collect();
            v.sort();
            v
        };
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(super::super::Store::open(dir.path()).unwrap());
        let job = JobState::new(store, 1);
        let commit = |mv: &MvStore, epoch: u64| {
            let mut w = job.begin(epoch);
            for (k, v) in mv.take_changes(epoch).into_writes(&job).unwrap().0 {
                match v {
                    Some(v) => w.view_put(&k, v),
                    None => w.view_delete(&k),
                }
            }
            w
        };
        let mv = MvStore::new(schema.clone(), vec![0], false).unwrap();
        mv.spill_to(job.clone());
        mv.apply(&b(vec![1, 2], vec![1, 1]), |_| true).unwrap();
        assert_eq!(rows(&mv), vec![(1, 1), (2, 1)], "pending changes");
        let w = commit(&mv, 1);
        assert_eq!(rows(&mv), vec![(1, 1), (2, 1)], "taken, not yet committed");
        // k=1 updated while epoch 1 is being written.
        mv.apply(&b(vec![1, 1], vec![1, 2]), |i| i == 1).unwrap();
        job.commit(w, &super::super::EpochRecord::bare(1)).unwrap();
        mv.committed(1);
        assert_eq!(rows(&mv), vec![(1, 2), (2, 1)], "the newer change wins");
        mv.apply(&b(vec![2, 3], vec![1, 1]), |i| i == 1).unwrap();
        assert_eq!(rows(&mv), vec![(1, 2), (3, 1)]);
        assert_eq!(mv.len(), 2);
        let w = commit(&mv, 2);
        job.commit(w, &super::super::EpochRecord::bare(2)).unwrap();
        mv.committed(2);
        assert_eq!(rows(&mv), vec![(1, 2), (3, 1)], "all from the store");
        // Restored: nothing loaded into memory, the count from the record or the store.
        let restored = MvStore::new(schema.clone(), vec![0], false).unwrap();
        restored.spill_to(job.clone());
        restored.load_spilled(None).unwrap();
        assert_eq!(restored.len(), 2);
        assert_eq!(rows(&restored), vec![(1, 2), (3, 1)]);
    }
}
