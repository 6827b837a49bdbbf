//! Aggregation over count windows (COUNT_WINDOW): per partition, rows are
//! numbered from 0 in the order of (event time, every column), and each run
//! of `size` rows is one window `[start, end)` of row numbers.
//!
//! A row can be numbered once no row ordered before it can arrive any more:
//! once the watermark passes its time (a row at the watermark is on time).
//! Until then it waits, with its aggregate arguments. When the watermark
//! advances, each partition numbers its waiting rows it passed, in order,
//! into its open window; a window with `size` rows is complete. Emits the
//! open window's updates as rows are numbered, or with EMIT ON WINDOW CLOSE
//! each window once when complete (and at the end of input, the last one
//! however many rows it has, as the batch query counts it). A partition
//! keeps its count for the life of the view; a checkpoint writes each
//! changed partition (count, open window, waiting rows) as one value.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::Array;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::row::RowConverter;
use datafusion::common::ScalarValue;
use datafusion::physical_expr::PhysicalExpr;
use hashbrown::{HashMap, HashSet};

use super::accumulator::{AccSnapshot, Accumulator, Arg};
use super::aggregate::CompiledAgg;
use super::partition_window::{
    keys_and_times, restore_accs, restore_waiting, snapshot_accs, value_codecs, values_of, wait,
    RowsOf, StoredWaiting, Waiting, WindowOutput, WindowRow,
};
use crate::functions::count_window_order;
use crate::plan::WindowBound;
use crate::runtime::chunk::{Chunk, Op};
use crate::runtime::message::{EventTime, Message};
use crate::runtime::operator::Operator;
use crate::runtime::RuntimeError;
use crate::state::{OperatorWriter, ScalarCodec};

/// What a count-window aggregate is built from.
pub struct CountWindowSpec {
    /// The partition key, over the input.
    pub partition: Vec<Arc<dyn PhysicalExpr>>,
    /// The partition key's schema, as the exchange into the stage encodes it.
    pub key_schema: SchemaRef,
    /// The rows' event time, over the input.
    pub time: Arc<dyn PhysicalExpr>,
    /// What rows are ordered by (the event time, then every column of the
    /// windowed stream), over the input, and their types.
    pub order: Vec<Arc<dyn PhysicalExpr>>,
    pub order_types: Vec<DataType>,
    pub size: i64,
    /// Per group column of the output: the bound it holds (None: the next
    /// partition column).
    pub bounds: Vec<Option<WindowBound>>,
    pub aggs: Vec<CompiledAgg>,
    pub schema: SchemaRef,
    pub emit_on_window_close: bool,
}

struct Partition {
    /// Rows numbered so far.
    numbered: i64,
    /// The open window's accumulators (None: it has no row yet).
    accs: Option<Vec<Accumulator>>,
    /// What downstream holds for the open window (updates only).
    shown: Option<Vec<ScalarValue>>,
    waiting: Vec<Waiting>,
    /// The smallest time among `waiting` (`i64::MAX` when none).
    earliest: i64,
}

/// A partition as a checkpoint stores it (values by the aggregates' codecs).
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredPartition {
    numbered: i64,
    accs: Option<Vec<AccSnapshot>>,
    waiting: Vec<StoredWaiting>,
}

/// An output row: change, partition key, window start, aggregate values.
type Change = (Op, Vec<u8>, i64, Vec<ScalarValue>);

pub struct CountWindowOp {
    spec: CountWindowSpec,
    order: RowConverter,
    output: WindowOutput,
    /// Per aggregate: the codec of what it accumulates.
    codecs: Vec<ScalarCodec>,
    partitions: HashMap<Vec<u8>, Partition>,
    /// Time → partitions with a row waiting then or later.
    due: BTreeMap<EventTime, Vec<Vec<u8>>>,
    /// Partitions changed since the last checkpoint.
    dirty: HashSet<Vec<u8>>,
}

