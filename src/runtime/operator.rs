//! The operator trait and chains of operators that pass messages without a channel hop.

use std::time::Instant;

use super::chunk::Chunk;
use super::message::{Barrier, EventTime, Message};
use super::RuntimeError;
use crate::state::{Entries, EpochWriter, JobState, MemoryBudget, OperatorWriter, StoredBlock};

/// What a keyed operator may use beyond its own memory: its committed state
/// in the store, the last committed epoch, and the memory budget.
#[derive(Clone)]
pub struct StateAccess {
    pub job: JobState,
    /// The operator's number in the job (its state's name).
    pub index: usize,
    pub committed: tokio::sync::watch::Receiver<u64>,
    pub budget: std::sync::Arc<MemoryBudget>,
}

/// A streaming operator. Each handler appends what it emits to `out`; the
/// defaults forward control messages unchanged, so an operator overrides only
/// what it needs.
pub trait Operator: Send {
    fn name(&self) -> &'static str;

    fn process(&mut self, chunk: Chunk, out: &mut Vec<Message>) -> Result<(), RuntimeError>;

    /// Rows from input `input` of an operator with several (a join's sides,
    /// left first); an operator with one input takes them as [`Operator::process`].
    fn process_input(
        &mut self,
        _input: usize,
        chunk: Chunk,
        out: &mut Vec<Message>,
    ) -> Result<(), RuntimeError> {
        self.process(chunk, out)
    }

    fn on_watermark(&mut self, wm: EventTime, out: &mut Vec<Message>) -> Result<(), RuntimeError> {
        out.push(Message::Watermark(wm));
        Ok(())
    }

    fn on_barrier(&mut self, barrier: Barrier, out: &mut Vec<Message>) -> Result<(), RuntimeError> {
        out.push(Message::Barrier(barrier));
        Ok(())
    }

    fn on_end(&mut self, out: &mut Vec<Message>) -> Result<(), RuntimeError> {
        out.push(Message::End);
        Ok(())
    }

    /// The time is `now`: emit what was held back and is due. Returns when
    /// what is still held back will be due (None: nothing is).
    fn on_tick(
        &mut self,
        _now: Instant,
        _out: &mut Vec<Message>,
    ) -> Result<Option<Instant>, RuntimeError> {
        Ok(None)
    }

    /// Writes the state changed since the last checkpoint (keyed operators
    /// write per key; the writer places each key in its key group).
    fn checkpoint(&mut self, _state: &mut OperatorWriter<'_>) -> Result<(), RuntimeError> {
        Ok(())
    }

    /// CPU time (ns, of its thread) spent since it was last asked writing
    /// the next checkpoint's state ahead of it (an aggregate writes groups
    /// as it emits them): counted as checkpoint work with `checkpoint`'s.
    fn early_checkpoint_ns(&mut self) -> u64 {
        0
    }

    /// Gives the operator access to its stored state and the memory budget,
    /// before [`Operator::restore`]; operators that keep everything in memory ignore it.
    fn attach_state(&mut self, _access: StateAccess) {}

    /// Loads everything earlier checkpoints wrote, before any message.
    fn restore(&mut self, _entries: Vec<(Vec<u8>, Vec<u8>)>) -> Result<(), RuntimeError> {
        Ok(())
    }

    /// Loads the blocks (see [`crate::state::Block`]) earlier checkpoints
    /// wrote, in key-group and epoch order, before [`Operator::restore`].
    fn restore_blocks(&mut self, blocks: Vec<StoredBlock>) -> Result<(), RuntimeError> {
        match blocks.is_empty() {
            true => Ok(()),
            false => Err(RuntimeError::Internal(format!(
                "{} does not read state blocks",
                self.name()
            ))),
        }
    }

    /// Loads the per-entry state (key, entry, value) earlier checkpoints
    /// wrote with `put_entry`, after [`Operator::restore`].
    fn restore_entries(&mut self, _entries: Entries) -> Result<(), RuntimeError> {
        Ok(())
    }

    /// Keeps no state and gives the same output for the same input, so
    /// what it made of rows replayed into it is what it made of them before.
    fn is_pure(&self) -> bool {
        false
    }

    /// Can rebuild its current output (every row it emitted and did not
    /// take back) from its state alone: see [`Operator::replay`].
    fn replays(&self) -> bool {
        false
    }

    /// Emits its current output as inserts, rebuilt from its state (after
    /// [`Operator::restore`]). `stored` reads its committed state as
    /// `restore` got it, for what it left in the store then.
    fn replay(
        &mut self,
        _stored: &mut StoredState<'_>,
        _out: &mut Vec<Message>,
    ) -> Result<(), RuntimeError> {
        Err(RuntimeError::Internal(format!(
            "{} cannot replay its output",
            self.name()
        )))
    }

