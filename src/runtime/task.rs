//! The tasks a job runs: the source task (pulls the source, injects
//! barriers), one task per subtask of each later stage (reads its merged
//! inputs), and in the task ending in the view's sink, the committer that
//! writes each checkpoint epoch once its barrier has passed every operator.
//!
//! A checkpoint barrier reaching a task: the task's operators take it, their
//! changed state goes into the epoch's shared collection, then the barrier
//! goes on. The sink's task therefore finds every upstream share in place when
//! the (aligned) barrier reaches it; it adds the view's changed rows and the
//! sinks' lengths and writes the whole epoch in one atomic batch, on a
//! blocking thread while the job goes on (epochs in order).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::chunk::Chunk;
use super::cpu_time::thread_cpu_ns;
use super::exchange::Outputs;
use super::inputs::Inputs;
use super::message::{Barrier, Message};
use super::operator::Chain;
use super::RuntimeError;
use crate::connectors::{Poll, Publish, SinkWriter, SourceMetrics, SourceReader};
use crate::state::{EpochRecord, EpochWriter, JobState, MvStore};

/// Where a job is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobStatus {
    Running,
    /// Its bounded input ended and everything was applied and committed.
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

/// Asks of a source task.
#[derive(Debug, Clone, Copy)]
pub(super) enum Control {
    Barrier(Barrier),
    /// Start (or resume) pulling the source.
    Resume,
    Stop,
}

/// What the source contributes to an epoch.
pub(super) struct SourcePart {
    pub offset: serde_json::Value,
    pub counters: Vec<(String, i64)>,
}

/// One epoch's shares collected from the job's tasks.
#[derive(Default)]
struct Fragment {
    writer: Option<EpochWriter>,
    /// By source index.
    sources: BTreeMap<usize, SourcePart>,
}

/// What a job's tasks and its handle share.
pub(super) struct Shared {
    pub name: String,
    pub status: Mutex<JobStatus>,
    /// The last FLUSH epoch the view has applied everything before.
    pub progress: Arc<watch::Sender<u64>>,
    /// The last committed checkpoint epoch.
    pub committed: watch::Sender<u64>,
    pub last_checkpoint: Mutex<Option<EpochRecord>>,
    pub next_epoch: AtomicU64,
    /// The view's rows; `None` for a job that only feeds its sinks (an INSERT INTO).
    pub mv: Option<Arc<MvStore>>,
    pub state: JobState,
    /// The view's file sinks. Held while the sink's task applies a message,
    /// so a sink attached in between starts exactly at a message boundary.
    pub sinks: Mutex<Vec<(u64, SinkWriter)>>,
    epochs: Mutex<BTreeMap<u64, Fragment>>,
    /// Each source task's control channel.
    controls: Vec<mpsc::UnboundedSender<Control>>,
    /// Sources whose input has ended.
    ended_sources: AtomicUsize,
    /// Held while a barrier's epoch is taken and sent to every source, so
    /// that every source gets barriers in the order of their epochs.
    injecting: Mutex<()>,
    /// CPU time spent on checkpoints so far.
    pub checkpoint_work: CheckpointWork,
}

/// CPU time a job has spent on checkpoints since it started, in
/// nanoseconds of its threads' own time (waits for syncs and time others
/// held the core left out): what checkpoints cost the job, apart from the
/// rows it processes.
#[derive(Default)]
pub struct CheckpointWork {
    /// Its tasks writing their operators' state at barriers (summed over
    /// subtasks): the part that holds rows back.
    pub snapshot_ns: AtomicU64,
    /// Committing epochs, off the tasks: the view's changes encoded, the
    /// state file written (waiting for its sync is not counted), the
    /// sinks' parts published.
    pub commit_ns: AtomicU64,
}

