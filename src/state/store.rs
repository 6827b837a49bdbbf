//! `Store`: the one RocksDB database of a Weir data directory, with key
//! prefixes per owner (`c/` catalog, `t/<id>/` table rows).

use std::path::Path;

use rocksdb::{Direction, IteratorMode, Options, WriteBatch, DB};

use super::StateError;

/// Key-value pairs read from the store.
pub type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

/// The RocksDB database. Writes through [`Store::write`] are atomic.
pub struct Store {
    db: DB,
}

impl Store {
    pub fn open(dir: &Path) -> Result<Store, StateError> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        Ok(Store {
            db: DB::open(&opts, dir)?,
        })
    }

    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        Ok(self.db.get(key)?)
    }

    /// Applies puts (`Some`) and deletes (`None`) atomically, synced to disk.
    pub fn write(
        &self,
        ops: impl IntoIterator<Item = (Vec<u8>, Option<Vec<u8>>)>,
    ) -> Result<(), StateError> {
        let mut batch = WriteBatch::default();
        for (k, v) in ops {
            match v {
                Some(v) => batch.put(k, v),
                None => batch.delete(k),
            }
        }
        let mut wo = rocksdb::WriteOptions::default();
        wo.set_sync(true);
        Ok(self.db.write_opt(batch, &wo)?)
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

    /// Deletes every key starting with `prefix`.
    pub fn delete_prefix(&self, prefix: &[u8]) -> Result<(), StateError> {
        let keys = self.scan_prefix(prefix)?;
        self.write(keys.into_iter().map(|(k, _)| (k, None)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