impl CountWindowOp {
    pub fn new(spec: CountWindowSpec) -> Result<Self, RuntimeError> {
        let codecs = value_codecs(&spec.aggs)?;
        let output = WindowOutput::new(
            spec.key_schema.clone(),
            !spec.partition.is_empty(),
            spec.bounds.clone(),
            spec.schema.clone(),
        )?;
        Ok(CountWindowOp {
            order: count_window_order(&spec.order_types)?,
            output,
            codecs,
            spec,
            partitions: HashMap::new(),
            due: BTreeMap::new(),
            dirty: HashSet::new(),
        })
    }

    fn values(&self, accs: &[Accumulator]) -> Result<Vec<ScalarValue>, RuntimeError> {
        values_of(accs, &self.spec.aggs)
    }

    /// Numbers every waiting row before `wm` into its partition's windows;
    /// returns the rows to emit: (change, key, start, values).
    fn number_until(&mut self, wm: EventTime) -> Result<Vec<Change>, RuntimeError> {
        let mut keys = Vec::new();
        while let Some(entry) = self.due.first_entry() {
            if *entry.key() >= wm {
                break;
            }
            keys.extend(entry.remove());
        }
        let CountWindowOp {
            spec,
            partitions,
            due,
            dirty,
            ..
        } = self;
        let (size, eowc) = (spec.size, spec.emit_on_window_close);
        let mut out = Vec::new();
        for key in keys {
            let Some(p) = partitions.get_mut(&key) else {
                continue;
            };
            // An entry of a time since numbered (its row came due twice).
            if p.earliest >= wm {
                continue;
            }
            // In order (it starts with the time: compared first, the rest
            // on ties); the rows before the watermark are numbered.
            p.waiting
                .sort_by(|a, b| a.time.cmp(&b.time).then_with(|| a.order().cmp(&b.order())));
            let ready = p.waiting.partition_point(|w| w.time < wm);
            let mut waiting = std::mem::take(&mut p.waiting);
            for w in waiting.drain(..ready) {
                let accs = match &mut p.accs {
                    Some(accs) => accs,
                    None => p.accs.insert(
                        spec.aggs
                            .iter()
                            .map(|a| Accumulator::new(&a.call, &a.sum_type, false))
                            .collect::<Result<_, _>>()?,
                    ),
                };
                let (row, rows) = (w.row as usize, &w.rows);
                for ((acc, c), f) in accs.iter_mut().zip(&rows.args).zip(&rows.filters) {
                    acc.update_at(&Arg::new(c.as_ref()).with_filter(f.as_ref()), row, 1)?;
                }
                p.numbered += 1;
                if p.numbered % size == 0 {
                    // Complete: its final row, and the window leaves state.
                    let accs = p.accs.take().expect("open");
                    let values = values_of(&accs, &spec.aggs)?;
                    let start = p.numbered - size;
                    match p.shown.take() {
                        Some(old) if !eowc => {
                            if old != values {
                                out.push((Op::UpdateBefore, key.clone(), start, old));
                                out.push((Op::UpdateAfter, key.clone(), start, values));
                            }
                        }
                        _ => out.push((Op::Insert, key.clone(), start, values)),
                    }
                }
            }
            // A partition waiting for nothing holds no buffer.
            p.waiting = match waiting.is_empty() {
                true => Vec::new(),
                false => waiting,
            };
            p.earliest = p.waiting.first().map_or(i64::MAX, |w| w.time);
            if !p.waiting.is_empty() {
                due.entry(p.earliest).or_default().push(key.clone());
            }
            if let (Some(accs), false) = (&p.accs, eowc) {
                let values = values_of(accs, &spec.aggs)?;
                let start = p.numbered - p.numbered % size;
                match p.shown.replace(values.clone()) {
                    Some(old) if old == values => {}
                    Some(old) => {
                        out.push((Op::UpdateBefore, key.clone(), start, old));
                        out.push((Op::UpdateAfter, key.clone(), start, values));
                    }
                    None => out.push((Op::Insert, key.clone(), start, values)),
                }
            }
            if !dirty.contains(&key) {
                dirty.insert(key);
            }
        }
        Ok(out)
    }

    fn emit(&self, rows: &[Change], out: &mut Vec<Message>) -> Result<(), RuntimeError> {
        let rows: Vec<WindowRow> = rows
            .iter()
            .map(|(op, key, start, values)| WindowRow {
                op: *op,
                key,
                start: *start,
                end: start + self.spec.size,
                values,
            })
            .collect();
        if let Some(chunk) = self.output.chunk(&rows)? {
            out.push(Message::Data(chunk));
        }
        Ok(())
    }
}

