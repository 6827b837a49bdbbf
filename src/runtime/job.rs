//! A job: the tasks of a view's execution graph, wired with bounded channels,
//! and the handle sessions use to flush, checkpoint, attach sinks and stop
//! it. On start it resumes from the last committed epoch: each subtask loads
//! the state of the key groups it owns, whatever the parallelism that wrote it.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::build::{build, Built, Relation, StagePart};
use super::exchange::{Outputs, Partitioner, CHANNEL_CAPACITY};
use super::inputs::Inputs;
use super::message::Message;
use super::operator::Chain;
use super::operators::MvSinkOp;
use super::task::{
    counter_key, sink_key, Committer, Control, Downstream, Shared, SourceTask, Subtask,
    VIEW_DERIVED, VIEW_ROWS,
};
use super::RuntimeError;
use crate::connectors::{FileSink, PartSink, PrintSink, SinkFormat, SinkWriter};
use crate::plan::StreamPlan;
use crate::state::{EpochRecord, JobState, MemoryBudget, MvStore};

pub use super::task::JobStatus;

/// How a job's stages treat barriers arriving from several inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Guarantee {
    /// Inputs are aligned on each barrier: after a crash every row counts once.
    #[default]
    ExactlyOnce,
    /// No alignment (no input waits); after a crash a row may count twice.
    AtLeastOnce,
}

impl Guarantee {
    pub fn name(self) -> &'static str {
        match self {
            Guarantee::ExactlyOnce => "exactly_once",
            Guarantee::AtLeastOnce => "at_least_once",
        }
    }
}

/// How to run a job.
#[derive(Debug, Clone)]
pub struct JobConfig {
    /// Subtasks per keyed operator.
    pub parallelism: u32,
    pub guarantee: Guarantee,
    /// How long an aggregate may hold back its changes to emit them together.
    pub emit_interval: Duration,
    /// Start without pulling the source until resumed.
    pub paused: bool,
    /// The memory budget of keyed state, shared by every job.
    pub budget: Arc<MemoryBudget>,
}

