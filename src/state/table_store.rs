//! `TableStore`: the rows of a stored table (CREATE TABLE) in RocksDB, keyed by primary key.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch};
use datafusion::arrow::datatypes::SchemaRef;
use parking_lot::Mutex;

use super::{RowCodec, StateError, Store};

/// A stored table's rows under the prefix `t/<id>/`.
pub struct TableStore {
    store: Arc<Store>,
    prefix: Vec<u8>,
    codec: RowCodec,
    primary_key: Vec<usize>,
    key_codec: Option<RowCodec>,
    next_row_id: AtomicU64,
    write_lock: Mutex<()>,
    /// Stored rows (None: absent) by encoded primary key, as lookup joins
    /// read them; emptied by every write, so it never holds a row older
    /// than the store's.
    lookups: Mutex<HashMap<Vec<u8>, Option<Vec<u8>>>>,
}

/// Keys the lookup cache holds before it starts over.
const LOOKUP_CACHE: usize = 1 << 16;

/// A key already present in the table.
#[derive(Debug)]
pub struct DuplicateKey(pub String);

impl TableStore {
    pub fn open(
        store: Arc<Store>,
        table_id: u64,
        schema: SchemaRef,
        primary_key: Vec<usize>,
    ) -> Result<TableStore, StateError> {
        let prefix = format!("t/{table_id:016x}/").into_bytes();
        let key_codec = if primary_key.is_empty() {
            None
        } else {
            Some(RowCodec::new(Arc::new(schema.project(&primary_key)?))?)
        };
        // Tables without a key number their rows; continue after the largest stored id.
        let next = if key_codec.is_none() {
            store
                .scan_prefix(&prefix)?
                .last()
                .map(|(k, _)| row_id(&k[prefix.len()..]) + 1)
                .unwrap_or(0)
        } else {
            0
        };
        Ok(TableStore {
            store,
            prefix,
            codec: RowCodec::new(schema)?,
            primary_key,
            key_codec,
            next_row_id: AtomicU64::new(next),
            write_lock: Mutex::new(()),
            lookups: Mutex::new(HashMap::new()),
        })
    }

    pub fn schema(&self) -> &SchemaRef {
        self.codec.schema()
    }

    /// The columns of the primary key, in order.
    pub fn primary_key(&self) -> &[usize] {
        &self.primary_key
    }

    /// The rows whose primary key is given, row by row, by `keys` (one
    /// column per key column, of its type): for each row found, its
    /// position in `keys`, and the rows found, in that order.
    pub fn lookup(&self, keys: &[ArrayRef]) -> Result<(Vec<u32>, RecordBatch), StateError> {
        let Some(kc) = &self.key_codec else {
            return Err(StateError::Arrow(
                datafusion::arrow::error::ArrowError::InvalidArgumentError(
                    "a lookup in a table without a primary key".into(),
                ),
            ));
        };
        let encoded = kc.rows(keys)?;
        let nulls = |i: usize| keys.iter().any(|k| k.is_null(i));
        let mut found = Vec::new();
        let mut values = Vec::new();
        let mut key = self.prefix.clone();
        // Held across each read and its caching: a write empties the cache
        // after its own store write, so nothing read before it stays.
        let mut cache = self.lookups.lock();
        for i in 0..encoded.num_rows() {
            if nulls(i) {
                continue;
            }
            let k = encoded.row(i);
            let v = match cache.get(k.as_ref()) {
                Some(v) => v.clone(),
                None => {
                    key.truncate(self.prefix.len());
                    key.extend_from_slice(k.as_ref());
                    let v = self.store.get(&key)?;
                    if cache.len() >= LOOKUP_CACHE {
                        cache.clear();
                    }
                    cache.insert(k.as_ref().to_vec(), v.clone());
                    v
                }
            };
            if let Some(v) = v {
                found.push(i as u32);
                values.push(v);
            }
        }
        drop(cache);
        let rows = self.codec.decode(values.iter().map(Vec::as_slice))?;
        Ok((found, rows))
    }

    /// Every row, in primary-key order.
    pub fn scan(&self) -> Result<RecordBatch, StateError> {
        let pairs = self.store.scan_prefix(&self.prefix)?;
        self.codec.decode(pairs.iter().map(|(_, v)| v.as_slice()))
    }

    fn keys(&self, batch: &RecordBatch) -> Result<Vec<Vec<u8>>, StateError> {
        match &self.key_codec {
            Some(kc) => {
                let cols: Vec<ArrayRef> = self
                    .primary_key
                    .iter()
                    .map(|&i| batch.column(i).clone())
                    .collect();
                Ok(kc
                    .encode(&cols)?
                    .into_iter()
                    .map(|k| [self.prefix.as_slice(), &k].concat())
                    .collect())
            }
            None => Ok((0..batch.num_rows())
                .map(|_| {
                    let id = self.next_row_id.fetch_add(1, Ordering::Relaxed);
                    [self.prefix.as_slice(), &id.to_be_bytes()].concat()
                })
                .collect()),
        }
    }