    /// Dispatches one message to its handler.
    fn handle(&mut self, msg: Message, out: &mut Vec<Message>) -> Result<(), RuntimeError> {
        self.handle_input(0, msg, out)
    }

    /// Dispatches one message from input `input` to its handler.
    fn handle_input(
        &mut self,
        input: usize,
        msg: Message,
        out: &mut Vec<Message>,
    ) -> Result<(), RuntimeError> {
        match msg {
            Message::Data(c) if c.is_empty() => Ok(()),
            Message::Data(c) => self.process_input(input, c, out),
            Message::Watermark(w) => self.on_watermark(w, out),
            Message::Barrier(b) => self.on_barrier(b, out),
            Message::End => self.on_end(out),
        }
    }
}

/// Reads an operator's committed state again (see [`Operator::replay`]).
pub type StoredState<'a> = dyn FnMut() -> Result<Vec<(Vec<u8>, Vec<u8>)>, RuntimeError> + 'a;

/// Operators run back to back in one task (Flink's chaining).
pub struct Chain {
    ops: Vec<Box<dyn Operator>>,
    buffers: Vec<Vec<Message>>,
    /// Each operator's job-wide number (its state's name); None for one
    /// that keeps no state and takes no number.
    ids: Vec<Option<usize>>,
}

impl Chain {
    pub fn new(ops: Vec<Box<dyn Operator>>) -> Chain {
        Chain::starting_at(0, ops)
    }

    /// A chain whose operators are numbered from `first_id` in the job.
    pub fn starting_at(first_id: usize, ops: Vec<Box<dyn Operator>>) -> Chain {
        let buffers = ops.iter().map(|_| Vec::new()).collect();
        let ids = (first_id..first_id + ops.len()).map(Some).collect();
        Chain { ops, buffers, ids }
    }

    /// Appends an operator that keeps no state, so that it takes no number
    /// and the numbers of the job's other operators (the names their
    /// state is stored under) do not depend on whether it runs.
    pub fn then_stateless(mut self, op: Box<dyn Operator>) -> Chain {
        self.ops.push(op);
        self.buffers.push(Vec::new());
        self.ids.push(None);
        self
    }

    /// How many of the job's operator numbers the chain takes.
    pub fn numbered(&self) -> usize {
        self.ids.iter().flatten().count()
    }

    /// The operators that keep state, with their numbers.
    fn stateful(&mut self) -> impl Iterator<Item = (usize, &mut Box<dyn Operator>)> {
        self.ids
            .iter()
            .zip(self.ops.iter_mut())
            .filter_map(|(id, op)| id.map(|id| (id, op)))
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.ops.iter().map(|o| o.name()).collect()
    }

    /// Every operator writes its changed state into the epoch. Returns
    /// the CPU time (ns) they spent on it ahead of the barrier.
    pub fn checkpoint(&mut self, epoch: &mut EpochWriter) -> Result<u64, RuntimeError> {
        let mut early = 0;
        for (id, op) in self.stateful() {
            op.checkpoint(&mut epoch.operator(id))?;
            early += op.early_checkpoint_ns();
        }
        Ok(early)
    }

    /// Every operator gets access to its stored state (see [`StateAccess`]).
    pub fn attach_state(
        &mut self,
        job: &JobState,
        committed: &tokio::sync::watch::Receiver<u64>,
        budget: &std::sync::Arc<MemoryBudget>,
    ) {
        for (id, op) in self.stateful() {
            op.attach_state(StateAccess {
                job: job.clone(),
                index: id,
                committed: committed.clone(),
                budget: budget.clone(),
            });
        }
    }

    /// Every operator loads its committed state.
    pub fn restore(&mut self, job: &JobState) -> Result<(), RuntimeError> {
        self.restore_subtask(job, 0, 1)
    }

    /// Every operator loads the committed state of the key groups subtask
    /// `subtask` of `parallelism` owns.
    pub fn restore_subtask(
        &mut self,
        job: &JobState,
        subtask: usize,
        parallelism: usize,
    ) -> Result<(), RuntimeError> {
        for (id, op) in self.stateful() {
            op.restore_blocks(job.operator_blocks_of(id, subtask, parallelism)?)?;
            op.restore(job.operator_state_of(id, subtask, parallelism)?)?;
            op.restore_entries(job.operator_entries_of(id, subtask, parallelism)?)?;
        }
        Ok(())
    }

