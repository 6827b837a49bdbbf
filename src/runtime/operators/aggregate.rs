//! Grouped aggregation over a stream, windowed or not. Emits updates as rows
//! arrive (update-before/after pairs per changed group, each changed group
//! once per emission interval however many chunks touched it), or, with
//! EMIT ON WINDOW CLOSE, each window's final rows once the watermark passes it.
//! State of a window is freed when it closes. Under a memory budget, the
//! groups of a non-windowed aggregate that are unchanged and committed leave
//! memory when the budget is exceeded and are read back from the store when
//! a row for them comes again.
//!
//! A checkpoint writes each changed group's accumulators under its key, and
//! its DISTINCT values as one record per group, aggregate and epoch: a
//! DISTINCT aggregate's values whose count changed (the last record of a
//! value wins on restore), a shared set's values whose mask changed (masks
//! only grow, so records merge by OR). After [`MAX_RECORDS`] epochs with
//! records, a group's values are rewritten as one record each.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::{
    ArrayRef, AsArray, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray,
    UInt32Array,
};
use datafusion::arrow::compute::{cast, take};
use datafusion::arrow::datatypes::{DataType, Int64Type, SchemaRef};
use datafusion::common::ScalarValue;
use datafusion::physical_expr::PhysicalExpr;

use hashbrown::HashMap;
use smallvec::SmallVec;

use super::accumulator::{input_type, Accumulator, Arg};
use super::agg_value::{column_of_values, AggValue};
use super::emitted_blocks::{EmittedBlocks, EpochCounts};
use super::group_blocks::GroupBlocks;
use super::group_codec::{Emitted, EmittedRead, GroupRead, GroupWriter};
use super::group_table::{GroupKey, GroupTable, List, Listable, Listed};
use super::partial::{ChunkFold, FoldKind, Folds, GroupingPause};
use super::plain_group;
use super::project::evaluate;
use super::shared_distinct::{plan_sets, DistinctSet, SharedValues};
use crate::functions::wall_clock_ns;
use crate::plan::{AggCall, WindowClose};
use crate::runtime::chunk::{Chunk, Op};
use crate::runtime::message::{EventTime, Message};
use crate::runtime::operator::{Operator, StateAccess, StoredState};
use crate::runtime::RuntimeError;
use crate::state::{
    key_group, prefetch, Block, Entries, OperatorWriter, RowCodec, ScalarCodec, StoredBlock, AHEAD,
    KEY_GROUPS,
};

/// One aggregate call, compiled.
pub struct CompiledAgg {
    pub call: AggCall,
    /// The argument (None for COUNT(*)).
    pub arg: Option<Arc<dyn PhysicalExpr>>,
    /// What the argument is cast to before accumulating.
    pub sum_type: DataType,
    /// `FILTER (WHERE ...)`, over the aggregate's input.
    pub filter: Option<Arc<dyn PhysicalExpr>>,
}

impl CompiledAgg {
    pub fn new(
        call: AggCall,
        arg: Option<Arc<dyn PhysicalExpr>>,
        arg_type: Option<DataType>,
    ) -> Self {
        let sum_type = match &arg_type {
            Some(t) => input_type(&call, t),
            None => DataType::Int64,
        };
        CompiledAgg {
            call,
            arg,
            sum_type,
            filter: None,
        }
    }

    /// Aggregates only the rows for which `filter` is true.
    pub fn with_filter(self, filter: Option<Arc<dyn PhysicalExpr>>) -> Self {
        CompiledAgg { filter, ..self }
    }
}

/// A group's accumulators, in place for the usual one or two aggregates:
/// a new group is then one allocation less, and reading them one cache
/// miss less.
type Accs = SmallVec<[Accumulator; ACCS_IN_PLACE]>;
const ACCS_IN_PLACE: usize = 2;

/// A group's aggregate values, in place for one or two aggregates: no
/// allocation per emission of integers and doubles, and a checkpoint finds
/// them with the group (a heap block of their own was a cache and TLB miss
/// apart).
type Values = SmallVec<[AggValue; ACCS_IN_PLACE]>;

/// A group's state; its key is the map key (row-encoded), decoded into
/// columns only when its rows are emitted.
///
/// In declared order (`repr(C)`): what a row's update and a checkpoint
/// read first, the last output after it. A checkpoint then fetches the
/// group only up to its last output, for a group emitted since it changed
/// is written without it.
#[derive(Clone)]
#[repr(C)]
struct Group {
    /// One per aggregate; a member of a shared DISTINCT set has its plain
    /// accumulator here, fed each value once by the set.
    accs: Accs,
    /// Net input rows (a group with none left is deleted).
    rows: i64,
    /// The last chunk that touched it.
    chunk: u64,
    /// The epoch whose checkpoint last wrote it (0: restored, or never written).
    written: u64,
    /// Boxed, as most groups have none: in place every group would pay.
    distinct: Option<Box<GroupDistinct>>,
    /// Changed since the last checkpoint (on the table's changed list).
    dirty: bool,
    /// Changed since its rows were last emitted (on its pending list).
    pending: bool,
    /// The store holds it (restored, read back, or written by a checkpoint):
    /// removing it deletes it there.
    stored: bool,
    /// The aggregate values last emitted downstream.
    emitted: Option<Values>,
}

/// A group's DISTINCT state besides its accumulators.
#[derive(Clone, Default)]
struct GroupDistinct {
    /// The values of each shared DISTINCT set.
    shared: Vec<SharedValues>,
    /// Epochs whose checkpoints wrote records of its DISTINCT values (each
    /// holds the values whose count or mask changed then).
    records: Vec<u64>,
    /// Its DISTINCT values were restored from one entry per value (the
    /// format before records), which are deleted with the group.
    per_value: bool,
}

impl Group {
    fn shared(&self) -> &[SharedValues] {
        self.distinct.as_ref().map_or(&[], |d| &d.shared)
    }

    fn records(&self) -> &[u64] {
        self.distinct.as_ref().map_or(&[], |d| &d.records)
    }

    fn per_value(&self) -> bool {
        self.distinct.as_ref().is_some_and(|d| d.per_value)
    }

    fn distinct_mut(&mut self) -> &mut GroupDistinct {
        self.distinct.get_or_insert_with(Box::default)
    }
}

/// The values of a group's shared DISTINCT sets, from its `distinct` (a
/// field, not the group: its accumulators stay free to borrow meanwhile).
fn shared_mut(distinct: &mut Option<Box<GroupDistinct>>) -> &mut [SharedValues] {
    match distinct {
        Some(d) => &mut d.shared,
        None => &mut [],
    }
}

/// The first two bytes of a record's entry; a value's own entry (the format
/// before records) starts with its aggregate's index, which is smaller.
const RECORD: [u8; 2] = [0xff, 0xff];

/// Epochs with records a group may have before the next checkpoint that
/// writes it rewrites its values as one record each and deletes the others.
const MAX_RECORDS: usize = 16;

/// The entry of aggregate `agg`'s record written at `epoch` (for a shared
/// set, `agg` is its leader).
fn record_entry(agg: usize, epoch: u64) -> Vec<u8> {
    let agg = u16::try_from(agg).expect("fewer than 65535 aggregates");
    [&RECORD[..], &agg.to_be_bytes(), &epoch.to_be_bytes()].concat()
}

pub struct AggregateOp {
    /// A group before any row: each new group starts as a copy of it.
    fresh: Group,
    group_exprs: Vec<Arc<dyn PhysicalExpr>>,
    aggs: Vec<CompiledAgg>,
    key_codec: RowCodec,
    schema: SchemaRef,
    window: Option<WindowClose>,
    emit_on_window_close: bool,
    retractable: bool,
    /// With the changed groups listed (when their `dirty` flag is set, in
    /// first-touch order), and the pending ones (when their `pending` flag
    /// is set).
    groups: GroupTable<Group>,
    /// Close time (ns) → groups closing then.
    closing: BTreeMap<EventTime, Vec<GroupKey>>,
    /// The last checkpoint's list of changed groups, emptied: its room is
    /// used again, not grown anew (copied, and its fresh pages faulted in)
    /// every epoch.
    listed_room: Vec<Listed>,
    /// Keys of the groups the store holds that were removed since the last
    /// checkpoint: deleted there then, unless created again. (A group
    /// created and removed between two checkpoints, as most windows are
    /// when an epoch spans many of them, costs the store nothing.)
    removed: Vec<GroupKey>,
    /// Changes are emitted after a chunk or on a tick once this long has
    /// passed since the last emission (at once when it has already), and
    /// always before a barrier, a watermark closing windows or the end of
    /// input.
    emit_interval: Duration,
    last_emit: Instant,
    /// Per-entry state (DISTINCT values) of groups removed since the last
    /// checkpoint: (group key, entry) to delete.
    removed_entries: Vec<(Vec<u8>, Vec<u8>)>,
    /// Per aggregate: codecs for its accumulated values and for its output.
    codecs: Vec<(ScalarCodec, ScalarCodec)>,
    /// Chunks processed (marks the groups each one touched).
    chunks: u64,
    /// The stored state and the memory budget, once attached.
    access: Option<StateAccess>,
    /// Estimated bytes the groups take, and what was last reported to the budget.
    bytes: usize,
    reported: usize,
    /// Estimated bytes of a group besides its key.
    group_base: usize,
    /// Some committed groups are only in the store.
    spilled: bool,
    /// DISTINCT aggregates sharing their values (append-only input only).
    sets: Vec<DistinctSet>,
    /// Per aggregate: whether it belongs to a set (and is fed by it); from
    /// `sets`, kept for the per-row loop.
    shared: Vec<bool>,
    /// The aggregates whose values go into records: the DISTINCT ones not
    /// in a set, and each set's leader.
    record_aggs: Vec<usize>,
    /// Encodes groups for checkpoints, reusing its scratch buffer.
    writer: GroupWriter,
    /// What each aggregate folds into, when every one folds (see
    /// [`crate::plan::AggCall::folds`]): then chunks are folded per key
    /// before they reach the groups where their keys allow (None in tests
    /// too, to compare).
    folds: Option<Vec<FoldKind>>,
    /// Chunks go row by row for a while after one whose keys hardly repeated.
    pause: GroupingPause,
    /// The global half of a split aggregate: its input is partial rows (see
    /// `LocalAggregateOp`) holding folds of the kinds in `folds`.
    merge: bool,
    /// Without a memory budget the groups are checkpointed in blocks, one
    /// per key group and epoch, instead of one key each: what the store
    /// holds of them.
    blocks: GroupBlocks,
    /// Keys of groups restored from one key each while checkpointing in
    /// blocks: deleted by the next checkpoint, which writes every key
    /// group whole.
    legacy: Vec<GroupKey>,
    /// This epoch's blocks, when its groups are written as they are
    /// emitted (then they are not listed as changed); the checkpoint
    /// decides for the next epoch by this one's counts.
    emitted_blocks: Option<EmittedBlocks>,
    /// This epoch's counts while groups are written by the checkpoint.
    counts: EpochCounts,
    /// Groups made this epoch, by key group: a key group growing is not
    /// written whole for its new keys' entries (see [`GroupBlocks::whole`]).
    made: Vec<usize>,
    /// CPU time (ns) spent writing groups as they were emitted, not yet
    /// reported (see [`Operator::early_checkpoint_ns`]).
    early_ns: u64,
}

/// Rows per chunk of a replayed output.
const REPLAY_ROWS: usize = 8192;

/// How long an aggregate may hold back its changes to emit them together
/// (each group's rows once per interval, however many chunks touched it).
pub const EMIT_INTERVAL: Duration = Duration::from_millis(100);

impl AggregateOp {
    pub fn new(
        group_exprs: Vec<Arc<dyn PhysicalExpr>>,
        key_schema: SchemaRef,
        aggs: Vec<CompiledAgg>,
        schema: SchemaRef,
        window: Option<WindowClose>,
        emit_on_window_close: bool,
        retractable: bool,
    ) -> Result<Self, RuntimeError> {
        let codecs = aggs
            .iter()
            .map(|a| {
                Ok((
                    ScalarCodec::new(a.sum_type.clone())?,
                    ScalarCodec::new(a.call.output_type.clone())?,
                ))
            })
            .collect::<Result<Vec<_>, RuntimeError>>()?;
        let sets = if retractable {
            Vec::new()
        } else {
            plan_sets(&aggs)
        };
        let mut shared = vec![false; aggs.len()];
        for &m in sets.iter().flat_map(|s| &s.members) {
            shared[m] = true;
        }
        let record_aggs = (0..aggs.len())
            .filter(|&i| {
                (aggs[i].call.distinct && !shared[i]) || sets.iter().any(|s| s.members[0] == i)
            })
            .collect();
        let fresh = new_group(&aggs, &shared, &sets, retractable)?;
        let base = group_base(&fresh.accs, &aggs);
        let folds = aggs
            .iter()
            .map(|a| FoldKind::of(&a.call, !retractable))
            .collect();
        Ok(AggregateOp {
            fresh,
            group_exprs,
            aggs,
            key_codec: RowCodec::new(key_schema)?,
            schema,
            window,
            emit_on_window_close,
            retractable,
            groups: GroupTable::default(),
            closing: BTreeMap::new(),
            listed_room: Vec::new(),
            emit_interval: EMIT_INTERVAL,
            last_emit: Instant::now(),
            removed_entries: Vec::new(),
            removed: Vec::new(),
            codecs,
            chunks: 0,
            access: None,
            bytes: 0,
            reported: 0,
            group_base: base,
            spilled: false,
            sets,
            record_aggs,
            shared,
            writer: GroupWriter::new(),
            folds,
            pause: GroupingPause::default(),
            merge: false,
            blocks: GroupBlocks::new(),
            legacy: Vec::new(),
            emitted_blocks: None,
            counts: EpochCounts::default(),
            made: vec![0; KEY_GROUPS as usize],
            early_ns: 0,
        })
    }

