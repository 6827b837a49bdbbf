//! The server: Postgres wire protocol (pgwire) and the HTTP endpoint.
//!
//! `Server::start` binds both listeners, opens the database and serves;
//! `Server::shutdown` stops accepting, closes open connections and shuts the
//! database down. `run_until_signal` is what the `weir` binary runs.

mod encode;
mod errors;
mod http;
mod params;
mod pg;
mod text;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tracing::Instrument;

use crate::session::{Database, SessionError};
use crate::Config;

pub use errors::sqlstate;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen for {service} on {addr}: {source}")]
    Bind {
        /// What the listener is for ("Postgres connections", "HTTP").
        service: &'static str,
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("cannot open the database in {}: {source}", .data_dir.display())]
    Open {
        data_dir: PathBuf,
        #[source]
        source: SessionError,
    },
    #[error("cannot install signal handlers: {0}")]
    Signal(#[source] io::Error),
}

/// The running server.
pub struct Server {
    db: Arc<Database>,
    pg_addr: SocketAddr,
    http_addr: SocketAddr,
    stop: watch::Sender<bool>,
    listeners: Vec<JoinHandle<()>>,
}

impl Server {
    /// Binds the Postgres and HTTP listeners (port 0 picks a free port),
    /// opens the database in `config.data_dir` and starts serving.
    pub async fn start(config: Config) -> Result<Server, ServerError> {
        let pg = bind("Postgres connections", config.pg_addr).await?;
        let http = bind("HTTP", config.http_addr).await?;
        let pg_addr = local_addr("Postgres connections", &pg, config.pg_addr)?;
        let http_addr = local_addr("HTTP", &http, config.http_addr)?;

        let data_dir = config.data_dir.clone();
        let db = Database::open(config)
            .await
            .map_err(|source| ServerError::Open { data_dir, source })?;

        let (stop, stop_rx) = watch::channel(false);
        let pg_db = db.clone();
        let pg_loop = accept_loop(pg, stop_rx.clone(), "pg", move |socket, _| {
            let db = pg_db.clone();
            async move {
                let handlers = pg::PgHandlers::new(db.session());
                if let Err(e) = pgwire::tokio::process_socket(socket, None, handlers).await {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
            }
        });
        let http_db = db.clone();
        let http_loop = accept_loop(http, stop_rx, "http", move |socket, _| {
            http::serve_connection(socket, http_db.clone())
        });
        let listeners = vec![tokio::spawn(pg_loop), tokio::spawn(http_loop)];

        tracing::info!(%pg_addr, %http_addr, "listening");
        Ok(Server {
            db,
            pg_addr,
            http_addr,
            stop,
            listeners,
        })
    }

    /// The address the Postgres listener is bound to.
    pub fn pg_addr(&self) -> SocketAddr {
        self.pg_addr
    }

    /// The address the HTTP listener is bound to.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The database this server serves.
    pub fn database(&self) -> &Arc<Database> {
        &self.db
    }

    /// Stops accepting, closes open connections (a statement already running
    /// finishes in the background), then shuts the database down.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        for listener in std::mem::take(&mut self.listeners) {
            if let Err(e) = listener.await {
                tracing::error!(error = %e, "listener task failed");
            }
        }
        self.db.shutdown().await;
        tracing::info!("server stopped");
    }
}

impl Drop for Server {
    /// Dropping the server without `shutdown` still stops the listeners.
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Starts the server and runs it until SIGINT or SIGTERM, then shuts down
/// cleanly. A second signal during shutdown exits at once.
pub async fn run_until_signal(config: Config) -> Result<(), ServerError> {
    let mut signals = Signals::new().map_err(ServerError::Signal)?;
    let server = Server::start(config).await?;
    tracing::info!(
        pg = %server.pg_addr(),
        http = %server.http_addr(),
        "weir is ready; connect with psql -h {} -p {} -U weir",
        server.pg_addr().ip(),
        server.pg_addr().port()
    );
    let signal = signals.recv().await;
    tracing::info!("{signal} received, shutting down");
    tokio::select! {
        () = server.shutdown() => {}
        signal = signals.recv() => {
            tracing::warn!("{signal} received again, exiting without a clean shutdown");
        }
    }
    Ok(())
}

/// SIGINT and SIGTERM.
struct Signals {
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Signals {
                int: signal(SignalKind::interrupt())?,
                term: signal(SignalKind::terminate())?,
            })
        }
        #[cfg(not(unix))]
        Ok(Signals {})
    }

    /// Waits for the next signal and names it.
    async fn recv(&mut self) -> &'static str {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.int.recv() => "SIGINT",
                _ = self.term.recv() => "SIGTERM",
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            "Ctrl-C"
        }
    }
}

async fn bind(service: &'static str, addr: SocketAddr) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind {
            service,
            addr,
            source,
        })
}

fn local_addr(
    service: &'static str,
    listener: &TcpListener,
    addr: SocketAddr,
) -> Result<SocketAddr, ServerError> {
    listener.local_addr().map_err(|source| ServerError::Bind {
        service,
        addr,
        source,
    })
}

/// Accepts connections until `stop` fires, serving each with `serve` in its
/// own task; then closes the listener and aborts the open connections.
async fn accept_loop<F, Fut>(
    listener: TcpListener,
    mut stop: watch::Receiver<bool>,
    kind: &'static str,
    serve: F,
) where
    F: Fn(TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            () = stopped(&mut stop) => break,
            Some(done) = connections.join_next(), if !connections.is_empty() => {
                if done.as_ref().is_err_and(|e| e.is_panic()) {
                    tracing::error!(kind, "connection task panicked");
                }
            }
            accepted = listener.accept() => match accepted {
                Ok((socket, peer)) => {
                    tracing::debug!(kind, %peer, "connection accepted");
                    let span = tracing::debug_span!("connection", kind, %peer);
                    connections.spawn(serve(socket, peer).instrument(span));
                }
                Err(e) => {
                    // e.g. out of file descriptors: back off, keep serving
                    tracing::warn!(kind, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
    drop(listener);
    connections.shutdown().await;
}

/// Resolves once the stop flag is set (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}

#[cfg(test)]
mod tests;
