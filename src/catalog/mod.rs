//! The catalog: streams, tables and materialized views (with their running
//! jobs), kept in memory and persisted in RocksDB as the statements that
//! created them, replayed in order on start.

mod entry;

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::RwLock;
use serde::{Deserialize, Serialize};

pub use entry::{
    late_of, lookup_of, MvEntry, Object, SinkEntry, StreamEntry, TableEntry, ViewEntry,
    LATE_SUFFIX, LOOKUP_SUFFIX,
};

use crate::session::ErrorCategory;
use crate::sql::ObjectKind;
use crate::state::{StateError, Store};

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("{kind} \"{name}\" already exists")]
    AlreadyExists { kind: &'static str, name: String },
    #[error("{kind} \"{name}\" does not exist")]
    NotFound { kind: &'static str, name: String },
    #[error("\"{name}\" is a {actual}, not a {expected}")]
    WrongKind {
        name: String,
        actual: &'static str,
        expected: &'static str,
    },
    #[error("cannot drop {kind} \"{name}\": {dependents} depends on it (drop that first)")]
    DependedOn {
        kind: &'static str,
        name: String,
        dependents: String,
    },
    #[error("catalog entry {0} is corrupt: {1}")]
    Corrupt(String, String),
    #[error(transparent)]
    State(#[from] StateError),
}

impl CatalogError {
    pub fn category(&self) -> ErrorCategory {
        match self {
            CatalogError::AlreadyExists { .. } => ErrorCategory::DuplicateObject,
            CatalogError::NotFound { kind, .. } if *kind == "object" => {
                ErrorCategory::UndefinedObject
            }
            CatalogError::NotFound { .. } => ErrorCategory::UndefinedTable,
            CatalogError::WrongKind { .. } => ErrorCategory::UndefinedTable,
            CatalogError::DependedOn { .. } => ErrorCategory::DependentObjectsStillExist,
            CatalogError::Corrupt(..) | CatalogError::State(_) => ErrorCategory::Internal,
        }
    }
}

/// How an object is persisted: the statement that created it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Persisted {
    pub id: u64,
    pub name: String,
    pub sql: String,
    /// Session settings the statement was run under that decide how it
    /// runs (a view's `SET parallelism`, `SET checkpoint_mode`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub settings: BTreeMap<String, String>,
}

const PREFIX: &[u8] = b"c/";

fn key(id: u64) -> Vec<u8> {
    format!("c/{id:016x}").into_bytes()
}

/// All objects by name.
pub struct Catalog {
    store: Arc<Store>,
    inner: RwLock<Inner>,
}

struct Inner {
    objects: BTreeMap<String, Object>,
    next_id: u64,
}

impl Catalog {
    /// Opens the catalog; returns it empty plus the persisted statements to replay, oldest first.
    pub fn open(store: Arc<Store>) -> Result<(Catalog, Vec<Persisted>), CatalogError> {
        let mut entries = Vec::new();
        for (k, v) in store.scan_prefix(PREFIX)? {
            let p: Persisted = serde_json::from_slice(&v).map_err(|e| {
                CatalogError::Corrupt(String::from_utf8_lossy(&k).into_owned(), e.to_string())
            })?;
            entries.push(p);
        }
        let next_id = entries.iter().map(|p| p.id + 1).max().unwrap_or(1);
        Ok((
            Catalog {
                store,
                inner: RwLock::new(Inner {
                    objects: BTreeMap::new(),
                    next_id,
                }),
            },
            entries,
        ))
    }

    /// A fresh object id.
    pub fn allocate_id(&self) -> u64 {
        let mut inner = self.inner.write();
        let id = inner.next_id;
        inner.next_id += 1;
        id
    }

    pub fn get(&self, name: &str) -> Option<Object> {
        self.inner.read().objects.get(name).cloned()
    }

    /// A stream, table or view: an object SQL can read.
    /// The stream `LATE(stream)` reads, when `name` stands for one whose
    /// late rows can be read (it has an event time).
    pub fn late_stream(&self, name: &str) -> Option<Arc<StreamEntry>> {
        match self.relation(late_of(name)?) {
            Some(Object::Stream(s)) if s.event_time.is_some() => Some(s),
            _ => None,
        }
    }

    /// The table a lookup join reads, when `name` stands for one.
    pub fn lookup_table(&self, name: &str) -> Option<Arc<TableEntry>> {
        match self.relation(lookup_of(name)?) {
            Some(Object::Table(t)) => Some(t),
            _ => None,
        }
    }

    pub fn relation(&self, name: &str) -> Option<Object> {
        self.get(name).filter(|o| !matches!(o, Object::Sink(_)))
    }

    pub fn exists(&self, name: &str) -> bool {
        self.inner.read().objects.contains_key(name)
    }

    /// Fails if `name` is taken.
    pub fn check_free(&self, name: &str) -> Result<(), CatalogError> {
        match self.get(name) {
            Some(o) => Err(CatalogError::AlreadyExists {
                kind: o.kind().name(),
                name: name.to_string(),
            }),
            None => Ok(()),
        }
    }

    /// Adds an object; `persist` writes its statement durably first (false when replaying).
    pub fn add(&self, object: Object, persist: bool) -> Result<(), CatalogError> {
        let name = object.name().to_string();
        self.check_free(&name)?;
        if persist {
            let p = Persisted {
                id: object.id(),
                name: name.clone(),
                sql: object.sql().to_string(),
                settings: object.settings(),
            };
            let v = serde_json::to_vec(&p).expect("serialisable");
            self.store.write([(key(p.id), Some(v))])?;
        }
        self.inner.write().objects.insert(name, object);
        Ok(())
    }

    /// Looks up an object of a given kind.
    pub fn get_kind(&self, name: &str, kind: ObjectKind) -> Result<Object, CatalogError> {
        let o = self.get(name).ok_or_else(|| CatalogError::NotFound {
            kind: kind.name(),
            name: name.to_string(),
        })?;
        if o.kind() != kind {
            return Err(CatalogError::WrongKind {
                name: name.to_string(),
                actual: o.kind().name(),
                expected: kind.name(),
            });
        }
        Ok(o)
    }

    /// Removes an object nothing depends on; returns it so the caller can stop its job.
    pub fn remove(&self, name: &str, kind: ObjectKind) -> Result<Object, CatalogError> {
        let o = self.get_kind(name, kind)?;
        let dependents: Vec<String> = self
            .list()
            .into_iter()
            .filter(|d| d.depends_on().iter().any(|n| n == name))
            .map(|d| format!("{} \"{}\"", d.kind().name(), d.name()))
            .collect();
        if !dependents.is_empty() {
            return Err(CatalogError::DependedOn {
                kind: kind.name(),
                name: name.to_string(),
                dependents: dependents.join(", "),
            });
        }
        self.store.write([(key(o.id()), None)])?;
        self.inner.write().objects.remove(name);
        Ok(o)
    }

    /// Every object, by name.
    pub fn list(&self) -> Vec<Object> {
        self.inner.read().objects.values().cloned().collect()
    }

    /// Every running job (of views and of INSERT INTO sinks), by the name
    /// of the object it computes.
    pub fn jobs(&self) -> Vec<(String, Arc<crate::runtime::JobHandle>)> {
        self.inner
            .read()
            .objects
            .values()
            .filter_map(|o| Some((o.name().to_string(), o.job()?.clone())))
            .collect()
    }
}