impl Operator for CountWindowOp {
    fn name(&self) -> &'static str {
        "CountWindowAggregate"
    }

    fn process(&mut self, chunk: Chunk, _out: &mut Vec<Message>) -> Result<(), RuntimeError> {
        let (keys, time) = keys_and_times(
            &chunk,
            &self.spec.partition,
            &self.output.key_codec,
            &self.spec.time,
        )?;
        let batch = &chunk.batch;
        let rows = RowsOf::of(batch, &self.order, &self.spec.order, &self.spec.aggs)?;
        for row in 0..batch.num_rows() {
            // A row without a time is late: it never reaches here.
            if time.is_null(row) {
                continue;
            }
            let key = keys.as_ref().map_or(&[][..], |k| k.row(row).data());
            let t = time.value(row);
            let p = self.partitions.entry_ref(key).or_insert_with(|| Partition {
                numbered: 0,
                accs: None,
                shown: None,
                waiting: Vec::new(),
                earliest: i64::MAX,
            });
            wait(
                &mut p.waiting,
                &mut p.earliest,
                &mut self.due,
                key,
                t,
                &rows,
                row,
            );
            if !self.dirty.contains(key) {
                self.dirty.insert(key.to_vec());
            }
        }
        Ok(())
    }

    fn on_watermark(&mut self, wm: EventTime, out: &mut Vec<Message>) -> Result<(), RuntimeError> {
        let rows = self.number_until(wm)?;
        self.emit(&rows, out)?;
        out.push(Message::Watermark(wm));
        Ok(())
    }

    fn on_end(&mut self, out: &mut Vec<Message>) -> Result<(), RuntimeError> {
        let mut rows = self.number_until(EventTime::MAX)?;
        if self.spec.emit_on_window_close {
            // The last windows, however few rows they have: as the batch query counts them.
            let mut last = Vec::new();
            for (key, p) in &self.partitions {
                if let Some(accs) = &p.accs {
                    let start = p.numbered - p.numbered % self.spec.size;
                    last.push((Op::Insert, key.clone(), start, self.values(accs)?));
                }
            }
            last.sort_by(|a, b| a.1.cmp(&b.1));
            rows.extend(last);
        }
        self.emit(&rows, out)?;
        out.push(Message::End);
        Ok(())
    }

    fn checkpoint(&mut self, state: &mut OperatorWriter<'_>) -> Result<(), RuntimeError> {
        for key in self.dirty.drain() {
            let Some(p) = self.partitions.get_mut(&key) else {
                continue;
            };
            let accs = match &mut p.accs {
                None => None,
                Some(accs) => Some(snapshot_accs(accs, &self.codecs)?),
            };
            let waiting = p
                .waiting
                .iter()
                .map(|w| w.stored(&self.codecs))
                .collect::<Result<Vec<_>, _>>()?;
            let stored = StoredPartition {
                numbered: p.numbered,
                accs,
                waiting,
            };
            let value = bincode::serde::encode_to_vec(&stored, bincode::config::standard())
                .map_err(|e| RuntimeError::Internal(format!("encoding a count window: {e}")))?;
            state.put(&key, value);
        }
        Ok(())
    }

    fn restore(&mut self, entries: Vec<(Vec<u8>, Vec<u8>)>) -> Result<(), RuntimeError> {
        for (key, value) in entries {
            let (stored, _): (StoredPartition, usize) =
                bincode::serde::decode_from_slice(&value, bincode::config::standard())
                    .map_err(|e| RuntimeError::Internal(format!("a stored count window: {e}")))?;
            let accs = stored
                .accs
                .map(|accs| restore_accs(accs, &self.spec.aggs, &self.codecs))
                .transpose()?;
            // Updates were all emitted by the watermark before the checkpoint.
            let shown = match (&accs, self.spec.emit_on_window_close) {
                (Some(accs), false) => Some(self.values(accs)?),
                _ => None,
            };
            let waiting =
                restore_waiting(&self.order, &self.spec.aggs, &self.codecs, stored.waiting)?;
            let earliest = waiting.iter().map(|w| w.time).min().unwrap_or(i64::MAX);
            if !waiting.is_empty() {
                self.due.entry(earliest).or_default().push(key.clone());
            }
            self.partitions.insert(
                key,
                Partition {
                    numbered: stored.numbered,
                    accs,
                    shown,
                    waiting,
                    earliest,
                },
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{AggCall, AggKind};
    use datafusion::arrow::array::ArrayRef;
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::datatypes::TimeUnit;
    use datafusion::arrow::datatypes::{Field, Int64Type, Schema};
    use datafusion::logical_expr::Operator as BinOp;
    use datafusion::physical_expr::expressions::{lit, BinaryExpr, Column};

    const TS: DataType = DataType::Timestamp(TimeUnit::Nanosecond, None);

    /// Per k, windows of 2 rows over (k, v, ts) ordered by (ts, k, v):
    /// (k, start, end, COUNT(*), SUM(v)).
    fn op(emit_on_close: bool) -> CountWindowOp {
        op_of(emit_on_close, 2, false)
    }

    /// `filtered`: COUNT(*) FILTER (WHERE v % 3 = 0) in place of COUNT(*).
    fn op_of(emit_on_close: bool, size: i64, filtered: bool) -> CountWindowOp {
        let call = |kind| AggCall {
            kind,
            args: vec![],
            distinct: false,
            filter: None,
            output_type: DataType::Int64,
        };
        let col = |name: &str, i: usize| Arc::new(Column::new(name, i)) as Arc<dyn PhysicalExpr>;
        let out = Schema::new(vec![
            Field::new("k", DataType::Int64, true),
            Field::new("window_start", DataType::Int64, true),
            Field::new("window_end", DataType::Int64, true),
            Field::new("n", DataType::Int64, true),
            Field::new("s", DataType::Int64, true),
        ]);
        CountWindowOp::new(CountWindowSpec {
            partition: vec![col("k", 0)],
            key_schema: Arc::new(Schema::new(vec![Field::new("k0", DataType::Int64, true)])),
            time: col("ts", 2),
            order: vec![col("ts", 2), col("k", 0), col("v", 1)],
            order_types: vec![TS, DataType::Int64, DataType::Int64],
            size,
            bounds: vec![None, Some(WindowBound::Start), Some(WindowBound::End)],
            aggs: vec![
                CompiledAgg::new(call(AggKind::Count), None, None).with_filter(filtered.then(
                    || {
                        let rest = BinaryExpr::new(col("v", 1), BinOp::Modulo, lit(3i64));
                        Arc::new(BinaryExpr::new(Arc::new(rest), BinOp::Eq, lit(0i64)))
                            as Arc<dyn PhysicalExpr>
                    },
                )),
                CompiledAgg::new(call(AggKind::Sum), Some(col("v", 1)), Some(DataType::Int64)),
            ],
            schema: Arc::new(out),
            emit_on_window_close: emit_on_close,
        })
        .unwrap()
    }

    /// Rows (k, v, ts).
    fn data(rows: &[(i64, i64, i64)]) -> Message {
        crate::runtime::operators::partition_window::kvts_message(rows)
    }

    type Row = (Op, [i64; 5]);

    fn feed(c: &mut CountWindowOp, msg: Message) -> Vec<Row> {
        let mut out = Vec::new();
        c.handle(msg, &mut out).unwrap();
        let mut v = Vec::new();
        for m in &out {
            if let Message::Data(c) = m {
                let cols: Vec<ArrayRef> = c.batch.columns().to_vec();
                for i in 0..c.batch.num_rows() {
                    let r: Vec<i64> = cols
                        .iter()
                        .map(|a| a.as_primitive::<Int64Type>().value(i))
                        .collect();
                    v.push((c.op(i), r.try_into().unwrap()));
                }
            }
        }
        v
    }

    fn sorted(rows: Vec<Row>) -> Vec<(u8, [i64; 5])> {
        let mut v: Vec<(u8, [i64; 5])> = rows.into_iter().map(|(op, r)| (op as u8, r)).collect();
        v.sort();
        v
    }

    #[test]
    fn rows_are_numbered_in_time_order_once_the_watermark_passes_them() {
        use Op::{Insert as I, UpdateAfter as UA, UpdateBefore as UB};
        let mut c = op(false);
        // Out of order, and two rows sharing a time: nothing until the watermark.
        assert_eq!(
            feed(
                &mut c,
                data(&[(1, 5, 10), (1, 7, 3), (1, 6, 10), (2, 1, 4)])
            ),
            vec![]
        );
        // Rows before 10: k1's 7 (window [0, 2) open), k2's 1.
        assert_eq!(
            feed(&mut c, Message::Watermark(10)),
            vec![(I, [1, 0, 2, 1, 7]), (I, [2, 0, 2, 1, 1])]
        );
        // At 11 the two rows at 10 go, 5 before 6: [0, 2) completes, [2, 4) opens.
        assert_eq!(
            feed(&mut c, Message::Watermark(11)),
            vec![
                (UB, [1, 0, 2, 1, 7]),
                (UA, [1, 0, 2, 2, 12]),
                (I, [1, 2, 4, 1, 6])
            ]
        );
        assert_eq!(feed(&mut c, data(&[(1, 2, 12), (1, 9, 30)])), vec![]);
        assert_eq!(
            feed(&mut c, Message::Watermark(20)),
            vec![(UB, [1, 2, 4, 1, 6]), (UA, [1, 2, 4, 2, 8])]
        );
        assert_eq!(feed(&mut c, Message::End), vec![(I, [1, 4, 6, 1, 9])]);
    }

    #[test]
    fn emit_on_window_close_emits_complete_windows_then_the_last_at_the_end() {
        use Op::Insert as I;
        let mut c = op(true);
        feed(
            &mut c,
            data(&[(1, 5, 10), (1, 7, 3), (1, 6, 10), (2, 1, 4)]),
        );
        assert_eq!(feed(&mut c, Message::Watermark(10)), vec![]);
        assert_eq!(
            feed(&mut c, Message::Watermark(11)),
            vec![(I, [1, 0, 2, 2, 12])]
        );
        assert_eq!(
            feed(&mut c, Message::End),
            vec![(I, [1, 2, 4, 1, 6]), (I, [2, 0, 2, 1, 1])]
        );
    }

    #[test]
    fn a_restored_count_window_gives_the_same_changes_as_one_that_never_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(crate::state::Store::open(dir.path()).unwrap());
        let job = crate::state::JobState::new(store, 1);
        for emit_on_close in [false, true] {
            // Windows of 3 rows, a key getting 1 or 2 rows an epoch: windows
            // stay open across restores.
            let make = || op_of(emit_on_close, 3, true);
            let (mut straight, mut before) = (make(), make());
            let mut emitted = 0;
            for e in 0..40i64 {
                // Times out of order by up to 8, some shared; the watermark
                // 6 behind the epoch's base leaves rows waiting across epochs.
                let batch: Vec<(i64, i64, i64)> = (0..5)
                    .map(|j| (j % 3, (e * 5 + j) % 11, e * 4 + (e * 7 + j * 3) % 9 / 2))
                    .collect();
                for msg in [data(&batch), Message::Watermark(e * 4 - 6)] {
                    // Partitions emit in the order they came due, which a restore changes.
                    let a = sorted(feed(&mut straight, msg.clone()));
                    emitted += a.len();
                    assert_eq!(sorted(feed(&mut before, msg)), a, "epoch {e}");
                }
                let mut w = job.begin(e as u64 + 1);
                before.checkpoint(&mut w.operator(0)).unwrap();
                job.commit(w, &crate::state::EpochRecord::bare(e as u64 + 1))
                    .unwrap();
                if e % 7 == 6 {
                    before = make();
                    before.restore(job.operator_state(0).unwrap()).unwrap();
                }
            }
            assert!(emitted > 50, "{emitted} rows");
            assert_eq!(
                sorted(feed(&mut before, Message::End)),
                sorted(feed(&mut straight, Message::End))
            );
            job.destroy().unwrap();
        }
    }
}
