//! A running job: one task that pulls its source, pushes messages through its
//! operator chain into the view, and injects barriers on request (FLUSH).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::build::{build, Built, SourceSpec};
use super::chunk::Chunk;
use super::message::{Barrier, Message};
use super::operator::Chain;
use super::operators::MvSinkOp;
use super::RuntimeError;
use crate::connectors::{Poll, SourceMetrics, SourceReader};
use crate::plan::StreamPlan;
use crate::state::MvStore;

/// Where a job is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobStatus {
    Running,
    /// Its bounded input ended and everything was applied.
    Finished,
    Failed(String),
    Stopped,
}

impl JobStatus {
    pub fn name(&self) -> &'static str {
        match self {
            JobStatus::Running => "running",
            JobStatus::Finished => "finished",
            JobStatus::Failed(_) => "failed",
            JobStatus::Stopped => "stopped",
        }
    }
}

#[derive(Clone, Copy)]
enum Control {
    Barrier(Barrier),
    Stop,
}

/// Handle to a running job.
pub struct JobHandle {
    pub name: String,
    pub operators: Vec<&'static str>,
    control: mpsc::UnboundedSender<Control>,
    progress: watch::Receiver<u64>,
    status: Arc<Mutex<JobStatus>>,
    next_epoch: AtomicU64,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl JobHandle {
    pub fn status(&self) -> JobStatus {
        self.status.lock().clone()
    }

    /// Returns once every row the source had accepted when this was called
    /// is reflected in the view (or the job has failed: then an error).
    pub async fn flush(&self) -> Result<(), RuntimeError> {
        let epoch = self.next_epoch.fetch_add(1, Ordering::SeqCst);
        let _ = self.control.send(Control::Barrier(Barrier {
            epoch,
            checkpoint: false,
        }));
        let mut progress = self.progress.clone();
        loop {
            match self.status() {
                JobStatus::Failed(message) => {
                    return Err(RuntimeError::JobFailed {
                        job: self.name.clone(),
                        message,
                    })
                }
                JobStatus::Finished | JobStatus::Stopped => return Ok(()),
                JobStatus::Running => {}
            }
            if *progress.borrow_and_update() >= epoch {
                return Ok(());
            }
            let _ = tokio::time::timeout(Duration::from_millis(50), progress.changed()).await;
        }
    }

    /// Stops the job and waits for its task to end.
    pub async fn stop(&self) {
        let _ = self.control.send(Control::Stop);
        let task = self.task.lock().take();
        if let Some(t) = task {
            let _ = t.await;
        }
    }
}

/// Starts a job computing `plan` into `mv`.
pub fn spawn_job(
    name: &str,
    plan: &StreamPlan,
    resolve: &dyn Fn(&str) -> Option<SourceSpec>,
    mv: Arc<MvStore>,
) -> Result<Arc<JobHandle>, RuntimeError> {
    let (progress_tx, progress_rx) = watch::channel(0u64);
    let progress_tx = Arc::new(progress_tx);
    let sink = MvSinkOp::new(mv, progress_tx.clone());
    let Built {
        reader,
        reader_metrics,
        stream_metrics,
        chain,
    } = build(name, plan, resolve, sink)?;
    let (control_tx, control_rx) = mpsc::unbounded_channel();
    let status = Arc::new(Mutex::new(JobStatus::Running));
    let operators = chain.names();
    let runner = Runner {
        name: name.to_string(),
        reader,
        chain,
        control: control_rx,
        status: status.clone(),
        progress: progress_tx,
        pending: Vec::new(),
        reader_metrics,
        stream_metrics,
    };
    let task = tokio::spawn(runner.run());
    Ok(Arc::new(JobHandle {
        name: name.to_string(),
        operators,
        control: control_tx,
        progress: progress_rx,
        status,
        next_epoch: AtomicU64::new(1),
        task: Mutex::new(Some(task)),
    }))
}

struct Runner {
    name: String,
    reader: Box<dyn SourceReader>,
    chain: Chain,
    control: mpsc::UnboundedReceiver<Control>,
    status: Arc<Mutex<JobStatus>>,
    progress: Arc<watch::Sender<u64>>,
    /// Barriers requested but not yet injected (waiting for the source to catch up).
    pending: Vec<Barrier>,
    reader_metrics: Arc<SourceMetrics>,
    stream_metrics: Arc<SourceMetrics>,
}

impl Runner {
    async fn run(mut self) {
        let result = self.run_inner().await;
        let mut status = self.status.lock();
        match result {
            Ok(final_status) => *status = final_status,
            Err(e) => {
                tracing::error!(job = %self.name, error = %e, "job failed");
                *status = JobStatus::Failed(e.to_string());
            }
        }
    }

    fn push(&mut self, msg: Message) -> Result<(), RuntimeError> {
        let mut out = Vec::new();
        self.chain.push(msg, &mut out)
    }

    fn inject_pending(&mut self) -> Result<(), RuntimeError> {
        for b in std::mem::take(&mut self.pending) {
            self.push(Message::Barrier(b))?;
        }
        Ok(())
    }

    /// Takes a control message; returns false on Stop.
    fn on_control(&mut self, c: Control) -> bool {
        match c {
            Control::Barrier(b) => {
                self.pending.push(b);
                true
            }
            Control::Stop => false,
        }
    }

    async fn run_inner(&mut self) -> Result<JobStatus, RuntimeError> {
        loop {
            while let Ok(c) = self.control.try_recv() {
                if !self.on_control(c) {
                    return Ok(JobStatus::Stopped);
                }
            }
            let polled = self.reader.poll()?;
            match self.on_poll(polled).await? {
                Some(status) => return Ok(status),
                None => continue,
            }
        }
    }

    /// Handles one poll result; `Some` when the job is done.
    async fn on_poll(&mut self, polled: Poll) -> Result<Option<JobStatus>, RuntimeError> {
        {
            if !matches!(polled, Poll::End) {
                // Counters first, so a FLUSH acknowledged below sees them.
                self.stream_metrics.merge_from(&self.reader_metrics);
            }
            match polled {
                Poll::Batch(b) => {
                    self.push(Message::Data(Chunk::inserts(b)))?;
                    self.stream_metrics.merge_from(&self.reader_metrics);
                    if self.reader.always_available() {
                        self.inject_pending()?;
                    }
                    tokio::task::yield_now().await;
                    Ok(None)
                }
                Poll::Idle(d) => {
                    self.inject_pending()?;
                    tokio::select! {
                        _ = tokio::time::sleep(d) => Ok(None),
                        c = self.control.recv() => match &c {
                            Some(c) if self.on_control(*c) => Ok(None),
                            _ => Ok(Some(JobStatus::Stopped)),
                        }
                    }
                }
                Poll::End => {
                    self.push(Message::End)?;
                    self.stream_metrics.merge_from(&self.reader_metrics);
                    self.pending.clear();
                    self.progress.send_replace(u64::MAX);
                    *self.status.lock() = JobStatus::Finished;
                    // Stay until stopped so the handle's control channel stays open.
                    while let Some(c) = self.control.recv().await {
                        if !self.on_control(c) {
                            break;
                        }
                        self.pending.clear();
                    }
                    Ok(Some(JobStatus::Finished))
                }
            }
        }
    }
}
