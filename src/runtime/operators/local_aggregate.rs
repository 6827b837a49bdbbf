//! The local half of a split aggregate (Flink's local/global aggregation):
//! at the end of the stage before the exchange, each chunk's rows are
//! folded per key into one partial row per key (the key's columns, each
//! aggregate's fold, the net rows), so the shuffle hashes and copies a row
//! per key and chunk instead of a row per input row, and the global half
//! adds the folds up (`AggregateOp` merging).
//!
//! As Flink's mini-batch does, the partial rows and the latest watermark
//! are gathered for up to an interval and sent on together, so the next
//! stage's subtasks are woken once per interval instead of once per chunk.
//! They go on at once, rows before the watermark, when the interval has
//! passed, before a barrier or the end of input (so a checkpoint holds
//! nothing of them), when a watermark would close a window some gathered
//! row is in, before a row of a window the gathered watermark closed, and
//! once about a chunk's worth of rows is gathered.

use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::{Array, ArrayRef, Int64Array, RecordBatch, UInt32Array};
use datafusion::arrow::compute::{concat_batches, min, take};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::physical_expr::PhysicalExpr;

use super::aggregate::{args_of, evaluate_args, CompiledAgg};
use super::conform::nanos;
use super::partial::{ChunkFold, ChunkGroups, FoldKind, GroupingPause};
use super::project::evaluate;
use crate::plan::WindowClose;
use crate::runtime::chunk::Chunk;
use crate::runtime::message::{Barrier, EventTime, Message};
use crate::runtime::operator::Operator;
use crate::runtime::RuntimeError;

pub struct LocalAggregateOp {
    group_exprs: Vec<Arc<dyn PhysicalExpr>>,
    aggs: Vec<CompiledAgg>,
    kinds: Vec<FoldKind>,
    /// The key's columns, each aggregate's fold columns, `rows`.
    schema: SchemaRef,
    /// Chunks go a row each for a while after one whose keys hardly repeated.
    pause: GroupingPause,
    /// The gathered partial rows and watermark.
    held: Held,
}

/// Partial rows at most gathered before they go on: about a chunk's, so a
/// message down the exchange holds no more rows than an ungathered one
/// would, and the bounded channels hold back as much as before (a barrier
/// waits behind no more rows). Rows that fold well (keys repeating within
/// a chunk) gather many chunks' worth; rows that do not go on as they came.
const MAX_HELD_ROWS: usize = 4096;

/// What [`LocalAggregateOp`] has gathered and when it goes on.
struct Held {
    /// How long rows may be gathered; zero: each chunk's go on at once.
    interval: Duration,
    /// Where a row's window bound is, in the key (None: no windows, or
    /// windows the wall clock closes, whose rows are not held).
    window: Option<WindowClose>,
    batches: Vec<RecordBatch>,
    rows: usize,
    /// The earliest time a window of a gathered row closes.
    closes: Option<EventTime>,
    /// A watermark taken and not yet passed on.
    watermark: Option<EventTime>,
    last_sent: Instant,
}