    /// Makes it the global half of a split aggregate: it adds up the folds
    /// of partial rows (the key's columns, each aggregate's fold, the net
    /// rows) that its local half sent, instead of aggregating input rows.
    pub fn merging(mut self) -> Result<Self, RuntimeError> {
        if self.folds.is_none() {
            return Err(RuntimeError::Internal(
                "a split aggregate whose aggregates do not fold".into(),
            ));
        }
        self.merge = true;
        Ok(self)
    }

    /// Whether a group not pending emission has emitted what its
    /// accumulators give, and they are all its state: see `GroupOut`.
    /// Every group has the accumulators a fresh one has.
    fn emits_current(&self) -> bool {
        !self.emit_on_window_close
            && !self
                .fresh
                .accs
                .iter()
                .any(|a| matches!(a, Accumulator::Distinct(_)))
    }

    /// Whether the wall clock closes the windows (a window over `PROCTIME()`).
    fn processing_time(&self) -> bool {
        self.window.is_some_and(|w| w.processing_time)
    }

    /// Takes every chunk row by row (to compare with folded chunks).
    #[cfg(test)]
    fn without_folding(mut self) -> Self {
        self.folds = None;
        self
    }

    /// Emits changes at most every `interval` (zero: after every chunk).
    pub fn with_emit_interval(mut self, interval: Duration) -> Self {
        self.emit_interval = interval;
        self
    }

    fn new_group(&self) -> Group {
        self.fresh.clone()
    }

    /// Estimated bytes in memory of a group whose key has `key_len` bytes
    /// (its map entry, key held twice, accumulators and last output).
    fn group_bytes(&self, key_len: usize) -> usize {
        self.group_base + 2 * key_len
    }

    /// Only the groups of a non-windowed keyed aggregate leave memory: a
    /// window's groups must be at hand when the watermark closes it.
    fn can_spill(&self) -> bool {
        self.window.is_none()
            && !self.group_exprs.is_empty()
            && self
                .access
                .as_ref()
                .is_some_and(|a| a.budget.limit().is_some())
    }

    /// Tells the budget what the groups take now.
    fn report(&mut self) {
        if let Some(a) = &self.access {
            a.budget.report(self.reported, self.bytes);
        }
        self.reported = self.bytes;
    }

    /// Reads a group that left memory back from the store; false if it has
    /// no committed state (a new key).
    fn load(&mut self, key: &[u8]) -> Result<bool, RuntimeError> {
        let Some(a) = &self.access else {
            return Ok(false);
        };
        let Some(value) = a.job.operator_get(a.index, key)? else {
            return Ok(false);
        };
        let entries = a.job.operator_key_entries(a.index, key)?;
        a.budget.count_loaded(1);
        let mut g = self.decode_group(&value)?;
        for (entry, n) in entries {
            restore_entry(&self.codecs, &self.sets, &mut g, &entry, &n)?;
        }
        self.bytes += self.group_bytes(key.len());
        self.groups.insert(GroupKey::from_slice(key), g);
        Ok(true)
    }

    /// Over the budget, moves the least recently touched groups that are
    /// unchanged since a committed checkpoint out of memory, down to this
    /// operator's share. Their state stays in the store.
    fn evict(&mut self) {
        if !self.can_spill() {
            return;
        }
        let a = self.access.as_ref().expect("can_spill checked access");
        let Some(keep) = a.budget.share_of(self.bytes) else {
            return;
        };
        let committed = *a.committed.borrow();
        let mut candidates: Vec<(u64, &GroupKey)> = self
            .groups
            .iter()
            .filter(|(_, g)| !g.dirty && g.written <= committed)
            .map(|(k, g)| (g.chunk, k))
            .collect();
        candidates.sort_unstable_by_key(|c| c.0);
        let mut bytes = self.bytes;
        let mut out = Vec::new();
        for (_, key) in candidates {
            if bytes <= keep {
                break;
            }
            bytes -= self.group_bytes(key.len());
            out.push(key.clone());
        }
        a.budget.count_evicted(out.len() as u64);
        for key in &out {
            self.groups.remove(key);
        }
        self.spilled |= !out.is_empty();
        self.bytes = bytes;
        self.report();
    }

    /// Puts a group read from the store in its place, listed to close
    /// with its window.
    fn insert_restored(&mut self, key: Vec<u8>, g: Group) -> Result<(), RuntimeError> {
        let close = close_time(self.window, |i| {
            let decoded = self.key_codec.decode([key.as_slice()])?;
            Ok(ScalarValue::try_from_array(decoded.column(i), 0)?)
        })?;
        let key = GroupKey::from_vec(key);
        if let Some(t) = close {
            self.closing.entry(t).or_default().push(key.clone());
        }
        self.bytes += self.group_bytes(key.len());
        if self.groups.insert(key.clone(), g).is_some() {
            self.bytes -= self.group_bytes(key.len());
        }
        Ok(())
    }

    fn decode_group(&self, value: &[u8]) -> Result<Group, RuntimeError> {
        let snap = GroupRead::read(value)?;
        let accs = snap
            .accs
            .into_iter()
            .zip(self.codecs.iter().zip(&self.aggs))
            .map(|(a, ((value, _), agg))| {
                Accumulator::from_read(a, value, &agg.call, &agg.sum_type, self.retractable)
            })
            .collect::<Result<Accs, _>>()?;
        let current = matches!(snap.emitted, EmittedRead::Current);
        let emitted = match snap.emitted {
            EmittedRead::None | EmittedRead::Current => None,
            EmittedRead::Values(vals) => Some(
                vals.iter()
                    .zip(&self.codecs)
                    .map(|(v, (_, out))| Ok(AggValue::from_scalar(out.decode(v)?)))
                    .collect::<Result<Values, RuntimeError>>()?,
            ),
        };
        let mut g = Group {
            accs,
            rows: snap.rows,
            emitted,
            dirty: false,
            pending: false,
            chunk: 0,
            written: 0,
            stored: true,
            distinct: new_distinct(&self.aggs, &self.sets),
        };
        if current {
            g.emitted = Some(evaluate_group(&g, &self.aggs)?);
        }
        Ok(g)
    }

    /// Number of open groups (for tests and metrics).
    pub fn open_groups(&self) -> usize {
        self.groups.len()
    }

    /// Output rows (change, encoded group key, aggregate values) as a chunk:
    /// the keys are decoded column by column from their row encoding.
    fn build(&self, rows: Vec<(Op, &[u8], &[AggValue])>) -> Result<Option<Chunk>, RuntimeError> {
        if rows.is_empty() {
            return Ok(None);
        }
        let ncols = self.schema.fields().len();
        let nkeys = self.group_exprs.len();
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(ncols);
        if nkeys > 0 {
            let keys = self.key_codec.decode(rows.iter().map(|(_, k, _)| *k))?;
            columns.extend(keys.columns().iter().cloned());
        }
        for c in 0..ncols {
            let arr = if c < nkeys {
                columns[c].clone()
            } else {
                column_of_values(
                    rows.iter().map(|(_, _, v)| &v[c - nkeys]),
                    self.schema.field(c).data_type(),
                )?
            };
            let want = self.schema.field(c).data_type();
            let arr = if arr.data_type() == want {
                arr
            } else {
                cast(&arr, want)?
            };
            if c < nkeys {
                columns[c] = arr;
            } else {
                columns.push(arr);
            }
        }
        let ops = rows.iter().map(|(op, _, _)| *op).collect();
        Ok(Some(Chunk::with_ops(
            RecordBatch::try_new(self.schema.clone(), columns)?,
            ops,
        )))
    }

    /// Takes a group out (its window closed, or it has no rows left); what
    /// the store holds of it is deleted with the next checkpoint.
    fn remove_group(&mut self, key: &[u8]) -> Result<Option<Group>, RuntimeError> {
        let Some(g) = self.groups.remove(key) else {
            return Ok(None);
        };
        self.bytes -= self.group_bytes(key.len());
        self.forget(key, &g)?;
        if g.stored {
            self.removed.push(GroupKey::from_slice(key));
        }
        Ok(Some(g))
    }

    /// A removed group's entries are deleted with the next checkpoint.
    fn forget(&mut self, key: &[u8], g: &Group) -> Result<(), RuntimeError> {
        for &epoch in g.records() {
            for &agg in &self.record_aggs {
                let entry = record_entry(agg, epoch);
                self.removed_entries.push((key.to_vec(), entry));
            }
        }
        if g.per_value() {
            for entry in per_value_entries(&self.codecs, &self.sets, g)? {
                self.removed_entries.push((key.to_vec(), entry));
            }
        }
        Ok(())
    }

    /// Emits the rows of the groups changed since their last emission: an
    /// insert for a new group, an update pair for a changed one, a delete
    /// for one left without rows.
    fn emit(&mut self, out: &mut Vec<Message>) -> Result<(), RuntimeError> {
        if self.groups.listed(List::Pending) == 0 {
            return Ok(());
        }
        self.last_emit = Instant::now();
        // (change, the group's bucket, values: the old ones moved out, or
        // None for the group's new `emitted`)
        let mut changes: Vec<(Op, usize, Option<Values>)> = Vec::new();
        // Groups left without rows: key, and the values last emitted.
        let mut dead: Vec<(GroupKey, Option<Values>)> = Vec::new();
        let touched = self.groups.take_list(List::Pending, Vec::new());
        for (i, listed) in touched.iter().enumerate() {
            if let Some(next) = touched.get(i + AHEAD) {
                self.groups
                    .prefetch(next.bucket as usize, std::mem::size_of::<Group>());
            }
            let bucket = listed.bucket as usize;
            let Some((key, kg, g)) = self.groups.at_mut(bucket).filter(|(_, _, g)| g.pending)
            else {
                continue;
            };
            g.pending = false;
            // A global aggregate (no GROUP BY) always has its one row, as in batch.
            if g.rows <= 0 && !self.group_exprs.is_empty() {
                dead.push((key.clone(), g.emitted.take()));
                continue;
            }
            let new = evaluate_group(g, &self.aggs)?;
            match g.emitted.take() {
                None => changes.push((Op::Insert, bucket, None)),
                Some(old) if old != new => {
                    changes.push((Op::UpdateBefore, bucket, Some(old)));
                    changes.push((Op::UpdateAfter, bucket, None));
                }
                Some(_) => {}
            }
            g.emitted = Some(new);
            match self.emitted_blocks.as_mut() {
                // Emitted now, in the cache, it is written as what its
                // accumulators give (some writes timed, as checkpoint work).
                Some(e) => {
                    let timer = e.timer();
                    e.count(kg, &mut g.written, &mut g.stored);
                    g.dirty = false;
                    let block = &mut e.blocks[kg as usize];
                    put_group(
                        block,
                        &mut self.writer,
                        &self.codecs,
                        key,
                        g,
                        Emitted::Current,
                    )?;
                    e.timed(timer);
                }
                None => self.counts.emissions += 1,
            }
        }
        // Removing a group moves no other.
        for (key, _) in &dead {
            self.remove_group(key)?;
        }
        let rows = changes
            .iter()
            .map(|(op, bucket, v)| {
                let (key, _, g) = self.groups.at(*bucket).expect("a group emitted");
                let values = match v {
                    Some(old) => old.as_slice(),
                    None => g.emitted.as_deref().unwrap_or_default(),
                };
                (*op, key.as_slice(), values)
            })
            .chain(
                dead.iter()
                    .filter_map(|(key, old)| Some((Op::Delete, key.as_slice(), old.as_deref()?))),
            )
            .collect();
        if let Some(c) = self.build(rows)? {
            out.push(Message::Data(c));
        }
        Ok(())
    }

    /// A global aggregate (no GROUP BY) has one row from the start — COUNT 0,
    /// SUM NULL over no input, as a batch query gives — emitted before the
    /// first watermark, barrier or end of input if no row came first.
    fn start_global(&mut self, out: &mut Vec<Message>) -> Result<(), RuntimeError> {
        if !self.group_exprs.is_empty() || self.groups.contains_key(&[][..]) {
            return Ok(());
        }
        let mut g = self.new_group();
        g.dirty = true;
        let values = evaluate_group(&g, &self.aggs)?;
        if let Some(c) = self.build(vec![(Op::Insert, &[], &values)])? {
            out.push(Message::Data(c));
        }
        g.emitted = Some(values);
        let (bucket, kg, _, _) = self.groups.find_or_insert_with(&[], || g);
        self.groups.list(List::Changed, bucket, kg);
        Ok(())
    }

    /// The group of `key` (row `row` of `keys`), read back from the store
    /// or created if it is not in memory, marked as touched by this chunk.
    fn touch(
        &mut self,
        key: &[u8],
        keys: &[ArrayRef],
        row: usize,
    ) -> Result<&mut Group, RuntimeError> {
        if self.spilled && !self.groups.contains_key(key) {
            self.load(key)?;
        }
        let group_bytes = self.group_bytes(key.len());
        let (bucket, kg, g, made) = self.groups.find_or_insert_with(key, || self.fresh.clone());
        if made {
            self.made[kg as usize] += 1;
            if let Some(t) = close_time(self.window, |i| {
                Ok(ScalarValue::try_from_array(&keys[i], row)?)
            })? {
                self.closing
                    .entry(t)
                    .or_default()
                    .push(GroupKey::from_slice(key));
            }
            self.bytes += group_bytes;
        }
        let changed = !g.dirty;
        let pending = !g.pending && !self.emit_on_window_close;
        g.dirty = true;
        g.pending |= pending;
        g.chunk = self.chunks;
        // Written when it is emitted, it need not be listed.
        if changed && self.emitted_blocks.is_none() {
            self.groups.list(List::Changed, bucket, kg);
        }
        if pending {
            self.groups.list(List::Pending, bucket, kg);
        }
        Ok(self.groups.at_mut(bucket).expect("the group touched").2)
    }