impl CheckpointWork {
    /// Adds the calling thread's CPU time since `since` (a [`thread_cpu_ns`]).
    fn add(counter: &AtomicU64, since: u64) {
        counter.fetch_add(thread_cpu_ns().saturating_sub(since), Ordering::Relaxed);
    }
}

impl Shared {
    pub fn new(
        name: &str,
        progress: Arc<watch::Sender<u64>>,
        last: Option<EpochRecord>,
        mv: Option<Arc<MvStore>>,
        state: JobState,
        controls: Vec<mpsc::UnboundedSender<Control>>,
    ) -> Self {
        let first_epoch = last.as_ref().map_or(1, |r| r.epoch + 1);
        Shared {
            name: name.to_string(),
            status: Mutex::new(JobStatus::Running),
            progress,
            committed: watch::channel(first_epoch - 1).0,
            last_checkpoint: Mutex::new(last),
            next_epoch: AtomicU64::new(first_epoch),
            mv,
            state,
            sinks: Mutex::new(Vec::new()),
            epochs: Mutex::new(BTreeMap::new()),
            controls,
            ended_sources: AtomicUsize::new(0),
            injecting: Mutex::new(()),
            checkpoint_work: CheckpointWork::default(),
        }
    }

    /// Records a failure; the first one is the job's.
    pub fn fail(&self, e: &RuntimeError) {
        let mut status = self.status.lock();
        if !matches!(*status, JobStatus::Failed(_)) {
            tracing::error!(job = %self.name, error = %e, "job failed");
            *status = JobStatus::Failed(e.to_string());
        }
    }

    fn failed(&self) -> bool {
        matches!(*self.status.lock(), JobStatus::Failed(_))
    }

    /// Moves a running job to `to` (a failure is never overwritten).
    pub fn settle_status(&self, to: JobStatus) {
        let mut status = self.status.lock();
        if *status == JobStatus::Running {
            *status = to;
        }
    }

    fn deposit(&self, epoch: u64, writer: EpochWriter, source: Option<(usize, SourcePart)>) {
        let mut epochs = self.epochs.lock();
        let f = epochs.entry(epoch).or_default();
        match &mut f.writer {
            Some(w) => w.append(writer),
            None => f.writer = Some(writer),
        }
        if let Some((index, part)) = source {
            f.sources.insert(index, part);
        }
    }

    /// A source's input ended. Once every source's has, the final
    /// checkpoint barrier goes to all of them (one epoch, so that a stage
    /// reading several sources can align it).
    fn source_ended(&self) {
        let ended = self.ended_sources.fetch_add(1, Ordering::SeqCst) + 1;
        if ended == self.controls.len() {
            self.inject(true);
        }
    }

    /// Sends every source a barrier of the next epoch; returns the epoch.
    pub fn inject(&self, checkpoint: bool) -> u64 {
        let _order = self.injecting.lock();
        let epoch = self.next_epoch.fetch_add(1, Ordering::SeqCst);
        self.send(Control::Barrier(Barrier { epoch, checkpoint }));
        epoch
    }

    /// Sends every source the same request.
    pub fn send(&self, c: Control) {
        for control in &self.controls {
            let _ = control.send(c);
        }
    }
}

pub(super) fn sink_key(id: u64) -> String {
    format!("sink:{id}")
}

/// The epoch record's name of a source's counter: as it is for the first
/// source, suffixed with the source's index for the others.
pub(super) fn counter_key(name: &str, source: usize) -> String {
    match source {
        0 => name.to_string(),
        i => format!("{name}:{i}"),
    }
}

/// Where a task's output goes.
pub(super) enum Downstream {
    /// To the next stage's subtasks.
    Exchange(Outputs),
    /// The task ends in the view's sink: it writes the file sinks and commits epochs.
    Commit(Committer),
}

#[derive(Default)]
pub(super) struct Committer {
    /// The epoch being written on a blocking thread, if any.
    inflight: Option<JoinHandle<Result<(), RuntimeError>>>,
    /// The end of input has reached the view.
    ended: bool,
}

