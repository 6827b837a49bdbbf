//! Flink's Top-N: per partition, the first `limit` rows in an order
//! (`ROW_NUMBER() OVER (PARTITION BY .. ORDER BY ..)` filtered to `rn <= N`).
//! Rows of equal order rank by arrival: an earlier row stays ahead.
//!
//! A chunk's rows go into their partitions; then each partition it touched
//! emits what changed among its first `limit` rows: with the row number
//! read downstream, every rank whose row changed is updated; without it,
//! rows that left are deleted and rows that entered inserted. Over an
//! append-only input a partition keeps only its first `limit` rows (a later
//! row can never rank higher again); over an updating input it keeps them all,
//! since a retraction can promote any of them. A partition's kept rows are
//! checkpointed as one value when it changed. Under a memory budget,
//! partitions unchanged since a committed checkpoint leave memory when it is
//! exceeded, and come back from the store with a row.

use std::sync::Arc;

use datafusion::arrow::array::{new_null_array, ArrayRef, RecordBatch, UInt64Array};
use datafusion::arrow::compute::SortOptions;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::physical_expr::PhysicalExpr;
use hashbrown::hash_map::EntryRef;
use hashbrown::{HashMap, HashSet};

use super::conform::{conform, nullable};
use super::project::evaluate;
use crate::runtime::chunk::{Chunk, Op};
use crate::runtime::message::Message;
use crate::runtime::operator::{Operator, StateAccess};
use crate::runtime::RuntimeError;
use crate::state::{OperatorWriter, RowCodec};

/// One order expression: what it sorts on, and how.
pub struct OrderBy {
    pub expr: Arc<dyn PhysicalExpr>,
    pub options: SortOptions,
    pub data_type: DataType,
}

/// What a Top-N is built from.
pub struct TopNSpec {
    pub partition: Vec<Arc<dyn PhysicalExpr>>,
    /// The partition key's schema, as the exchange into the Top-N encodes it.
    pub key_schema: SchemaRef,
    pub order: Vec<OrderBy>,
    /// The input's schema (a column of type Null where nothing reads it).
    pub input_schema: SchemaRef,
    /// The row number column's name.
    pub rank_name: String,
    pub limit: usize,
    /// Whether anything downstream reads the row number.
    pub with_rank: bool,
    pub append_only: bool,
}

/// A partition's rows sorted by (order key, arrival), encoded. A sorted
/// vector: most partitions hold one row or a few (a B-tree's smallest node
/// is about ten times the size of one row's entry).
type Partition = Vec<((Vec<u8>, u64), Vec<u8>)>;

/// Estimated bytes of a partition besides its rows (map slot, key held
/// twice, fields), and of a row besides its bytes.
const KEY_BASE: usize = 112;
const ROW_BASE: usize = 64;

/// A partition in memory.
#[derive(Default)]
struct Part {
    rows: Partition,
    /// Estimated bytes of its rows.
    bytes: usize,
    /// When it was last touched (the operator's count of touches).
    touched: u64,
    /// The epoch whose checkpoint last wrote it (0: restored).
    written: u64,
}

pub struct TopNOp {
    partition: Vec<Arc<dyn PhysicalExpr>>,
    key_codec: RowCodec,
    order: Vec<Arc<dyn PhysicalExpr>>,
    /// Encodes order keys so that byte order is the ORDER BY's.
    sort: RowConverter,
    rows: RowCodec,
    input_schema: SchemaRef,
    schema: SchemaRef,
    limit: usize,
    with_rank: bool,
    append_only: bool,
    partitions: HashMap<Vec<u8>, Part>,
    /// Partitions changed since the last checkpoint.
    dirty: HashSet<Vec<u8>>,
    /// Arrival number of the next row.
    seq: u64,
    /// The stored state and the memory budget, once attached.
    access: Option<StateAccess>,
    /// Estimated bytes of the partitions in memory, and what was last
    /// reported to the budget.
    bytes: usize,
    reported: usize,
    touches: u64,
    /// Some partitions are only in the store.
    spilled: bool,
    /// Partitions may leave memory: a budget with a limit is attached.
    limited: bool,
}