    /// Folds the chunk's rows per key before they reach the groups (see
    /// [`ChunkFold`]), when its keys and aggregates allow it; false if
    /// they do not (then nothing changed).
    fn fold_chunk(
        &mut self,
        chunk: &Chunk,
        keys: &[ArrayRef],
        args: &[Arg],
    ) -> Result<bool, RuntimeError> {
        let Some(kinds) = &self.folds else {
            return Ok(false);
        };
        let Some(groups) = self.pause.groups(keys, chunk.num_rows()) else {
            return Ok(false);
        };
        let ChunkFold {
            groups,
            net,
            partials,
        } = ChunkFold::new(groups, kinds, args, chunk.ops.as_deref());
        // Each group's key, encoded from its first row.
        let first = UInt32Array::from(groups.first.clone());
        let encoded = match keys.is_empty() {
            true => None,
            false => {
                let taken = keys
                    .iter()
                    .map(|k| take(k, &first, None))
                    .collect::<Result<Vec<_>, _>>()?;
                Some(self.key_codec.rows(&taken)?)
            }
        };
        for (g, &row) in groups.first.iter().enumerate() {
            let key = encoded.as_ref().map_or(&[][..], |r| r.row(g).data());
            let group = self.touch(key, keys, row as usize)?;
            group.rows += net[g];
            for (p, acc) in partials.iter().zip(&mut group.accs) {
                p.apply(g, acc)?;
            }
        }
        Ok(true)
    }

    /// Adds up partial rows' folds (the global half of a split aggregate).
    fn merge_rows(&mut self, chunk: &Chunk) -> Result<(), RuntimeError> {
        let batch = &chunk.batch;
        let columns = batch.columns();
        let (k, width) = (self.group_exprs.len(), columns.len());
        let kinds = self.folds.as_deref().unwrap_or_default();
        let layout = || RuntimeError::Internal("partial rows of another layout".into());
        if width <= k {
            return Err(layout());
        }
        let net = columns[width - 1]
            .as_primitive_opt::<Int64Type>()
            .ok_or_else(layout)?
            .values();
        let folds = Folds::read(kinds, &columns[k..width - 1])?;
        let keys = &columns[..k];
        let encoded = (!keys.is_empty())
            .then(|| self.key_codec.rows(keys))
            .transpose()?;
        for (row, &net) in net.iter().enumerate() {
            let key = encoded.as_ref().map_or(&[][..], |r| r.row(row).data());
            let g = self.touch(key, keys, row)?;
            g.rows += net;
            for (f, acc) in folds.iter().zip(&mut g.accs) {
                if let Some(folded) = f.at(row) {
                    acc.add_folded(folded)?;
                }
            }
        }
        Ok(())
    }

    /// Adds or retracts the chunk's rows one by one.
    fn update_rows(
        &mut self,
        chunk: &Chunk,
        keys: &[ArrayRef],
        args: &[Arg],
        sets: &[DistinctSet],
        shared: &[bool],
    ) -> Result<(), RuntimeError> {
        let rows = (!keys.is_empty())
            .then(|| self.key_codec.rows(keys))
            .transpose()?;
        for row in 0..chunk.num_rows() {
            let key: &[u8] = rows.as_ref().map_or(&[], |r| r.row(row).data());
            let sign = chunk.op(row).sign();
            let g = self.touch(key, keys, row)?;
            g.rows += sign;
            for ((acc, arg), &shared) in g.accs.iter_mut().zip(args).zip(shared) {
                if !shared {
                    acc.update_at(arg, row, sign)?;
                }
            }
            for (set, values) in sets.iter().zip(shared_mut(&mut g.distinct)) {
                let mut mask = 0u64;
                for (bit, &m) in set.members.iter().enumerate() {
                    if args[m].is_valid(row) {
                        mask |= 1 << bit;
                    }
                }
                // Append-only input (sets are only planned then): no retractions.
                if mask == 0 || sign < 0 {
                    continue;
                }
                let mut new = values.add(&args[set.members[0]], row, mask)?;
                while new != 0 {
                    let m = set.members[new.trailing_zeros() as usize];
                    g.accs[m].update_at(&args[m], row, 1)?;
                    new &= new - 1;
                }
            }
        }
        Ok(())
    }

    /// Emits the changes once the emission interval has passed since the
    /// last time, and reports the groups' memory.
    fn after_chunk(&mut self, out: &mut Vec<Message>) -> Result<(), RuntimeError> {
        if self.last_emit.elapsed() >= self.emit_interval {
            self.emit(out)?;
        }
        self.report();
        Ok(())
    }

    /// Closes every group whose window the watermark has passed.
    fn close_until(&mut self, wm: EventTime, out: &mut Vec<Message>) -> Result<(), RuntimeError> {
        let still_open = self.closing.split_off(&wm.saturating_add(1));
        let closed = std::mem::replace(&mut self.closing, still_open);
        let mut final_rows = Vec::new();
        let mut finished = Vec::new();
        // Windows closing together are emitted in key order, however they were created.
        let mut keys: Vec<GroupKey> = closed.into_values().flatten().collect();
        keys.sort_unstable();
        for key in keys {
            if let Some(g) = self.remove_group(&key)? {
                finished.push((key, g));
            }
        }
        if self.emit_on_window_close {
            let values: Vec<Values> = finished
                .iter()
                .map(|(_, g)| evaluate_group(g, &self.aggs))
                .collect::<Result<_, _>>()?;
            for ((key, g), v) in finished.iter().zip(&values) {
                if g.rows > 0 {
                    final_rows.push((Op::Insert, key.as_slice(), v.as_slice()));
                }
            }
            if let Some(c) = self.build(final_rows)? {
                out.push(Message::Data(c));
            }
        }
        Ok(())
    }
}

/// Writes changed groups into a checkpoint's epoch.
struct GroupOut<'a, 'w> {
    codecs: &'a [(ScalarCodec, ScalarCodec)],
    sets: &'a [DistinctSet],
    record_aggs: &'a [usize],
    writer: &'a mut GroupWriter,
    state: &'a mut OperatorWriter<'w>,
    epoch: u64,
    /// Blocks by key group, when the groups are written in blocks.
    blocks: Option<&'a mut Vec<Block>>,
    /// Groups written for the first time, by key group.
    added: Vec<usize>,
    /// A group not pending emission has emitted what its accumulators
    /// give, and they are all its state (not so for windows emitted when
    /// they close, nor with DISTINCT accumulators, whose values are
    /// restored after the group).
    emits_current: bool,
}

impl GroupOut<'_, '_> {
    /// Writes group `g` of `key` (in key group `kg`): its accumulators, and
    /// each DISTINCT aggregate's values whose count changed (and each
    /// shared set's whose mask changed) as one record; once a group has
    /// many records, all its values go in one, and the older records are
    /// deleted.
    fn write(&mut self, key: &[u8], kg: u16, g: &mut Group) -> Result<(), RuntimeError> {
        let epoch = self.epoch;
        g.dirty = false;
        g.written = epoch;
        if !g.stored {
            self.added[kg as usize] += 1;
        }
        g.stored = true;
        let rewrite = g.records().len() >= MAX_RECORDS;
        if rewrite {
            for &old in g.records() {
                for &agg in self.record_aggs {
                    self.state.delete_entry(key, &record_entry(agg, old));
                }
            }
            if g.per_value() {
                for entry in per_value_entries(self.codecs, self.sets, g)? {
                    self.state.delete_entry(key, &entry);
                }
            }
        }
        let mut written = false;
        for (i, acc) in g.accs.iter_mut().enumerate() {
            let changed = acc.take_changed();
            let record = if rewrite { acc.value_counts() } else { changed };
            if record.is_empty() {
                continue;
            }
            let mut bytes = Vec::with_capacity(record.len() * 16);
            for (v, n) in &record {
                write_record_value(&self.codecs[i].0, v, *n as u64, &mut bytes)?;
            }
            self.state.put_entry(key, &record_entry(i, epoch), bytes);
            written = true;
        }
        for (set, values) in self.sets.iter().zip(shared_mut(&mut g.distinct)) {
            let leader = set.members[0];
            let changed = values.take_changed();
            let record = if rewrite { values.values() } else { changed };
            if record.is_empty() {
                continue;
            }
            let mut bytes = Vec::with_capacity(record.len() * 16);
            for v in &record {
                write_record_value(&self.codecs[leader].0, v, values.mask(v), &mut bytes)?;
            }
            self.state
                .put_entry(key, &record_entry(leader, epoch), bytes);
            written = true;
        }
        if let Some(d) = g.distinct.as_mut().filter(|_| rewrite) {
            d.records.clear();
            d.per_value = false;
        }
        if written {
            g.distinct_mut().records.push(epoch);
        }
        // Emitted since its accumulators last changed, it need not carry
        // its values: they are read back from the accumulators. Such a
        // group has emitted (it was pending since it was made), and its
        // last output is not read here: see `Group`.
        let emitted = if self.emits_current && !g.pending {
            debug_assert!(g.emitted.is_some(), "a group emitted");
            Emitted::Current
        } else {
            Emitted::values(g.emitted.as_deref())
        };
        match &mut self.blocks {
            Some(blocks) => put_group(
                &mut blocks[kg as usize],
                self.writer,
                self.codecs,
                key,
                g,
                emitted,
            )?,
            None => {
                let mut encoded = Vec::with_capacity(16 + 24 * g.accs.len());
                encode_group(self.writer, self.codecs, g, emitted, &mut encoded)?;
                self.state.put(key, encoded);
            }
        }
        Ok(())
    }
}

/// Appends group `g` of `key`, with its last output as `emitted`, to `block`.
fn put_group(
    block: &mut Block,
    writer: &mut GroupWriter,
    codecs: &[(ScalarCodec, ScalarCodec)],
    key: &[u8],
    g: &Group,
    emitted: Emitted<'_>,
) -> Result<(), RuntimeError> {
    block.put(key, |out| encode_group(writer, codecs, g, emitted, out))
}

/// Appends group `g`'s encoding to `out`: a plain group's in one pass.
#[inline]
fn encode_group(
    writer: &mut GroupWriter,
    codecs: &[(ScalarCodec, ScalarCodec)],
    g: &Group,
    emitted: Emitted<'_>,
    out: &mut Vec<u8>,
) -> Result<(), RuntimeError> {
    if plain_group::encode_into(codecs, g.rows, emitted, &g.accs, out) {
        Ok(())
    } else {
        writer.group_into(codecs, g.rows, emitted, &g.accs, out)
    }
}

impl Listable for Group {
    fn listed(&self, list: List) -> bool {
        match list {
            List::Changed => self.dirty,
            List::Pending => self.pending,
        }
    }
}

/// A new group's state: a shared set's members accumulate plainly.
fn new_group(
    aggs: &[CompiledAgg],
    shared: &[bool],
    sets: &[DistinctSet],
    retractable: bool,
) -> Result<Group, RuntimeError> {
    let accs = aggs
        .iter()
        .zip(shared)
        .map(|(a, &shared)| {
            let plain;
            let call = if shared {
                plain = AggCall {
                    distinct: false,
                    ..a.call.clone()
                };
                &plain
            } else {
                &a.call
            };
            Accumulator::new(call, &a.sum_type, retractable)
        })
        .collect::<Result<Accs, _>>()?;
    Ok(Group {
        accs,
        rows: 0,
        emitted: None,
        dirty: false,
        pending: false,
        chunk: 0,
        written: 0,
        stored: false,
        distinct: new_distinct(aggs, sets),
    })
}

/// A new group's DISTINCT state: none without shared sets.
fn new_distinct(aggs: &[CompiledAgg], sets: &[DistinctSet]) -> Option<Box<GroupDistinct>> {
    (!sets.is_empty()).then(|| {
        let shared = sets
            .iter()
            .map(|s| SharedValues::new(aggs[s.members[0]].sum_type == DataType::Int64))
            .collect();
        Box::new(GroupDistinct {
            shared,
            ..GroupDistinct::default()
        })
    })
}

/// Estimated bytes of a group besides its key, with accumulators as
/// `accs` (a fresh group's) for `aggs`: its map entry, accumulators, last
/// output, and an allocation header per heap block.
fn group_base(accs: &[Accumulator], aggs: &[CompiledAgg]) -> usize {
    use std::mem::size_of;
    // Accumulators and values beyond those held in place are all on the
    // heap, and so are the values accumulators box and outputs other
    // than integers and doubles.
    let heap = if accs.len() > ACCS_IN_PLACE {
        accs.len()
    } else {
        0
    };
    let boxed_outputs = aggs
        .iter()
        .filter(|a| !matches!(a.call.output_type, DataType::Int64 | DataType::Float64))
        .count();
    size_of::<Vec<u8>>()
        + size_of::<Group>()
        + 16
        + heap * (size_of::<Accumulator>() + size_of::<AggValue>())
        + accs.iter().map(Accumulator::boxed_bytes).sum::<usize>()
        + boxed_outputs * (size_of::<ScalarValue>() + 16)
        + 4 * 16
}

/// Per aggregate over a batch: its argument, cast to what it accumulates
/// (None for COUNT(*)), and its FILTER.
pub(super) type AggInputs = (Vec<Option<ArrayRef>>, Vec<Option<BooleanArray>>);

/// Each aggregate's argument over evaluated `inputs`, with its filter.
pub(super) fn args_of((columns, filters): &AggInputs) -> Vec<Arg<'_>> {
    columns
        .iter()
        .zip(filters)
        .map(|(c, f)| Arg::new(c.as_ref()).with_filter(f.as_ref()))
        .collect()
}

pub(super) fn evaluate_args(
    aggs: &[CompiledAgg],
    batch: &RecordBatch,
) -> Result<AggInputs, RuntimeError> {
    let mut columns = Vec::with_capacity(aggs.len());
    let mut filters = Vec::with_capacity(aggs.len());
    for a in aggs {
        filters.push(match &a.filter {
            Some(f) => Some(
                f.evaluate(batch)?
                    .into_array(batch.num_rows())?
                    .as_boolean()
                    .clone(),
            ),
            None => None,
        });
        columns.push(match &a.arg {
            Some(e) => {
                let arr = e.evaluate(batch)?.into_array(batch.num_rows())?;
                Some(if arr.data_type() == &a.sum_type {
                    arr
                } else {
                    cast(&arr, &a.sum_type)?
                })
            }
            None => None,
        });
    }
    Ok((columns, filters))
}