impl Committer {
    /// Waits for the epoch being written.
    async fn settle(&mut self) -> Result<(), RuntimeError> {
        if let Some(h) = self.inflight.take() {
            h.await
                .map_err(|e| RuntimeError::Internal(format!("checkpoint writer: {e}")))??;
        }
        Ok(())
    }

    /// Writes epoch `epoch`: the shares deposited by every task, the view's
    /// changed rows and what the sinks committed; then publishes the sinks'
    /// parts the epoch completed.
    async fn commit(
        &mut self,
        shared: &Arc<Shared>,
        epoch: u64,
        sink_lengths: Vec<(String, i64)>,
        publish: Vec<Publish>,
    ) -> Result<(), RuntimeError> {
        self.settle().await?;
        let started = Instant::now();
        let fragment = shared.epochs.lock().remove(&epoch).unwrap_or_default();
        let count = shared.controls.len();
        if fragment.sources.len() != count {
            return Err(RuntimeError::Internal(format!(
                "epoch {epoch} reached the view with {} of its {count} sources",
                fragment.sources.len()
            )));
        }
        let mut offsets = Vec::with_capacity(count);
        let mut counters = Vec::new();
        for (i, part) in fragment.sources.into_values().enumerate() {
            offsets.push(part.offset);
            counters.extend(
                part.counters
                    .into_iter()
                    .map(|(k, v)| (counter_key(&k, i), v)),
            );
        }
        let source_offset = match offsets.len() {
            1 => offsets.pop().expect("one offset"),
            _ => serde_json::Value::Array(offsets),
        };
        let mut writer = fragment.writer.unwrap_or_else(|| shared.state.begin(epoch));
        let view = shared.mv.as_ref().map(|mv| mv.take_changes(epoch));
        let view_rows = shared.mv.as_ref().into_iter().flat_map(|mv| {
            let derived = mv.is_derived().then(|| (VIEW_DERIVED.to_string(), 1));
            [(VIEW_ROWS.to_string(), mv.len() as i64)]
                .into_iter()
                .chain(derived)
        });
        let mut record = EpochRecord {
            epoch,
            committed_at_ms: chrono::Utc::now().timestamp_millis(),
            duration_ms: 0,
            bytes: 0,
            source_offset,
            extra: counters
                .into_iter()
                .chain(sink_lengths)
                .chain(view_rows)
                .collect(),
        };
        // The first epoch of a view rebuilt from operator state deletes the
        // rows an earlier run stored for it, with the record saying so.
        let stale_rows = shared.mv.as_ref().is_some_and(|mv| mv.is_derived())
            && shared
                .last_checkpoint
                .lock()
                .as_ref()
                .is_none_or(|r| r.extra.get(VIEW_DERIVED) != Some(&1));
        let finished = self.ended;
        let shared = shared.clone();
        self.inflight = Some(tokio::task::spawn_blocking(move || {
            let working = thread_cpu_ns();
            if stale_rows {
                for k in shared.state.view_keys()? {
                    writer.view_delete(&k);
                }
            }
            // Encoding the view's changes happens here too, off the job's task.
            if let Some(view) = view {
                let (writes, file_bytes) = view.into_writes(&shared.state)?;
                for (k, v) in writes {
                    match v {
                        Some(v) => writer.view_put(&k, v),
                        None => writer.view_delete(&k),
                    }
                }
                writer.add_bytes(file_bytes);
            }
            record.bytes = writer.bytes();
            shared.state.commit(writer, &record)?;
            for p in publish {
                p.publish()?;
            }
            if let Some(mv) = &shared.mv {
                mv.committed(epoch);
            }
            *shared.last_checkpoint.lock() = Some(EpochRecord {
                duration_ms: started.elapsed().as_millis() as u64,
                ..record
            });
            CheckpointWork::add(&shared.checkpoint_work.commit_ns, working);
            shared.committed.send_replace(epoch);
            if finished {
                shared.progress.send_replace(u64::MAX);
                shared.settle_status(JobStatus::Finished);
            }
            Ok(())
        }));
        Ok(())
    }
}

