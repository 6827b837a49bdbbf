//! Equi-join of two inputs (Flink's regular join): each side's rows
//! are kept by join key; a row from one side is added to (or, retracted,
//! taken from) its side's rows and matched with the other side's rows of
//! the same key, each pair emitted once, when the later of its two rows
//! arrives. A row with a NULL in its key matches nothing and is not kept.
//! Under a memory budget, keys unchanged since a committed checkpoint leave
//! memory when it is exceeded, and come back from the store with a row.
//!
//! As an interval join (time bounds between the sides in its condition), a
//! side's row leaves the state once the watermark shows that no row still
//! to come on the other side can meet it, and the output watermark is held
//! back by as much as a pair's times can trail it.
//!
//! Outer joins (a side whose rows come out even when they meet nothing)
//! are processed in `outer`.

mod outer;

use std::sync::Arc;

use datafusion::arrow::array::{Array, UInt32Array};
use datafusion::arrow::array::{ArrayRef, RecordBatch, RecordBatchOptions};
use datafusion::arrow::compute::take_record_batch;
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::physical_expr::PhysicalExpr;

use super::conform::{conform, nanos, nullable};
use super::filter::FilterOp;
use super::join_rows::{decode_rows, segment_of, SideRows};
use super::project::evaluate;
use crate::runtime::chunk::{Chunk, Op};
use crate::runtime::message::{EventTime, Message};
use crate::runtime::operator::{Operator, StateAccess};
use crate::runtime::RuntimeError;
use crate::state::{Entries, OperatorWriter, RowCodec};

/// What the join needs to know of one of its inputs.
pub struct JoinSide {
    /// The key expressions over the side's rows.
    pub keys: Vec<Arc<dyn PhysicalExpr>>,
    /// The side's schema, a column of type Null where the join's output
    /// is not read and the join does not read it either.
    pub schema: SchemaRef,
    /// The side only ever inserts.
    pub append_only: bool,
    /// As one side of an interval join: its time column, and how long
    /// after it (ns) the watermark must be for a row to leave the state.
    pub expiry: Option<(usize, i64)>,
    /// Its rows come out even when they meet nothing (an outer join).
    pub preserved: bool,
}

struct Side {
    keys: Vec<Arc<dyn PhysicalExpr>>,
    schema: SchemaRef,
    codec: RowCodec,
    append_only: bool,
    rows: SideRows,
    expiry: Option<Expiry>,
    preserved: bool,
}

/// When an interval join side's rows expire.
struct Expiry {
    column: usize,
    retention: i64,
}

impl Expiry {
    /// When each row of `batch` expires (never for a NULL time, which meets
    /// nothing: at once).
    fn of(&self, batch: &RecordBatch) -> Result<Vec<EventTime>, RuntimeError> {
        let times = nanos(batch.column(self.column))?;
        Ok((0..batch.num_rows())
            .map(|i| match times.is_null(i) {
                true => EventTime::MIN,
                false => times.value(i).saturating_add(self.retention),
            })
            .collect())
    }
}

pub struct JoinOp {
    sides: [Side; 2],
    /// The stored state and the memory budget, once attached.
    access: Option<StateAccess>,
    /// What was last reported to the budget.
    reported: usize,
    /// Encodes the keys of both sides alike (as the exchanges do).
    key_codec: RowCodec,
    /// The left side's columns, then the right side's.
    schema: SchemaRef,
    filter: Option<FilterOp>,
    /// How far behind the input watermark the output's stays (ns).
    hold: i64,
}

impl JoinOp {
    /// `key_schema`: the keys' types, both sides' keys being of these;
    /// `hold`: how far to hold the output watermark back.
    pub fn new(
        left: JoinSide,
        right: JoinSide,
        key_schema: SchemaRef,
        filter: Option<Arc<dyn PhysicalExpr>>,
        hold: i64,
    ) -> Result<Self, RuntimeError> {
        let side = |s: JoinSide| -> Result<Side, RuntimeError> {
            let schema = nullable(&s.schema);
            let mut rows = match s.preserved {
                true => SideRows::counting_matches(),
                false => SideRows::default(),
            };
            rows.segmented = s.expiry.is_some() && s.append_only && !s.preserved;
            Ok(Side {
                codec: RowCodec::new(schema.clone())?,
                keys: s.keys,
                schema,
                append_only: s.append_only,
                rows,
                preserved: s.preserved,
                expiry: s
                    .expiry
                    .map(|(column, retention)| Expiry { column, retention }),
            })
        };
        let (left, right) = (side(left)?, side(right)?);
        let fields: Vec<_> = left
            .schema
            .fields()
            .iter()
            .chain(right.schema.fields())
            .cloned()
            .collect();
        Ok(JoinOp {
            access: None,
            reported: 0,
            schema: Arc::new(Schema::new(fields)),
            sides: [left, right],
            key_codec: RowCodec::new(key_schema)?,
            filter: filter.map(FilterOp::new),
            hold,
        })
    }