impl TopNOp {
    pub fn new(spec: TopNSpec) -> Result<Self, RuntimeError> {
        let fields = spec
            .order
            .iter()
            .map(|o| SortField::new_with_options(o.data_type.clone(), o.options))
            .collect();
        let input_schema = nullable(&spec.input_schema);
        let rank_type = match spec.with_rank {
            true => DataType::UInt64,
            false => DataType::Null,
        };
        let mut out: Vec<Field> = input_schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        out.push(Field::new(spec.rank_name, rank_type, true));
        Ok(TopNOp {
            partition: spec.partition,
            key_codec: RowCodec::new(spec.key_schema)?,
            order: spec.order.into_iter().map(|o| o.expr).collect(),
            sort: RowConverter::new(fields)?,
            rows: RowCodec::new(input_schema.clone())?,
            input_schema,
            schema: Arc::new(Schema::new(out)),
            limit: spec.limit,
            with_rank: spec.with_rank,
            append_only: spec.append_only,
            partitions: HashMap::new(),
            dirty: HashSet::new(),
            seq: 0,
            access: None,
            bytes: 0,
            reported: 0,
            touches: 0,
            spilled: false,
            limited: false,
        })
    }

    /// Puts stored rows (in order) into memory as a partition.
    fn insert_stored(&mut self, key: Vec<u8>, stored: Stored) {
        let mut part = Part::default();
        for (sort, row) in stored {
            part.bytes += ROW_BASE + sort.len() + row.len();
            part.rows.push(((sort, self.seq), row));
            self.seq += 1;
        }
        self.bytes += KEY_BASE + key.len() + part.bytes;
        self.partitions.insert(key, part);
    }

    /// Reads a partition that left memory back from the store (empty when
    /// it has no stored rows).
    fn load(&mut self, key: &[u8]) -> Result<(), RuntimeError> {
        let a = self.access.as_ref().expect("only a limited Top-N spills");
        let stored = match a.job.operator_get(a.index, key)? {
            Some(value) => decode(&value)?,
            None => Vec::new(),
        };
        a.budget.count_loaded(1);
        self.insert_stored(key.to_vec(), stored);
        Ok(())
    }

    fn report(&mut self) {
        if let Some(a) = &self.access {
            a.budget.report(self.reported, self.bytes);
        }
        self.reported = self.bytes;
    }

    /// Over the budget, moves the least recently touched partitions that
    /// are unchanged since a committed checkpoint out of memory, down to
    /// this operator's share.
    fn evict(&mut self) {
        let Some(a) = self.access.as_ref().filter(|_| self.limited) else {
            return;
        };
        let Some(keep) = a.budget.share_of(self.bytes) else {
            return;
        };
        let committed = *a.committed.borrow();
        let mut candidates: Vec<(u64, &Vec<u8>, usize)> = self
            .partitions
            .iter()
            .filter(|(k, p)| p.written <= committed && !self.dirty.contains(*k))
            .map(|(k, p)| (p.touched, k, KEY_BASE + k.len() + p.bytes))
            .collect();
        candidates.sort_unstable_by_key(|c| c.0);
        let mut bytes = self.bytes;
        let mut out = Vec::new();
        for (_, key, size) in candidates {
            if bytes <= keep {
                break;
            }
            bytes -= size;
            out.push(key.clone());
        }
        a.budget.count_evicted(out.len() as u64);
        for key in &out {
            self.partitions.remove(key);
        }
        self.spilled |= !out.is_empty();
        self.bytes = bytes;
        self.report();
    }

