//! Durable storage on RocksDB (catalog entries, table rows) and the row
//! encoding shared by every keyed row store.

mod budget;
mod checkpoint;
mod codec;
mod direct;
mod files;
mod mv_store;
mod prefetch;
mod retained;
mod store;
mod table_store;

pub use budget::MemoryBudget;
pub use checkpoint::{
    key_group, key_groups, subtask_of, Block, Entries, EpochRecord, EpochWriter, JobState,
    OperatorWriter, StoredBlock, BLOCK_FILE_MIN_BYTES, KEY_GROUPS,
};
pub use codec::{RowCodec, ScalarCodec};
pub use mv_store::{MvStore, ViewChanges};
pub use prefetch::{prefetch, prefetch_span, AHEAD};
pub use retained::{Opened, Retained};
pub use store::Store;
pub use table_store::TableStore;

/// Errors of the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("storage error: {0}")]
    RocksDb(#[from] rocksdb::Error),
    #[error("row encoding error: {0}")]
    Arrow(#[from] datafusion::arrow::error::ArrowError),
    #[error("corrupt stored value under {key}: {message}")]
    Corrupt { key: String, message: String },
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("the store is damaged ({damage}){} and no retained checkpoint is intact ({rejected})", .set_aside.as_ref().map(|p| format!(", set aside as {p},")).unwrap_or_default())]
    NoIntactCheckpoint {
        damage: String,
        set_aside: Option<String>,
        rejected: String,
    },
}

/// Maps an I/O error on `path` to [`StateError::Io`].
fn io(path: &std::path::Path) -> impl Fn(std::io::Error) -> StateError + '_ {
    move |source| StateError::Io {
        path: path.display().to_string(),
        source,
    }
}
