//! The database: catalog, state store, running jobs and the batch engine,
//! shared by all sessions.

use std::sync::Arc;

use super::{Session, SessionError};
use crate::Config;

/// Everything shared between sessions.
pub struct Database {
    pub(crate) config: Config,
}

impl Database {
    /// Opens (or creates) the database in `config.data_dir`, restoring the
    /// catalog and restarting every materialized view's job.
    pub async fn open(config: Config) -> Result<Arc<Database>, SessionError> {
        Ok(Arc::new(Database { config }))
    }

    /// A new session (one per client connection).
    pub fn session(self: &Arc<Self>) -> Session {
        Session::new(self.clone())
    }

    /// Metrics in the Prometheus text exposition format.
    pub fn metrics_text(&self) -> String {
        String::new()
    }

    /// Stops every job and closes the store.
    pub async fn shutdown(&self) {}
}