    /// Inserts rows; fails without writing anything if a key exists already.
    pub fn insert(&self, batch: &RecordBatch) -> Result<Result<usize, DuplicateKey>, StateError> {
        let _guard = self.write_lock.lock();
        let keys = self.keys(batch)?;
        let values = self.codec.encode(batch.columns())?;
        if self.key_codec.is_some() {
            let mut seen = std::collections::HashSet::new();
            for (i, k) in keys.iter().enumerate() {
                if !seen.insert(k.clone()) || self.store.get(k)?.is_some() {
                    return Ok(Err(DuplicateKey(self.describe_key(batch, i))));
                }
            }
        }
        let n = keys.len();
        self.store
            .write(keys.into_iter().zip(values).map(|(k, v)| (k, Some(v))))?;
        self.lookups.lock().clear();
        Ok(Ok(n))
    }

    /// Replaces the rows with the same primary keys (the table must have one).
    pub fn upsert(&self, batch: &RecordBatch) -> Result<usize, StateError> {
        let _guard = self.write_lock.lock();
        let keys = self.keys(batch)?;
        let values = self.codec.encode(batch.columns())?;
        let n = keys.len();
        self.store
            .write(keys.into_iter().zip(values).map(|(k, v)| (k, Some(v))))?;
        self.lookups.lock().clear();
        Ok(n)
    }

    /// Deletes the given rows: by primary key, or (without one) every stored row equal to one of them.
    pub fn delete(&self, batch: &RecordBatch) -> Result<usize, StateError> {
        let _guard = self.write_lock.lock();
        let doomed: Vec<Vec<u8>> = if self.key_codec.is_some() {
            self.keys(batch)?
        } else {
            let values: std::collections::HashSet<Vec<u8>> =
                self.codec.encode(batch.columns())?.into_iter().collect();
            self.store
                .scan_prefix(&self.prefix)?
                .into_iter()
                .filter(|(_, v)| values.contains(v))
                .map(|(k, _)| k)
                .collect()
        };
        let n = doomed.len();
        self.store.write(doomed.into_iter().map(|k| (k, None)))?;
        self.lookups.lock().clear();
        Ok(n)
    }

    pub fn has_primary_key(&self) -> bool {
        self.key_codec.is_some()
    }

    /// Removes every row (DROP TABLE).
    pub fn destroy(&self) -> Result<(), StateError> {
        self.store.delete_prefix(&self.prefix)?;
        self.lookups.lock().clear();
        Ok(())
    }

    fn describe_key(&self, batch: &RecordBatch, row: usize) -> String {
        let parts: Vec<String> = self
            .primary_key
            .iter()
            .map(|&c| {
                let name = batch.schema().field(c).name().clone();
                let v =
                    datafusion::arrow::util::display::array_value_to_string(batch.column(c), row)
                        .unwrap_or_default();
                format!("{name}={v}")
            })
            .collect();
        parts.join(", ")
    }
}

fn row_id(bytes: &[u8]) -> u64 {
    bytes.try_into().map(u64::from_be_bytes).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Float64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    fn batch(schema: &SchemaRef, keys: &[&str], vals: &[f64]) -> RecordBatch {
        RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from(keys.to_vec())),
                Arc::new(Float64Array::from(vals.to_vec())),
            ],
        )
        .unwrap()
    }

    #[test]
    fn primary_key_insert_upsert_delete() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let schema = Arc::new(Schema::new(vec![
            Field::new("s", DataType::Utf8, false),
            Field::new("p", DataType::Float64, true),
        ]));
        let t = TableStore::open(store.clone(), 7, schema.clone(), vec![0]).unwrap();
        assert_eq!(
            t.insert(&batch(&schema, &["b", "a"], &[2.0, 1.0]))
                .unwrap()
                .unwrap(),
            2
        );
        let dup = t.insert(&batch(&schema, &["c", "a"], &[3.0, 9.0])).unwrap();
        assert_eq!(dup.unwrap_err().0, "s=a");
        t.upsert(&batch(&schema, &["a"], &[5.0])).unwrap();
        assert_eq!(t.scan().unwrap(), batch(&schema, &["a", "b"], &[5.0, 2.0]));
        t.delete(&batch(&schema, &["b"], &[0.0])).unwrap();
        let t2 = TableStore::open(store, 7, schema.clone(), vec![0]).unwrap();
        assert_eq!(t2.scan().unwrap(), batch(&schema, &["a"], &[5.0]));
    }
}
