//! The database: catalog, state store and running jobs, shared by all
//! sessions; restores the catalog on open by replaying its statements.

use std::sync::Arc;
use std::time::Instant;

use super::{Session, SessionError};
use crate::catalog::{Catalog, Object};
use crate::state::Store;
use crate::Config;

/// Everything shared between sessions.
pub struct Database {
    /// What the database was opened with.
    pub config: Config,
    pub(crate) store: Arc<Store>,
    pub(crate) catalog: Arc<Catalog>,
    /// Serialises catalog changes.
    pub(crate) ddl: tokio::sync::Mutex<()>,
    pub(crate) started: Instant,
}

impl Database {
    /// Opens (or creates) the database in `config.data_dir`, restoring the
    /// catalog and restarting every materialized view's job.
    pub async fn open(config: Config) -> Result<Arc<Database>, SessionError> {
        std::fs::create_dir_all(&config.data_dir).map_err(|e| {
            SessionError::InvalidParameter(format!(
                "cannot create data directory {}: {e}",
                config.data_dir.display()
            ))
        })?;
        let store = Arc::new(Store::open(&config.data_dir.join("db"))?);
        let (catalog, persisted) = Catalog::open(store.clone())?;
        let db = Arc::new(Database {
            config,
            store,
            catalog: Arc::new(catalog),
            ddl: tokio::sync::Mutex::new(()),
            started: Instant::now(),
        });
        let mut session = db.session();
        for p in persisted {
            match session.replay(&p.sql, p.id).await {
                Ok(()) => tracing::info!(name = %p.name, "restored"),
                Err(e) => {
                    tracing::error!(name = %p.name, error = %e, "could not restore catalog object")
                }
            }
        }
        Ok(db)
    }

    /// A new session (one per client connection).
    pub fn session(self: &Arc<Self>) -> Session {
        Session::new(self.clone())
    }

    /// Metrics in the Prometheus text exposition format.
    pub fn metrics_text(&self) -> String {
        super::show::metrics_text(self)
    }

    /// Stops every job.
    pub async fn shutdown(&self) {
        for o in self.catalog.list() {
            if let Object::View(v) = o {
                v.job.stop().await;
            }
        }
    }
}
