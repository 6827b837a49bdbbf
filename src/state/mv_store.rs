//! `MvStore`: the current content of a materialized view, updated by its job
//! one chunk at a time and read as a consistent snapshot.
//!
//! A view with a key holds its rows by key (row-encoded), so updates and
//! deletes replace rows; its checkpoint writes each changed row. An
//! append-only view without a key keeps the Arrow batches it received, as
//! they are (no per-row encoding), and its checkpoint writes the batches
//! appended since the last one as one Arrow IPC segment.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch};
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;
use hashbrown::{HashMap, HashSet};
use parking_lot::RwLock;

use super::{RowCodec, StateError};

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
}

impl Inner {
    fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        if !self.changed.contains(&key) {
            self.changed.insert(key.clone());
        }
        self.rows.insert(key, value);
    }

    fn remove(&mut self, key: &[u8]) {
        if self.rows.remove(key).is_some() && !self.changed.contains(key) {
            self.changed.insert(key.to_vec());
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

impl ViewChanges {
    /// The (key, value or deletion) writes, encoding a segment as Arrow IPC.
    pub fn into_writes(self) -> Result<Writes, StateError> {
        match self {
            ViewChanges::Rows(rows) => Ok(rows),
            ViewChanges::Segment { batches, .. } if batches.is_empty() => Ok(Vec::new()),
            ViewChanges::Segment {
                key,
                schema,
                batches,
            } => {
                let mut buf = Vec::new();
                let mut w = StreamWriter::try_new(&mut buf, &schema)?;
                for b in &batches {
                    w.write(b)?;
                }
                w.finish()?;
                drop(w);
                Ok(vec![(key, Some(buf))])
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
            let mut inner = self.inner.write();
            inner.appended_rows += batch.num_rows();
            inner.batches.push(batch.clone());
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
            for (i, (key, value)) in keys.into_iter().zip(values).enumerate() {
                if is_addition(i) {
                    inner.put(key, value);
                } else {
                    inner.remove(&key);
                }
            }
            return Ok(());
        }
        for (i, value) in values.into_iter().enumerate() {
            match is_addition(i) {
                true => {
                    let seq = inner.next_seq;
                    inner.next_seq += 1;
                    inner.put(seq.to_be_bytes().to_vec(), value);
                }
                false => {
                    // A retraction in a keyless view removes one equal row.
                    let hit = inner
                        .rows
                        .iter()
                        .find(|(_, v)| **v == value)
                        .map(|(k, _)| k.clone());
                    if let Some(k) = hit {
                        inner.remove(&k);
                    }
                }
            }
        }
        Ok(())
    }

    /// The view's rows now: in arrival order for a view without a key, in
    /// no particular order for a keyed one (as a table's rows in SQL).
    pub fn snapshot(&self) -> Result<RecordBatch, StateError> {
        let inner = self.inner.read();
        if self.append_only {
            return Ok(concat_batches(self.schema(), &inner.batches)?);
        }
        if self.key.is_some() {
            return self.codec.decode(inner.rows.values().map(|v| v.as_slice()));
        }
        let mut rows: Vec<_> = inner.rows.iter().collect();
        rows.sort_unstable_by(|a, b| a.0.cmp(b.0));
        self.codec
            .decode(rows.into_iter().map(|(_, v)| v.as_slice()))
    }

    pub fn len(&self) -> usize {
        let inner = self.inner.read();
        if self.append_only {
            inner.appended_rows
        } else {
            inner.rows.len()
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets every row (before a rebuild).
    pub fn clear(&self) {
        *self.inner.write() = Inner::default();
    }

    /// What changed since the last call, for a checkpoint.
    pub fn take_changes(&self) -> ViewChanges {
        let mut inner = self.inner.write();
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
        *inner = Inner::default();
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
        let mut writes = mv.take_changes().into_writes().unwrap();
        writes.sort();
        assert_eq!(writes.len(), 2);
        assert_eq!(mv.take_changes().into_writes().unwrap(), vec![]);
        mv.apply(&b(vec![2], vec![1]), |_| false).unwrap();
        assert_eq!(mv.snapshot().unwrap(), b(vec![1], vec![2]));
    }

    #[test]
    fn append_only_views_checkpoint_segments_and_reload_them() {
        let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
        let b = |n: Vec<i64>| {
            RecordBatch::try_new(schema.clone(), vec![Arc::new(Int64Array::from(n))]).unwrap()
        };
        let mv = MvStore::new(schema.clone(), vec![], true).unwrap();
        mv.apply(&b(vec![1, 2]), |_| true).unwrap();
        let first = mv.take_changes().into_writes().unwrap();
        mv.apply(&b(vec![3]), |_| true).unwrap();
        mv.apply(&b(vec![4, 5]), |_| true).unwrap();
        let second = mv.take_changes().into_writes().unwrap();
        assert_eq!(mv.take_changes().into_writes().unwrap(), vec![]);
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
        let next = restored.take_changes().into_writes().unwrap();
        assert!(next[0].0 > [SEGMENT, &1u64.to_be_bytes()].concat());
    }
}
