//! Retained checkpoints and the fallback to them: copies of the whole store
//! (RocksDB checkpoints) kept under `<data>/checkpoints/<sequence>`, the
//! newest [`KEEP`]; on start a damaged or missing store is set aside and the
//! newest intact copy takes its place, so the server resumes from the previous
//! complete checkpoint instead of starting empty.
//!
//! A copy shares unchanged table files with the live store through hard links
//! (RocksDB never rewrites a table file), so it guards against lost,
//! replaced or truncated files and damaged logs or metadata, not against bits
//! flipped inside a file both share.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::checkpoint::check_stored;
use super::{io, StateError, Store};

/// Retained copies kept; older ones are deleted.
pub const KEEP: usize = 2;

/// The retained copies of a data directory's store.
pub struct Retained {
    dir: PathBuf,
    /// Bytes the store's memtables may hold, if bounded.
    memtables: Option<usize>,
    /// One copy at a time.
    taking: Mutex<()>,
}

/// How the store was opened.
#[derive(Debug, Clone, PartialEq)]
pub enum Opened {
    /// No store and no copy: a new data directory.
    New,
    /// The store was intact.
    Intact,
    /// The store was damaged or missing (`damage`); the copy `from` replaced
    /// it, and the damaged store was moved to `set_aside`.
    FellBack {
        damage: String,
        from: PathBuf,
        set_aside: Option<PathBuf>,
    },
}

impl Retained {
    pub fn in_data_dir(data_dir: &Path) -> Retained {
        Retained {
            dir: data_dir.join("checkpoints"),
            memtables: None,
            taking: Mutex::new(()),
        }
    }

    /// Stores opened through [`Retained::open_store`] hold their memtables
    /// to `bytes` in all.
    pub fn with_memtables(self, bytes: Option<usize>) -> Retained {
        Retained {
            memtables: bytes,
            ..self
        }
    }

    /// Copies the store now, then deletes all but the newest copies (`KEEP` of them).
    pub fn take(&self, store: &Store) -> Result<PathBuf, StateError> {
        let _one = self.taking.lock().unwrap_or_else(|e| e.into_inner());
        fs::create_dir_all(&self.dir).map_err(io(&self.dir))?;
        let next = self.newest_first()?.first().map_or(1, |(n, _)| n + 1);
        let path = self.dir.join(format!("{next:010}"));
        // RocksDB builds the copy under `<path>.tmp` and renames it when
        // complete, so a listed copy is never a partial one (and it replaces
        // a partial one a crash left behind).
        store.checkpoint_to(&path)?;
        for (_, old) in self.newest_first()?.into_iter().skip(KEEP) {
            fs::remove_dir_all(&old).map_err(io(&old))?;
        }
        Ok(path)
    }

