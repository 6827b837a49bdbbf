//! The `weir` binary: parses the command line and runs the server until
//! SIGINT or SIGTERM.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use weir::Config;

/// mimalloc: the job tasks allocate and free many small buffers (keys, rows,
/// state values) across threads, where it is markedly faster than the
/// system allocator (benchmarks/README.md). Built without transparent huge
/// pages: each one is zeroed whole (2 MiB) when first touched.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// How long freed memory stays with the allocator before it goes back to the
/// operating system (jemalloc's default decay, 10 s). mimalloc's default
/// (10 ms) returns the buffers of one checkpoint or view segment just before
/// the next one asks for them again, and fresh pages are zeroed on first
/// touch; at 1 s an epoch's blocks, freed as it commits, were still given
/// back before the next epochs' were made (benchmarks/CHECKPOINTS.md). The
/// `MIMALLOC_PURGE_DELAY` environment variable still takes precedence.
const PURGE_DELAY_MS: std::ffi::c_long = 10_000;

/// `mi_option_purge_delay` in mimalloc 3's `mimalloc.h` (the Rust bindings
/// do not name it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

fn tune_allocator() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets one of mimalloc's options, which are atomics read on use.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) };
    }
}

/// Weir: a streaming SQL database you talk to with psql.
#[derive(Debug, Parser)]
#[command(name = "weir", version, about)]
struct Cli {
    /// Directory holding the catalog and state.
    #[arg(long, env = "WEIR_DATA_DIR", default_value = "weir-data")]
    data_dir: PathBuf,

    /// Address for Postgres wire protocol connections.
    #[arg(long, env = "WEIR_PG_ADDR", default_value = "127.0.0.1:5544", value_parser = parse_addr)]
    pg_addr: SocketAddr,

    /// Address for the HTTP endpoint (/health, /metrics).
    #[arg(long, env = "WEIR_HTTP_ADDR", default_value = "127.0.0.1:5580", value_parser = parse_addr)]
    http_addr: SocketAddr,

    /// Milliseconds between checkpoints of every job; 0 turns periodic checkpoints off.
    #[arg(long, env = "WEIR_CHECKPOINT_INTERVAL_MS", default_value_t = 1000)]
    checkpoint_interval_ms: u64,

    /// Milliseconds between copies of the whole store kept to fall back to if
    /// it is found damaged on start (the newest two, under <data-dir>/checkpoints);
    /// 0 copies only after catalog changes.
    #[arg(long, env = "WEIR_RETAIN_INTERVAL_MS", default_value_t = 10_000)]
    retain_interval_ms: u64,

    /// Megabytes of keyed operator state (groups of non-windowed
    /// aggregates, join rows, Top-N partitions) held in memory; beyond it,
    /// unchanged committed state stays in RocksDB and is read back when its
    /// key comes again. 0: no limit.
    #[arg(long, env = "WEIR_STATE_MEMORY_MB", default_value_t = 0)]
    state_memory_mb: u64,

    /// Subtasks per keyed operator of a view that sets none (default: the number of cores).
    #[arg(long, env = "WEIR_PARALLELISM", value_parser = clap::value_parser!(u32).range(1..=weir::plan::MAX_PARALLELISM as i64))]
    parallelism: Option<u32>,
}

/// `host:port`, where host is an IP address or a name such as `localhost`.
fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = s.parse() {
        return Ok(addr);
    }
    s.to_socket_addrs()
        .map_err(|e| format!("expected host:port ({e})"))?
        .next()
        .ok_or_else(|| format!("{s} resolves to no address"))
}

#[tokio::main]
async fn main() -> ExitCode {
    tune_allocator();
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();

    let defaults = Config::default();
    let config = Config {
        parallelism: cli.parallelism.unwrap_or(defaults.parallelism),
        data_dir: cli.data_dir,
        pg_addr: cli.pg_addr,
        http_addr: cli.http_addr,
        checkpoint_interval: (cli.checkpoint_interval_ms > 0)
            .then(|| std::time::Duration::from_millis(cli.checkpoint_interval_ms)),
        state_memory: (cli.state_memory_mb > 0).then_some((cli.state_memory_mb as usize) << 20),
        retain_interval: (cli.retain_interval_ms > 0)
            .then(|| std::time::Duration::from_millis(cli.retain_interval_ms)),
    };
    match weir::server::run_until_signal(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("weir: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults_and_overrides() {
        let cli = Cli::try_parse_from(["weir"]).unwrap();
        assert_eq!(cli.data_dir, PathBuf::from("weir-data"));
        assert_eq!(cli.pg_addr, "127.0.0.1:5544".parse().unwrap());
        assert_eq!(cli.http_addr, "127.0.0.1:5580".parse().unwrap());

        let cli = Cli::try_parse_from([
            "weir",
            "--data-dir",
            "/tmp/w",
            "--pg-addr",
            "0.0.0.0:6000",
            "--http-addr",
            "localhost:0",
        ])
        .unwrap();
        assert_eq!(cli.data_dir, PathBuf::from("/tmp/w"));
        assert_eq!(cli.pg_addr, "0.0.0.0:6000".parse().unwrap());
        assert_eq!(cli.http_addr.port(), 0);
        assert!(Cli::try_parse_from(["weir", "--pg-addr", "nonsense"]).is_err());
    }
}