/// The group's aggregate values now.
fn evaluate_group(g: &Group, aggs: &[CompiledAgg]) -> Result<Values, RuntimeError> {
    g.accs
        .iter()
        .zip(aggs)
        .map(|(a, c)| a.output(&c.call))
        .collect()
}

/// One output column from the values of one aggregate: 64-bit integers,
/// doubles and strings directly, other types through `ScalarValue`.
pub(super) fn column_of<'a>(
    values: impl ExactSizeIterator<Item = &'a ScalarValue> + Clone,
    data_type: &DataType,
) -> Result<ArrayRef, RuntimeError> {
    let all = |f: fn(&ScalarValue) -> bool| values.clone().all(f);
    Ok(match data_type {
        DataType::Int64 if all(|v| matches!(v, ScalarValue::Int64(_))) => {
            Arc::new(Int64Array::from_iter(values.map(|v| match v {
                ScalarValue::Int64(i) => *i,
                _ => None,
            })))
        }
        DataType::Float64 if all(|v| matches!(v, ScalarValue::Float64(_))) => {
            Arc::new(Float64Array::from_iter(values.map(|v| match v {
                ScalarValue::Float64(f) => *f,
                _ => None,
            })))
        }
        DataType::Utf8 if all(|v| matches!(v, ScalarValue::Utf8(_))) => {
            Arc::new(StringArray::from_iter(values.map(|v| match v {
                ScalarValue::Utf8(s) => s.as_deref(),
                _ => None,
            })))
        }
        _ => ScalarValue::iter_to_array(values.cloned())?,
    })
}

/// Restores one DISTINCT value's count (a per-entry state) into its group.
fn restore_entry(
    codecs: &[(ScalarCodec, ScalarCodec)],
    sets: &[DistinctSet],
    g: &mut Group,
    entry: &[u8],
    value: &[u8],
) -> Result<(), RuntimeError> {
    let corrupt = || RuntimeError::Internal("corrupt aggregate state entry".into());
    if let Some(rest) = entry.strip_prefix(&RECORD[..]) {
        let (agg, epoch) = rest.split_at_checked(2).ok_or_else(corrupt)?;
        let agg = u16::from_be_bytes([agg[0], agg[1]]) as usize;
        let epoch = u64::from_be_bytes(epoch.try_into().map_err(|_| corrupt())?);
        let codec = &codecs.get(agg).ok_or_else(corrupt)?.0;
        let set = sets.iter().position(|s| s.members[0] == agg);
        let mut bytes = value;
        while !bytes.is_empty() {
            let (v, n, rest) = read_record_value(codec, bytes).ok_or_else(corrupt)?;
            match set {
                // A shared set's record: masks, merged by OR.
                Some(set) => g
                    .distinct_mut()
                    .shared
                    .get_mut(set)
                    .ok_or_else(corrupt)?
                    .restore(v?, n)?,
                // A DISTINCT aggregate's record: counts, the last one wins.
                None => g
                    .accs
                    .get_mut(agg)
                    .ok_or_else(corrupt)?
                    .set_value_count(v?, n as i64)?,
            }
            bytes = rest;
        }
        let records = &mut g.distinct_mut().records;
        if !records.contains(&epoch) {
            records.push(epoch);
        }
        return Ok(());
    }
    let (index, encoded) = entry.split_at_checked(2).ok_or_else(corrupt)?;
    let agg = u16::from_be_bytes([index[0], index[1]]) as usize;
    let codec = &codecs.get(agg).ok_or_else(corrupt)?.0;
    let v = codec.decode(encoded)?;
    let n = i64::from_le_bytes(value.try_into().map_err(|_| corrupt())?);
    if let Some(set) = sets.iter().position(|s| s.members[0] == agg) {
        // A shared set's entry, under its leader, holds the value's mask of
        // members (the format before records).
        g.distinct_mut().per_value = true;
        return g
            .distinct_mut()
            .shared
            .get_mut(set)
            .ok_or_else(corrupt)?
            .restore(v, n as u64);
    }
    g.distinct_mut().per_value = true;
    g.accs
        .get_mut(agg)
        .ok_or_else(corrupt)?
        .restore_value(v, n)?;
    Ok(())
}

/// The entry of aggregate `agg`'s value `v`: the aggregate's index, then the value.
fn value_entry(
    codecs: &[(ScalarCodec, ScalarCodec)],
    agg: usize,
    v: &ScalarValue,
) -> Result<Vec<u8>, RuntimeError> {
    let index = u16::try_from(agg)
        .ok()
        .filter(|i| i.to_be_bytes() != RECORD)
        .expect("fewer than 65535 aggregates");
    Ok([&index.to_be_bytes()[..], &codecs[agg].0.encode(v)?].concat())
}

/// The entries a group may have in the format before records, one per
/// value: its DISTINCT aggregates' values (gone ones included) and its
/// shared sets' values, under their leader.
fn per_value_entries(
    codecs: &[(ScalarCodec, ScalarCodec)],
    sets: &[DistinctSet],
    g: &Group,
) -> Result<Vec<Vec<u8>>, RuntimeError> {
    let mut out = Vec::new();
    for (i, acc) in g.accs.iter().enumerate() {
        for v in acc.entry_values() {
            out.push(value_entry(codecs, i, &v)?);
        }
    }
    for (set, values) in sets.iter().zip(g.shared()) {
        for v in values.values() {
            out.push(value_entry(codecs, set.members[0], &v)?);
        }
    }
    Ok(out)
}

/// Appends one value of a record: its encoding's length (u32), the
/// encoding, and its count or mask of members (u64), little-endian.
fn write_record_value(
    codec: &ScalarCodec,
    v: &ScalarValue,
    n: u64,
    out: &mut Vec<u8>,
) -> Result<(), RuntimeError> {
    let at = out.len();
    out.extend_from_slice(&[0; 4]);
    codec.encode_into(v, out)?;
    let len = u32::try_from(out.len() - at - 4).expect("a value under 4 GiB");
    out[at..at + 4].copy_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&n.to_le_bytes());
    Ok(())
}

/// The first value of a record's bytes, its count or mask, and the bytes
/// after them; None if the bytes are cut short.
type RecordValue<'a> = (Result<ScalarValue, RuntimeError>, u64, &'a [u8]);

fn read_record_value<'a>(codec: &ScalarCodec, bytes: &'a [u8]) -> Option<RecordValue<'a>> {
    let (len, rest) = bytes.split_at_checked(4)?;
    let len = u32::from_le_bytes(len.try_into().ok()?) as usize;
    let (encoded, rest) = rest.split_at_checked(len)?;
    let (mask, rest) = rest.split_at_checked(8)?;
    let v = codec.decode(encoded).map_err(RuntimeError::from);
    Some((v, u64::from_le_bytes(mask.try_into().ok()?), rest))
}

/// When a group with this key closes: the watermark reaching its window
/// bound plus the offset (None for a group that never closes).
/// `key_value(i)` gives the group's `i`-th key value.
fn close_time(
    window: Option<WindowClose>,
    key_value: impl FnOnce(usize) -> Result<ScalarValue, RuntimeError>,
) -> Result<Option<EventTime>, RuntimeError> {
    let Some(w) = window else {
        return Ok(None);
    };
    let ns = match key_value(w.key_index)? {
        ScalarValue::TimestampNanosecond(Some(v), _) => v,
        ScalarValue::TimestampMicrosecond(Some(v), _) => v.saturating_mul(1_000),
        ScalarValue::TimestampMillisecond(Some(v), _) => v.saturating_mul(1_000_000),
        ScalarValue::TimestampSecond(Some(v), _) => v.saturating_mul(1_000_000_000),
        _ => return Ok(Some(EventTime::MIN)),
    };
    Ok(Some(ns.saturating_add(w.offset)))
}