impl LocalAggregateOp {
    /// The local half of the aggregate over `group_exprs` (whose columns
    /// are `key_schema`'s) computing `aggs`, which must all fold.
    pub fn new(
        group_exprs: Vec<Arc<dyn PhysicalExpr>>,
        key_schema: &Schema,
        aggs: Vec<CompiledAgg>,
        append_only: bool,
    ) -> Result<Self, RuntimeError> {
        let kinds = aggs
            .iter()
            .map(|a| FoldKind::of(&a.call, append_only))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                RuntimeError::Internal(
                    "a local aggregate of an aggregate that does not fold".into(),
                )
            })?;
        Ok(LocalAggregateOp {
            schema: partial_schema(key_schema, &kinds),
            group_exprs,
            aggs,
            kinds,
            pause: GroupingPause::default(),
            held: Held {
                interval: Duration::ZERO,
                window: None,
                batches: Vec::new(),
                rows: 0,
                closes: None,
                watermark: None,
                last_sent: Instant::now(),
            },
        })
    }

    /// Gathers partial rows and watermarks for up to `interval` (zero: none)
    /// before sending them on; `window` says where each row's window bound
    /// is in the key, so that a watermark closing one sends them first.
    pub fn with_gathering(mut self, interval: Duration, window: Option<WindowClose>) -> Self {
        // Windows closed by the wall clock close on the next stage's own
        // clock, which held rows might miss.
        self.held.interval = match window {
            Some(w) if w.processing_time => Duration::ZERO,
            _ => interval,
        };
        self.held.window = window;
        self
    }

    /// The earliest time a window of one of `batch`'s rows closes.
    fn earliest_close(&self, batch: &RecordBatch) -> Result<Option<EventTime>, RuntimeError> {
        let Some(w) = self.held.window else {
            return Ok(None);
        };
        let bounds = batch.column(w.key_index);
        if bounds.null_count() > 0 || !matches!(bounds.data_type(), DataType::Timestamp(..)) {
            // No knowing when it closes.
            return Ok(Some(EventTime::MIN));
        }
        Ok(min(&nanos(bounds)?).map(|ns| ns.saturating_add(w.offset)))
    }

    /// Sends on what is gathered: the rows, then the watermark.
    fn send(&mut self, out: &mut Vec<Message>) -> Result<(), RuntimeError> {
        let held = &mut self.held;
        match held.batches.len() {
            0 => {}
            1 => out.push(Message::Data(Chunk::inserts(held.batches.remove(0)))),
            _ => {
                let batch = concat_batches(&self.schema, &held.batches)?;
                held.batches.clear();
                out.push(Message::Data(Chunk::inserts(batch)));
            }
        }
        held.rows = 0;
        held.closes = None;
        if let Some(wm) = held.watermark.take() {
            out.push(Message::Watermark(wm));
        }
        held.last_sent = Instant::now();
        Ok(())
    }

    /// Takes one chunk's partial rows: sends them on, or gathers them.
    fn gather(&mut self, batch: RecordBatch, out: &mut Vec<Message>) -> Result<(), RuntimeError> {
        if self.held.interval.is_zero() {
            out.push(Message::Data(Chunk::inserts(batch)));
            return Ok(());
        }
        let closes = self.earliest_close(&batch)?;
        // A row of a window the gathered watermark closed follows it, as
        // it came.
        if let (Some(c), Some(wm)) = (closes, self.held.watermark) {
            if c <= wm {
                self.send(out)?;
            }
        }
        let held = &mut self.held;
        held.rows += batch.num_rows();
        held.batches.push(batch);
        held.closes = match (held.closes, closes) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if held.rows >= MAX_HELD_ROWS || held.last_sent.elapsed() >= held.interval {
            self.send(out)?;
        }
        Ok(())
    }
}

/// The schema of partial rows: the key's columns, each aggregate's fold
/// columns ([`FoldKind::fields`]), then the net rows folded (`rows`).
fn partial_schema(key_schema: &Schema, kinds: &[FoldKind]) -> SchemaRef {
    let mut fields: Vec<Field> = key_schema
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    for (i, kind) in kinds.iter().enumerate() {
        fields.extend(kind.fields(i));
    }
    fields.push(Field::new("rows", DataType::Int64, false));
    Arc::new(Schema::new(fields))
}