/// Handle to a running job.
pub struct JobHandle {
    pub name: String,
    pub operators: Vec<&'static str>,
    pub parallelism: u32,
    pub guarantee: Guarantee,
    pub emit_interval: Duration,
    /// The last FLUSH epoch the view has applied everything before.
    progress: watch::Receiver<u64>,
    shared: Arc<Shared>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl JobHandle {
    pub fn status(&self) -> JobStatus {
        self.shared.status.lock().clone()
    }

    /// CPU seconds spent so far writing operator state at barriers (summed
    /// over subtasks) and committing epochs: see [`CheckpointWork`](super::task::CheckpointWork).
    pub fn checkpoint_seconds(&self) -> (f64, f64) {
        let w = &self.shared.checkpoint_work;
        let secs = |c: &std::sync::atomic::AtomicU64| {
            c.load(std::sync::atomic::Ordering::Relaxed) as f64 / 1e9
        };
        (secs(&w.snapshot_ns), secs(&w.commit_ns))
    }

    /// The last committed checkpoint.
    pub fn last_checkpoint(&self) -> Option<EpochRecord> {
        self.shared.last_checkpoint.lock().clone()
    }

    fn barrier(&self, checkpoint: bool) -> u64 {
        self.shared.inject(checkpoint)
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
        self.wait(self.shared.committed.subscribe(), epoch).await
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
        self.shared.send(Control::Resume);
    }

    /// Starts writing the view's changes to a file sink. A sink with a
    /// committed length in the last checkpoint continues from it (the file is
    /// cut back to it); otherwise the file starts with the view's content.
    /// Its length is committed with the next checkpoint.
    pub async fn attach_sink(
        &self,
        id: u64,
        path: PathBuf,
        format: SinkFormat,
    ) -> Result<(), RuntimeError> {
        let committed = self
            .last_checkpoint()
            .and_then(|r| r.extra.get(&sink_key(id)).copied());
        let mut sinks = self.shared.sinks.lock();
        let sink = match committed {
            Some(len) => FileSink::resume(&path, len as u64, format)?,
            None => {
                let mut sink = FileSink::create(&path, format)?;
                if let Some(mv) = &self.shared.mv {
                    let content = mv.snapshot()?;
                    let ops = vec!["insert"; content.num_rows()];
                    sink.write(&content, &ops)?;
                }
                sink
            }
        };
        sinks.retain(|(s, _)| *s != id);
        sinks.push((id, SinkWriter::File(sink)));
        Ok(())
    }

    /// Starts printing the job's changes on the server's standard output.
    pub fn attach_print(&self, id: u64, identifier: Option<String>) {
        let sink = PrintSink::new(identifier, Box::new(std::io::stdout()));
        let mut sinks = self.shared.sinks.lock();
        sinks.retain(|(s, _)| *s != id);
        sinks.push((id, SinkWriter::Print(sink)));
    }

    /// Starts writing the job's rows to part files in `dir`, published as
    /// checkpoints commit; continues after the last part the last checkpoint
    /// holds (earlier parts stay, later hidden ones go).
    pub fn attach_parts(
        &self,
        id: u64,
        dir: &std::path::Path,
        format: SinkFormat,
    ) -> Result<(), RuntimeError> {
        let committed = self
            .last_checkpoint()
            .and_then(|r| r.extra.get(&sink_key(id)).copied());
        let sink = PartSink::open(dir, id, format, committed.map(|n| n as u64))?;
        let mut sinks = self.shared.sinks.lock();
        sinks.retain(|(s, _)| *s != id);
        sinks.push((id, SinkWriter::Parts(sink)));
        Ok(())
    }

    pub fn detach_sink(&self, id: u64) {
        self.shared.sinks.lock().retain(|(s, _)| *s != id);
    }

    /// Stops the job and waits for its tasks to end.
    pub async fn stop(&self) {
        self.shared.send(Control::Stop);
        let tasks = std::mem::take(&mut *self.tasks.lock());
        for t in tasks {
            let _ = t.await;
        }
    }
}

/// The stages through which the view can be rebuilt from operator state,
/// in order: the first replays its output (see [`Chain::replays`]), each
/// after it reads only the one before and keeps nothing, and the last
/// feeds the view.
fn replay_path(stages: &[StagePart]) -> Option<Vec<usize>> {
    let mut path = vec![stages.len().checked_sub(1)?];
    loop {
        let stage = &stages[*path.last()?];
        if stage.chains.iter().all(Chain::replays) {
            path.reverse();
            return Some(path);
        }
        match stage.inputs.as_slice() {
            [link] if stage.chains.iter().all(Chain::is_pure) => path.push(link.stage),
            _ => return None,
        }
    }
}

/// Restores each subtask of a stage from `state`, all at once: each reads
/// and rebuilds its own key groups, one core each.
fn restore_stage(chains: &mut [Chain], state: &JobState) -> Result<(), RuntimeError> {
    let n = chains.len();
    if n == 1 {
        return chains[0].restore_subtask(state, 0, 1);
    }
    std::thread::scope(|scope| {
        let restores: Vec<_> = (chains.iter_mut().enumerate())
            .map(|(i, chain)| scope.spawn(move || chain.restore_subtask(state, i, n)))
            .collect();
        (restores.into_iter())
            .try_for_each(|r| r.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
    })
}

/// Rebuilds the view after a restore: each subtask of the first stage of
/// `path` replays its output, which goes through one subtask of each
/// later stage (they keep nothing, so any one gives what all would), the
/// last applying it to the view. Nothing goes further: a view's sinks
/// already hold it.
fn replay_view(
    stages: &mut [StagePart],
    path: &[usize],
    state: &JobState,
    mv: &MvStore,
) -> Result<(), RuntimeError> {
    let (&first, rest) = path.split_first().expect("a path has a stage");
    let n = stages[first].chains.len();
    for i in 0..n {
        let mut rows = Vec::new();
        stages[first].chains[i].replay(state, i, n, &mut rows)?;
        // As many rows as replayed, most likely (a filter after them may drop some).
        mv.reserve(
            (rows.iter())
                .map(|m| match m {
                    Message::Data(c) => c.num_rows(),
                    _ => 0,
                })
                .sum(),
        );
        for &s in rest {
            let mut out = Vec::new();
            stages[s].chains[0].pass_through(rows, &mut out)?;
            rows = out;
        }
    }
    Ok(())
}

/// Starts a job computing `plan` into `mv` (or only into the sinks attached
/// to it, without a view), resuming from the last epoch committed in `state`
/// if there is one.
pub fn spawn_job(
    name: &str,
    plan: &StreamPlan,
    resolve: &dyn Fn(&str) -> Option<Relation>,
    mv: Option<Arc<MvStore>>,
    state: JobState,
    config: JobConfig,
) -> Result<Arc<JobHandle>, RuntimeError> {
    let (progress_tx, progress_rx) = watch::channel(0u64);
    let progress_tx = Arc::new(progress_tx);
    let sink = || MvSinkOp::new(mv.clone(), progress_tx.clone());
    let Built {
        mut sources,
        mut stages,
        names,
    } = build(name, plan, &config, resolve, &sink)?;
    let last = state.last_epoch()?;
    let (controls, control_rxs): (Vec<_>, Vec<_>) =
        sources.iter().map(|_| mpsc::unbounded_channel()).unzip();
    let shared = Arc::new(Shared::new(
        name,
        progress_tx,
        last.clone(),
        mv.clone(),
        state.clone(),
        controls,
    ));
    let committed = shared.committed.subscribe();
    for chain in stages.iter_mut().flat_map(|s| s.chains.iter_mut()) {
        chain.attach_state(&state, &committed, &config.budget);
    }
    let replay = mv
        .as_ref()
        .filter(|mv| !mv.is_append_only())
        .and_then(|_| replay_path(&stages));
    if let Some(mv) = &mv {
        if config.budget.limit().is_some() {
            // Under a memory budget a keyed view's committed rows stay in the store.
            mv.spill_to(state.clone());
        } else if replay.is_some() {
            // The view is the output of operator state its checkpoints
            // hold already: they do not write its rows a second time.
            mv.derive();
        }
    }
    if let Some(rec) = &last {
        for stage in &mut stages {
            restore_stage(&mut stage.chains, &state)?;
        }
        let was_derived = rec.extra.get(VIEW_DERIVED) == Some(&1);
        match &mv {
            Some(mv) if mv.is_derived() || was_derived => {
                let Some(path) = &replay else {
                    return Err(RuntimeError::Internal(format!(
                        "epoch {} holds the view's rows only as its operators' output, which this plan cannot rebuild",
                        rec.epoch
                    )));
                };
                if !mv.is_derived() {
                    // Under a memory budget now: the store holds no rows of
                    // the view (its first derived epoch deleted any). It
                    // starts empty, and the next checkpoint writes the rows
                    // replayed into it.
                    mv.load_spilled(Some(0))?;
                }
                replay_view(&mut stages, path, &state, mv)?;
            }
            Some(mv) if mv.is_spilled() => mv.load_spilled(rec.extra.get(VIEW_ROWS).copied())?,
            Some(mv) => mv.load(state.view_rows()?)?,
            None => {}
        }
        let count = sources.len();
        for (i, source) in sources.iter_mut().enumerate() {
            source.reader.seek(source_offset(rec, i, count)?)?;
            for (k, counter) in [
                ("rows", &source.reader_metrics.rows),
                ("late", &source.reader_metrics.late),
                ("malformed", &source.reader_metrics.malformed),
            ] {
                let v = rec.extra.get(&counter_key(k, i)).copied().unwrap_or(0);
                counter.store(v as u64, Ordering::Relaxed);
            }
            source.stream_metrics.merge_from(&source.reader_metrics);
        }
        tracing::info!(job = name, epoch = rec.epoch, offset = %rec.source_offset, "resumed from checkpoint");
    }

    // Channels into each stage: one per (upstream, downstream) subtask pair
    // of each of its inputs, tagged with the input they feed.
    let count = stages.len();
    let mut inputs: Vec<Vec<SubtaskInputs>> = stages
        .iter()
        .map(|s| s.chains.iter().map(|_| (Vec::new(), Vec::new())).collect())
        .collect();
    let mut outputs: Vec<Option<Vec<Outputs>>> = (0..count).map(|_| None).collect();
    for (s, stage) in stages.iter().enumerate() {
        let downs = stage.chains.len();
        for (side, link) in stage.inputs.iter().enumerate() {
            let ups = stages[link.stage].chains.len();
            let mut upstream = Vec::with_capacity(ups);
            for _ in 0..ups {
                let mut senders = Vec::with_capacity(downs);
                for rx in inputs[s].iter_mut() {
                    let (tx, r) = mpsc::channel(CHANNEL_CAPACITY);
                    senders.push(tx);
                    rx.0.push(r);
                    rx.1.push(side);
                }
                let partitioner = match &link.key {
                    Some((exprs, schema)) => {
                        Some(Partitioner::new(exprs.clone(), schema.clone(), downs)?)
                    }
                    None => None,
                };
                upstream.push(Outputs::new(senders, partitioner));
            }
            outputs[link.stage] = Some(upstream);
        }
    }

    let align = config.guarantee == Guarantee::ExactlyOnce;
    let mut tasks = Vec::new();
    let mut source_subtasks: Vec<Option<Subtask>> = (0..count).map(|_| None).collect();
    for (s, (stage, (stage_inputs, stage_outputs))) in stages
        .into_iter()
        .zip(inputs.into_iter().zip(outputs))
        .enumerate()
    {
        let mut stage_outputs = stage_outputs.map(Vec::into_iter);
        let is_source = stage.inputs.is_empty();
        for (chain, (rx, sides)) in stage.chains.into_iter().zip(stage_inputs) {
            let downstream = match stage_outputs.as_mut().and_then(Iterator::next) {
                Some(o) => Downstream::Exchange(o),
                None => Downstream::Commit(Committer::default()),
            };
            let subtask = Subtask {
                shared: shared.clone(),
                chain,
                downstream,
            };
            if is_source {
                source_subtasks[s] = Some(subtask);
            } else {
                let shared = subtask.shared.clone();
                let inputs = Inputs::with_sides(rx, sides, align);
                tasks.push(spawn_guarded(shared, subtask.run(inputs)));
            }
        }
    }
    for (index, (source, control)) in sources.into_iter().zip(control_rxs).enumerate() {
        let task = SourceTask {
            index,
            subtask: source_subtasks[source.stage]
                .take()
                .expect("a source starts a stage"),
            reader: source.reader,
            reader_metrics: source.reader_metrics,
            stream_metrics: source.stream_metrics,
            control,
            pending: Vec::new(),
            paused: config.paused,
        };
        tasks.insert(index, spawn_guarded(shared.clone(), task.run()));
    }
    Ok(Arc::new(JobHandle {
        name: name.to_string(),
        operators: names,
        parallelism: config.parallelism,
        guarantee: config.guarantee,
        emit_interval: config.emit_interval,
        progress: progress_rx,
        shared,
        tasks: Mutex::new(tasks),
    }))
}

/// The channels into one subtask, and per channel the input it feeds.
type SubtaskInputs = (Vec<mpsc::Receiver<Message>>, Vec<usize>);

/// Where source `index` of `count` resumes: the record's offset itself for
/// a job with one source, else that source's item of the list.
fn source_offset(
    rec: &EpochRecord,
    index: usize,
    count: usize,
) -> Result<&serde_json::Value, RuntimeError> {
    if count == 1 {
        return Ok(&rec.source_offset);
    }
    rec.source_offset.get(index).ok_or_else(|| {
        RuntimeError::Internal(format!(
            "checkpoint {} holds no offset for source {index} of {count}",
            rec.epoch
        ))
    })
}

/// Spawns one of a job's tasks; if it panics (a bug), the job fails with the
/// panic's message, so FLUSH and CHECKPOINT report it instead of waiting.
fn spawn_guarded(
    shared: Arc<Shared>,
    task: impl std::future::Future<Output = ()> + Send + 'static,
) -> JoinHandle<()> {
    use futures::FutureExt;
    tokio::spawn(async move {
        if let Err(panic) = std::panic::AssertUnwindSafe(task).catch_unwind().await {
            let message = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("no message");
            shared.fail(&RuntimeError::Internal(format!(
                "a task panicked: {message}"
            )));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::JobStatus;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    #[tokio::test]
    async fn a_panicking_task_fails_its_job() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(crate::state::Store::open(dir.path()).unwrap());
        let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
        let shared = Arc::new(Shared::new(
            "j",
            Arc::new(watch::channel(0).0),
            None,
            Some(Arc::new(MvStore::new(schema, vec![], true).unwrap())),
            JobState::new(store, 1),
            Vec::new(),
        ));
        spawn_guarded(shared.clone(), async { panic!("boom") })
            .await
            .unwrap();
        let status = shared.status.lock().clone();
        match status {
            JobStatus::Failed(m) => assert!(m.contains("a task panicked: boom"), "{m}"),
            other => panic!("{other:?}"),
        }
    }
}