impl Operator for AggregateOp {
    fn name(&self) -> &'static str {
        if self.window.is_some() {
            "WindowAggregate"
        } else {
            "GroupAggregate"
        }
    }

    fn process(&mut self, chunk: Chunk, out: &mut Vec<Message>) -> Result<(), RuntimeError> {
        self.chunks += 1;
        if self.merge {
            self.merge_rows(&chunk)?;
            return self.after_chunk(out);
        }
        let batch = &chunk.batch;
        let keys = evaluate(&self.group_exprs, batch)?;
        let inputs = evaluate_args(&self.aggs, batch)?;
        let args = args_of(&inputs);
        if !self.fold_chunk(&chunk, &keys, &args)? {
            let sets = std::mem::take(&mut self.sets);
            let shared = std::mem::take(&mut self.shared);
            let updated = self.update_rows(&chunk, &keys, &args, &sets, &shared);
            (self.sets, self.shared) = (sets, shared);
            updated?;
        }
        self.after_chunk(out)
    }

    fn on_barrier(
        &mut self,
        barrier: crate::runtime::message::Barrier,
        out: &mut Vec<Message>,
    ) -> Result<(), RuntimeError> {
        self.emit(out)?;
        self.start_global(out)?;
        out.push(Message::Barrier(barrier));
        Ok(())
    }

    fn on_watermark(&mut self, wm: EventTime, out: &mut Vec<Message>) -> Result<(), RuntimeError> {
        if self.processing_time() {
            // The wall clock closes its windows (`on_tick`), not the watermark.
            out.push(Message::Watermark(wm));
            return Ok(());
        }
        // Groups the watermark closes leave with their last changes emitted.
        if self
            .closing
            .first_key_value()
            .is_some_and(|(t, _)| *t <= wm)
        {
            self.emit(out)?;
        }
        self.start_global(out)?;
        self.close_until(wm, out)?;
        out.push(Message::Watermark(wm));
        Ok(())
    }

    fn checkpoint(&mut self, state: &mut OperatorWriter<'_>) -> Result<(), RuntimeError> {
        // Deletions first: a group removed and created again in this epoch
        // writes its new entries after them.
        for (key, entry) in std::mem::take(&mut self.removed_entries) {
            state.delete_entry(&key, &entry);
        }
        let removed = std::mem::take(&mut self.removed);
        let room = std::mem::take(&mut self.listed_room);
        let dirty = self.groups.take_list(List::Changed, room);
        let kgs = KEY_GROUPS as usize;
        // Changes per key group, and the changed buckets in memory order:
        // the groups are then met in the order the table holds them, and
        // each bucket once.
        let mut entries = vec![0; kgs];
        let mut buckets = self.groups.bucket_set();
        buckets.mark_listed(&dirty, |l| entries[l.kg as usize] += 1);
        let made = std::mem::replace(&mut self.made, vec![0; kgs]);
        // The groups written as they were emitted, and the epoch's counts.
        let emitted = self.emitted_blocks.take();
        self.early_ns += emitted.as_ref().map_or(0, |e| e.work_ns);
        let counts = match &emitted {
            Some(e) => e.counts,
            None => EpochCounts {
                emissions: self.counts.emissions,
                groups: buckets.len(),
            },
        };
        self.counts = EpochCounts::default();
        let mut added = vec![0; kgs];
        if let Some(e) = &emitted {
            for (n, m) in entries.iter_mut().zip(e.entries()) {
                *n += m;
            }
        }
        let mut blocks = None;
        let mut whole = vec![false; kgs];
        if self.can_spill() {
            for key in &removed {
                // Created again: written below, over it.
                if !self.groups.contains_key(key) {
                    state.delete(key);
                }
            }
        } else {
            for key in &removed {
                entries[key_group(key) as usize] += 1;
            }
            whole = self.blocks.whole(&entries, &made);
            blocks = Some(match emitted {
                // A key group written whole is written anew, from the table.
                Some(e) => {
                    added = e.added;
                    let whole_block = |kg: usize| self.blocks.block(kg, entries[kg], true);
                    (e.blocks.into_iter().enumerate())
                        .map(|(kg, b)| if whole[kg] { whole_block(kg) } else { b })
                        .collect()
                }
                None => self.blocks.blocks(&entries, &whole),
            });
        }
        // The groups to write: the changed ones, and every group of a key
        // group written whole, in memory order.
        if whole.iter().any(|&w| w) {
            self.groups.mark_key_groups(&mut buckets, &whole);
        }
        let buckets = buckets.in_order();
        let epoch = state.epoch();
        let emits_current = self.emits_current();
        let mut out = GroupOut {
            codecs: &self.codecs,
            sets: &self.sets,
            record_aggs: &self.record_aggs,
            writer: &mut self.writer,
            state: &mut *state,
            epoch,
            blocks: blocks.as_mut(),
            added,
            emits_current,
        };
        // Only then is a group read ahead (which waits for it to arrive).
        let spilled_accs = self.aggs.len() > ACCS_IN_PLACE;
        for (i, &bucket) in buckets.iter().enumerate() {
            // Fetched a few groups ahead, up to their last output (see
            // `Group`); with more aggregates than a group holds in place,
            // its accumulators are an allocation of their own, fetched after it.
            if let Some(&b) = buckets.get(i + 2 * AHEAD) {
                self.groups
                    .prefetch(b as usize, std::mem::offset_of!(Group, emitted));
            }
            if let Some((_, _, g)) = buckets
                .get(i + AHEAD)
                .filter(|_| spilled_accs)
                .and_then(|&b| self.groups.at(b as usize))
                .filter(|(_, _, g)| g.accs.spilled())
            {
                prefetch(&g.accs);
            }
            // Listed, but removed since (and deleted above if it was
            // stored), or another group in its bucket now.
            if let Some((key, kg, g)) = self.groups.at_mut(bucket as usize) {
                if g.dirty || whole[kg as usize] {
                    out.write(key, kg, g)?;
                }
            }
        }
        self.listed_room = dirty;
        let added = std::mem::take(&mut out.added);
        if let Some(mut blocks) = blocks {
            let mut deleted = vec![0; kgs];
            for key in removed {
                let kg = key_group(&key) as usize;
                // Created again, it is written already; a key group
                // written whole holds only the groups there are.
                if !whole[kg] && !self.groups.contains_key(&key) {
                    blocks[kg].delete(&key);
                    deleted[kg] += 1;
                }
            }
            for (kg, (&added, &deleted)) in added.iter().zip(&deleted).enumerate() {
                self.blocks.keys_changed(kg as u16, added, deleted);
            }
            let bytes = blocks.iter().map(Block::len).sum();
            let written = blocks.iter().map(Block::entries).sum();
            self.blocks.sized(bytes, written);
            for (kg, block) in blocks.into_iter().enumerate() {
                let entries = block.entries();
                if !block.is_empty() {
                    state.put_block(kg as u16, block);
                }
                self.blocks.written(state, kg as u16, entries, whole[kg]);
            }
            for key in std::mem::take(&mut self.legacy) {
                state.delete(&key);
            }
            self.blocks.checkpointed();
            if emits_current && counts.write_on_emission() {
                // Each block sized for as many entries as this epoch's: grown
                // from nothing, each would be copied over and over.
                let blocks = (0..kgs).map(|kg| self.blocks.block(kg, entries[kg], false));
                self.emitted_blocks = Some(EmittedBlocks::new(epoch + 1, blocks.collect()));
            }
        }
        self.report();
        self.evict();
        Ok(())
    }

    fn early_checkpoint_ns(&mut self) -> u64 {
        std::mem::take(&mut self.early_ns)
    }

    fn attach_state(&mut self, access: StateAccess) {
        self.access = Some(access);
    }

    /// Without windows a group stays until its rows are gone, and it keeps
    /// the values it last emitted: the output is the groups' values.
    fn replays(&self) -> bool {
        self.window.is_none()
    }

    fn replay(
        &mut self,
        stored: &mut StoredState<'_>,
        out: &mut Vec<Message>,
    ) -> Result<(), RuntimeError> {
        // Groups left in the store (beyond the memory budget) are read from it.
        let mut left = Vec::new();
        if self.spilled {
            for (key, value) in stored()? {
                if !self.groups.contains_key(key.as_slice()) {
                    if let Some(values) = self.decode_group(&value)?.emitted {
                        left.push((key, values));
                    }
                }
            }
        }
        let mut rows = self
            .groups
            .iter()
            .filter_map(|(k, g)| Some((Op::Insert, k.as_slice(), g.emitted.as_deref()?)))
            .chain(
                left.iter()
                    .map(|(k, v)| (Op::Insert, k.as_slice(), v.as_slice())),
            )
            .peekable();
        while rows.peek().is_some() {
            let part = rows.by_ref().take(REPLAY_ROWS).collect();
            if let Some(c) = self.build(part)? {
                out.push(Message::Data(c));
            }
        }
        Ok(())
    }

    fn restore_entries(&mut self, entries: Entries) -> Result<(), RuntimeError> {
        for (key, entry, value) in entries {
            // Entries of a group left in the store are read with it.
            if let Some(g) = self.groups.get_mut(key.as_slice()) {
                restore_entry(&self.codecs, &self.sets, g, &entry, &value)?;
            }
        }
        Ok(())
    }

    fn restore_blocks(&mut self, blocks: Vec<StoredBlock>) -> Result<(), RuntimeError> {
        if blocks.is_empty() {
            return Ok(());
        }
        if self.can_spill() {
            // Under a memory budget groups stay in the store one key each,
            // to be read back by key: the blocks become that, at once;
            // `restore` reads them then.
            let mut last: HashMap<&[u8], Option<&[u8]>> = HashMap::new();
            for (kg, epoch, bytes) in &blocks {
                let entries = Block::read(bytes)?;
                self.blocks.restored(*kg, *epoch, entries.len());
                last.extend(entries);
            }
            let pairs: Vec<(Vec<u8>, Vec<u8>)> = last
                .into_iter()
                .filter_map(|(k, v)| Some((k.to_vec(), v?.to_vec())))
                .collect();
            let a = self.access.as_ref().expect("can_spill checked access");
            a.job.unblock(a.index, &pairs, &self.blocks.stored())?;
            self.blocks.clear();
            return Ok(());
        }
        // Key group by key group (the blocks come in key-group and epoch
        // order), the last entry of each key winning: each key group's
        // keys in a small map, not the whole state's in one. Then the
        // table grows once, to hold them all (doubling as they came, it
        // would move every group again and again).
        let mut last: HashMap<&[u8], Option<&[u8]>> = HashMap::new();
        let mut live = Vec::new();
        for kg_blocks in blocks.chunk_by(|a, b| a.0 == b.0) {
            let kg = kg_blocks[0].0;
            last.clear();
            for (_, epoch, bytes) in kg_blocks {
                let entries = Block::read(bytes)?;
                self.blocks.restored(kg, *epoch, entries.len());
                last.extend(entries);
            }
            let before = live.len();
            live.extend(last.drain().filter_map(|(k, v)| Some((k, v?))));
            self.blocks.restored_keys(kg, live.len() - before);
        }
        self.groups.reserve(live.len());
        for (key, value) in live {
            let g = self.decode_group(value)?;
            self.insert_restored(key.to_vec(), g)?;
        }
        self.report();
        Ok(())
    }

    fn restore(&mut self, entries: Vec<(Vec<u8>, Vec<u8>)>) -> Result<(), RuntimeError> {
        let can_spill = self.can_spill();
        if !can_spill && !entries.is_empty() {
            // Stored one key each (under a memory budget): written in
            // blocks from the next checkpoint on, and those keys deleted.
            self.legacy = entries
                .iter()
                .map(|(k, _)| GroupKey::from_slice(k))
                .collect();
            self.blocks.rewrite_all();
        }
        for (key, value) in entries {
            let bytes = self.group_bytes(key.len());
            if can_spill {
                self.report();
                let budget = &self
                    .access
                    .as_ref()
                    .expect("can_spill checked access")
                    .budget;
                if !budget.fits(bytes) {
                    // Beyond the budget the group stays in the store until a row needs it.
                    self.spilled = true;
                    continue;
                }
            }
            let g = self.decode_group(&value)?;
            self.insert_restored(key, g)?;
        }
        self.report();
        Ok(())
    }

    fn on_tick(
        &mut self,
        now: Instant,
        out: &mut Vec<Message>,
    ) -> Result<Option<Instant>, RuntimeError> {
        // Windows over PROCTIME() close once the wall clock passes them,
        // their last changes emitted first; the next closing is due then.
        let mut closes = None;
        if self.processing_time() {
            let wall = wall_clock_ns();
            if self
                .closing
                .first_key_value()
                .is_some_and(|(t, _)| *t <= wall)
            {
                self.emit(out)?;
                self.close_until(wall, out)?;
            }
            closes = self
                .closing
                .first_key_value()
                .map(|(t, _)| now + Duration::from_nanos(t.saturating_sub(wall).max(0) as u64));
        }
        if self.groups.listed(List::Pending) == 0 {
            return Ok(closes);
        }
        let due = self.last_emit + self.emit_interval;
        if now < due {
            return Ok(Some(closes.map_or(due, |c| c.min(due))));
        }
        self.emit(out)?;
        Ok(closes)
    }

    fn on_end(&mut self, out: &mut Vec<Message>) -> Result<(), RuntimeError> {
        self.emit(out)?;
        self.start_global(out)?;
        if self.window.is_some() {
            self.close_until(EventTime::MAX, out)?;
        }
        out.push(Message::End);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::AggKind;
    use datafusion::arrow::array::{AsArray, Int64Array, TimestampNanosecondArray};
    use datafusion::arrow::datatypes::{Field, Int64Type, Schema, TimeUnit};
    use datafusion::physical_expr::expressions::Column;

    const TS: DataType = DataType::Timestamp(TimeUnit::Nanosecond, None);

    /// GROUP BY k, ws with SUM(v); windows of 10 ns: a group with ws closes at wm >= ws + 10.
    fn op(emit_on_close: bool) -> AggregateOp {
        op_of(emit_on_close, AggKind::Sum, false, false)
    }

    /// `kind([DISTINCT] v)` per (k, ws), windows closing at ws + 10.
    fn op_of(emit_on_close: bool, kind: AggKind, distinct: bool, retractable: bool) -> AggregateOp {
        let window = WindowClose {
            key_index: 1,
            offset: 10,
            processing_time: false,
        };
        with_keys(
            &[("k", DataType::Int64), ("ws", TS)],
            Some(window),
            emit_on_close,
            kind,
            distinct,
            retractable,
        )
    }

    /// `kind([DISTINCT] v)` grouped by `keys` (input columns 0.., v is column 2).
    fn with_keys(
        keys: &[(&str, DataType)],
        window: Option<WindowClose>,
        emit_on_close: bool,
        kind: AggKind,
        distinct: bool,
        retractable: bool,
    ) -> AggregateOp {
        let key_fields: Vec<Field> = keys
            .iter()
            .map(|(name, t)| Field::new(*name, t.clone(), true))
            .collect();
        let mut out_fields = key_fields.clone();
        out_fields.push(Field::new("s", DataType::Int64, true));
        let agg = of_v(kind, distinct);
        AggregateOp::new(
            keys.iter()
                .enumerate()
                .map(|(i, (name, _))| Arc::new(Column::new(name, i)) as Arc<dyn PhysicalExpr>)
                .collect(),
            Arc::new(Schema::new(key_fields)),
            vec![agg],
            Arc::new(Schema::new(out_fields)),
            window,
            emit_on_close,
            retractable,
        )
        .unwrap()
        .with_emit_interval(Duration::ZERO)
    }

    fn input(rows: &[(i64, i64, i64)]) -> Chunk {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, false),
            Field::new("ws", TS, false),
            Field::new("v", DataType::Int64, false),
        ]));
        Chunk::inserts(
            RecordBatch::try_new(
                schema,
                vec![
                    Arc::new(Int64Array::from(
                        rows.iter().map(|r| r.0).collect::<Vec<_>>(),
                    )),
                    Arc::new(TimestampNanosecondArray::from(
                        rows.iter().map(|r| r.1).collect::<Vec<_>>(),
                    )),
                    Arc::new(Int64Array::from(
                        rows.iter().map(|r| r.2).collect::<Vec<_>>(),
                    )),
                ],
            )
            .unwrap(),
        )
    }

    /// (op, every column as i64) of every data row emitted.
    fn data_rows(out: &[Message]) -> Vec<(Op, Vec<i64>)> {
        let mut v = Vec::new();
        for m in out {
            if let Message::Data(c) = m {
                let cols: Vec<ArrayRef> = c
                    .batch
                    .columns()
                    .iter()
                    .map(|a| cast(a, &DataType::Int64).unwrap())
                    .collect();
                for i in 0..c.batch.num_rows() {
                    let values = cols
                        .iter()
                        .map(|a| a.as_primitive::<Int64Type>().value(i))
                        .collect();
                    v.push((c.op(i), values));
                }
            }
        }
        v
    }

    /// (op, k, ws, sum) of every data row emitted.
    fn rows(out: &[Message]) -> Vec<(Op, i64, i64, i64)> {
        data_rows(out)
            .into_iter()
            .map(|(op, c)| (op, c[0], c[1], c[2]))
            .collect()
    }

    /// (k, ws, v) of one row of [`mixed_chunks`].
    type MixedRow = (i64, i64, Option<i64>);

    /// Four chunks over (k, ws) with repeated keys and NULL arguments;
    /// with `retract`, each chunk also deletes every third row of the one
    /// before.
    fn mixed_chunks(retract: bool) -> Vec<Chunk> {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, false),
            Field::new("ws", TS, false),
            Field::new("v", DataType::Int64, true),
        ]));
        let generation = |c: i64| -> Vec<MixedRow> {
            (0..60)
                .map(|i| {
                    let v = (i % 4 != 0).then_some((i * 13 + c) % 17 - 8);
                    ((i * 7 + c) % 5, (i % 3) * 10, v)
                })
                .collect()
        };
        (0..4)
            .map(|c| {
                let mut rows: Vec<(Op, MixedRow)> =
                    generation(c).into_iter().map(|r| (Op::Insert, r)).collect();
                if retract && c > 0 {
                    let old = generation(c - 1).into_iter().step_by(3);
                    rows.extend(old.map(|r| (Op::Delete, r)));
                }
                let batch = RecordBatch::try_new(
                    schema.clone(),
                    vec![
                        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1 .0))),
                        Arc::new(TimestampNanosecondArray::from_iter_values(
                            rows.iter().map(|r| r.1 .1),
                        )),
                        Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.1 .2))),
                    ],
                )
                .unwrap();
                Chunk::with_ops(batch, rows.iter().map(|r| r.0).collect())
            })
            .collect()
    }

    #[test]
    fn folded_chunks_give_the_changes_rows_one_by_one_give() {
        for kind in [AggKind::Count, AggKind::Sum, AggKind::Min, AggKind::Max] {
            for retract in [false, true] {
                let run = |mut a: AggregateOp| {
                    let mut out = Vec::new();
                    for chunk in mixed_chunks(retract) {
                        a.process(chunk, &mut out).unwrap();
                    }
                    a.on_watermark(15, &mut out).unwrap();
                    a.on_end(&mut out).unwrap();
                    data_rows(&out)
                };
                let folded = run(op_of(false, kind, false, retract));
                let by_row = run(op_of(false, kind, false, retract).without_folding());
                assert_eq!(folded, by_row, "{kind:?}, retractions: {retract}");
                assert!(!folded.is_empty());
            }
        }
    }

    /// `kind([DISTINCT] v)` of BIGINT `v`, input column 2.
    fn of_v(kind: AggKind, distinct: bool) -> CompiledAgg {
        let call = AggCall {
            kind,
            args: vec![],
            distinct,
            filter: None,
            output_type: DataType::Int64,
        };
        CompiledAgg::new(
            call,
            Some(Arc::new(Column::new("v", 2))),
            Some(DataType::Int64),
        )
    }

    /// The local half of [`op_of`]'s aggregate (windows play no part in it).
    fn local_of(kind: AggKind, retractable: bool) -> super::super::LocalAggregateOp {
        let agg = of_v(kind, false);
        let keys = Schema::new(vec![
            Field::new("k", DataType::Int64, true),
            Field::new("ws", TS, true),
        ]);
        super::super::LocalAggregateOp::new(
            vec![
                Arc::new(Column::new("k", 0)) as Arc<dyn PhysicalExpr>,
                Arc::new(Column::new("ws", 1)),
            ],
            &keys,
            vec![agg],
            !retractable,
        )
        .unwrap()
    }

    #[test]
    fn split_aggregates_give_the_changes_the_whole_aggregate_gives() {
        for kind in [AggKind::Count, AggKind::Sum, AggKind::Min, AggKind::Max] {
            for retract in [false, true] {
                if retract && matches!(kind, AggKind::Min | AggKind::Max) {
                    // A retracted extreme needs every value: not split.
                    assert!(op_of(false, kind, false, true).merging().is_err());
                    continue;
                }
                let mut whole = op_of(false, kind, false, retract).without_folding();
                let mut local = local_of(kind, retract);
                let mut global = op_of(false, kind, false, retract).merging().unwrap();
                let (mut expected, mut out) = (Vec::new(), Vec::new());
                let mut chunks = mixed_chunks(retract);
                if retract {
                    // A group whose rows are all taken back goes: key 9's
                    // two rows (one NULL) added, then both deleted.
                    let schema = chunks[0].batch.schema();
                    for op in [Op::Insert, Op::Delete] {
                        let batch = RecordBatch::try_new(
                            schema.clone(),
                            vec![
                                Arc::new(Int64Array::from(vec![9, 9])),
                                Arc::new(TimestampNanosecondArray::from(vec![0, 0])),
                                Arc::new(Int64Array::from(vec![Some(5), None])),
                            ],
                        )
                        .unwrap();
                        chunks.push(Chunk::with_ops(batch, vec![op, op]));
                    }
                }
                for chunk in chunks {
                    whole.process(chunk.clone(), &mut expected).unwrap();
                    let mut partial = Vec::new();
                    local.process(chunk, &mut partial).unwrap();
                    for m in partial {
                        global.handle(m, &mut out).unwrap();
                    }
                }
                let finish = |a: &mut AggregateOp, sink: &mut Vec<Message>| {
                    a.on_watermark(15, sink).unwrap();
                    a.on_end(sink).unwrap();
                };
                finish(&mut whole, &mut expected);
                finish(&mut global, &mut out);
                let expected = data_rows(&expected);
                assert_eq!(
                    data_rows(&out),
                    expected,
                    "{kind:?}, retractions: {retract}"
                );
                assert!(!expected.is_empty());
                if retract {
                    assert!(expected
                        .iter()
                        .any(|(op, r)| *op == Op::Delete && r[0] == 9));
                }
            }
        }
    }

    #[test]
    fn partial_rows_add_up_in_their_groups() {
        // Partial rows as a local half sends them for SUM(v) per (k, ws):
        // (k, ws, sum, inputs summed, rows).
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, false),
            Field::new("ws", TS, false),
            Field::new("a0_sum", DataType::Int64, false),
            Field::new("a0_n", DataType::Int64, false),
            Field::new("rows", DataType::Int64, false),
        ]));
        let chunk = |rows: &[[i64; 5]]| {
            let column = |i: usize| -> ArrayRef {
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r[i])))
            };
            let ws = Arc::new(TimestampNanosecondArray::from_iter_values(
                rows.iter().map(|r| r[1]),
            ));
            Chunk::inserts(
                RecordBatch::try_new(
                    schema.clone(),
                    vec![column(0), ws, column(2), column(3), column(4)],
                )
                .unwrap(),
            )
        };
        let mut a = op_of(false, AggKind::Sum, false, true).merging().unwrap();
        let mut out = Vec::new();
        // Key 1: 3 rows summing to 12; key 2: 2 rows of which one NULL (5).
        a.process(chunk(&[[1, 0, 12, 3, 3], [2, 0, 5, 1, 2]]), &mut out)
            .unwrap();
        // Key 1: one row of 4 taken back; key 2: both its rows taken back.
        a.process(chunk(&[[1, 0, -4, -1, -1], [2, 0, -5, -1, -2]]), &mut out)
            .unwrap();
        assert_eq!(
            rows(&out),
            vec![
                (Op::Insert, 1, 0, 12),
                (Op::Insert, 2, 0, 5),
                (Op::UpdateBefore, 1, 0, 12),
                (Op::UpdateAfter, 1, 0, 8),
                (Op::Delete, 2, 0, 5),
            ]
        );
    }

    #[test]
    fn emits_inserts_then_update_pairs_and_frees_closed_windows() {
        let mut a = op(false);
        let mut out = Vec::new();
        a.process(input(&[(1, 0, 5), (2, 0, 1), (1, 0, 2)]), &mut out)
            .unwrap();
        assert_eq!(
            rows(&out),
            vec![(Op::Insert, 1, 0, 7), (Op::Insert, 2, 0, 1)]
        );
        out.clear();
        a.process(input(&[(1, 0, 3), (1, 10, 4)]), &mut out)
            .unwrap();
        assert_eq!(
            rows(&out),
            vec![
                (Op::UpdateBefore, 1, 0, 7),
                (Op::UpdateAfter, 1, 0, 10),
                (Op::Insert, 1, 10, 4)
            ]
        );
        assert_eq!(a.open_groups(), 3);
        out.clear();
        a.on_watermark(9, &mut out).unwrap();
        assert_eq!(
            a.open_groups(),
            3,
            "window [0,10) is open until the watermark reaches 10"
        );
        a.on_watermark(10, &mut out).unwrap();
        assert_eq!(a.open_groups(), 1);
        assert!(
            rows(&out).is_empty(),
            "update mode emitted everything already"
        );
    }

    #[test]
    fn changes_held_back_are_emitted_together_before_a_barrier_or_a_closing() {
        let mut a = op(false).with_emit_interval(Duration::from_secs(3600));
        let mut out = Vec::new();
        a.process(input(&[(1, 0, 5), (2, 0, 1)]), &mut out).unwrap();
        a.process(input(&[(1, 0, 2), (1, 10, 4)]), &mut out)
            .unwrap();
        let due = a.on_tick(Instant::now(), &mut out).unwrap();
        assert!(out.is_empty(), "held back within the interval");
        assert!(due.is_some_and(|d| d > Instant::now() + Duration::from_secs(3000)));
        // A watermark that closes no window does not emit.
        a.on_watermark(5, &mut out).unwrap();
        assert!(rows(&out).is_empty());
        out.clear();
        // One row per group, with everything both chunks brought.
        let barrier = crate::runtime::message::Barrier {
            epoch: 1,
            checkpoint: false,
        };
        a.on_barrier(barrier, &mut out).unwrap();
        assert_eq!(
            rows(&out),
            vec![
                (Op::Insert, 1, 0, 7),
                (Op::Insert, 2, 0, 1),
                (Op::Insert, 1, 10, 4)
            ]
        );
        assert!(matches!(out.last(), Some(Message::Barrier(_))));
        out.clear();
        let later = Instant::now() + Duration::from_secs(7200);
        assert_eq!(a.on_tick(later, &mut out).unwrap(), None);
        assert!(out.is_empty(), "nothing changed since");
        // A change to a window the watermark then closes is emitted first.
        a.process(input(&[(2, 0, 3), (1, 10, 1)]), &mut out)
            .unwrap();
        a.on_watermark(10, &mut out).unwrap();
        assert_eq!(
            rows(&out),
            vec![
                (Op::UpdateBefore, 2, 0, 1),
                (Op::UpdateAfter, 2, 0, 4),
                (Op::UpdateBefore, 1, 10, 4),
                (Op::UpdateAfter, 1, 10, 5)
            ]
        );
        assert_eq!(a.open_groups(), 1);
        out.clear();
        // Once the interval has passed, a tick emits what is held back.
        a.process(input(&[(1, 10, 1)]), &mut out).unwrap();
        assert_eq!(a.on_tick(later, &mut out).unwrap(), None);
        assert_eq!(
            rows(&out),
            vec![(Op::UpdateBefore, 1, 10, 5), (Op::UpdateAfter, 1, 10, 6)]
        );
    }

    #[test]
    fn emit_on_window_close_emits_each_window_once() {
        let mut a = op(true);
        let mut out = Vec::new();
        a.process(input(&[(1, 0, 5), (1, 10, 1), (1, 0, 2)]), &mut out)
            .unwrap();
        assert!(rows(&out).is_empty());
        a.on_watermark(15, &mut out).unwrap();
        assert_eq!(rows(&out), vec![(Op::Insert, 1, 0, 7)]);
        out.clear();
        a.on_end(&mut out).unwrap();
        assert_eq!(rows(&out), vec![(Op::Insert, 1, 10, 1)]);
        assert!(matches!(out.last(), Some(Message::End)));
        assert_eq!(a.open_groups(), 0);
    }

    #[test]
    fn windows_over_processing_time_close_on_the_wall_clock_not_the_watermark() {
        let window = WindowClose {
            key_index: 1,
            offset: 10,
            processing_time: true,
        };
        let keys = [("k", DataType::Int64), ("ws", TS)];
        let mut a = with_keys(&keys, Some(window), true, AggKind::Sum, false, false);
        let now = wall_clock_ns();
        // A window that ended a second ago, and one an hour from now.
        let (past, future) = (now - 1_000_000_000, now + 3_600_000_000_000);
        let mut out = Vec::new();
        a.process(
            input(&[(1, past, 5), (1, future, 1), (1, past, 2)]),
            &mut out,
        )
        .unwrap();
        // A watermark past both closes nothing.
        a.on_watermark(i64::MAX - 100, &mut out).unwrap();
        assert!(rows(&out).is_empty());
        let at = Instant::now();
        let due = a.on_tick(at, &mut out).unwrap();
        assert_eq!(rows(&out), vec![(Op::Insert, 1, past, 7)]);
        // The next closing is due in about an hour.
        let wait = due.expect("a window is open").duration_since(at);
        assert!(wait > Duration::from_secs(3_500), "{wait:?}");
        assert_eq!(a.open_groups(), 1);
    }

    /// Runs `a` over the messages, returning what it emitted.
    fn feed(a: &mut AggregateOp, msgs: Vec<Message>) -> Vec<(Op, i64, i64, i64)> {
        let mut out = Vec::new();
        for m in msgs {
            a.handle(m, &mut out).unwrap();
        }
        rows(&out)
    }

    fn snapshot_and_restore(emit_on_close: bool) {
        let first = vec![
            Message::Data(input(&[(1, 0, 5), (2, 0, 1)])),
            Message::Data(input(&[(1, 10, 4), (1, 0, 2)])),
            Message::Watermark(5),
        ];
        let rest = || {
            vec![
                Message::Data(input(&[(1, 10, 3), (2, 20, 8), (1, 0, 1)])),
                Message::Watermark(10),
                Message::Data(input(&[(2, 20, 1)])),
                Message::End,
            ]
        };
        let mut straight = op(emit_on_close);
        feed(&mut straight, first.clone());
        let expected = feed(&mut straight, rest());

        let (_dir, job) = temp_job();
        let mut before = op(emit_on_close);
        feed(&mut before, first);
        let mut epoch = job.begin(1);
        before.checkpoint(&mut epoch.operator(0)).unwrap();
        let record = crate::state::EpochRecord::bare(1);
        job.commit(epoch, &record).unwrap();
        let mut after = op(emit_on_close);
        restore_from(&mut after, &job);
        assert_eq!(after.open_groups(), before.open_groups());
        assert_eq!(feed(&mut after, rest()), expected);
    }

    #[test]
    fn restored_state_gives_the_same_updates() {
        snapshot_and_restore(false);
    }

    #[test]
    fn restored_state_gives_the_same_final_windows() {
        snapshot_and_restore(true);
    }

    /// Restores `a` from operator 0's state, as a chain does.
    fn restore_from(a: &mut AggregateOp, job: &crate::state::JobState) {
        a.restore_blocks(job.operator_blocks_of(0, 0, 1).unwrap())
            .unwrap();
        a.restore(job.operator_state(0).unwrap()).unwrap();
    }

    /// Operator 0's stored groups, in blocks or one key each: (key, value).
    fn stored_groups(job: &crate::state::JobState) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut last = std::collections::BTreeMap::new();
        for (_, _, bytes) in job.operator_blocks_of(0, 0, 1).unwrap() {
            for (k, v) in Block::read(&bytes).unwrap() {
                last.insert(k.to_vec(), v.map(<[u8]>::to_vec));
            }
        }
        let blocks = last.into_iter().filter_map(|(k, v)| Some((k, v?)));
        blocks.chain(job.operator_state(0).unwrap()).collect()
    }

    /// A job's checkpoint store in a temporary directory (kept while the guard lives).
    fn temp_job() -> (tempfile::TempDir, crate::state::JobState) {
        let dir = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(crate::state::Store::open(dir.path()).unwrap());
        (dir, crate::state::JobState::new(store, 1))
    }

    /// Checkpoints `a` into `job` as epoch `epoch`.
    fn commit(a: &mut AggregateOp, job: &crate::state::JobState, epoch: u64) {
        let mut w = job.begin(epoch);
        a.checkpoint(&mut w.operator(0)).unwrap();
        job.commit(w, &crate::state::EpochRecord::bare(epoch))
            .unwrap();
    }

    #[test]
    fn a_window_opened_and_closed_between_checkpoints_costs_the_store_nothing() {
        let (_dir, job) = temp_job();
        let mut a = op_of(true, AggKind::Count, false, false);
        // Window 0's two groups are stored at epoch 1.
        feed(&mut a, vec![Message::Data(input(&[(1, 0, 5), (2, 0, 1)]))]);
        commit(&mut a, &job, 1);
        assert_eq!(stored_groups(&job).len(), 2);
        // In epoch 2, window 10 opens and both windows close.
        let out = feed(
            &mut a,
            vec![Message::Data(input(&[(1, 10, 4)])), Message::Watermark(20)],
        );
        assert_eq!(out.len(), 3, "{out:?}");
        let mut w = job.begin(2);
        a.checkpoint(&mut w.operator(0)).unwrap();
        // Window 0's groups are deleted; window 10's was never stored.
        assert_eq!(w.operations(), 2);
        job.commit(w, &crate::state::EpochRecord::bare(2)).unwrap();
        assert_eq!(stored_groups(&job).len(), 0);
    }

    #[test]
    fn distinct_values_are_checkpointed_and_leave_with_their_window() {
        for (kind, retractable) in [(AggKind::Count, false), (AggKind::Sum, true)] {
            let (_dir, job) = temp_job();
            let mut straight = op_of(false, kind, true, retractable);
            let mut before = op_of(false, kind, true, retractable);
            let first = || {
                vec![
                    Message::Data(input(&[(1, 0, 5), (1, 0, 5), (1, 0, 6), (2, 0, 1)])),
                    Message::Data(input(&[(1, 10, 4), (2, 10, 4)])),
                ]
            };
            feed(&mut straight, first());
            feed(&mut before, first());
            commit(&mut before, &job, 1);
            // Window 0 closes (its entries must go); k=1 in window 10 gains a value.
            let second = || {
                vec![
                    Message::Watermark(10),
                    Message::Data(input(&[(1, 10, 7), (1, 10, 4)])),
                ]
            };
            feed(&mut straight, second());
            feed(&mut before, second());
            commit(&mut before, &job, 2);
            let entries = job.operator_entries_of(0, 0, 1).unwrap();
            // Left: window 10's records, k=1's of epochs 1 and 2, k=2's of epoch 1.
            assert_eq!(entries.len(), 3, "{kind:?}: {entries:?}");
            let mut after = op_of(false, kind, true, retractable);
            restore_from(&mut after, &job);
            after.restore_entries(entries).unwrap();
            assert_eq!(after.open_groups(), 2);
            let rest = || {
                vec![
                    Message::Data(input(&[(1, 10, 7), (1, 10, 9), (2, 10, 5)])),
                    Message::End,
                ]
            };
            let expected = feed(&mut straight, rest());
            assert_eq!(feed(&mut after, rest()), expected, "{kind:?}");
            // COUNT(DISTINCT): k=1 {4, 7, 9} = 3; SUM(DISTINCT): 4 + 7 + 9 = 20.
            let last_k1 = expected.iter().rev().find(|r| r.1 == 1).unwrap().3;
            assert_eq!(last_k1, if kind == AggKind::Count { 3 } else { 20 });
        }
    }

    /// GROUP BY k: COUNT(DISTINCT v), COUNT(DISTINCT v) FILTER (WHERE v >
    /// 4), SUM(DISTINCT v) FILTER (WHERE v > 4), COUNT(DISTINCT v) FILTER
    /// (WHERE v < 0): one shared set of values.
    fn filtered_distincts() -> AggregateOp {
        filtered_distincts_in(None)
    }

    /// The same, grouped by (k, ws) when `window` closes windows at ws + 10.
    fn filtered_distincts_in(window: Option<WindowClose>) -> AggregateOp {
        use datafusion::logical_expr::Operator as BinOp;
        use datafusion::physical_expr::expressions::{BinaryExpr, Literal};
        let v = || Arc::new(Column::new("v", 2)) as Arc<dyn PhysicalExpr>;
        let compare = |op, n: i64| {
            Some(Arc::new(BinaryExpr::new(
                v(),
                op,
                Arc::new(Literal::new(ScalarValue::Int64(Some(n)))),
            )) as Arc<dyn PhysicalExpr>)
        };
        let agg = |kind, filter: Option<Arc<dyn PhysicalExpr>>| {
            let call = AggCall {
                kind,
                args: vec![datafusion::logical_expr::col("v")],
                distinct: true,
                filter: filter
                    .is_some()
                    .then(|| datafusion::logical_expr::lit(true)),
                output_type: DataType::Int64,
            };
            CompiledAgg::new(call, Some(v()), Some(DataType::Int64)).with_filter(filter)
        };
        let aggs = vec![
            agg(AggKind::Count, None),
            agg(AggKind::Count, compare(BinOp::Gt, 4)),
            agg(AggKind::Sum, compare(BinOp::Gt, 4)),
            agg(AggKind::Count, compare(BinOp::Lt, 0)),
        ];
        let mut keys = vec![Field::new("k", DataType::Int64, true)];
        let mut exprs: Vec<Arc<dyn PhysicalExpr>> = vec![Arc::new(Column::new("k", 0))];
        if window.is_some() {
            keys.push(Field::new("ws", TS, true));
            exprs.push(Arc::new(Column::new("ws", 1)));
        }
        let mut out = keys.clone();
        out.extend((0..4).map(|i| Field::new(format!("a{i}"), DataType::Int64, true)));
        AggregateOp::new(
            exprs,
            Arc::new(Schema::new(keys)),
            aggs,
            Arc::new(Schema::new(out)),
            window,
            false,
            false,
        )
        .unwrap()
        .with_emit_interval(Duration::ZERO)
    }

    /// [`filtered_distincts`] with the state `job` committed.
    fn restored_filtered_distincts(job: &crate::state::JobState) -> AggregateOp {
        let mut a = filtered_distincts();
        restore_from(&mut a, job);
        a.restore_entries(job.operator_entries_of(0, 0, 1).unwrap())
            .unwrap();
        a
    }

    #[test]
    fn distincts_differing_in_filter_share_values_across_a_restore() {
        let (_dir, job) = temp_job();
        let mut straight = filtered_distincts();
        assert_eq!(straight.sets.len(), 1, "one shared set");
        let mut before = filtered_distincts();
        let first = || {
            vec![Message::Data(input(&[
                (1, 0, 5),
                (1, 0, 5),
                (1, 0, 3),
                (2, 0, 7),
            ]))]
        };
        feed(&mut straight, first());
        feed(&mut before, first());
        commit(&mut before, &job, 1);
        let mut after = restored_filtered_distincts(&job);
        let rest = |a: &mut AggregateOp| {
            let rows = input(&[(1, 0, 3), (1, 0, 6), (1, 0, 5), (2, 0, 2), (2, 0, 7)]);
            let mut out = Vec::new();
            a.handle(Message::Data(rows), &mut out).unwrap();
            data_rows(&out)
        };
        let expected = rest(&mut straight);
        assert_eq!(rest(&mut after), expected);
        // k=1 saw {5, 3, 6}: 3 values, 2 above 4 summing to 11, none below 0;
        // k=2 saw {7, 2}: 2 values, 1 above 4 (7), none below 0.
        let last = |k: i64| {
            expected
                .iter()
                .rev()
                .find(|(_, c)| c[0] == k)
                .unwrap()
                .1
                .clone()
        };
        assert_eq!(last(1), vec![1, 3, 2, 11, 0]);
        assert_eq!(last(2), vec![2, 2, 1, 7, 0]);
    }

    /// Entries of `job`'s operator 0 for group `k` (an Int64 key): (entry, value).
    fn entries_of_group(job: &crate::state::JobState, k: i64) -> Vec<Vec<u8>> {
        let op = filtered_distincts();
        let key = op
            .key_codec
            .encode(&[Arc::new(Int64Array::from(vec![k])) as ArrayRef])
            .unwrap()
            .remove(0);
        job.operator_key_entries(0, &key)
            .unwrap()
            .into_iter()
            .map(|(e, _)| e)
            .collect()
    }

    #[test]
    fn shared_values_go_out_as_one_record_per_epoch_and_are_rewritten_when_many() {
        let (_dir, job) = temp_job();
        let mut straight = filtered_distincts();
        let mut before = filtered_distincts();
        // Epoch e adds k=1 the values e and -e (a new bit for the v < 0
        // member), and k=2 the value 100 again (nothing new after epoch 1).
        let epochs = MAX_RECORDS as i64 + 4;
        for e in 1..=epochs {
            let rows = || vec![Message::Data(input(&[(1, 0, e), (1, 0, -e), (2, 0, 100)]))];
            feed(&mut straight, rows());
            feed(&mut before, rows());
            commit(&mut before, &job, e as u64);
            let records = entries_of_group(&job, 1);
            assert!(
                records.iter().all(|r| r.starts_with(&RECORD)),
                "{records:?}"
            );
            // One record per epoch, until the checkpoint after the 16th
            // rewrites them as one: 17 -> 1 record, then one more a epoch.
            let expected = if e <= MAX_RECORDS as i64 {
                e
            } else {
                e - MAX_RECORDS as i64
            };
            assert_eq!(records.len() as i64, expected, "epoch {e}");
            assert_eq!(
                entries_of_group(&job, 2).len(),
                1,
                "k=2 changed only in epoch 1"
            );
        }
        let mut after = restored_filtered_distincts(&job);
        let rest = |a: &mut AggregateOp| {
            let rows = input(&[(1, 0, 3), (1, 0, 50), (1, 0, -2), (2, 0, 100), (2, 0, 7)]);
            let mut out = Vec::new();
            a.handle(Message::Data(rows), &mut out).unwrap();
            data_rows(&out)
        };
        let expected = rest(&mut straight);
        assert_eq!(rest(&mut after), expected);
        // k=1: {1..=20, -1..=-20, 50}: 41 values, 17 above 4 (5..=20, 50)
        // summing to 200 + 50 = 250, 20 below 0.
        let last = expected.iter().rev().find(|(_, c)| c[0] == 1).unwrap();
        assert_eq!(last.1, vec![1, 41, 17, 250, 20]);
        // The restored operator knows its 4 records: 12 more make 16, and
        // the checkpoint after rewrites all of them as one.
        let restored = epochs - MAX_RECORDS as i64;
        let more = MAX_RECORDS as i64 - restored;
        for e in epochs + 1..=epochs + more {
            if e > epochs + 1 {
                feed(&mut after, vec![Message::Data(input(&[(1, 0, 1000 + e)]))]);
            }
            commit(&mut after, &job, e as u64);
        }
        assert_eq!(entries_of_group(&job, 1).len(), MAX_RECORDS);
        feed(&mut after, vec![Message::Data(input(&[(1, 0, 5000)]))]);
        commit(&mut after, &job, (epochs + more + 1) as u64);
        assert_eq!(entries_of_group(&job, 1).len(), 1);
    }

    #[test]
    fn a_closed_window_deletes_every_record_of_its_shared_values() {
        let (_dir, job) = temp_job();
        let window = WindowClose {
            key_index: 1,
            offset: 10,
            processing_time: false,
        };
        let mut a = filtered_distincts_in(Some(window));
        // Window 0 of k=1 gains values in three epochs: three records.
        for e in 1..=3 {
            feed(&mut a, vec![Message::Data(input(&[(1, 0, e), (1, 10, e)]))]);
            commit(&mut a, &job, e as u64);
        }
        let count = |job: &crate::state::JobState| job.operator_entries_of(0, 0, 1).unwrap().len();
        assert_eq!(count(&job), 6, "three records for each of the two windows");
        // The watermark closes window 0 (ws + 10 <= 10): its records go.
        feed(&mut a, vec![Message::Watermark(10)]);
        commit(&mut a, &job, 4);
        let left = job.operator_entries_of(0, 0, 1).unwrap();
        assert_eq!(left.len(), 3, "window 10's three records: {left:?}");
        feed(&mut a, vec![Message::Watermark(20)]);
        commit(&mut a, &job, 5);
        assert_eq!(count(&job), 0);
    }

    #[test]
    fn shared_values_stored_one_entry_each_are_read_and_deleted_on_rewrite() {
        // The format before records: one entry per value, its mask as an i64.
        let (_dir, job) = temp_job();
        let op = filtered_distincts();
        let key = op
            .key_codec
            .encode(&[Arc::new(Int64Array::from(vec![1])) as ArrayRef])
            .unwrap()
            .remove(0);
        let mut straight = filtered_distincts();
        // k=1 saw 5 (members 0, 1, 2: all but v < 0) and -1 (0 and 3).
        feed(
            &mut straight,
            vec![Message::Data(input(&[(1, 0, 5), (1, 0, -1)]))],
        );
        let mut w = job.begin(1);
        {
            let mut state = w.operator(0);
            let mut group_writer = GroupWriter::new();
            let g = straight.groups.get(&key).expect("a group");
            let encoded = group_writer
                .group(
                    &straight.codecs,
                    g.rows,
                    Emitted::values(g.emitted.as_deref()),
                    &g.accs,
                )
                .unwrap();
            state.put(&key, encoded);
            for (v, mask) in [(5i64, 0b0111u64), (-1, 0b1001)] {
                let entry = value_entry(&op.codecs, 0, &ScalarValue::Int64(Some(v))).unwrap();
                state.put_entry(&key, &entry, (mask as i64).to_le_bytes().to_vec());
            }
        }
        job.commit(w, &crate::state::EpochRecord::bare(1)).unwrap();
        let mut after = restored_filtered_distincts(&job);
        let rows = || vec![Message::Data(input(&[(1, 0, 5), (1, 0, 6), (1, 0, -1)]))];
        let expected = feed(&mut straight, rows());
        assert_eq!(
            feed(&mut after, rows()),
            expected,
            "the old entries restore the values"
        );
        // Enough epochs for a rewrite: then only records are left.
        for e in 2..=(MAX_RECORDS as u64 + 2) {
            feed(
                &mut after,
                vec![Message::Data(input(&[(1, 0, 100 + e as i64)]))],
            );
            commit(&mut after, &job, e);
        }
        let entries = entries_of_group(&job, 1);
        assert!(
            entries.iter().all(|e| e.starts_with(&RECORD)),
            "{entries:?}"
        );
        assert_eq!(entries.len(), 1);
    }

    /// `kind([DISTINCT] v) ... GROUP BY k`: no window, so its groups may
    /// leave memory under a budget.
    fn grouped(kind: AggKind, distinct: bool) -> AggregateOp {
        with_keys(
            &[("k", DataType::Int64)],
            None,
            false,
            kind,
            distinct,
            false,
        )
    }

    /// (op, k, value) of every data row `a` emits for `msg`.
    fn grouped_rows(a: &mut AggregateOp, msg: Message) -> Vec<(Op, i64, i64)> {
        let mut out = Vec::new();
        a.handle(msg, &mut out).unwrap();
        data_rows(&out)
            .into_iter()
            .map(|(op, c)| (op, c[0], c[1]))
            .collect()
    }

    /// SUM(DISTINCT v) and COUNT(DISTINCT v) GROUP BY k over updates: a
    /// value's count rises and falls over epochs, to zero and back; each
    /// epoch writes one record per group, and a restore from them (the last
    /// count of a value wins) gives what an operator that never stopped gives.
    #[test]
    fn distinct_counts_over_updates_restore_from_their_records() {
        for kind in [AggKind::Sum, AggKind::Count] {
            let (_dir, job) = temp_job();
            let op = || with_keys(&[("k", DataType::Int64)], None, false, kind, true, true);
            let rows = |ops: Vec<Op>, r: &[(i64, i64, i64)]| {
                Message::Data(Chunk::with_ops(input(r).batch, ops))
            };
            use Op::{Delete as D, Insert as I};
            let epochs = [
                rows(
                    vec![I, I, I, I],
                    &[(1, 0, 5), (1, 0, 5), (1, 0, 6), (2, 0, 9)],
                ),
                rows(vec![D, I], &[(1, 0, 5), (1, 0, 7)]), // 5 still once
                rows(vec![D, D], &[(1, 0, 5), (1, 0, 6)]), // 5 and 6 gone
                rows(vec![I, D], &[(1, 0, 6), (2, 0, 9)]), // 6 back; k=2 empty
            ];
            let mut straight = op();
            let mut before = op();
            for (e, m) in epochs.into_iter().enumerate() {
                let m2 = match &m {
                    Message::Data(c) => Message::Data(c.clone()),
                    _ => unreachable!(),
                };
                grouped_rows(&mut straight, m);
                grouped_rows(&mut before, m2);
                commit(&mut before, &job, e as u64 + 1);
            }
            let entries = job.operator_entries_of(0, 0, 1).unwrap();
            assert!(
                entries.iter().all(|(_, e, _)| e.starts_with(&RECORD)),
                "{entries:?}"
            );
            // k=1 wrote a record in each of the 4 epochs; k=2's one left with it.
            assert_eq!(entries.len(), 4, "{kind:?}");
            let mut after = op();
            restore_from(&mut after, &job);
            after.restore_entries(entries).unwrap();
            // 6 leaves k=1 (its count was 1: added, removed, added again).
            let rest = || rows(vec![D, I], &[(1, 0, 6), (2, 0, 9)]);
            let expected = grouped_rows(&mut straight, rest());
            assert_eq!(grouped_rows(&mut after, rest()), expected, "{kind:?}");
            // k=1 holds {6, 7} and loses 6: SUM 7, COUNT 1; k=2 starts again.
            let last = |k: i64| expected.iter().rev().find(|r| r.1 == k).unwrap().2;
            assert_eq!(last(1), if kind == AggKind::Sum { 7 } else { 1 });
            assert_eq!(last(2), if kind == AggKind::Sum { 9 } else { 1 });
        }
    }

    /// SUM(v) GROUP BY k over a stream that takes rows back.
    fn retracting_sum_by_k() -> AggregateOp {
        with_keys(
            &[("k", DataType::Int64)],
            None,
            false,
            AggKind::Sum,
            false,
            true,
        )
    }

    /// Both groups are stored; then, within one epoch, k=1's group is
    /// emptied (removed) and created again, and k=2's is emptied for good:
    /// that checkpoint stores k=1's new group and deletes k=2's.
    #[test]
    fn a_group_removed_and_created_again_in_one_epoch_is_stored_once() {
        let (_dir, job) = temp_job();
        let mut before = retracting_sum_by_k();
        let rows = |ops: Vec<Op>, r: &[(i64, i64, i64)]| {
            Message::Data(Chunk::with_ops(input(r).batch, ops))
        };
        grouped_rows(
            &mut before,
            rows(vec![Op::Insert, Op::Insert], &[(1, 0, 5), (2, 0, 4)]),
        );
        commit(&mut before, &job, 1);
        assert_eq!(stored_groups(&job).len(), 2);
        let epoch = [
            rows(vec![Op::Delete, Op::Delete], &[(1, 0, 5), (2, 0, 4)]),
            rows(vec![Op::Insert], &[(1, 0, 7)]),
        ];
        for m in epoch {
            grouped_rows(&mut before, m);
        }
        commit(&mut before, &job, 2);
        let stored = stored_groups(&job);
        assert_eq!(stored.len(), 1, "k=2 is gone, k=1 stored once");
        let mut after = retracting_sum_by_k();
        restore_from(&mut after, &job);
        // k=1 holds 7: adding 1 updates it from 7 to 8; k=2 starts afresh.
        let out = grouped_rows(
            &mut after,
            rows(vec![Op::Insert, Op::Insert], &[(1, 0, 1), (2, 0, 3)]),
        );
        assert_eq!(
            out,
            vec![
                (Op::UpdateBefore, 1, 7),
                (Op::UpdateAfter, 1, 8),
                (Op::Insert, 2, 3)
            ]
        );
    }

    /// Without a budget the groups go into blocks by key group. Every
    /// epoch rewrites all 20,000 keys and stores a group it removes the
    /// epoch after: a key group's blocks pile up entries until they are
    /// written whole, so the store holds far fewer than all the entries
    /// written; restored from them, the groups are the ones there are.
    #[test]
    fn blocks_are_written_whole_once_they_pile_up_and_restore_the_groups() {
        let (_dir, job) = temp_job();
        const KEYS: i64 = 20_000;
        const EPOCHS: i64 = 12;
        let mut before = retracting_sum_by_k();
        for e in 0..EPOCHS {
            let rows: Vec<(i64, i64, i64)> = (0..KEYS).map(|k| (k, 0, k + e)).collect();
            grouped_rows(&mut before, Message::Data(input(&rows)));
            // A group stored by this epoch, removed by the next.
            grouped_rows(&mut before, Message::Data(input(&[(KEYS + e, 0, 1)])));
            if e > 0 {
                let gone = input(&[(KEYS + e - 1, 0, 1)]).batch;
                let gone = Chunk::with_ops(gone, vec![Op::Delete]);
                grouped_rows(&mut before, Message::Data(gone));
            }
            commit(&mut before, &job, e as u64 + 1);
        }
        let blocks = job.operator_blocks_of(0, 0, 1).unwrap();
        let entries: usize = blocks
            .iter()
            .map(|(_, _, b)| Block::read(b).unwrap().len())
            .sum();
        let written = (EPOCHS * (KEYS + 2)) as usize;
        assert!(
            entries < written * 2 / 3 && entries > KEYS as usize,
            "{entries} entries stored of {written} written"
        );
        assert!(
            blocks.len() < 128 * EPOCHS as usize,
            "{} blocks",
            blocks.len()
        );
        let mut after = retracting_sum_by_k();
        restore_from(&mut after, &job);
        let state = |a: &AggregateOp| {
            let mut groups: Vec<_> = a
                .groups
                .iter()
                .map(|(k, g)| (k.to_vec(), g.rows, g.emitted.clone()))
                .collect();
            groups.sort_by(|x, y| x.0.cmp(&y.0));
            groups
        };
        assert_eq!(after.open_groups(), KEYS as usize + 1);
        assert!(state(&after) == state(&before), "restored groups differ");
    }

    /// 6,000 groups, each emitted once an epoch: from the second epoch on
    /// they are written as they are emitted, not listed for the
    /// checkpoint. That epoch emits 500 of them twice (their block holds
    /// both, the later wins), then removes one of those and adds a group; restored, each
    /// group holds the sum worked out here, and goes on from it.
    #[test]
    fn groups_emitted_about_once_an_epoch_are_written_as_they_are_emitted() {
        let (_dir, job) = temp_job();
        const KEYS: i64 = 6_000;
        let mut before = retracting_sum_by_k();
        let first: Vec<(i64, i64, i64)> = (0..KEYS).map(|k| (k, 0, k)).collect();
        grouped_rows(&mut before, Message::Data(input(&first)));
        assert!(before.emitted_blocks.is_none(), "the first epoch is listed");
        commit(&mut before, &job, 1);
        assert!(
            before.emitted_blocks.is_some(),
            "6,000 groups emitted once each"
        );
        let ones: Vec<(i64, i64, i64)> = (0..KEYS).map(|k| (k, 0, 1)).collect();
        grouped_rows(&mut before, Message::Data(input(&ones)));
        let tens: Vec<(i64, i64, i64)> = (0..500).map(|k| (k, 0, 10)).collect();
        grouped_rows(&mut before, Message::Data(input(&tens)));
        let gone = input(&[(7, 0, 7), (7, 0, 1), (7, 0, 10)]).batch;
        let gone = Chunk::with_ops(gone, vec![Op::Delete; 3]);
        grouped_rows(&mut before, Message::Data(gone));
        grouped_rows(&mut before, Message::Data(input(&[(9_000, 0, 3)])));
        assert_eq!(before.groups.listed(List::Changed), 0);
        commit(&mut before, &job, 2);
        assert!(
            before.emitted_blocks.is_some(),
            "6,501 emissions of 6,001 groups"
        );
        let mut after = retracting_sum_by_k();
        restore_from(&mut after, &job);
        let mut restored: Vec<(i64, i64)> = after
            .groups
            .iter()
            .map(|(_, g)| {
                (
                    g.rows,
                    g.emitted.as_ref().map(|v| v.len()).unwrap_or(0) as i64,
                )
            })
            .collect();
        restored.sort_unstable();
        assert_eq!(after.open_groups(), KEYS as usize);
        // Rows per group: 3 for the 499 keys below 500 left, 1 for the new
        // key, 2 for the rest.
        let rows = |n| restored.iter().filter(|r| r.0 == n).count();
        assert_eq!((rows(1), rows(2), rows(3)), (1, 5_500, 499));
        // Each group's sum, read through what the restored groups emit
        // when one more row of 100 comes.
        let more: Vec<(i64, i64, i64)> = (0..KEYS).chain([9_000]).map(|k| (k, 0, 100)).collect();
        let out = grouped_rows(&mut after, Message::Data(input(&more)));
        let mut want = Vec::new();
        for k in (0..KEYS).chain([9_000]) {
            let sum = match k {
                7 => None,
                9_000 => Some(3),
                k if k < 500 => Some(k + 11),
                k => Some(k + 1),
            };
            match sum {
                Some(s) => want.extend([(Op::UpdateBefore, k, s), (Op::UpdateAfter, k, s + 100)]),
                None => want.push((Op::Insert, k, 100)),
            }
        }
        let sorted = |mut v: Vec<(Op, i64, i64)>| {
            v.sort_by_key(|&(op, k, s)| (k, s, op as u8));
            v
        };
        let (out, want) = (sorted(out), sorted(want));
        let differ = out.iter().zip(&want).find(|(o, w)| o != w);
        assert!(out.len() == want.len() && differ.is_none(), "{differ:?}");
    }

    #[test]
    fn groups_over_the_budget_leave_memory_and_come_back_from_the_store() {
        use crate::state::MemoryBudget;
        for (kind, distinct) in [(AggKind::Sum, false), (AggKind::Count, true)] {
            let (_dir, job) = temp_job();
            let (committed_tx, committed) = tokio::sync::watch::channel(0u64);
            let mut straight = grouped(kind, distinct);
            let mut spilling = grouped(kind, distinct);
            // Room for 2 of the 20 groups: fewer than an epoch touches.
            let limit = 2 * spilling.group_bytes(9);
            let budget = Arc::new(MemoryBudget::new(Some(limit)));
            let access = |budget: &Arc<MemoryBudget>| StateAccess {
                job: job.clone(),
                index: 0,
                committed: committed.clone(),
                budget: budget.clone(),
            };
            spilling.attach_state(access(&budget));
            // Epoch e touches 12 rows of keys 2e .. 2e + 5 (mod 20), 4 of
            // them also touched by the epoch before; values repeat, so
            // DISTINCT counts differ from COUNT.
            let chunk = |e: i64| {
                let rows: Vec<(i64, i64, i64)> = (0..12)
                    .map(|i| ((e * 2 + i % 6) % 20, 0, (e + i) % 5))
                    .collect();
                Message::Data(input(&rows))
            };
            // Each epoch commits only after the next one's checkpoint, as
            // with the job's writer thread: a group written in an epoch not
            // yet committed must stay in memory.
            let mut pending: Option<(u64, crate::state::EpochWriter)> = None;
            for e in 1..=16u64 {
                let expected = grouped_rows(&mut straight, chunk(e as i64));
                let got = grouped_rows(&mut spilling, chunk(e as i64));
                assert_eq!(got, expected, "{kind:?} distinct={distinct}, epoch {e}");
                let mut w = job.begin(e);
                spilling.checkpoint(&mut w.operator(0)).unwrap();
                if let Some((p, w)) = pending.replace((e, w)) {
                    job.commit(w, &crate::state::EpochRecord::bare(p)).unwrap();
                    committed_tx.send_replace(p);
                }
            }
            let (p, w) = pending.take().unwrap();
            job.commit(w, &crate::state::EpochRecord::bare(p)).unwrap();
            committed_tx.send_replace(p);
            assert!(budget.evicted() > 0, "groups left memory");
            assert!(budget.loaded() > 0, "groups came back");
            assert!(spilling.open_groups() < 20, "{}", spilling.open_groups());
            assert_eq!(budget.used(), spilling.bytes);
            // Restored under the same budget: only what fits is loaded, the rest on demand.
            let restored_budget = Arc::new(MemoryBudget::new(Some(limit)));
            let mut restored = grouped(kind, distinct);
            restored.attach_state(access(&restored_budget));
            restore_from(&mut restored, &job);
            restored
                .restore_entries(job.operator_entries_of(0, 0, 1).unwrap())
                .unwrap();
            assert!(restored.open_groups() <= 2, "{}", restored.open_groups());
            for e in 17..=22 {
                let expected = grouped_rows(&mut straight, chunk(e));
                let got = grouped_rows(&mut restored, chunk(e));
                assert_eq!(got, expected, "{kind:?} distinct={distinct}, restored, {e}");
            }
            assert!(restored_budget.loaded() > 0);
        }
    }
}
