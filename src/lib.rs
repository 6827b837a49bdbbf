//! Weir: a streaming SQL database server speaking the Postgres wire protocol.
//!
//! Layers, from the wire inwards: `server` (pgwire, HTTP) → `session`
//! (statement dispatch) → `planner` (SQL → stream plan) and `batch`
//! (DataFusion over stored data) → `runtime` (operators, jobs) → `state`
//! (RocksDB) and `connectors` (sources). `catalog` describes the objects.
//! See ARCHITECTURE.md for who may import whom.

pub mod batch;
pub mod catalog;
pub mod config;
pub mod connectors;
pub mod functions;
pub mod metrics;
pub mod plan;
pub mod planner;
pub mod runtime;
pub mod server;
pub mod session;
pub mod sql;
pub mod state;
#[cfg(test)]
mod testing;

pub use config::Config;
pub use server::Server;