/// The epoch record's count of the view's rows (a spilled view restores it
/// instead of reading every row).
pub(super) const VIEW_ROWS: &str = "view_rows";

/// Set (to 1) in the epoch record of a view whose rows the checkpoints do
/// not hold: recovery rebuilds them from the operators' state.
pub(super) const VIEW_DERIVED: &str = "view_derived";

/// A subtask's operators and where their output goes.
pub(super) struct Subtask {
    pub shared: Arc<Shared>,
    pub chain: Chain,
    pub downstream: Downstream,
}

impl Subtask {
    /// Passes one message through the operators and on.
    async fn step(
        &mut self,
        msg: Message,
        source: Option<(usize, SourcePart)>,
    ) -> Result<(), RuntimeError> {
        self.step_from(0, msg, source).await
    }

    /// Passes one message from input `input` of the first operator through
    /// the operators and on.
    async fn step_from(
        &mut self,
        input: usize,
        msg: Message,
        source: Option<(usize, SourcePart)>,
    ) -> Result<(), RuntimeError> {
        let checkpoint = match &msg {
            Message::Barrier(b) if b.checkpoint => Some(b.epoch),
            _ => None,
        };
        self.advance(
            |chain, out| chain.push_from(input, msg, out),
            checkpoint,
            source,
        )
        .await
    }

    /// The operators emit what they held back and is due now. Returns when
    /// what they still hold will be due.
    async fn tick(&mut self) -> Result<Option<Instant>, RuntimeError> {
        let mut next = None;
        let tick = |chain: &mut Chain, out: &mut Vec<Message>| {
            next = chain.tick(Instant::now(), out)?;
            Ok(())
        };
        self.advance(tick, None, None).await?;
        Ok(next)
    }

    /// Runs `f` on the chain and passes on what it emits; at a checkpoint
    /// barrier, snapshots the operators (and commits, in the last stage).
    async fn advance(
        &mut self,
        f: impl FnOnce(&mut Chain, &mut Vec<Message>) -> Result<(), RuntimeError>,
        checkpoint: Option<u64>,
        source: Option<(usize, SourcePart)>,
    ) -> Result<(), RuntimeError> {
        let mut out = Vec::new();
        match &mut self.downstream {
            Downstream::Exchange(outputs) => {
                f(&mut self.chain, &mut out)?;
                if let Some(epoch) = checkpoint {
                    snapshot(&mut self.chain, &self.shared, epoch, source)?;
                }
                for m in out {
                    outputs.send(m).await?;
                }
            }
            Downstream::Commit(committer) => {
                let mut lengths = Vec::new();
                let mut publish = Vec::new();
                {
                    let mut sinks = self.shared.sinks.lock();
                    f(&mut self.chain, &mut out)?;
                    for m in &out {
                        match m {
                            Message::Data(c) => write_sinks(&mut sinks, c)?,
                            Message::End => committer.ended = true,
                            _ => {}
                        }
                    }
                    if let Some(epoch) = checkpoint {
                        snapshot(&mut self.chain, &self.shared, epoch, source)?;
                        for (id, sink) in sinks.iter_mut() {
                            let (committed, part) = blocking(|| sink.commit())?;
                            lengths.push((sink_key(*id), committed as i64));
                            publish.extend(part);
                        }
                    }
                }
                if let Some(epoch) = checkpoint {
                    committer
                        .commit(&self.shared, epoch, lengths, publish)
                        .await?;
                }
            }
        }
        Ok(())
    }

    /// The last epoch handed to the writer is durable before the task ends.
    async fn close(&mut self) -> Result<(), RuntimeError> {
        match &mut self.downstream {
            Downstream::Commit(c) => c.settle().await,
            Downstream::Exchange(_) => Ok(()),
        }
    }

