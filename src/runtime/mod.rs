//! The runtime: executes stream plans as jobs — stages of chained operators,
//! each run by parallel subtasks that exchange [`message::Message`]s over
//! bounded channels; sources are pulled, the view's sink commits epochs.

mod build;
pub mod chunk;
mod cpu_time;
mod exchange;
mod inputs;
mod job;
pub mod message;
pub mod operator;
pub mod operators;
mod task;

pub use build::{arrow_schema, mv_store, Relation, SourceSpec};
pub use job::{spawn_job, Guarantee, JobConfig, JobHandle, JobStatus};
pub use operators::EMIT_INTERVAL;

/// Errors raised while building or running a job.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("{0}")]
    Internal(String),
    #[error("unknown stream {0}")]
    UnknownStream(String),
    #[error(transparent)]
    DataFusion(#[from] datafusion::error::DataFusionError),
    #[error(transparent)]
    Arrow(#[from] datafusion::arrow::error::ArrowError),
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    #[error(transparent)]
    Connector(#[from] crate::connectors::ConnectorError),
    #[error("job {job} failed: {message}")]
    JobFailed { job: String, message: String },
}