    /// The operator whose output the chain's last operator receives
    /// through pure operators only, if it can replay that output: the
    /// chain's result can then be rebuilt from its state (see
    /// [`Chain::replay`]).
    fn replaying(&self) -> Option<usize> {
        let last = self.ops.iter().rposition(|op| !op.is_pure())?;
        self.ops[last].replays().then_some(last)
    }

    /// Every operator is pure (see [`Operator::is_pure`]).
    pub fn is_pure(&self) -> bool {
        self.ops.iter().all(|op| op.is_pure())
    }

    /// Whether [`Chain::replay`] can rebuild what the chain's last
    /// operator received.
    pub fn replays(&self) -> bool {
        self.replaying().is_some()
    }

    /// Rebuilds what the chain's last operator received, after a restore
    /// of the key groups subtask `subtask` of `parallelism` owns: the
    /// replaying operator emits its output from its state and the pure
    /// operators after it take it as before. Returns what the last one emits.
    pub fn replay(
        &mut self,
        job: &JobState,
        subtask: usize,
        parallelism: usize,
        out: &mut Vec<Message>,
    ) -> Result<(), RuntimeError> {
        let Some(at) = self.replaying() else {
            return Err(RuntimeError::Internal(
                "the chain's output cannot be replayed".into(),
            ));
        };
        let id = self.ids[at];
        let mut stored = || match id {
            Some(id) => Ok(job.operator_state_of(id, subtask, parallelism)?),
            None => Ok(Vec::new()),
        };
        let mut emitted = Vec::new();
        self.ops[at].replay(&mut stored, &mut emitted)?;
        self.pass_from(at + 1, emitted, out, |_, _| Ok(()))
    }

    /// Each operator emits what it held back and is due at `now`, which
    /// the operators after it take before their own turn. Returns the
    /// earliest time something still held back will be due.
    pub fn tick(
        &mut self,
        now: Instant,
        out: &mut Vec<Message>,
    ) -> Result<Option<Instant>, RuntimeError> {
        let mut next: Option<Instant> = None;
        self.pass(Vec::new(), out, |op, buf| {
            if let Some(due) = op.on_tick(now, buf)? {
                next = Some(next.map_or(due, |n| n.min(due)));
            }
            Ok(())
        })?;
        Ok(next)
    }

    /// Passes messages through every operator; returns what the last one emitted.
    pub fn pass_through(
        &mut self,
        input: Vec<Message>,
        out: &mut Vec<Message>,
    ) -> Result<(), RuntimeError> {
        self.pass(input, out, |_, _| Ok(()))
    }

    /// Pushes a message through every operator; returns what the last one emitted.
    pub fn push(&mut self, msg: Message, out: &mut Vec<Message>) -> Result<(), RuntimeError> {
        self.push_from(0, msg, out)
    }

    /// Pushes a message from input `input` of the first operator through
    /// every operator; returns what the last one emitted.
    pub fn push_from(
        &mut self,
        input: usize,
        msg: Message,
        out: &mut Vec<Message>,
    ) -> Result<(), RuntimeError> {
        let Some((first, buf)) = self.ops.first_mut().zip(self.buffers.first_mut()) else {
            out.push(msg);
            return Ok(());
        };
        buf.clear();
        first.handle_input(input, msg, buf)?;
        let input = std::mem::take(buf);
        let mut rest = Vec::new();
        self.pass_from(1, input, &mut rest, |_, _| Ok(()))?;
        out.append(&mut rest);
        Ok(())
    }

    /// Hands `input` to the first operator and what each emits to the next,
    /// calling `then` on each operator after its input (it may emit more).
    fn pass(
        &mut self,
        input: Vec<Message>,
        out: &mut Vec<Message>,
        then: impl FnMut(&mut dyn Operator, &mut Vec<Message>) -> Result<(), RuntimeError>,
    ) -> Result<(), RuntimeError> {
        self.pass_from(0, input, out, then)
    }

    /// [`Chain::pass`] from operator `first` on.
    fn pass_from(
        &mut self,
        first: usize,
        mut input: Vec<Message>,
        out: &mut Vec<Message>,
        mut then: impl FnMut(&mut dyn Operator, &mut Vec<Message>) -> Result<(), RuntimeError>,
    ) -> Result<(), RuntimeError> {
        let ops = self.ops.iter_mut().zip(self.buffers.iter_mut()).skip(first);
        for (op, buf) in ops {
            buf.clear();
            for m in input.drain(..) {
                op.handle(m, buf)?;
            }
            then(op.as_mut(), buf)?;
            std::mem::swap(&mut input, buf);
        }
        out.append(&mut input);
        Ok(())
    }
}