    /// Runs a subtask of a stage after the first until its inputs go away.
    pub async fn run(mut self, mut inputs: Inputs) {
        let mut result = Ok(());
        // When what the operators hold back is due, if no message comes first.
        let mut due: Option<Instant> = None;
        loop {
            let next = match due {
                Some(at) => tokio::time::timeout_at(at.into(), inputs.next_from())
                    .await
                    .ok(),
                None => Some(inputs.next_from().await),
            };
            let stepped = match next {
                Some(Some((input, msg))) => self.step_from(input, msg, None).await,
                Some(None) => break,
                None => Ok(()),
            };
            let ticked = match stepped {
                Ok(()) => self.tick().await,
                Err(e) => Err(e),
            };
            match ticked {
                Ok(next_due) => due = next_due,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        if let Err(e) = result.and(self.close().await) {
            self.shared.fail(&e);
        }
    }
}

/// The operators' changed state (and the source's part, from the source
/// task) goes into epoch `epoch`'s shared collection.
fn snapshot(
    chain: &mut Chain,
    shared: &Shared,
    epoch: u64,
    source: Option<(usize, SourcePart)>,
) -> Result<(), RuntimeError> {
    let working = thread_cpu_ns();
    let mut writer = shared.state.begin(epoch);
    let earlier = chain.checkpoint(&mut writer)?;
    shared.deposit(epoch, writer, source);
    CheckpointWork::add(&shared.checkpoint_work.snapshot_ns, working);
    (shared.checkpoint_work.snapshot_ns).fetch_add(earlier, Ordering::Relaxed);
    Ok(())
}

fn write_sinks(sinks: &mut [(u64, SinkWriter)], c: &Chunk) -> Result<(), RuntimeError> {
    if sinks.is_empty() {
        return Ok(());
    }
    let ops: Vec<&str> = (0..c.num_rows()).map(|i| c.op(i).name()).collect();
    blocking(|| {
        for (_, sink) in sinks {
            sink.write(&c.batch, &ops)?;
        }
        Ok(())
    })
}

/// Runs file I/O that may block for long (a slow disk, a full pipe) without
/// holding up the other tasks of this runtime thread: on the multi-threaded
/// runtime they move to another thread meanwhile. The job itself waits, and
/// its bounded channels then stall the stages before it.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// How long a source's stage runs batch after batch before it lets the
/// other tasks of its runtime thread run.
const YIELD_EVERY: std::time::Duration = std::time::Duration::from_millis(1);

/// A source's stage: pulls the source and injects barriers — FLUSH barriers
/// once the source has caught up, checkpoint barriers at the next batch
/// boundary.
pub(super) struct SourceTask {
    /// The source's place among the job's sources.
    pub index: usize,
    pub subtask: Subtask,
    pub reader: Box<dyn SourceReader>,
    pub reader_metrics: Arc<SourceMetrics>,
    pub stream_metrics: Arc<SourceMetrics>,
    pub control: mpsc::UnboundedReceiver<Control>,
    /// FLUSH barriers waiting for the source to catch up.
    pub pending: Vec<Barrier>,
    pub paused: bool,
}

impl SourceTask {
    pub async fn run(mut self) {
        let result = self.run_inner().await;
        let closed = self.subtask.close().await;
        let shared = &self.subtask.shared;
        match result.and_then(|s| closed.map(|_| s)) {
            Ok(status) => shared.settle_status(status),
            Err(e) => shared.fail(&e),
        }
    }

    fn source_part(&self) -> SourcePart {
        let m = &self.reader_metrics;
        SourcePart {
            offset: self.reader.offset(),
            counters: [
                ("rows", &m.rows),
                ("late", &m.late),
                ("malformed", &m.malformed),
            ]
            .into_iter()
            .map(|(k, c)| (k.to_string(), c.load(Ordering::Relaxed) as i64))
            .collect(),
        }
    }

    async fn barrier(&mut self, b: Barrier) -> Result<(), RuntimeError> {
        let part = b.checkpoint.then(|| (self.index, self.source_part()));
        self.subtask.step(Message::Barrier(b), part).await
    }

    async fn inject_pending(&mut self) -> Result<(), RuntimeError> {
        for b in std::mem::take(&mut self.pending) {
            self.barrier(b).await?;
        }
        Ok(())
    }

    /// Takes a control message; returns false on Stop.
    async fn on_control(&mut self, c: Control) -> Result<bool, RuntimeError> {
        match c {
            Control::Barrier(b) if b.checkpoint => self.barrier(b).await?,
            Control::Barrier(b) => self.pending.push(b),
            Control::Resume => self.paused = false,
            Control::Stop => return Ok(false),
        }
        Ok(true)
    }

    /// Takes what the control channel gave; false on Stop or a closed channel.
    async fn take(&mut self, c: Option<Control>) -> Result<bool, RuntimeError> {
        match c {
            Some(c) => self.on_control(c).await,
            None => Ok(false),
        }
    }

    async fn run_inner(&mut self) -> Result<JobStatus, RuntimeError> {
        while self.paused {
            let c = self.control.recv().await;
            if !self.take(c).await? {
                return Ok(JobStatus::Stopped);
            }
        }
        let mut yielded = Instant::now();
        loop {
            while let Ok(c) = self.control.try_recv() {
                if !self.on_control(c).await? {
                    return Ok(JobStatus::Stopped);
                }
            }
            if self.subtask.shared.failed() {
                return Ok(JobStatus::Stopped);
            }
            let polled = self.reader.poll()?;
            if !matches!(polled, Poll::End) {
                // Counters first, so a FLUSH acknowledged below sees them.
                self.stream_metrics.merge_from(&self.reader_metrics);
            }
            match polled {
                Poll::Batch(b) => {
                    self.subtask
                        .step(Message::Data(Chunk::inserts(b)), None)
                        .await?;
                    self.subtask.tick().await?;
                    self.stream_metrics.merge_from(&self.reader_metrics);
                    if self.reader.always_available() {
                        self.inject_pending().await?;
                    }
                    // Let the other tasks of this runtime thread run, but
                    // not after every batch: each yield woke a parked
                    // runtime thread, which took a core from the file
                    // source's reading thread thousands of times a second.
                    if yielded.elapsed() >= YIELD_EVERY {
                        tokio::task::yield_now().await;
                        yielded = Instant::now();
                    }
                }
                Poll::Idle(d) => {
                    // Sleep no later than what the operators hold is due.
                    let due = self.subtask.tick().await?;
                    let d = due.map_or(d, |at| d.min(at.saturating_duration_since(Instant::now())));
                    self.inject_pending().await?;
                    tokio::select! {
                        _ = tokio::time::sleep(d) => {}
                        c = self.control.recv() => if !self.take(c).await? {
                            return Ok(JobStatus::Stopped);
                        }
                    }
                }
                Poll::End => return self.finish().await,
            }
        }
    }

    /// Bounded input ended: End goes through every operator; once every
    /// source has ended, a checkpoint barrier whose commit marks the job
    /// finished; after that barriers still pass (so a sink attached later
    /// gets committed) until stopped.
    async fn finish(&mut self) -> Result<JobStatus, RuntimeError> {
        self.subtask.step(Message::End, None).await?;
        self.stream_metrics.merge_from(&self.reader_metrics);
        self.inject_pending().await?;
        self.subtask.shared.source_ended();
        while let Some(c) = self.control.recv().await {
            match c {
                Control::Barrier(b) => self.barrier(b).await?,
                Control::Resume => {}
                Control::Stop => break,
            }
        }
        Ok(JobStatus::Finished)
    }
}
