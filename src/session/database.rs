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
        if let Some(every) = db.config.checkpoint_interval {
            tokio::spawn(checkpoint_periodically(Arc::downgrade(&db), every));
        }
        let mut session = db.session();
        for p in persisted {
            match session.replay(&p.sql, p.id).await {
                Ok(()) => tracing::info!(name = %p.name, "restored"),
                Err(e) => {
                    tracing::error!(name = %p.name, error = %e, "could not restore catalog object")
                }
            }
        }
        // Restored views start once everything (their sinks too) is back.
        for o in db.catalog.list() {
            if let Object::View(v) = o {
                v.job.resume();
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

    /// Takes a final checkpoint of every job, then stops them.
    pub async fn shutdown(&self) {
        for o in self.catalog.list() {
            if let Object::View(v) = o {
                if let Err(e) = v.job.checkpoint().await {
                    tracing::warn!(view = %v.name, error = %e, "no final checkpoint");
                }
                v.job.stop().await;
            }
        }
    }

    /// Checkpoints every job now and waits until all are committed.
    pub async fn checkpoint(&self) -> Result<(), SessionError> {
        let jobs: Vec<_> = self
            .catalog
            .list()
            .into_iter()
            .filter_map(|o| match o {
                Object::View(v) => Some(v.job.clone()),
                _ => None,
            })
            .collect();
        for r in futures::future::join_all(jobs.iter().map(|j| j.checkpoint())).await {
            r?;
        }
        Ok(())
    }
}

/// The checkpoint coordinator: asks every job for a checkpoint on an
/// interval; jobs take it at their next batch boundary. Ends with the database.
async fn checkpoint_periodically(db: std::sync::Weak<Database>, every: std::time::Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(db) = db.upgrade() else { return };
        for o in db.catalog.list() {
            if let Object::View(v) = o {
                if v.job.status() == crate::runtime::JobStatus::Running {
                    v.job.trigger_checkpoint();
                }
            }
        }
    }
}