    /// Complete copies, newest first, with their sequence numbers.
    pub fn newest_first(&self) -> Result<Vec<(u64, PathBuf)>, StateError> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io(&self.dir)(e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let path = entry.map_err(io(&self.dir))?.path();
            let seq = path
                .file_name()
                .and_then(|n| n.to_str()?.parse::<u64>().ok());
            if let Some(seq) = seq {
                out.push((seq, path));
            }
        }
        out.sort_by_key(|b| std::cmp::Reverse(b.0));
        Ok(out)
    }

    /// Opens the store at `db`, checking every stored block and epoch record.
    /// If it is damaged, or missing while copies exist, it is moved aside and
    /// the newest copy that passes the same check is put in its place. With
    /// no intact copy the error names the damage: the server refuses to start
    /// rather than start empty.
    pub fn open_store(&self, db: &Path) -> Result<(Store, Opened), StateError> {
        let copies = self.newest_first()?;
        // An empty directory is as missing as none: opening it would make a
        // new, empty store.
        let present = fs::read_dir(db).is_ok_and(|mut d| d.next().is_some());
        let damage = if present {
            match open_verified(db, self.memtables) {
                Ok(store) => return Ok((store, Opened::Intact)),
                Err(e) => e.to_string(),
            }
        } else if copies.is_empty() {
            return Ok((Store::open_with(db, self.memtables)?, Opened::New));
        } else {
            format!("the store {} is missing or empty", db.display())
        };
        let set_aside = if db.exists() {
            let millis = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis());
            let aside = db.with_file_name(format!("db.damaged-{millis}"));
            fs::rename(db, &aside).map_err(io(db))?;
            Some(aside)
        } else {
            None
        };
        let staging = db.with_file_name("db.restoring");
        let mut rejected = Vec::new();
        for (_, copy) in copies {
            if staging.exists() {
                fs::remove_dir_all(&staging).map_err(io(&staging))?;
            }
            copy_store(&copy, &staging)?;
            match open_verified(&staging, self.memtables) {
                Ok(store) => {
                    drop(store);
                    fs::rename(&staging, db).map_err(io(db))?;
                    let store = Store::open_with(db, self.memtables)?;
                    return Ok((
                        store,
                        Opened::FellBack {
                            damage,
                            from: copy,
                            set_aside,
                        },
                    ));
                }
                Err(e) => rejected.push(format!("{}: {e}", copy.display())),
            }
        }
        if staging.exists() {
            fs::remove_dir_all(&staging).map_err(io(&staging))?;
        }
        Err(StateError::NoIntactCheckpoint {
            damage,
            set_aside: set_aside.map(|p| p.display().to_string()),
            rejected: if rejected.is_empty() {
                "there is none".into()
            } else {
                rejected.join("; ")
            },
        })
    }
}

fn open_verified(db: &Path, memtables: Option<usize>) -> Result<Store, StateError> {
    let store = Store::open_with(db, memtables)?;
    store.verify(check_stored)?;
    Ok(store)
}