    /// The rows a partition shows now, in rank order.
    fn top(&self, key: &[u8]) -> Vec<Vec<u8>> {
        self.partitions
            .get(key)
            .map(|p| {
                p.rows
                    .iter()
                    .take(self.limit)
                    .map(|(_, r)| r.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Puts a row in or takes it out of its partition.
    fn apply(&mut self, key: &[u8], sort: &[u8], row: &[u8], add: bool) {
        let limited = self.limited;
        self.touches += 1;
        let p = match self.partitions.entry_ref(key) {
            EntryRef::Occupied(o) => o.into_mut(),
            EntryRef::Vacant(v) => {
                self.bytes += KEY_BASE + key.len();
                v.insert(Part::default())
            }
        };
        p.touched = self.touches;
        let before = p.bytes;
        let part = &mut p.rows;
        if add {
            if self.append_only && part.len() >= self.limit {
                // After the last kept row: it can never rank in.
                if part
                    .last()
                    .is_some_and(|((last, _), _)| sort >= last.as_slice())
                {
                    return;
                }
            }
            // After every row of an order key not above its own: it arrived last.
            let at = part.partition_point(|((s, _), _)| s.as_slice() <= sort);
            part.insert(at, ((sort.to_vec(), self.seq), row.to_vec()));
            p.bytes += ROW_BASE + sort.len() + row.len();
            self.seq += 1;
            if self.append_only && part.len() > self.limit {
                if let Some(((s, _), r)) = part.pop() {
                    p.bytes -= ROW_BASE + s.len() + r.len();
                }
            }
        } else {
            let from = part.partition_point(|((s, _), _)| s.as_slice() < sort);
            let found = part[from..]
                .iter()
                .take_while(|((s, _), _)| s.as_slice() == sort)
                .position(|(_, r)| r.as_slice() == row);
            if let Some(i) = found {
                part.remove(from + i);
                p.bytes -= ROW_BASE + sort.len() + row.len();
            }
        }
        self.bytes = self.bytes + p.bytes - before;
        // Under a budget an emptied partition stays until its deletion is
        // committed, so that it is not read back from the store as it was.
        if p.rows.is_empty() && !limited {
            self.bytes -= KEY_BASE + key.len();
            self.partitions.remove(key);
        }
        if !self.dirty.contains(key) {
            self.dirty.insert(key.to_vec());
        }
    }
}

/// Changes to emit: (row, change, row number).
type Changes = Vec<(Vec<u8>, Op, u64)>;

/// What changed from `old` to `new` (rows in rank order): per rank, when
/// the row number is shown; else the rows that left and those that came.
fn diff(old: Vec<Vec<u8>>, new: Vec<Vec<u8>>, with_rank: bool, out: &mut Changes) {
    if with_rank {
        let n = old.len().max(new.len());
        let (mut old, mut new) = (old.into_iter(), new.into_iter());
        for r in 1..=n as u64 {
            match (old.next(), new.next()) {
                (Some(o), Some(n)) if o == n => {}
                (Some(o), Some(n)) => {
                    out.push((o, Op::UpdateBefore, r));
                    out.push((n, Op::UpdateAfter, r));
                }
                (Some(o), None) => out.push((o, Op::Delete, r)),
                (None, Some(n)) => out.push((n, Op::Insert, r)),
                (None, None) => {}
            }
        }
        return;
    }
    let mut came: Vec<Option<Vec<u8>>> = new.into_iter().map(Some).collect();
    for o in old {
        match came.iter().position(|n| n.as_ref() == Some(&o)) {
            Some(j) => came[j] = None,
            None => out.push((o, Op::Delete, 0)),
        }
    }
    out.extend(came.into_iter().flatten().map(|n| (n, Op::Insert, 0)));
}

impl Operator for TopNOp {
    fn name(&self) -> &'static str {
        "TopN"
    }

    fn process(&mut self, chunk: Chunk, out: &mut Vec<Message>) -> Result<(), RuntimeError> {
        let batch = conform(&chunk.batch, &self.input_schema)?;
        // Without PARTITION BY every row is in the one partition, keyed by no bytes.
        let keys = match self.partition.is_empty() {
            true => None,
            false => Some(self.key_codec.rows(&evaluate(&self.partition, &batch)?)?),
        };
        let sorts = self.sort.convert_columns(&evaluate(&self.order, &batch)?)?;
        let rows = self.rows.rows(batch.columns())?;
        // Each touched partition's rows before the chunk.
        let mut before: HashMap<Vec<u8>, Vec<Vec<u8>>> = HashMap::new();
        for i in 0..batch.num_rows() {
            let key = keys.as_ref().map_or(&[][..], |k| k.row(i).data());
            if self.spilled && !self.partitions.contains_key(key) {
                self.load(key)?;
            }
            if !before.contains_key(key) {
                before.insert(key.to_vec(), self.top(key));
            }
            let add = chunk.op(i).is_addition();
            self.apply(key, sorts.row(i).as_ref(), rows.row(i).as_ref(), add);
        }
        let mut changes = Changes::new();
        for (key, old) in before {
            let new = self.top(&key);
            diff(old, new, self.with_rank, &mut changes);
        }
        self.report();
        if changes.is_empty() {
            return Ok(());
        }
        let decoded = self
            .rows
            .decode(changes.iter().map(|(r, _, _)| r.as_slice()))?;
        let rank: ArrayRef = match self.with_rank {
            true => Arc::new(UInt64Array::from_iter_values(changes.iter().map(|c| c.2))),
            false => new_null_array(&DataType::Null, changes.len()),
        };
        let mut columns = decoded.columns().to_vec();
        columns.push(rank);
        let batch = RecordBatch::try_new(self.schema.clone(), columns)?;
        let ops = changes.into_iter().map(|c| c.1).collect();
        out.push(Message::Data(Chunk::with_ops(batch, ops)));
        Ok(())
    }

    fn checkpoint(&mut self, state: &mut OperatorWriter<'_>) -> Result<(), RuntimeError> {
        let epoch = state.epoch();
        for key in self.dirty.drain() {
            match self.partitions.get_mut(&key) {
                Some(p) => {
                    p.written = epoch;
                    match p.rows.is_empty() {
                        true => state.delete(&key),
                        false => state.put(&key, encode(&p.rows)),
                    }
                }
                None => state.delete(&key),
            }
        }
        self.report();
        self.evict();
        Ok(())
    }

    fn attach_state(&mut self, access: StateAccess) {
        self.limited = access.budget.limit().is_some();
        self.access = Some(access);
    }

    fn restore(&mut self, entries: Vec<(Vec<u8>, Vec<u8>)>) -> Result<(), RuntimeError> {
        for (key, value) in entries {
            // Stored in order: each goes last.
            let stored = decode(&value)?;
            // Under a budget, only what fits; the rest is read when a row comes.
            let size: usize = stored
                .iter()
                .map(|(s, r)| ROW_BASE + s.len() + r.len())
                .sum::<usize>()
                + KEY_BASE
                + key.len();
            if self.access.as_ref().is_some_and(|a| !a.budget.fits(size)) {
                self.spilled = true;
                continue;
            }
            self.insert_stored(key, stored);
            self.report();
        }
        Ok(())
    }
}

/// A partition's rows in order as (u32 length, order key, u32 length, row)*,
/// little-endian.
fn encode(p: &Partition) -> Vec<u8> {
    let mut out = Vec::new();
    for ((sort, _), row) in p {
        for part in [sort, row] {
            out.extend_from_slice(&(part.len() as u32).to_le_bytes());
            out.extend_from_slice(part);
        }
    }
    out
}

/// A partition's stored (order key, row) pairs, in order.
type Stored = Vec<(Vec<u8>, Vec<u8>)>;

fn decode(mut bytes: &[u8]) -> Result<Stored, RuntimeError> {
    let corrupt = || RuntimeError::Internal("a Top-N state value is cut short".into());
    let part = |bytes: &mut &[u8]| -> Result<Vec<u8>, RuntimeError> {
        let (head, rest) = bytes.split_first_chunk::<4>().ok_or_else(corrupt)?;
        let len = u32::from_le_bytes(*head) as usize;
        let value = rest.get(..len).ok_or_else(corrupt)?.to_vec();
        *bytes = &rest[len..];
        Ok(value)
    };
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let sort = part(&mut bytes)?;
        let row = part(&mut bytes)?;
        out.push((sort, row));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{AsArray, Int64Array};
    use datafusion::arrow::datatypes::{Int64Type, UInt64Type};
    use datafusion::physical_expr::expressions::Column;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, true),
            Field::new("v", DataType::Int64, true),
        ]))
    }

    /// Per k, the first `limit` rows by v descending.
    fn top_n(limit: usize, with_rank: bool, append_only: bool) -> TopNOp {
        TopNOp::new(TopNSpec {
            partition: vec![Arc::new(Column::new("k", 0))],
            key_schema: Arc::new(schema().project(&[0]).unwrap()),
            order: vec![OrderBy {
                expr: Arc::new(Column::new("v", 1)),
                options: SortOptions {
                    descending: true,
                    nulls_first: true,
                },
                data_type: DataType::Int64,
            }],
            input_schema: schema(),
            rank_name: "rn".into(),
            limit,
            with_rank,
            append_only,
        })
        .unwrap()
    }

    fn chunk(rows: &[(i64, i64, Op)]) -> Chunk {
        let batch = RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1))),
            ],
        )
        .unwrap();
        Chunk::with_ops(batch, rows.iter().map(|r| r.2).collect())
    }

    /// (change, k, v, rank or 0), sorted.
    fn feed(t: &mut TopNOp, rows: &[(i64, i64, Op)]) -> Vec<(Op, i64, i64, u64)> {
        let mut out = Vec::new();
        t.process(chunk(rows), &mut out).unwrap();
        let mut got = Vec::new();
        for m in out {
            let Message::Data(c) = m else { continue };
            let b = &c.batch;
            for i in 0..c.num_rows() {
                let rank = match b.column(2).data_type() {
                    DataType::UInt64 => b.column(2).as_primitive::<UInt64Type>().value(i),
                    _ => 0,
                };
                got.push((
                    c.op(i),
                    b.column(0).as_primitive::<Int64Type>().value(i),
                    b.column(1).as_primitive::<Int64Type>().value(i),
                    rank,
                ));
            }
        }
        got.sort_by_key(|g| (g.1, g.3, g.0 as u8, g.2));
        got
    }

    #[test]
    fn ranks_move_as_rows_arrive_and_an_equal_row_ranks_after_an_earlier_one() {
        use Op::{Insert as I, UpdateAfter as UA, UpdateBefore as UB};
        let mut t = top_n(2, true, true);
        assert_eq!(
            feed(&mut t, &[(1, 10, I), (2, 5, I)]),
            vec![(I, 1, 10, 1), (I, 2, 5, 1)]
        );
        // 20 takes rank 1 and pushes 10 to rank 2.
        assert_eq!(
            feed(&mut t, &[(1, 20, I)]),
            vec![(UB, 1, 10, 1), (UA, 1, 20, 1), (I, 1, 10, 2)]
        );
        // An equal 10 arrives after the first: it ranks third, nothing shows.
        assert_eq!(feed(&mut t, &[(1, 10, I)]), vec![]);
        // 15 takes rank 2 from the first 10; within one chunk, only the end state shows.
        assert_eq!(
            feed(&mut t, &[(1, 15, I), (1, 1, I), (2, 7, I)]),
            vec![
                (UB, 1, 10, 2),
                (UA, 1, 15, 2),
                (UB, 2, 5, 1),
                (UA, 2, 7, 1),
                (I, 2, 5, 2)
            ]
        );
    }

    #[test]
    fn a_retraction_promotes_the_next_row() {
        use Op::{Delete as D, Insert as I};
        let mut t = top_n(1, false, false);
        feed(&mut t, &[(1, 10, I), (1, 30, I), (1, 20, I)]);
        assert_eq!(
            feed(&mut t, &[(1, 30, D)]),
            vec![(I, 1, 20, 0), (D, 1, 30, 0)]
        );
        // A row taken away that is not shown changes nothing shown.
        assert_eq!(feed(&mut t, &[(1, 10, D)]), vec![]);
        assert_eq!(feed(&mut t, &[(1, 20, D)]), vec![(D, 1, 20, 0)]);
        assert_eq!(feed(&mut t, &[(1, 5, I)]), vec![(I, 1, 5, 0)]);
    }

    #[test]
    fn a_restored_top_n_gives_the_same_changes_as_one_that_never_stopped() {
        use Op::{Delete as D, Insert as I};
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(crate::state::Store::open(dir.path()).unwrap());
        let job = crate::state::JobState::new(store, 1);
        for append_only in [true, false] {
            let make = || top_n(3, true, append_only);
            let (mut straight, mut before) = (make(), make());
            for e in 0..30i64 {
                let mut rows: Vec<(i64, i64, Op)> =
                    (0..6).map(|j| (j % 4, (e * 7 + j * 13) % 50, I)).collect();
                if !append_only && e % 3 == 2 {
                    // Take back a row added the epoch before.
                    let j = e % 6;
                    rows.push((j % 4, ((e - 1) * 7 + j * 13) % 50, D));
                }
                let a = feed(&mut straight, &rows);
                assert_eq!(feed(&mut before, &rows), a, "epoch {e}");
                let mut w = job.begin(e as u64 + 1);
                before.checkpoint(&mut w.operator(0)).unwrap();
                job.commit(w, &crate::state::EpochRecord::bare(e as u64 + 1))
                    .unwrap();
                if e % 7 == 6 {
                    before = make();
                    before.restore(job.operator_state(0).unwrap()).unwrap();
                }
            }
            job.destroy().unwrap();
        }
    }

    #[test]
    fn partitions_over_the_budget_leave_memory_and_come_back_from_the_store() {
        use crate::state::MemoryBudget;
        use Op::{Delete as D, Insert as I};
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(crate::state::Store::open(dir.path()).unwrap());
        let job = crate::state::JobState::new(store, 1);
        let (committed_tx, committed) = tokio::sync::watch::channel(0u64);
        let access = |budget: &Arc<MemoryBudget>| StateAccess {
            job: job.clone(),
            index: 0,
            committed: committed.clone(),
            budget: budget.clone(),
        };
        for append_only in [true, false] {
            let limit = 400;
            let budget = Arc::new(MemoryBudget::new(Some(limit)));
            let make = || top_n(2, true, append_only);
            let (mut straight, mut spilling) = (make(), make());
            spilling.attach_state(access(&budget));
            // Epoch e: rows of partitions 3e .. 3e + 3 (mod 20); over
            // updating input, a row of two epochs before is taken back.
            let rows = |e: i64| {
                let mut rows: Vec<(i64, i64, Op)> = (0..4)
                    .map(|i| ((e * 3 + i) % 20, (e * 7 + i * 5) % 40, I))
                    .collect();
                if !append_only && e >= 2 {
                    rows.push((((e - 2) * 3) % 20, ((e - 2) * 7) % 40, D));
                }
                rows
            };
            let mut pending: Option<(u64, crate::state::EpochWriter)> = None;
            for e in 1..=30u64 {
                let want = feed(&mut straight, &rows(e as i64));
                assert_eq!(feed(&mut spilling, &rows(e as i64)), want, "epoch {e}");
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
            assert!(budget.evicted() > 0, "partitions left memory");
            assert!(budget.loaded() > 0, "partitions came back");
            assert_eq!(budget.used(), spilling.bytes);
            // Restored under the same budget: only what fits is loaded.
            let restored_budget = Arc::new(MemoryBudget::new(Some(limit)));
            let mut restored = make();
            restored.attach_state(access(&restored_budget));
            restored.restore(job.operator_state(0).unwrap()).unwrap();
            assert!(restored.bytes <= limit, "{}", restored.bytes);
            for e in 31..=36 {
                let want = feed(&mut straight, &rows(e));
                assert_eq!(feed(&mut restored, &rows(e)), want, "restored, epoch {e}");
            }
            assert!(restored_budget.loaded() > 0);
            // A row above every kept one in each partition shows what each holds.
            let top: Vec<(i64, i64, Op)> = (0..20).map(|k| (k, 100, I)).collect();
            assert_eq!(feed(&mut restored, &top), feed(&mut straight, &top));
            job.destroy().unwrap();
        }
    }
}
