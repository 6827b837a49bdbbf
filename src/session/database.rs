//! The database: catalog, state store and running jobs, shared by all
//! sessions; restores the catalog on open by replaying its statements.

use std::sync::Arc;
use std::time::Instant;

use super::{Session, SessionError};
use crate::catalog::Catalog;
use crate::state::{MemoryBudget, Opened, Retained, Store};
use crate::Config;

/// Everything shared between sessions.
pub struct Database {
    /// What the database was opened with.
    pub config: Config,
    pub(crate) store: Arc<Store>,
    /// Copies of the store to fall back to if it is found damaged on start.
    retained: Arc<Retained>,
    /// The memory budget of every job's keyed state.
    pub(crate) budget: Arc<MemoryBudget>,
    pub(crate) catalog: Arc<Catalog>,
    /// Serialises catalog changes.
    pub(crate) ddl: tokio::sync::Mutex<()>,
    pub(crate) started: Instant,
}

/// Under a state memory budget, RocksDB's memtables are held to a quarter
/// of it (between 8 and 128 MiB in all), so that the store's own memory
/// stays bounded with the state's; without one, RocksDB's defaults.
fn memtables(budget: Option<usize>) -> Option<usize> {
    budget.map(|b| (b / 4).clamp(8 << 20, 128 << 20))
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
        let retained = Arc::new(
            Retained::in_data_dir(&config.data_dir).with_memtables(memtables(config.state_memory)),
        );
        let opening = Instant::now();
        let (store, opened) = {
            let (retained, path) = (retained.clone(), config.data_dir.join("db"));
            tokio::task::spawn_blocking(move || retained.open_store(&path))
                .await
                .expect("store open does not panic")?
        };
        tracing::info!(
            ms = opening.elapsed().as_millis() as u64,
            "store opened and verified"
        );
        if let Opened::FellBack {
            damage,
            from,
            set_aside,
        } = &opened
        {
            tracing::error!(%damage, "the store is damaged or missing");
            tracing::warn!(
                checkpoint = %from.display(),
                set_aside = %set_aside.as_ref().map_or("-".into(), |p| p.display().to_string()),
                "fell back to the previous complete checkpoint: views resume from its epochs \
                 and replay their sources from there; table rows written after it are lost"
            );
        }
        let store = Arc::new(store);
        let (catalog, persisted) = Catalog::open(store.clone())?;
        let budget = Arc::new(MemoryBudget::new(config.state_memory));
        let db = Arc::new(Database {
            config,
            store,
            retained,
            budget,
            catalog: Arc::new(catalog),
            ddl: tokio::sync::Mutex::new(()),
            started: Instant::now(),
        });
        if let Some(every) = db.config.checkpoint_interval {
            tokio::spawn(checkpoint_periodically(Arc::downgrade(&db), every));
        }
        if let Some(every) = db.config.retain_interval {
            tokio::spawn(retain_periodically(Arc::downgrade(&db), every));
        }
        let mut session = db.session();
        for p in persisted {
            match session.replay(&p.sql, p.id, &p.settings).await {
                Ok(()) => tracing::info!(name = %p.name, "restored"),
                Err(e) => {
                    tracing::error!(name = %p.name, error = %e, "could not restore catalog object")
                }
            }
        }
        // Restored views start once everything (their sinks too) is back.
        for (_, job) in db.catalog.jobs() {
            job.resume();
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
        for (name, job) in self.catalog.jobs() {
            if let Err(e) = job.checkpoint().await {
                tracing::warn!(job = %name, error = %e, "no final checkpoint");
            }
            job.stop().await;
        }
    }

    /// Copies the whole store to a new retained checkpoint (after a catalog
    /// change, so a fallback never loses an acknowledged CREATE or DROP).
    pub async fn retain(&self) -> Result<(), SessionError> {
        let (retained, store) = (self.retained.clone(), self.store.clone());
        tokio::task::spawn_blocking(move || retained.take(&store))
            .await
            .expect("a store copy does not panic")?;
        Ok(())
    }

    /// A copy after a catalog change, which is already durable in the store:
    /// if the copy fails, the change stands and the failure is logged.
    pub(crate) async fn retain_after_ddl(&self) {
        if let Err(e) = self.retain().await {
            tracing::warn!(
                error = %e,
                "could not copy the store after a catalog change; a fallback would miss it"
            );
        }
    }

    /// Checkpoints every job now and waits until all are committed.
    pub async fn checkpoint(&self) -> Result<(), SessionError> {
        let jobs = self.catalog.jobs();
        for r in futures::future::join_all(jobs.iter().map(|(_, j)| j.checkpoint())).await {
            r?;
        }
        Ok(())
    }
}

/// The checkpoint coordinator: asks every job for a checkpoint on an
/// interval; jobs take it at their next batch boundary. Ends with the database.
async fn checkpoint_periodically(db: std::sync::Weak<Database>, every: std::time::Duration) {
    periodically(db, every, |db| async move {
        for (_, job) in db.catalog.jobs() {
            if job.status() == crate::runtime::JobStatus::Running {
                job.trigger_checkpoint();
            }
        }
    })
    .await
}

/// Copies the store to a retained checkpoint on an interval. Ends with the database.
async fn retain_periodically(db: std::sync::Weak<Database>, every: std::time::Duration) {
    periodically(db, every, |db| async move {
        if let Err(e) = db.retain().await {
            tracing::warn!(error = %e, "could not retain a checkpoint");
        }
    })
    .await
}

/// Runs `tick` every `every` (the first time after one period) while the
/// database exists.
async fn periodically<F, Fut>(db: std::sync::Weak<Database>, every: std::time::Duration, tick: F)
where
    F: Fn(Arc<Database>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut interval = tokio::time::interval(every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    interval.tick().await;
    loop {
        interval.tick().await;
        let Some(db) = db.upgrade() else { return };
        tick(db).await;
    }
}