    /// Gives the rows of side `side` read from the store their expiry.
    fn schedule_restored(&mut self, side: usize) -> Result<(), RuntimeError> {
        if self.sides[side].expiry.is_some() {
            for key in self.sides[side].rows.without_expiry() {
                self.schedule(side, &key)?;
            }
        }
        Ok(())
    }

    /// Gives the rows of a key of side `side` their expiry and queues the
    /// key for the first (a timed side).
    fn schedule(&mut self, side: usize, key: &[u8]) -> Result<(), RuntimeError> {
        let s = &mut self.sides[side];
        let Some(expiry) = &s.expiry else {
            return Ok(());
        };
        let rows: Vec<&[u8]> = s.rows.get(key).iter().map(|(r, _)| &r[..]).collect();
        let at = expiry.of(&s.codec.decode(rows)?)?;
        s.rows.set_expiry(key, at);
        Ok(())
    }

    /// Queues a key whose record `value` of side `side` stays in the store
    /// for when the first of the record's rows expires.
    fn queue_stored(&mut self, side: usize, key: &[u8], value: &[u8]) -> Result<(), RuntimeError> {
        let s = &mut self.sides[side];
        let Some(expiry) = &s.expiry else {
            return Ok(());
        };
        let rows = decode_rows(value)?;
        let batch = s.codec.decode(rows.iter().map(|(r, _)| &r[..]))?;
        if let Some(first) = expiry.of(&batch)?.into_iter().min() {
            s.rows.queue_stored(first, key);
        }
        Ok(())
    }

    /// Takes out the rows of each side that expire by `watermark`: those
    /// of keys left in the store are read back first.
    fn expire(&mut self, watermark: EventTime) -> Result<(), RuntimeError> {
        for side in 0..2 {
            if self.sides[side].expiry.is_none() {
                continue;
            }
            for key in self.sides[side].rows.stored_due(watermark) {
                // Read back since (a row came for it): queued in memory then.
                if self.sides[side].rows.has(&key) {
                    continue;
                }
                self.load(side, &key)?;
                // Emptied and deleted since it was queued: nothing to keep.
                if self.sides[side].rows.get(&key).is_empty() {
                    self.sides[side].rows.evict(&key);
                }
            }
            self.sides[side].rows.expire(watermark);
        }
        self.report();
        Ok(())
    }

    /// Whether keys may leave memory: a budget with a limit is attached.
    fn limited(&self) -> bool {
        self.access
            .as_ref()
            .is_some_and(|a| a.budget.limit().is_some())
    }

    /// Reads a key of side `side` that left memory back from the store.
    fn load(&mut self, side: usize, key: &[u8]) -> Result<(), RuntimeError> {
        let a = self.access.as_ref().expect("only a limited join spills");
        let records: Vec<(u8, Vec<u8>)> = a
            .job
            .operator_key_entries(a.index, key)?
            .into_iter()
            .filter_map(|(entry, value)| match entry.as_slice() {
                [s, r] if *s as usize == side => Some((*r, value)),
                _ => None,
            })
            .collect();
        a.budget.count_loaded(1);
        self.sides[side].rows.load(key, &records)?;
        self.schedule(side, key)
    }

    /// Reads the keys of a chunk from side `input` that left memory back
    /// from the store, on both sides.
    fn load_keys(
        &mut self,
        input: usize,
        keys: &[ArrayRef],
        encoded: &datafusion::arrow::row::Rows,
    ) -> Result<(), RuntimeError> {
        if !self.sides.iter().any(|s| s.rows.spilled) {
            return Ok(());
        }
        for i in 0..encoded.num_rows() {
            if keys.iter().any(|k| k.is_null(i)) {
                continue;
            }
            let key = encoded.row(i);
            for s in [input, 1 - input] {
                if !self.sides[s].rows.has(key.as_ref()) {
                    self.load(s, key.as_ref())?;
                }
            }
        }
        Ok(())
    }

    /// Tells the budget what both sides hold now.
    fn report(&mut self) {
        let bytes = self.sides[0].rows.bytes() + self.sides[1].rows.bytes();
        if let Some(a) = &self.access {
            a.budget.report(self.reported, bytes);
        }
        self.reported = bytes;
    }

    /// Over the budget, moves the least recently touched keys that are
    /// unchanged since a committed checkpoint out of memory, down to this
    /// operator's share.
    fn evict(&mut self) {
        let Some(a) = self.access.as_ref().filter(|_| self.limited()) else {
            return;
        };
        let own = self.reported;
        let Some(keep) = a.budget.share_of(own) else {
            return;
        };
        let committed = *a.committed.borrow();
        let mut candidates: Vec<(u64, usize, Vec<u8>, usize)> = Vec::new();
        for (i, side) in self.sides.iter().enumerate() {
            for (touched, key, bytes) in side.rows.evictable(committed) {
                candidates.push((touched, i, key.to_vec(), bytes));
            }
        }
        candidates.sort_unstable_by_key(|c| c.0);
        let mut bytes = own;
        let mut evicted = 0;
        for (_, side, key, size) in candidates {
            if bytes <= keep {
                break;
            }
            bytes -= size;
            self.sides[side].rows.evict(&key);
            evicted += 1;
        }
        a.budget.count_evicted(evicted);
        self.report();
    }

