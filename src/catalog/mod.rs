//! The catalog: streams, tables, materialized views and their jobs, persisted in RocksDB.

use crate::session::ErrorCategory;

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("{kind} \"{name}\" already exists")]
    AlreadyExists { kind: &'static str, name: String },
}

impl CatalogError {
    pub fn category(&self) -> ErrorCategory {
        match self {
            CatalogError::AlreadyExists { .. } => ErrorCategory::DuplicateObject,
        }
    }
}
