//! A running job: one task that pulls its source, pushes messages through its
//! operator chain into the view, and injects barriers: FLUSH barriers once the
//! source has caught up, checkpoint barriers at the next batch boundary. At a
//! checkpoint barrier the job writes its epoch — operator state, the view's
//! changed rows, the source offset — atomically; on start it resumes from the
//! last committed epoch.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use super::build::{build, Built, SourceSpec};
use super::chunk::Chunk;
use super::message::{Barrier, Message};
use super::operator::Chain;
use super::operators::MvSinkOp;
use super::RuntimeError;
use crate::connectors::{FileSink, Poll, SourceMetrics, SourceReader};
use crate::plan::StreamPlan;
use crate::state::{EpochRecord, JobState, MvStore};

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

enum Control {
    Barrier(Barrier),
    /// Start (or resume) pulling the source.
    Resume,
    AttachSink {
        id: u64,
        path: PathBuf,
        reply: oneshot::Sender<Result<(), RuntimeError>>,
    },
    DetachSink(u64),
    Stop,
}

/// Handle to a running job.
pub struct JobHandle {
    pub name: String,
    pub operators: Vec<&'static str>,
    control: mpsc::UnboundedSender<Control>,
    /// The last barrier epoch the view has applied everything before.
    progress: watch::Receiver<u64>,
    /// The last committed checkpoint epoch.
    committed: watch::Receiver<u64>,
    last_checkpoint: Arc<Mutex<Option<EpochRecord>>>,
    status: Arc<Mutex<JobStatus>>,
    next_epoch: Arc<AtomicU64>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl JobHandle {
    pub fn status(&self) -> JobStatus {
        self.status.lock().clone()
    }

    /// The last committed checkpoint.
    pub fn last_checkpoint(&self) -> Option<EpochRecord> {
        self.last_checkpoint.lock().clone()
    }

    fn barrier(&self, checkpoint: bool) -> u64 {
        let epoch = self.next_epoch.fetch_add(1, Ordering::SeqCst);
        let _ = self
            .control
            .send(Control::Barrier(Barrier { epoch, checkpoint }));
        epoch
    }

    /// Returns once every row the source had accepted when this was called
    /// is reflected in the view (or the job has failed: then an error).
    pub async fn flush(&self) -> Result<(), RuntimeError> {
        let epoch = self.barrier(false);
        self.wait(self.progress.clone(), epoch).await
    }

    /// Asks for a checkpoint at the next batch boundary; returns its epoch.
    pub fn trigger_checkpoint(&self) -> u64 {
        self.barrier(true)
    }

    /// Takes a checkpoint now and waits until it is committed.
    pub async fn checkpoint(&self) -> Result<(), RuntimeError> {
        let epoch = self.trigger_checkpoint();
        self.wait(self.committed.clone(), epoch).await
    }

    async fn wait(
        &self,
        mut reached: watch::Receiver<u64>,
        epoch: u64,
    ) -> Result<(), RuntimeError> {
        loop {
            match self.status() {
                JobStatus::Failed(message) => {
                    return Err(RuntimeError::JobFailed {
                        job: self.name.clone(),
                        message,
                    })
                }
                JobStatus::Stopped => return Ok(()),
                JobStatus::Finished | JobStatus::Running => {}
            }
            if *reached.borrow_and_update() >= epoch {
                return Ok(());
            }
            let _ = tokio::time::timeout(Duration::from_millis(50), reached.changed()).await;
        }
    }

    /// Starts a job spawned paused.
    pub fn resume(&self) {
        let _ = self.control.send(Control::Resume);
    }

    /// Starts writing the view's changes to a file sink. A sink with a
    /// committed length in the last checkpoint continues from it (the file is
    /// cut back to it); otherwise the file starts with the view's content.
    pub async fn attach_sink(&self, id: u64, path: PathBuf) -> Result<(), RuntimeError> {
        let (reply, rx) = oneshot::channel();
        self.control
            .send(Control::AttachSink { id, path, reply })
            .map_err(|_| RuntimeError::Internal(format!("job {} is not running", self.name)))?;
        rx.await
            .map_err(|_| RuntimeError::Internal(format!("job {} ended", self.name)))?
    }

    pub fn detach_sink(&self, id: u64) {
        let _ = self.control.send(Control::DetachSink(id));
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

/// Starts a job computing `plan` into `mv`, resuming from the last epoch
/// committed in `state` if there is one.
pub fn spawn_job(
    name: &str,
    plan: &StreamPlan,
    resolve: &dyn Fn(&str) -> Option<SourceSpec>,
    mv: Arc<MvStore>,
    state: JobState,
    paused: bool,
) -> Result<Arc<JobHandle>, RuntimeError> {
    let (progress_tx, progress_rx) = watch::channel(0u64);
    let progress_tx = Arc::new(progress_tx);
    let sink = MvSinkOp::new(mv.clone(), progress_tx.clone());
    let Built {
        mut reader,
        reader_metrics,
        stream_metrics,
        mut chain,
    } = build(name, plan, resolve, sink)?;
    let last = state.last_epoch()?;
    if let Some(rec) = &last {
        chain.restore(&state)?;
        mv.load(state.view_rows()?);
        reader.seek(&rec.source_offset)?;
        for (k, counter) in [
            ("rows", &reader_metrics.rows),
            ("late", &reader_metrics.late),
            ("malformed", &reader_metrics.malformed),
        ] {
            counter.store(
                rec.extra.get(k).copied().unwrap_or(0) as u64,
                Ordering::Relaxed,
            );
        }
        stream_metrics.merge_from(&reader_metrics);
        tracing::info!(job = name, epoch = rec.epoch, offset = %rec.source_offset, "resumed from checkpoint");
    }
    let first_epoch = last.as_ref().map_or(1, |r| r.epoch + 1);
    let (committed_tx, committed_rx) = watch::channel(first_epoch - 1);
    let (control_tx, control_rx) = mpsc::unbounded_channel();
    let status = Arc::new(Mutex::new(JobStatus::Running));
    let last_checkpoint = Arc::new(Mutex::new(last));
    let next_epoch = Arc::new(AtomicU64::new(first_epoch));
    let operators = chain.names();
    let runner = Runner {
        name: name.to_string(),
        reader,
        chain,
        control: control_rx,
        status: status.clone(),
        progress: progress_tx,
        committed: committed_tx,
        pending: Vec::new(),
        reader_metrics,
        stream_metrics,
        mv,
        state,
        last_checkpoint: last_checkpoint.clone(),
        next_epoch: next_epoch.clone(),
        sinks: Vec::new(),
        paused,
        inflight: None,
    };
    let task = tokio::spawn(runner.run());
    Ok(Arc::new(JobHandle {
        name: name.to_string(),
        operators,
        control: control_tx,
        progress: progress_rx,
        committed: committed_rx,
        last_checkpoint,
        status,
        next_epoch,
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
    committed: watch::Sender<u64>,
    /// FLUSH barriers waiting for the source to catch up.
    pending: Vec<Barrier>,
    reader_metrics: Arc<SourceMetrics>,
    stream_metrics: Arc<SourceMetrics>,
    mv: Arc<MvStore>,
    state: JobState,
    last_checkpoint: Arc<Mutex<Option<EpochRecord>>>,
    next_epoch: Arc<AtomicU64>,
    sinks: Vec<(u64, FileSink)>,
    paused: bool,
    /// The epoch being written to RocksDB on a blocking thread, if any.
    inflight: Option<JoinHandle<Result<EpochRecord, RuntimeError>>>,
}

fn sink_key(id: u64) -> String {
    format!("sink:{id}")
}

impl Runner {
    async fn run(mut self) {
        let mut result = self.run_inner().await;
        // The last epoch handed to the writer is durable before the job ends.
        if let Err(e) = self.settle().await {
            result = result.and(Err(e));
        }
        let mut status = self.status.lock();
        match result {
            Ok(final_status) => *status = final_status,
            Err(e) => {
                tracing::error!(job = %self.name, error = %e, "job failed");
                *status = JobStatus::Failed(e.to_string());
            }
        }
    }

    /// Pushes a message through the chain; the view's changes that come out
    /// go to the sinks.
    fn push(&mut self, msg: Message) -> Result<(), RuntimeError> {
        let mut out = Vec::new();
        self.chain.push(msg, &mut out)?;
        if self.sinks.is_empty() {
            return Ok(());
        }
        for m in out {
            if let Message::Data(c) = m {
                let ops: Vec<&str> = (0..c.num_rows()).map(|i| c.op(i).name()).collect();
                for (_, sink) in &mut self.sinks {
                    sink.write(&c.batch, &ops)?;
                }
            }
        }
        Ok(())
    }

    fn attach(&mut self, id: u64, path: PathBuf) -> Result<(), RuntimeError> {
        let committed = self
            .last_checkpoint
            .lock()
            .as_ref()
            .and_then(|r| r.extra.get(&sink_key(id)).copied());
        let sink = match committed {
            Some(len) => FileSink::resume(&path, len as u64)?,
            None => {
                let mut sink = FileSink::create(&path)?;
                let content = self.mv.snapshot()?;
                let ops = vec!["insert"; content.num_rows()];
                sink.write(&content, &ops)?;
                sink
            }
        };
        self.sinks.retain(|(s, _)| *s != id);
        self.sinks.push((id, sink));
        Ok(())
    }

    fn inject_pending(&mut self) -> Result<(), RuntimeError> {
        for b in std::mem::take(&mut self.pending) {
            self.push(Message::Barrier(b))?;
        }
        Ok(())
    }

    /// Waits for the epoch being written, then publishes it as committed.
    async fn settle(&mut self) -> Result<(), RuntimeError> {
        if let Some(h) = self.inflight.take() {
            let record = h
                .await
                .map_err(|e| RuntimeError::Internal(format!("checkpoint writer: {e}")))??;
            let epoch = record.epoch;
            *self.last_checkpoint.lock() = Some(record);
            self.committed.send_replace(epoch);
        }
        Ok(())
    }

    /// Publishes a finished write without waiting for one still running.
    async fn settle_if_done(&mut self) -> Result<(), RuntimeError> {
        if self.inflight.as_ref().is_some_and(|h| h.is_finished()) {
            self.settle().await?;
        }
        Ok(())
    }

    /// Passes a checkpoint barrier through the chain and commits the epoch:
    /// the state is taken here, between two batches; writing it (and the
    /// fsync) happens on a blocking thread while the job goes on. Epochs are
    /// written in order: a checkpoint first waits for the previous one.
    async fn checkpoint(&mut self, barrier: Barrier) -> Result<(), RuntimeError> {
        self.settle().await?;
        let started = Instant::now();
        self.push(Message::Barrier(barrier))?;
        let mut epoch = self.state.begin();
        self.chain.checkpoint(&mut epoch)?;
        for (k, v) in self.mv.take_changes() {
            match v {
                Some(v) => epoch.view_put(&k, v),
                None => epoch.view_delete(&k),
            }
        }
        let mut sink_lengths = Vec::with_capacity(self.sinks.len());
        for (id, sink) in &mut self.sinks {
            sink_lengths.push((sink_key(*id), sink.commit()? as i64));
        }
        let m = &self.reader_metrics;
        let record = EpochRecord {
            epoch: barrier.epoch,
            committed_at_ms: chrono::Utc::now().timestamp_millis(),
            duration_ms: 0,
            bytes: epoch.bytes(),
            source_offset: self.reader.offset(),
            extra: [
                ("rows", &m.rows),
                ("late", &m.late),
                ("malformed", &m.malformed),
            ]
            .into_iter()
            .map(|(k, c)| (k.to_string(), c.load(Ordering::Relaxed) as i64))
            .chain(sink_lengths)
            .collect(),
        };
        let state = self.state.clone();
        self.inflight = Some(tokio::task::spawn_blocking(move || {
            state.commit(epoch, &record)?;
            Ok(EpochRecord {
                duration_ms: started.elapsed().as_millis() as u64,
                ..record
            })
        }));
        Ok(())
    }

    /// Takes a control message; returns false on Stop.
    async fn on_control(&mut self, c: Control) -> Result<bool, RuntimeError> {
        match c {
            Control::Barrier(b) if b.checkpoint => self.checkpoint(b).await?,
            Control::Barrier(b) => self.pending.push(b),
            Control::Resume => self.paused = false,
            Control::AttachSink { id, path, reply } => {
                let _ = reply.send(self.attach(id, path));
            }
            Control::DetachSink(id) => self.sinks.retain(|(s, _)| *s != id),
            Control::Stop => return Ok(false),
        }
        Ok(true)
    }

    async fn run_inner(&mut self) -> Result<JobStatus, RuntimeError> {
        while self.paused {
            match self.control.recv().await {
                Some(c) => {
                    if !self.on_control(c).await? {
                        return Ok(JobStatus::Stopped);
                    }
                    self.settle().await?;
                }
                None => return Ok(JobStatus::Stopped),
            }
        }
        loop {
            while let Ok(c) = self.control.try_recv() {
                if !self.on_control(c).await? {
                    return Ok(JobStatus::Stopped);
                }
            }
            self.settle_if_done().await?;
            let polled = self.reader.poll()?;
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
                }
                Poll::Idle(d) => {
                    self.inject_pending()?;
                    tokio::select! {
                        _ = tokio::time::sleep(d) => {}
                        c = self.control.recv() => match c {
                            Some(c) => {
                                if !self.on_control(c).await? {
                                    return Ok(JobStatus::Stopped);
                                }
                            }
                            None => return Ok(JobStatus::Stopped),
                        }
                    }
                }
                Poll::End => return self.finish().await,
            }
        }
    }

    /// Bounded input ended: apply End, commit the final state, then only
    /// answer barriers until stopped.
    async fn finish(&mut self) -> Result<JobStatus, RuntimeError> {
        self.push(Message::End)?;
        self.stream_metrics.merge_from(&self.reader_metrics);
        self.pending.clear();
        let epoch = self.next_epoch.fetch_add(1, Ordering::SeqCst);
        self.checkpoint(Barrier {
            epoch,
            checkpoint: true,
        })
        .await?;
        self.settle().await?;
        self.progress.send_replace(u64::MAX);
        *self.status.lock() = JobStatus::Finished;
        while let Some(c) = self.control.recv().await {
            match c {
                Control::Stop => break,
                // Nothing changes any more: the final checkpoint stands for every later one.
                Control::Barrier(b) => {
                    if b.checkpoint {
                        self.committed.send_replace(b.epoch);
                    }
                }
                Control::AttachSink { id, path, reply } => {
                    let committed = match self.attach(id, path) {
                        Ok(()) => {
                            let epoch = self.next_epoch.fetch_add(1, Ordering::SeqCst);
                            let barrier = Barrier {
                                epoch,
                                checkpoint: true,
                            };
                            match self.checkpoint(barrier).await {
                                Ok(()) => self.settle().await,
                                Err(e) => Err(e),
                            }
                        }
                        Err(e) => Err(e),
                    };
                    let _ = reply.send(committed);
                }
                other => {
                    self.on_control(other).await?;
                }
            }
        }
        Ok(JobStatus::Finished)
    }
}