/// Copies a retained store to `to`: table and blob files as hard links
/// (they are never written again), the log, manifest and options as real
/// copies, because opening the copy appends to them.
fn copy_store(from: &Path, to: &Path) -> Result<(), StateError> {
    fs::create_dir_all(to).map_err(io(to))?;
    for entry in fs::read_dir(from).map_err(io(from))? {
        let src = entry.map_err(io(from))?.path();
        let Some(name) = src.file_name() else {
            continue;
        };
        // RocksDB's files, and the values kept as files (not the store's
        // staging directory).
        if src.is_dir() {
            if name == super::files::DIR {
                super::files::link_all(&src, &to.join(name))?;
            }
            continue;
        }
        let dst = to.join(name);
        let immutable = src.extension().is_some_and(|e| e == "sst" || e == "blob");
        let linked = immutable && fs::hard_link(&src, &dst).is_ok();
        if !linked {
            fs::copy(&src, &dst).map_err(io(&src))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(store: &Store, k: &str, v: &str) {
        store
            .write([(k.as_bytes().to_vec(), Some(v.as_bytes().to_vec()))])
            .unwrap();
    }

    fn get(store: &Store, k: &str) -> Option<String> {
        store
            .get(k.as_bytes())
            .unwrap()
            .map(|v| String::from_utf8(v).unwrap())
    }

    #[test]
    fn keeps_the_newest_copies() {
        let dir = tempfile::tempdir().unwrap();
        let retained = Retained::in_data_dir(dir.path());
        let (store, opened) = retained.open_store(&dir.path().join("db")).unwrap();
        assert_eq!(opened, Opened::New);
        for i in 0..4 {
            put(&store, "k", &i.to_string());
            retained.take(&store).unwrap();
        }
        let seqs: Vec<u64> = retained
            .newest_first()
            .unwrap()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(seqs, vec![4, 3]);
        // A partial copy left by a crash neither counts nor blocks the next.
        fs::create_dir_all(dir.path().join("checkpoints/0000000005.tmp")).unwrap();
        retained.take(&store).unwrap();
        assert_eq!(retained.newest_first().unwrap()[0].0, 5);
    }

    #[test]
    fn a_missing_store_comes_back_from_the_newest_copy() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("db");
        let retained = Retained::in_data_dir(dir.path());
        {
            let (store, _) = retained.open_store(&db).unwrap();
            put(&store, "k", "1");
            retained.take(&store).unwrap();
            put(&store, "k", "2");
            // A large value: the copy's flush puts it in a blob file.
            put(&store, "big", &"b".repeat(100_000));
            // And a file ingested whole: the copy links it like any other.
            store
                .write_ingested([(b"ingested".to_vec(), Some(b"yes".to_vec()))])
                .unwrap();
            // And a value kept as a file of its own: the copy links the file.
            let (reference, _) = store
                .write_file(b"filed", |w: &mut dyn std::io::Write| {
                    w.write_all(b"in a file").map_err(io(Path::new("test")))
                })
                .unwrap();
            store.write([(b"filed".to_vec(), Some(reference))]).unwrap();
            retained.take(&store).unwrap();
            put(&store, "k", "3");
        }
        fs::remove_dir_all(&db).unwrap();
        let (store, opened) = retained.open_store(&db).unwrap();
        assert!(
            matches!(&opened, Opened::FellBack { from, set_aside: None, .. } if from.ends_with("0000000002")),
            "{opened:?}"
        );
        drop(store);
        // An emptied directory is missing too, not a new store.
        for entry in fs::read_dir(&db).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                fs::remove_dir_all(path).unwrap();
            } else {
                fs::remove_file(path).unwrap();
            }
        }
        let (store, opened) = retained.open_store(&db).unwrap();
        assert!(matches!(&opened, Opened::FellBack { .. }), "{opened:?}");
        assert_eq!(get(&store, "k").as_deref(), Some("2"));
        assert_eq!(get(&store, "big").map(|v| v.len()), Some(100_000));
        assert_eq!(get(&store, "ingested").as_deref(), Some("yes"));
        let filed = store.get(b"filed").unwrap().unwrap();
        assert_eq!(store.resolve(b"filed", filed).unwrap(), b"in a file");
        let copy = retained.newest_first().unwrap()[0].1.clone();
        let blobs = fs::read_dir(&copy)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "blob")
            })
            .count();
        assert!(blobs > 0, "the copy holds a blob file");
        drop(store);
        let (store, opened) = retained.open_store(&db).unwrap();
        assert_eq!(opened, Opened::Intact);
        put(&store, "k", "4");
        drop(store);
        // Writes to the restored store do not reach the copy it came from.
        fs::remove_dir_all(&db).unwrap();
        let (store, _) = retained.open_store(&db).unwrap();
        assert_eq!(get(&store, "k").as_deref(), Some("2"));
    }

    #[test]
    fn a_damaged_record_or_file_falls_back_and_the_store_is_kept_aside() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("db");
        let retained = Retained::in_data_dir(dir.path());
        let record = b"j/0000000000000007/e".to_vec();
        {
            let (store, _) = retained.open_store(&db).unwrap();
            let job = super::super::JobState::new(std::sync::Arc::new(store), 7);
            job.commit(job.begin(1), &super::super::EpochRecord::bare(1))
                .unwrap();
        }
        {
            let (store, _) = retained.open_store(&db).unwrap();
            retained.take(&store).unwrap();
            // A record whose checksum no longer matches its body.
            store
                .write([(record.clone(), Some(br#"{"crc":1,"body":"{}"}"#.to_vec()))])
                .unwrap();
        }
        let (store, opened) = retained.open_store(&db).unwrap();
        let Opened::FellBack {
            damage, set_aside, ..
        } = &opened
        else {
            panic!("{opened:?}")
        };
        assert!(damage.contains("checksum mismatch"), "{damage}");
        assert!(set_aside.as_ref().unwrap().exists());
        let job = super::super::JobState::new(std::sync::Arc::new(store), 7);
        assert_eq!(job.last_epoch().unwrap().unwrap().epoch, 1);
        drop(job);
        // With every copy damaged too, the server refuses to start.
        for (_, copy) in retained.newest_first().unwrap() {
            fs::remove_file(copy.join("CURRENT")).unwrap();
        }
        fs::remove_file(db.join("CURRENT")).unwrap();
        let err = retained.open_store(&db).err().expect("refused");
        assert!(
            matches!(err, StateError::NoIntactCheckpoint { .. }),
            "{err}"
        );
    }
}