    /// Whether the output carries retractions (an inner join's: a side does).
    fn updating(&self) -> bool {
        !self.sides.iter().all(|s| s.append_only)
    }
}

impl Operator for JoinOp {
    fn name(&self) -> &'static str {
        match self.sides.iter().any(|s| s.expiry.is_some()) {
            true => "IntervalJoin",
            false => "HashJoin",
        }
    }

    fn process(&mut self, chunk: Chunk, out: &mut Vec<Message>) -> Result<(), RuntimeError> {
        self.process_input(0, chunk, out)
    }

    fn process_input(
        &mut self,
        input: usize,
        chunk: Chunk,
        out: &mut Vec<Message>,
    ) -> Result<(), RuntimeError> {
        if self.sides.iter().any(|s| s.preserved) {
            return self.process_outer(input, chunk, out);
        }
        let updating = self.updating();
        let batch = conform(&chunk.batch, &self.sides[input].schema)?;
        let keys = evaluate(&self.sides[input].keys, &batch)?;
        let encoded_keys = self.key_codec.rows(&keys)?;
        self.load_keys(input, &keys, &encoded_keys)?;
        let [left, right] = &mut self.sides;
        let (me, other) = match input {
            0 => (left, &*right),
            _ => (right, &*left),
        };
        let rows = me.codec.rows(batch.columns())?;
        let expires = me.expiry.as_ref().map(|e| e.of(&batch)).transpose()?;
        let mut probe: Vec<u32> = Vec::new();
        let mut matched: Vec<&[u8]> = Vec::new();
        let mut ops: Vec<Op> = Vec::new();
        for i in 0..batch.num_rows() {
            if keys.iter().any(|k| k.is_null(i)) {
                continue;
            }
            let (key, row) = (encoded_keys.row(i), rows.row(i));
            let add = chunk.op(i).is_addition();
            if add {
                let at = expires.as_ref().map(|e| e[i]);
                me.rows
                    .add(key.as_ref(), row.as_ref(), !me.append_only, at, 0);
            } else if me.rows.remove(key.as_ref(), row.as_ref()).is_none() {
                // Never added, so it never matched: nothing to take back.
                continue;
            }
            let op = if add { Op::Insert } else { Op::Delete };
            for (r, count) in other.rows.get(key.as_ref()) {
                for _ in 0..*count {
                    probe.push(i as u32);
                    matched.push(r.as_ref());
                    ops.push(op);
                }
            }
        }
        if probe.is_empty() {
            return Ok(());
        }
        let mine = take_record_batch(&batch, &UInt32Array::from(probe))?;
        let theirs = other.codec.decode(matched)?;
        let (l, r) = match input {
            0 => (mine.columns(), theirs.columns()),
            _ => (theirs.columns(), mine.columns()),
        };
        let columns: Vec<ArrayRef> = l.iter().chain(r).cloned().collect();
        let options = RecordBatchOptions::new().with_row_count(Some(ops.len()));
        let joined = RecordBatch::try_new_with_options(self.schema.clone(), columns, &options)?;
        let chunk = match updating {
            true => Chunk::with_ops(joined, ops),
            false => Chunk::inserts(joined),
        };
        match &mut self.filter {
            Some(f) => f.process(chunk, out),
            None => {
                out.push(Message::Data(chunk));
                Ok(())
            }
        }
    }

    fn on_watermark(&mut self, wm: EventTime, out: &mut Vec<Message>) -> Result<(), RuntimeError> {
        self.expire(wm)?;
        out.push(Message::Watermark(wm.saturating_sub(self.hold)));
        Ok(())
    }

    fn checkpoint(&mut self, state: &mut OperatorWriter<'_>) -> Result<(), RuntimeError> {
        for (i, side) in self.sides.iter_mut().enumerate() {
            side.rows.checkpoint(i as u8, state);
        }
        self.report();
        self.evict();
        Ok(())
    }

    fn attach_state(&mut self, access: StateAccess) {
        self.access = Some(access);
        let limited = self.limited();
        for side in &mut self.sides {
            side.rows.keeps_emptied = limited;
        }
    }

    fn restore_entries(&mut self, entries: Entries) -> Result<(), RuntimeError> {
        // Under a budget, a key is loaded only while it fits; the others
        // are read from the store when a row for them comes.
        let mut skipping: Option<Vec<u8>> = None;
        for (key, entry, value) in entries {
            if let Some((key_group, epoch)) = segment_of(&entry) {
                // Rows by time, of many keys: always loaded.
                let side = entry[0] as usize & 1;
                self.sides[side]
                    .rows
                    .restore_segment(key_group, epoch, &value)?;
                continue;
            }
            let (side, record) = match entry.as_slice() {
                [s @ (0 | 1), r] => (*s as usize, *r),
                _ => {
                    return Err(RuntimeError::Internal(format!(
                        "unknown join state entry {entry:?}"
                    )))
                }
            };
            if skipping.as_ref() != Some(&key) && !self.sides.iter().any(|s| s.rows.holds(&key)) {
                self.report();
                let fits = self.access.as_ref().is_none_or(|a| a.budget.fits(0));
                if !fits {
                    for side in &mut self.sides {
                        side.rows.spilled = true;
                    }
                    skipping = Some(key.clone());
                }
            }
            if skipping.as_ref() == Some(&key) {
                // Left in the store, but queued for when its rows expire
                // (read back then), so that they do not stay there forever.
                self.queue_stored(side, &key, &value)?;
                continue;
            }
            self.sides[side].rows.restore(&key, record, &value)?;
        }
        for side in 0..2 {
            self.schedule_restored(side)?;
        }
        self.report();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{AsArray, Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Int64Type};
    use datafusion::physical_expr::expressions::Column;

    fn side_schema(value: (&str, DataType)) -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, true),
            Field::new(value.0, value.1, true),
        ]))
    }

    /// Left (k, a BIGINT), right (k, b TEXT); left updating when `retracting`.
    fn join(retracting: bool) -> JoinOp {
        let side = |value, append_only| JoinSide {
            keys: vec![Arc::new(Column::new("k", 0))],
            schema: side_schema(value),
            append_only,
            expiry: None,
            preserved: false,
        };
        JoinOp::new(
            side(("a", DataType::Int64), !retracting),
            side(("b", DataType::Utf8), true),
            side_schema(("unused", DataType::Null))
                .project(&[0])
                .unwrap()
                .into(),
            None,
            0,
        )
        .unwrap()
    }

    fn left(rows: &[(Option<i64>, i64, Op)]) -> Chunk {
        let batch = RecordBatch::try_new(
            side_schema(("a", DataType::Int64)),
            vec![
                Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.0))),
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1))),
            ],
        )
        .unwrap();
        Chunk::with_ops(batch, rows.iter().map(|r| r.2).collect())
    }

    fn right(rows: &[(Option<i64>, &str)]) -> Chunk {
        let batch = RecordBatch::try_new(
            side_schema(("b", DataType::Utf8)),
            vec![
                Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.0))),
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.1))),
            ],
        )
        .unwrap();
        Chunk::inserts(batch)
    }

    /// What a join emits: (change, k, a, k, b) per row, sorted.
    type Pairs = Vec<(Op, i64, i64, i64, String)>;

    fn feed(j: &mut JoinOp, input: usize, chunk: Chunk) -> Pairs {
        let mut out = Vec::new();
        j.process_input(input, chunk, &mut out).unwrap();
        let mut pairs = Pairs::new();
        for m in out {
            let Message::Data(c) = m else { continue };
            let b = &c.batch;
            for i in 0..c.num_rows() {
                pairs.push((
                    c.op(i),
                    b.column(0).as_primitive::<Int64Type>().value(i),
                    b.column(1).as_primitive::<Int64Type>().value(i),
                    b.column(2).as_primitive::<Int64Type>().value(i),
                    b.column(3).as_string::<i32>().value(i).to_string(),
                ));
            }
        }
        pairs.sort_by_key(|p| (p.0 as u8, p.1, p.2, p.4.clone()));
        pairs
    }

    fn pair(op: Op, k: i64, a: i64, b: &str) -> (Op, i64, i64, i64, String) {
        (op, k, a, k, b.to_string())
    }

    #[test]
    fn each_pair_is_emitted_once_when_its_later_row_arrives() {
        use Op::Insert as I;
        let mut j = join(false);
        assert_eq!(
            feed(&mut j, 0, left(&[(Some(1), 10, I), (None, 11, I)])),
            vec![]
        );
        // Two right rows of key 1 meet the left row; a NULL key meets nothing.
        assert_eq!(
            feed(
                &mut j,
                1,
                right(&[(Some(1), "x"), (Some(1), "y"), (None, "z")])
            ),
            vec![pair(I, 1, 10, "x"), pair(I, 1, 10, "y")]
        );
        // A second left row of key 1 meets both; a key 2 row nothing yet.
        assert_eq!(
            feed(&mut j, 0, left(&[(Some(1), 12, I), (Some(2), 20, I)])),
            vec![pair(I, 1, 12, "x"), pair(I, 1, 12, "y")]
        );
        assert_eq!(
            feed(&mut j, 1, right(&[(Some(2), "w")])),
            vec![pair(I, 2, 20, "w")]
        );
        // The output of append-only sides carries no change kinds.
        let mut out = Vec::new();
        j.process_input(1, right(&[(Some(2), "v")]), &mut out)
            .unwrap();
        assert!(matches!(&out[..], [Message::Data(c)] if c.ops.is_none()));
    }

    #[test]
    fn a_retraction_takes_back_the_pairs_its_row_made() {
        use Op::{Delete as D, Insert as I, UpdateAfter as UA, UpdateBefore as UB};
        let mut j = join(true);
        feed(&mut j, 1, right(&[(Some(1), "x"), (Some(1), "y")]));
        assert_eq!(
            feed(&mut j, 0, left(&[(Some(1), 5, I), (Some(1), 5, I)])),
            vec![
                pair(I, 1, 5, "x"),
                pair(I, 1, 5, "x"),
                pair(I, 1, 5, "y"),
                pair(I, 1, 5, "y")
            ]
        );
        // An update of one of the two equal rows: its pairs go, new ones come.
        assert_eq!(
            feed(&mut j, 0, left(&[(Some(1), 5, UB), (Some(1), 6, UA)])),
            vec![
                pair(I, 1, 6, "x"),
                pair(I, 1, 6, "y"),
                pair(D, 1, 5, "x"),
                pair(D, 1, 5, "y")
            ]
        );
        // A row that is not there takes nothing back.
        assert_eq!(feed(&mut j, 0, left(&[(Some(1), 7, D)])), vec![]);
        // What is left of key 1: one 5 and one 6.
        assert_eq!(
            feed(&mut j, 1, right(&[(Some(1), "z")])),
            vec![pair(I, 1, 5, "z"), pair(I, 1, 6, "z")]
        );
    }

    fn temp_job() -> (tempfile::TempDir, crate::state::JobState) {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(crate::state::Store::open(dir.path()).unwrap());
        (dir, crate::state::JobState::new(store, 1))
    }

    fn commit(j: &mut JoinOp, job: &crate::state::JobState, epoch: u64) {
        let mut w = job.begin(epoch);
        j.checkpoint(&mut w.operator(0)).unwrap();
        job.commit(w, &crate::state::EpochRecord::bare(epoch))
            .unwrap();
    }

    fn restored(job: &crate::state::JobState) -> JoinOp {
        let mut j = join(true);
        j.restore_entries(job.operator_entries_of(0, 0, 1).unwrap())
            .unwrap();
        j
    }

    /// Epoch `e`'s input: left rows of keys 0..4 (some retracted later,
    /// some counted twice), right rows of keys 0..5.
    fn epoch_input(e: i64) -> Vec<(usize, Chunk)> {
        use Op::{Delete as D, Insert as I};
        let mut rows = vec![(Some(e % 4), e, I), (Some((e + 1) % 4), 100 + e % 3, I)];
        if e % 5 == 4 {
            rows.push((Some((e + 1) % 4), 100 + e % 3, D));
            rows.push((Some((e + 3) % 4), e - 2, D));
        }
        let name = format!("r{e}");
        vec![
            (0, left(&rows)),
            (1, right(&[(Some(e % 5), name.as_str()), (None, "n")])),
        ]
    }

    #[test]
    fn a_restored_join_gives_the_same_pairs_as_one_that_never_stopped() {
        // 40 epochs: keys gain records each epoch, retractions force
        // rewrites, and more than MAX_RECORDS epochs force them too.
        let (_dir, job) = temp_job();
        let mut straight = join(true);
        let mut before = join(true);
        for e in 0..40 {
            for (input, chunk) in epoch_input(e) {
                let a = feed(&mut straight, input, chunk.clone());
                assert_eq!(feed(&mut before, input, chunk), a);
            }
            commit(&mut before, &job, e as u64 + 1);
            if e % 9 == 8 {
                // Restore mid-way: from here on the restored operator runs.
                before = restored(&job);
            }
        }
        // Whatever each side holds meets a row of every key.
        let probe: Vec<(Option<i64>, &str)> = (0..5).map(|k| (Some(k), "p")).collect();
        let (a, b) = (
            feed(&mut straight, 1, right(&probe)),
            feed(&mut before, 1, right(&probe)),
        );
        assert!(!a.is_empty());
        assert_eq!(a, b);
        let all: Vec<(Option<i64>, i64, Op)> = (0..4).map(|k| (Some(k), 7, Op::Insert)).collect();
        assert_eq!(
            feed(&mut straight, 0, left(&all)),
            feed(&mut before, 0, left(&all))
        );
    }

    #[test]
    fn keys_over_the_budget_leave_memory_and_come_back_from_the_store() {
        use crate::state::MemoryBudget;
        use Op::{Delete as D, Insert as I};
        let (_dir, job) = temp_job();
        let (committed_tx, committed) = tokio::sync::watch::channel(0u64);
        // Room for a few of the 20 keys: fewer than an epoch touches.
        let limit = 1_000;
        let access = |budget: &Arc<MemoryBudget>| StateAccess {
            job: job.clone(),
            index: 0,
            committed: committed.clone(),
            budget: budget.clone(),
        };
        let budget = Arc::new(MemoryBudget::new(Some(limit)));
        let mut straight = join(true);
        let mut spilling = join(true);
        spilling.attach_state(access(&budget));
        // Epoch e: left rows of keys 3e .. 3e + 2 (mod 20), one of them
        // taken back two epochs later; right rows of keys 7e, 7e + 1.
        let input = |e: i64| {
            let mut rows: Vec<(Option<i64>, i64, Op)> = (0..3)
                .map(|i| (Some((e * 3 + i) % 20), e * 10 + i, I))
                .collect();
            if e >= 2 {
                rows.push((Some(((e - 2) * 3) % 20), (e - 2) * 10, D));
            }
            let names: Vec<String> = (0..2).map(|i| format!("r{e}_{i}")).collect();
            let theirs: Vec<(Option<i64>, &str)> = (0..2)
                .map(|i| (Some((e * 7 + i) % 20), names[i as usize].as_str()))
                .collect();
            vec![(0, left(&rows)), (1, right(&theirs))]
        };
        let run = |a: &mut JoinOp, b: &mut JoinOp, e: i64| {
            for (side, chunk) in input(e) {
                let want = feed(a, side, chunk.clone());
                assert_eq!(feed(b, side, chunk), want, "epoch {e}");
            }
        };
        // Each epoch commits only after the next one's checkpoint, as with
        // the job's writer thread: a key written in an epoch not yet
        // committed stays in memory.
        let mut pending: Option<(u64, crate::state::EpochWriter)> = None;
        for e in 1..=30u64 {
            run(&mut straight, &mut spilling, e as i64);
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
        assert!(budget.evicted() > 0, "keys left memory");
        assert!(budget.loaded() > 0, "keys came back");
        assert_eq!(budget.used(), spilling.reported);
        // Restored under the same budget: only what fits is loaded, the rest on demand.
        let restored_budget = Arc::new(MemoryBudget::new(Some(limit)));
        let mut restored = join(true);
        restored.attach_state(access(&restored_budget));
        restored
            .restore_entries(job.operator_entries_of(0, 0, 1).unwrap())
            .unwrap();
        assert!(restored.reported <= limit + 500, "{}", restored.reported);
        for e in 31..=36 {
            run(&mut straight, &mut restored, e);
        }
        assert!(restored_budget.loaded() > 0);
        // Whatever each side holds meets a row of every key.
        let probe: Vec<(Option<i64>, &str)> = (0..20).map(|k| (Some(k), "p")).collect();
        let want = feed(&mut straight, 1, right(&probe));
        assert!(want.len() > 20);
        assert_eq!(feed(&mut restored, 1, right(&probe)), want);
        let all: Vec<(Option<i64>, i64, Op)> = (0..20).map(|k| (Some(k), 7, I)).collect();
        assert_eq!(
            feed(&mut restored, 0, left(&all)),
            feed(&mut straight, 0, left(&all))
        );
    }

    #[test]
    fn a_key_emptied_in_an_epoch_not_yet_committed_is_not_read_back_as_it_was() {
        use crate::state::MemoryBudget;
        use Op::{Delete as D, Insert as I};
        let (_dir, job) = temp_job();
        let (committed_tx, committed) = tokio::sync::watch::channel(0u64);
        let mut j = join(true);
        j.attach_state(StateAccess {
            job: job.clone(),
            index: 0,
            committed,
            budget: Arc::new(MemoryBudget::new(Some(500))),
        });
        // Epoch 1, committed: key 1's row, and more keys than fit.
        let many: Vec<(Option<i64>, i64, Op)> = (1..12).map(|k| (Some(k), 5, I)).collect();
        feed(&mut j, 0, left(&many));
        commit(&mut j, &job, 1);
        committed_tx.send_replace(1);
        // Epoch 2 takes key 1's row back; its checkpoint (deleting the
        // key's record) is not committed when a right row for key 1 comes,
        // while keys of epoch 1 left memory.
        feed(&mut j, 0, left(&[(Some(1), 5, D)]));
        let mut w = job.begin(2);
        j.checkpoint(&mut w.operator(0)).unwrap();
        assert!(j.sides[0].rows.spilled);
        assert_eq!(feed(&mut j, 1, right(&[(Some(1), "x")])), vec![]);
        job.commit(w, &crate::state::EpochRecord::bare(2)).unwrap();
    }

    /// Both sides (k, t BIGINT), `t` a time in ns; the filter
    /// `lt >= rt + lower AND lt <= rt + upper`, and with `expire` the
    /// retention an interval join derives from it (event-time offsets 1).
    fn timed_join(lower: i64, upper: i64, expire: bool) -> JoinOp {
        use datafusion::logical_expr::Operator as O;
        use datafusion::physical_expr::expressions::{binary, lit};
        let schema = side_schema(("t", DataType::Int64));
        let interval = crate::plan::JoinInterval {
            left_time: 1,
            right_time: 1,
            left_offset: 1,
            right_offset: 1,
            lower: Some(lower),
            upper: Some(upper),
        };
        let side = |retention: Option<i64>| JoinSide {
            keys: vec![Arc::new(Column::new("k", 0))],
            schema: schema.clone(),
            append_only: true,
            expiry: retention.filter(|_| expire).map(|r| (1, r)),
            preserved: false,
        };
        let joined = Schema::new([schema.fields().to_vec(), schema.fields().to_vec()].concat());
        let (lt, rt) = (Arc::new(Column::new("t", 1)), Arc::new(Column::new("t", 3)));
        let shifted = |d: i64| binary(rt.clone(), O::Plus, lit(d), &joined).unwrap();
        let ge = binary(lt.clone(), O::GtEq, shifted(lower), &joined).unwrap();
        let le = binary(lt.clone(), O::LtEq, shifted(upper), &joined).unwrap();
        let filter = binary(ge, O::And, le, &joined).unwrap();
        JoinOp::new(
            side(interval.left_retention()),
            side(interval.right_retention()),
            schema.project(&[0]).unwrap().into(),
            Some(filter),
            if expire { interval.hold().unwrap() } else { 0 },
        )
        .unwrap()
    }

    fn timed(rows: &[(i64, i64)]) -> Chunk {
        let batch = RecordBatch::try_new(
            side_schema(("t", DataType::Int64)),
            vec![
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1))),
            ],
        )
        .unwrap();
        Chunk::inserts(batch)
    }

    /// (k, lt, rt) of each pair, sorted; and the watermarks that came out.
    fn timed_feed(j: &mut JoinOp, msg: Message, side: usize) -> (Vec<(i64, i64, i64)>, Vec<i64>) {
        let mut out = Vec::new();
        j.handle_input(side, msg, &mut out).unwrap();
        let (mut pairs, mut marks) = (Vec::new(), Vec::new());
        for m in out {
            match m {
                Message::Data(c) => {
                    let col = |i: usize| c.batch.column(i).as_primitive::<Int64Type>().clone();
                    let (k, lt, rt) = (col(0), col(1), col(3));
                    pairs.extend((0..c.num_rows()).map(|i| (k.value(i), lt.value(i), rt.value(i))));
                }
                Message::Watermark(w) => marks.push(w),
                _ => {}
            }
        }
        pairs.sort_unstable();
        (pairs, marks)
    }

    fn held(j: &JoinOp) -> usize {
        (0..4)
            .map(|k: i64| {
                let key = j
                    .key_codec
                    .rows(&[Arc::new(Int64Array::from(vec![k])) as ArrayRef])
                    .unwrap();
                j.sides
                    .iter()
                    .map(|s| s.rows.get(key.row(0).as_ref()).len())
                    .sum::<usize>()
            })
            .sum()
    }

    #[test]
    fn an_interval_join_meets_what_a_regular_one_does_and_forgets_expired_rows() {
        // lt in [rt - 10, rt + 3]: a left row waits 11 past its time for
        // right rows, a right row 4; the output watermark trails by 10.
        let mut regular = timed_join(-10, 3, false);
        let mut interval = timed_join(-10, 3, true);
        let (_dir, job) = temp_job();
        let mut below = crate::testing::below(11);
        let mut next = move |n: u64| below(n) as i64;
        let mut wm = 0;
        let mut pairs = 0;
        for step in 0..4000 {
            if next(4) == 0 {
                wm += next(6);
                let (_, out) = timed_feed(&mut regular, Message::Watermark(wm), 0);
                assert_eq!(out, vec![wm]);
                let (_, out) = timed_feed(&mut interval, Message::Watermark(wm), 0);
                assert_eq!(out, vec![wm - 10], "the output watermark is held back");
                // What is left can still meet a row to come: lt + 11 > wm, rt + 4 > wm.
                assert!(
                    held(&interval) <= 4 * 15 + 4 * 15,
                    "step {step}: {}",
                    held(&interval)
                );
            }
            // On time: at or after the watermark.
            let side = next(2) as usize;
            let rows: Vec<(i64, i64)> = (0..next(3)).map(|_| (next(4), wm + next(15))).collect();
            let a = timed_feed(&mut regular, Message::Data(timed(&rows)), side).0;
            let b = timed_feed(&mut interval, Message::Data(timed(&rows)), side).0;
            assert_eq!(a, b, "step {step}");
            pairs += a.len();
            if step % 997 == 0 {
                // Through a checkpoint and a restore, expiry goes on.
                commit(&mut interval, &job, step as u64 + 1);
                let mut restored = timed_join(-10, 3, true);
                restored
                    .restore_entries(job.operator_entries_of(0, 0, 1).unwrap())
                    .unwrap();
                // Stored by time, rows that expired since their segment was
                // written come back too, and go at the next watermark.
                assert!(held(&restored) >= held(&interval));
                timed_feed(&mut restored, Message::Watermark(wm), 0);
                assert_eq!(held(&restored), held(&interval));
                interval = restored;
            }
        }
        assert!(pairs > 1000, "{pairs}");
        assert!(held(&regular) > 10 * held(&interval));
    }

    #[test]
    fn an_interval_join_restored_under_a_budget_expires_rows_left_in_the_store() {
        use crate::state::MemoryBudget;
        let (_dir, job) = temp_job();
        let (committed_tx, committed) = tokio::sync::watch::channel(0u64);
        let limited = || {
            let mut j = timed_join(-10, 3, true);
            j.attach_state(StateAccess {
                job: job.clone(),
                index: 0,
                committed: committed.clone(),
                // Room for a key or two of the four.
                budget: Arc::new(MemoryBudget::new(Some(400))),
            });
            j
        };
        let mut j = limited();
        for t in 0..20 {
            timed_feed(&mut j, Message::Data(timed(&[(t % 4, t)])), 0);
            timed_feed(&mut j, Message::Data(timed(&[(t % 4, t + 1)])), 1);
        }
        commit(&mut j, &job, 1);
        committed_tx.send_replace(1);
        let mut r = limited();
        r.restore_entries(job.operator_entries_of(0, 0, 1).unwrap())
            .unwrap();
        assert!(r.sides[0].rows.spilled, "some keys stayed in the store");
        // The watermark passes every row: all of them leave, those in the
        // store too (read back to be deleted), once the epoch commits.
        timed_feed(&mut r, Message::Watermark(1_000), 0);
        commit(&mut r, &job, 2);
        assert_eq!(job.operator_entries_of(0, 0, 1).unwrap().len(), 0);
    }

    #[test]
    fn a_key_whose_rows_are_all_gone_leaves_no_entries() {
        use Op::{Delete as D, Insert as I};
        let (_dir, job) = temp_job();
        let mut j = join(true);
        for e in 0..3 {
            feed(&mut j, 0, left(&[(Some(1), e, I), (Some(2), e, I)]));
            commit(&mut j, &job, e as u64 + 1);
        }
        let entries = |job: &crate::state::JobState| job.operator_entries_of(0, 0, 1).unwrap();
        // Key 1 and key 2 each wrote a record per epoch.
        assert_eq!(entries(&job).len(), 6);
        feed(
            &mut j,
            0,
            left(&[
                (Some(1), 0, D),
                (Some(1), 1, D),
                (Some(1), 2, D),
                (Some(2), 0, D),
            ]),
        );
        commit(&mut j, &job, 4);
        // Key 2 rewritten as one record of its two rows; key 1 gone.
        let left_over = entries(&job);
        assert_eq!(left_over.len(), 1, "{left_over:?}");
        assert_eq!(left_over[0].1, vec![0, 0]);
        let mut r = restored(&job);
        assert_eq!(
            feed(&mut r, 1, right(&[(Some(1), "x"), (Some(2), "y")])),
            vec![pair(I, 2, 1, "y"), pair(I, 2, 2, "y")]
        );
    }

    #[test]
    fn interval_join_rows_are_stored_by_time_and_by_key_under_a_budget() {
        use crate::state::MemoryBudget;
        let (_dir, job) = temp_job();
        let entries = || job.operator_entries_of(0, 0, 1).unwrap();
        let mut j = timed_join(-10, 3, true);
        // Rows of keys 0..4 at times `times`, on alternate sides.
        let feed = |j: &mut JoinOp, times: std::ops::Range<i64>| {
            for t in times {
                timed_feed(j, Message::Data(timed(&[(t % 4, t)])), (t % 2) as usize);
            }
        };
        // Epoch 1: times 0..40; epoch 2: 40..60.
        feed(&mut j, 0..40);
        commit(&mut j, &job, 1);
        let first = entries();
        assert!(!first.is_empty());
        assert!(
            first
                .iter()
                .all(|(k, e, _)| k.is_empty() && segment_of(e).is_some()),
            "one entry per key group and side, not per key"
        );
        feed(&mut j, 40..60);
        commit(&mut j, &job, 2);
        assert!(entries().len() > first.len());
        // Past every row of epoch 1 (left rows wait 11, right rows 4), not of
        // epoch 2: epoch 1's segments go.
        timed_feed(&mut j, Message::Watermark(52), 0);
        commit(&mut j, &job, 3);
        let left = entries();
        assert!(
            left.iter().all(|(_, e, _)| segment_of(e).unwrap().1 == 2),
            "{left:?}"
        );
        let held_before = held(&j);

        // Restored under a budget: the rows are written by key, the segments deleted.
        let (_tx, committed) = tokio::sync::watch::channel(3u64);
        let mut r = timed_join(-10, 3, true);
        r.attach_state(StateAccess {
            job: job.clone(),
            index: 0,
            committed,
            budget: Arc::new(MemoryBudget::new(Some(1 << 20))),
        });
        r.restore_entries(entries()).unwrap();
        timed_feed(&mut r, Message::Watermark(52), 0);
        assert_eq!(held(&r), held_before);
        commit(&mut r, &job, 4);
        let by_key = entries();
        assert!(!by_key.is_empty());
        assert!(
            by_key.iter().all(|(k, e, _)| !k.is_empty() && e.len() == 2),
            "{by_key:?}"
        );

        // And back by time without a budget; all gone once all expired.
        let mut t = timed_join(-10, 3, true);
        t.restore_entries(entries()).unwrap();
        assert_eq!(held(&t), held_before);
        timed_feed(&mut t, Message::Watermark(1_000), 0);
        assert_eq!(held(&t), 0);
        commit(&mut t, &job, 5);
        assert_eq!(entries().len(), 0);
    }
}
