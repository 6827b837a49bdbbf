//! Server configuration: where data lives and which addresses to listen on.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Everything the server needs to start.
#[derive(Debug, Clone)]
pub struct Config {
    /// Directory holding the RocksDB catalog and state.
    pub data_dir: PathBuf,
    /// Postgres wire protocol address.
    pub pg_addr: SocketAddr,
    /// HTTP address for `/health` and `/metrics`.
    pub http_addr: SocketAddr,
    /// How often every job checkpoints; `None` turns periodic checkpoints off
    /// (CHECKPOINT and shutdown still take one).
    pub checkpoint_interval: Option<Duration>,
    /// How often the whole store is copied to a retained checkpoint (kept
    /// under `<data_dir>/checkpoints`, the newest two) to fall back to if the
    /// store is found damaged on start; `None` copies only after catalog changes.
    pub retain_interval: Option<Duration>,
    /// Subtasks per keyed operator of a view that sets none (`WITH
    /// (parallelism = N)`, `SET parallelism`); views restored on start take it
    /// unless their own statement sets one.
    pub parallelism: u32,
    /// Bytes of keyed operator state kept in memory; beyond it, unchanged
    /// committed state is read back from the store when needed. `None`: no limit.
    pub state_memory: Option<usize>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("weir-data"),
            pg_addr: "127.0.0.1:5544".parse().expect("valid address"),
            http_addr: "127.0.0.1:5580".parse().expect("valid address"),
            checkpoint_interval: Some(Duration::from_secs(1)),
            retain_interval: Some(Duration::from_secs(10)),
            parallelism: (crate::connectors::cores() as u32).min(crate::plan::MAX_PARALLELISM),
            state_memory: None,
        }
    }
}