impl Operator for LocalAggregateOp {
    fn name(&self) -> &'static str {
        "LocalAggregate"
    }

    fn process(&mut self, chunk: Chunk, out: &mut Vec<Message>) -> Result<(), RuntimeError> {
        let batch = &chunk.batch;
        let rows = batch.num_rows();
        let keys = evaluate(&self.group_exprs, batch)?;
        let inputs = evaluate_args(&self.aggs, batch)?;
        let args = args_of(&inputs);
        // Keys with NULLs cannot be grouped on their values, nor keys while
        // grouping pauses: a row each.
        let groups = self
            .pause
            .groups(&keys, rows)
            .unwrap_or_else(|| ChunkGroups::each_row(rows));
        let ChunkFold {
            groups,
            net,
            partials,
        } = ChunkFold::new(groups, &self.kinds, &args, chunk.ops.as_deref());
        // A key whose rows cancel out (added and taken back in the chunk)
        // changes nothing.
        let keep: Vec<u32> = (0..groups.len() as u32)
            .filter(|&g| net[g as usize] != 0 || partials.iter().any(|p| !p.is_empty(g as usize)))
            .collect();
        if keep.is_empty() {
            return Ok(());
        }
        // Every row its own group and kept: the keys are as they came.
        let mut out_columns: Vec<ArrayRef> = if keep.len() == rows {
            keys
        } else {
            let first =
                UInt32Array::from_iter_values(keep.iter().map(|&g| groups.first[g as usize]));
            keys.iter()
                .map(|k| take(k, &first, None))
                .collect::<Result<_, _>>()?
        };
        for p in &partials {
            out_columns.extend(p.columns(&keep));
        }
        out_columns.push(Arc::new(Int64Array::from_iter_values(
            keep.iter().map(|&g| net[g as usize]),
        )));
        let batch = RecordBatch::try_new(self.schema.clone(), out_columns)?;
        self.gather(batch, out)
    }

    fn on_watermark(&mut self, wm: EventTime, out: &mut Vec<Message>) -> Result<(), RuntimeError> {
        let held = &mut self.held;
        if held.interval.is_zero() {
            out.push(Message::Watermark(wm));
            return Ok(());
        }
        held.watermark = Some(held.watermark.map_or(wm, |w| w.max(wm)));
        // Rows of a window it closes go on before it.
        if held.closes.is_some_and(|c| c <= wm) || held.last_sent.elapsed() >= held.interval {
            self.send(out)?;
        }
        Ok(())
    }

    fn on_barrier(&mut self, barrier: Barrier, out: &mut Vec<Message>) -> Result<(), RuntimeError> {
        self.send(out)?;
        out.push(Message::Barrier(barrier));
        Ok(())
    }

    fn on_end(&mut self, out: &mut Vec<Message>) -> Result<(), RuntimeError> {
        self.send(out)?;
        out.push(Message::End);
        Ok(())
    }

    fn on_tick(
        &mut self,
        now: Instant,
        out: &mut Vec<Message>,
    ) -> Result<Option<Instant>, RuntimeError> {
        let held = &self.held;
        if held.batches.is_empty() && held.watermark.is_none() {
            return Ok(None);
        }
        let due = held.last_sent + held.interval;
        if now < due {
            return Ok(Some(due));
        }
        self.send(out)?;
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{AggCall, AggKind};
    use crate::runtime::chunk::Op;
    use datafusion::arrow::array::{Array, AsArray, TimestampMillisecondArray};
    use datafusion::arrow::datatypes::{Int64Type, TimeUnit, TimestampMillisecondType};
    use datafusion::physical_expr::expressions::Column;

    /// GROUP BY k with `kinds` of v (columns 0 and 1).
    fn local(kinds: &[AggKind], append_only: bool) -> LocalAggregateOp {
        let aggs = kinds
            .iter()
            .map(|&kind| {
                let call = AggCall {
                    kind,
                    args: vec![],
                    distinct: false,
                    filter: None,
                    output_type: DataType::Int64,
                };
                CompiledAgg::new(
                    call,
                    Some(Arc::new(Column::new("v", 1))),
                    Some(DataType::Int64),
                )
            })
            .collect();
        let keys = Schema::new(vec![Field::new("k", DataType::Int64, true)]);
        LocalAggregateOp::new(
            vec![Arc::new(Column::new("k", 0))],
            &keys,
            aggs,
            append_only,
        )
        .unwrap()
    }

    fn chunk(rows: &[(Option<i64>, Option<i64>)], ops: Option<Vec<Op>>) -> Chunk {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, true),
            Field::new("v", DataType::Int64, true),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.0))),
                Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.1))),
            ],
        )
        .unwrap();
        match ops {
            Some(ops) => Chunk::with_ops(batch, ops),
            None => Chunk::inserts(batch),
        }
    }

    /// Every partial row sent, each column as an optional number.
    fn sent(op: &mut LocalAggregateOp, chunk: Chunk) -> Vec<Vec<Option<i64>>> {
        let mut out = Vec::new();
        op.process(chunk, &mut out).unwrap();
        let mut rows = Vec::new();
        for m in out {
            let Message::Data(c) = m else { continue };
            assert!(c.ops.is_none(), "partial rows are inserts");
            for r in 0..c.num_rows() {
                rows.push(
                    c.batch
                        .columns()
                        .iter()
                        .map(|a| {
                            let a = a.as_primitive::<Int64Type>();
                            a.is_valid(r).then(|| a.value(r))
                        })
                        .collect(),
                );
            }
        }
        rows
    }

    /// COUNT(*) GROUP BY k, window end (a millisecond timestamp): columns 0
    /// and 1; windows close as the watermark reaches their end.
    fn windowed(interval: Duration) -> LocalAggregateOp {
        let ts = DataType::Timestamp(TimeUnit::Millisecond, None);
        let call = AggCall {
            kind: AggKind::Count,
            args: vec![],
            distinct: false,
            filter: None,
            output_type: DataType::Int64,
        };
        let keys = Schema::new(vec![
            Field::new("k", DataType::Int64, false),
            Field::new("we", ts, false),
        ]);
        let window = WindowClose {
            key_index: 1,
            offset: 0,
            processing_time: false,
        };
        LocalAggregateOp::new(
            vec![
                Arc::new(Column::new("k", 0)),
                Arc::new(Column::new("we", 1)),
            ],
            &keys,
            vec![CompiledAgg::new(call, None, None)],
            true,
        )
        .unwrap()
        .with_gathering(interval, Some(window))
    }

    /// Rows (k, window end in seconds).
    fn windowed_chunk(rows: &[(i64, i64)]) -> Chunk {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, false),
            Field::new(
                "we",
                DataType::Timestamp(TimeUnit::Millisecond, None),
                false,
            ),
        ]));
        let ends = rows.iter().map(|r| r.1 * 1000);
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(TimestampMillisecondArray::from_iter_values(ends)),
            ],
        )
        .unwrap();
        Chunk::inserts(batch)
    }

    const SECOND: EventTime = 1_000_000_000;

    /// What came out, in order: `D(k, window end s, count)` per partial
    /// row, `W(s)` per watermark, `B` per barrier, `E` at the end.
    fn described(out: Vec<Message>) -> Vec<String> {
        let mut seen = Vec::new();
        for m in out {
            match m {
                Message::Data(c) => {
                    let k = c.batch.column(0).as_primitive::<Int64Type>();
                    let we = c.batch.column(1).as_primitive::<TimestampMillisecondType>();
                    let n = c.batch.column(2).as_primitive::<Int64Type>();
                    for r in 0..c.num_rows() {
                        seen.push(format!(
                            "D({},{},{})",
                            k.value(r),
                            we.value(r) / 1000,
                            n.value(r)
                        ));
                    }
                }
                Message::Watermark(w) => seen.push(format!("W({})", w / SECOND)),
                Message::Barrier(_) => seen.push("B".into()),
                Message::End => seen.push("E".into()),
            }
        }
        seen
    }

    #[test]
    fn partial_rows_and_watermarks_are_gathered_until_a_barrier() {
        let mut op = windowed(Duration::from_secs(3600));
        let mut out = Vec::new();
        op.process(windowed_chunk(&[(1, 10), (1, 10), (2, 10)]), &mut out)
            .unwrap();
        op.on_watermark(2 * SECOND, &mut out).unwrap();
        op.process(windowed_chunk(&[(1, 10), (3, 20)]), &mut out)
            .unwrap();
        op.on_watermark(5 * SECOND, &mut out).unwrap();
        assert!(out.is_empty(), "gathered: {:?}", described(out));
        // Not due for an hour.
        let now = Instant::now();
        assert!(op.on_tick(now, &mut out).unwrap().is_some_and(|d| d > now));
        op.on_barrier(
            Barrier {
                epoch: 1,
                checkpoint: true,
            },
            &mut out,
        )
        .unwrap();
        // Each chunk's rows folded on their own, all sent before the last
        // watermark, and that before the barrier.
        assert_eq!(
            described(out),
            [
                "D(1,10,2)",
                "D(2,10,1)",
                "D(1,10,1)",
                "D(3,20,1)",
                "W(5)",
                "B"
            ]
        );
        let mut out = Vec::new();
        op.on_end(&mut out).unwrap();
        assert_eq!(described(out), ["E"], "nothing left over");
    }

    #[test]
    fn a_watermark_closing_a_gathered_window_sends_its_rows_first() {
        let mut op = windowed(Duration::from_secs(3600));
        let mut out = Vec::new();
        op.process(windowed_chunk(&[(1, 20), (2, 10)]), &mut out)
            .unwrap();
        op.on_watermark(9 * SECOND, &mut out).unwrap();
        assert!(out.is_empty());
        // Window 10 closes: everything gathered goes, then the watermark.
        op.on_watermark(10 * SECOND, &mut out).unwrap();
        assert_eq!(
            described(std::mem::take(&mut out)),
            ["D(1,20,1)", "D(2,10,1)", "W(10)"]
        );
        // A row of a window the gathered watermark already closed comes
        // after it, as it came.
        op.on_watermark(15 * SECOND, &mut out).unwrap();
        op.process(windowed_chunk(&[(4, 10)]), &mut out).unwrap();
        assert_eq!(described(std::mem::take(&mut out)), ["W(15)"]);
        op.on_end(&mut out).unwrap();
        assert_eq!(described(out), ["D(4,10,1)", "E"]);
    }

    #[test]
    fn gathered_rows_go_once_the_interval_has_passed() {
        let mut op = windowed(Duration::from_millis(30));
        let mut out = Vec::new();
        op.process(windowed_chunk(&[(1, 10)]), &mut out).unwrap();
        op.on_watermark(SECOND, &mut out).unwrap();
        let due = op
            .on_tick(Instant::now(), &mut out)
            .unwrap()
            .expect("due later");
        assert!(out.is_empty());
        assert_eq!(op.on_tick(due, &mut out).unwrap(), None);
        assert_eq!(described(std::mem::take(&mut out)), ["D(1,10,1)", "W(1)"]);
        // Nothing gathered: nothing due.
        assert_eq!(op.on_tick(Instant::now(), &mut out).unwrap(), None);
        // A chunk after the interval goes at once.
        std::thread::sleep(Duration::from_millis(40));
        op.process(windowed_chunk(&[(2, 10)]), &mut out).unwrap();
        assert_eq!(described(out), ["D(2,10,1)"]);
    }

    #[test]
    fn without_an_interval_each_chunk_goes_at_once() {
        let mut op = windowed(Duration::ZERO);
        let mut out = Vec::new();
        op.process(windowed_chunk(&[(1, 10)]), &mut out).unwrap();
        op.on_watermark(SECOND, &mut out).unwrap();
        op.process(windowed_chunk(&[(1, 10)]), &mut out).unwrap();
        assert_eq!(described(out), ["D(1,10,1)", "W(1)", "D(1,10,1)"]);
    }

    #[test]
    fn rows_fold_into_a_partial_row_per_key() {
        use AggKind::*;
        let mut op = local(&[Count, Sum, Max], true);
        // Columns: k, COUNT(v), SUM(v), inputs summed, MAX(v), rows.
        let rows = sent(
            &mut op,
            chunk(
                &[(Some(1), Some(5)), (Some(2), None), (Some(1), Some(7))],
                None,
            ),
        );
        assert_eq!(
            rows,
            vec![
                vec![Some(1), Some(2), Some(12), Some(2), Some(7), Some(2)],
                vec![Some(2), Some(0), Some(0), Some(0), None, Some(1)],
            ]
        );
        // NULL keys cannot be grouped on their values: a row each.
        let rows = sent(&mut op, chunk(&[(None, Some(3)), (None, Some(4))], None));
        assert_eq!(
            rows,
            vec![
                vec![None, Some(1), Some(3), Some(1), Some(3), Some(1)],
                vec![None, Some(1), Some(4), Some(1), Some(4), Some(1)],
            ]
        );
    }

    #[test]
    fn retractions_fold_with_their_sign_and_rows_that_cancel_send_nothing() {
        use AggKind::*;
        let mut op = local(&[Count, Sum], false);
        let ops = vec![Op::Insert, Op::Delete, Op::Delete];
        let rows = sent(
            &mut op,
            chunk(
                &[(Some(1), Some(5)), (Some(1), Some(5)), (Some(2), Some(4))],
                Some(ops),
            ),
        );
        // Key 1 added and taken back: nothing. Key 2: one row of 4 taken back.
        assert_eq!(
            rows,
            vec![vec![Some(2), Some(-1), Some(-4), Some(-1), Some(-1)]]
        );
    }

    #[test]
    fn an_extreme_that_can_be_retracted_is_not_split() {
        let keys = Schema::new(vec![Field::new("k", DataType::Int64, true)]);
        let call = AggCall {
            kind: AggKind::Min,
            args: vec![],
            distinct: false,
            filter: None,
            output_type: DataType::Int64,
        };
        let agg = CompiledAgg::new(
            call,
            Some(Arc::new(Column::new("v", 1))),
            Some(DataType::Int64),
        );
        assert!(LocalAggregateOp::new(
            vec![Arc::new(Column::new("k", 0))],
            &keys,
            vec![agg],
            false
        )
        .is_err());
    }
}
