//! `MvStore`: the current content of a materialized view, updated by its job
//! one chunk at a time and read as a consistent snapshot.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch};
use datafusion::arrow::datatypes::SchemaRef;
use parking_lot::RwLock;

use super::{RowCodec, StateError};

/// Rows keyed by the view's key columns, or numbered in arrival order for an
/// append-only view. Each applied chunk is atomic for readers.
pub struct MvStore {
    codec: RowCodec,
    key: Option<(Vec<usize>, RowCodec)>,
    inner: RwLock<Inner>,
}

#[derive(Default)]
struct Inner {
    rows: BTreeMap<Vec<u8>, Vec<u8>>,
    next_seq: u64,
    /// Rows put (`Some`) or removed (`None`) since the last checkpoint.
    changes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

impl Inner {
    fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.changes.insert(key.clone(), Some(value.clone()));
        self.rows.insert(key, value);
    }

    fn remove(&mut self, key: &[u8]) {
        if self.rows.remove(key).is_some() {
            self.changes.insert(key.to_vec(), None);
        }
    }
}

impl MvStore {
    /// `key` = the view's unique key columns; empty for an append-only view.
    pub fn new(schema: SchemaRef, key: Vec<usize>) -> Result<MvStore, StateError> {
        let key = if key.is_empty() {
            None
        } else {
            let codec = RowCodec::new(Arc::new(schema.project(&key)?))?;
            Some((key, codec))
        };
        Ok(MvStore {
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
        let values = self.codec.encode(batch.columns())?;
        let keys = match &self.key {
            Some((cols, kc)) => {
                let cols: Vec<ArrayRef> = cols.iter().map(|&i| batch.column(i).clone()).collect();
                Some(kc.encode(&cols)?)
            }
            None => None,
        };
        let mut inner = self.inner.write();
        for (i, value) in values.into_iter().enumerate() {
            let add = is_addition(i);
            match &keys {
                Some(keys) => {
                    if add {
                        inner.put(keys[i].clone(), value);
                    } else {
                        inner.remove(&keys[i]);
                    }
                }
                None if add => {
                    let seq = inner.next_seq;
                    inner.next_seq += 1;
                    inner.put(seq.to_be_bytes().to_vec(), value);
                }
                None => {
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

    /// The view's rows now, in key order.
    pub fn snapshot(&self) -> Result<RecordBatch, StateError> {
        let inner = self.inner.read();
        self.codec.decode(inner.rows.values().map(|v| v.as_slice()))
    }

    pub fn len(&self) -> usize {
        self.inner.read().rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets every row (before a rebuild).
    pub fn clear(&self) {
        *self.inner.write() = Inner::default();
    }

    /// The rows put or removed since the last call, for a checkpoint.
    pub fn take_changes(&self) -> BTreeMap<Vec<u8>, Option<Vec<u8>>> {
        std::mem::take(&mut self.inner.write().changes)
    }

    /// Replaces the content with committed rows (on recovery).
    pub fn load(&self, rows: Vec<(Vec<u8>, Vec<u8>)>) {
        let mut inner = self.inner.write();
        *inner = Inner::default();
        for (k, v) in rows {
            if self.key.is_none() {
                let seq = k.as_slice().try_into().map(u64::from_be_bytes).unwrap_or(0);
                inner.next_seq = inner.next_seq.max(seq + 1);
            }
            inner.rows.insert(k, v);
        }
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
        let mv = MvStore::new(schema.clone(), vec![0]).unwrap();
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
        assert_eq!(mv.snapshot().unwrap(), b(vec![1, 2], vec![2, 1]));
        mv.apply(&b(vec![2], vec![1]), |_| false).unwrap();
        assert_eq!(mv.snapshot().unwrap(), b(vec![1], vec![2]));
    }
}
