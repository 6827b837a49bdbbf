//! Flink's OVER aggregation over an append-only stream: every row comes
//! out once, with aggregates over the rows of its partition up to it.
//!
//! Rows are taken in the order of (event time, every column), each once no
//! row ordered before it can arrive any more: once the watermark passes its
//! time. Until then it waits. When the watermark advances, each partition
//! takes its waiting rows it passed, in order, into its frame: the
//! accumulators add the row, and retract the rows that fell out of the
//! frame (`ROWS n PRECEDING`: more than n rows back; `RANGE d PRECEDING`:
//! older than the row's time less d, rows of one time entering together,
//! so each sees its peers). The row goes out with the aggregates' values.
//! A checkpoint writes each changed partition (its waiting rows, the
//! frame's rows, or for an unbounded frame its accumulators) as one value;
//! a `RANGE` partition whose frame the watermark has emptied goes.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use datafusion::arrow::array::{new_null_array, Array, ArrayRef, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::row::RowConverter;
use datafusion::common::ScalarValue;
use datafusion::physical_expr::PhysicalExpr;
use hashbrown::{HashMap, HashSet};

use super::accumulator::{AccSnapshot, Accumulator};
use super::aggregate::{column_of, CompiledAgg};
use super::partition_window::{
    keys_and_times, restore_accs, restore_waiting, snapshot_accs, value_codecs, values_of, wait,
    RowsOf, StoredWaiting, Waiting,
};
use crate::functions::count_window_order;
use crate::plan::OverFrame;
use crate::runtime::chunk::Chunk;
use crate::runtime::message::{EventTime, Message};
use crate::runtime::operator::Operator;
use crate::runtime::RuntimeError;
use crate::state::{OperatorWriter, RowCodec, ScalarCodec};

/// What an OVER aggregate is built from.
pub struct OverSpec {
    /// The partition key, over the input.
    pub partition: Vec<Arc<dyn PhysicalExpr>>,
    /// The partition key's schema, as the exchange into the stage encodes it.
    pub key_schema: SchemaRef,
    /// The rows' event time, over the input.
    pub time: Arc<dyn PhysicalExpr>,
    /// What rows are ordered by (the event time, then the input columns
    /// read later, which the output's columns are read back from), and
    /// their types.
    pub order: Vec<Arc<dyn PhysicalExpr>>,
    pub order_types: Vec<DataType>,
    /// Per input column: its place in the order key (None: not read later,
    /// a column of type Null in the output).
    pub columns: Vec<Option<usize>>,
    pub frame: OverFrame,
    pub aggs: Vec<CompiledAgg>,
    /// The input's columns, then the aggregates.
    pub schema: SchemaRef,
}

/// A row in its partition's frame: its time and, per aggregate, what it
/// added (None: nothing, its FILTER left it out).
struct InFrame {
    time: i64,
    values: Vec<Option<ScalarValue>>,
}

struct Partition {
    waiting: Vec<Waiting>,
    /// The smallest time among `waiting` (`i64::MAX` when none).
    earliest: i64,
    /// The rows the accumulators hold, oldest first (bounded frames only).
    frame: VecDeque<InFrame>,
    accs: Vec<Accumulator>,
    /// The time of the last row taken.
    last: Option<i64>,
}

/// A partition as a checkpoint stores it (values by the aggregates' codecs).
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredPartition {
    waiting: Vec<StoredWaiting>,
    frame: Vec<(i64, Vec<Option<Vec<u8>>>)>,
    /// An unbounded frame's accumulators (a bounded one's are its rows').
    accs: Option<Vec<AccSnapshot>>,
    last: Option<i64>,
}

pub struct OverOp {
    spec: OverSpec,
    order: RowConverter,
    key_codec: RowCodec,
    /// Per aggregate: the codec of what it accumulates.
    codecs: Vec<ScalarCodec>,
    partitions: HashMap<Vec<u8>, Partition>,
    /// Time → partitions with a row waiting then or later.
    due: BTreeMap<EventTime, Vec<Vec<u8>>>,
    /// Time → `RANGE` partitions whose frame empties once the watermark passes it.
    expiry: BTreeMap<EventTime, Vec<Vec<u8>>>,
    /// Partitions changed since the last checkpoint.
    dirty: HashSet<Vec<u8>>,
}

impl OverOp {
    pub fn new(spec: OverSpec) -> Result<Self, RuntimeError> {
        Ok(OverOp {
            order: count_window_order(&spec.order_types)?,
            key_codec: RowCodec::new(spec.key_schema.clone())?,
            codecs: value_codecs(&spec.aggs)?,
            spec,
            partitions: HashMap::new(),
            due: BTreeMap::new(),
            expiry: BTreeMap::new(),
            dirty: HashSet::new(),
        })
    }

    fn fresh_accs(&self) -> Result<Vec<Accumulator>, RuntimeError> {
        let retract = !matches!(
            self.spec.frame,
            OverFrame::RowsUnbounded | OverFrame::RangeUnbounded
        );
        self.spec
            .aggs
            .iter()
            .map(|a| Accumulator::new(&a.call, &a.sum_type, retract))
            .collect()
    }

    /// Takes every waiting row before `wm` into its partition's frame, in
    /// order; returns the rows with their aggregates' values.
    fn take_until(
        &mut self,
        wm: EventTime,
    ) -> Result<Vec<(Waiting, Vec<ScalarValue>)>, RuntimeError> {
        let mut keys = Vec::new();
        while let Some(entry) = self.due.first_entry() {
            if *entry.key() >= wm {
                break;
            }
            keys.extend(entry.remove());
        }
        let frame = self.spec.frame;
        let mut out = Vec::new();
        for key in keys {
            let Some(p) = self.partitions.get_mut(&key) else {
                continue;
            };
            // An entry of a time since taken (its row came due twice).
            if p.earliest >= wm {
                continue;
            }
            p.waiting
                .sort_by(|a, b| a.time.cmp(&b.time).then_with(|| a.order().cmp(&b.order())));
            let ready = p.waiting.partition_point(|w| w.time < wm);
            let mut waiting = std::mem::take(&mut p.waiting);
            let mut taken: VecDeque<Waiting> = waiting.drain(..ready).collect();
            while let Some(first) = taken.front() {
                // RANGE frames take rows of one time together: peers see each other.
                let t = first.time;
                let peers = match frame {
                    OverFrame::Range(_) | OverFrame::RangeUnbounded => {
                        taken.iter().take_while(|w| w.time == t).count()
                    }
                    OverFrame::Rows(_) | OverFrame::RowsUnbounded => 1,
                };
                for w in taken.range(..peers) {
                    let values = (0..self.spec.aggs.len())
                        .map(|a| w.arg(a))
                        .collect::<Result<Vec<_>, _>>()?;
                    for (acc, v) in p.accs.iter_mut().zip(&values) {
                        if let Some(v) = v {
                            acc.update(v.clone(), 1)?;
                        }
                    }
                    if matches!(frame, OverFrame::Rows(_) | OverFrame::Range(_)) {
                        p.frame.push_back(InFrame { time: t, values });
                    }
                }
                // Rows that fell out of the frame.
                loop {
                    let out_of_frame = match (frame, p.frame.front()) {
                        (OverFrame::Rows(n), Some(_)) => p.frame.len() as u64 > n + 1,
                        (OverFrame::Range(d), Some(front)) => front.time < t.saturating_sub(d),
                        _ => false,
                    };
                    if !out_of_frame {
                        break;
                    }
                    let gone = p.frame.pop_front().expect("a front row");
                    for (acc, v) in p.accs.iter_mut().zip(gone.values) {
                        if let Some(v) = v {
                            acc.update(v, -1)?;
                        }
                    }
                }
                let values = values_of(&p.accs, &self.spec.aggs)?;
                out.extend(taken.drain(..peers).map(|w| (w, values.clone())));
                p.last = Some(t);
            }
            p.waiting = match waiting.is_empty() {
                true => Vec::new(),
                false => waiting,
            };
            p.earliest = p.waiting.first().map_or(i64::MAX, |w| w.time);
            if !p.waiting.is_empty() {
                self.due.entry(p.earliest).or_default().push(key.clone());
            }
            if let (OverFrame::Range(d), Some(last)) = (frame, p.last) {
                // A later row (after the watermark) would drop every row of the frame.
                self.expiry
                    .entry(last.saturating_add(d).saturating_add(1))
                    .or_default()
                    .push(key.clone());
            }
            self.dirty.insert(key);
        }
        Ok(out)
    }

    /// Drops `RANGE` partitions whose frame every later row would empty.
    fn expire(&mut self, wm: EventTime) {
        let OverFrame::Range(d) = self.spec.frame else {
            return;
        };
        while let Some(entry) = self.expiry.first_entry() {
            if *entry.key() > wm {
                break;
            }
            for key in entry.remove() {
                let idle = self.partitions.get(&key).is_some_and(|p| {
                    p.waiting.is_empty() && p.last.is_none_or(|l| l.saturating_add(d) < wm)
                });
                if idle {
                    self.partitions.remove(&key);
                    self.dirty.insert(key);
                }
            }
        }
    }

    /// The rows taken, each with its aggregates, as a chunk of the output.
    fn emit(
        &self,
        rows: &[(Waiting, Vec<ScalarValue>)],
        out: &mut Vec<Message>,
    ) -> Result<(), RuntimeError> {
        if rows.is_empty() {
            return Ok(());
        }
        // The order key holds the time, then the input columns read.
        let order = self
            .order
            .convert_rows(rows.iter().map(|(w, _)| w.order()))?;
        let width = self.spec.columns.len();
        let mut columns: Vec<ArrayRef> = self
            .spec
            .columns
            .iter()
            .map(|c| match c {
                Some(at) => order[*at].clone(),
                None => new_null_array(&DataType::Null, rows.len()),
            })
            .collect();
        for (a, field) in self.spec.schema.fields().iter().skip(width).enumerate() {
            columns.push(column_of(
                rows.iter().map(|(_, v)| &v[a]),
                field.data_type(),
            )?);
        }
        let columns = columns
            .into_iter()
            .zip(self.spec.schema.fields())
            .map(|(c, f)| match c.data_type() == f.data_type() {
                true => Ok(c),
                false => cast(&c, f.data_type()),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let batch = RecordBatch::try_new(self.spec.schema.clone(), columns)?;
        out.push(Message::Data(Chunk::inserts(batch)));
        Ok(())
    }
}

impl Operator for OverOp {
    fn name(&self) -> &'static str {
        "OverAggregate"
    }

    fn process(&mut self, chunk: Chunk, _out: &mut Vec<Message>) -> Result<(), RuntimeError> {
        let (keys, time) = keys_and_times(
            &chunk,
            &self.spec.partition,
            &self.key_codec,
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
            if !self.partitions.contains_key(key) {
                let accs = self.fresh_accs()?;
                self.partitions.insert(
                    key.to_vec(),
                    Partition {
                        waiting: Vec::new(),
                        earliest: i64::MAX,
                        frame: VecDeque::new(),
                        accs,
                        last: None,
                    },
                );
            }
            let p = self.partitions.get_mut(key).expect("inserted above");
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
        let rows = self.take_until(wm)?;
        self.emit(&rows, out)?;
        self.expire(wm);
        out.push(Message::Watermark(wm));
        Ok(())
    }

    fn on_end(&mut self, out: &mut Vec<Message>) -> Result<(), RuntimeError> {
        let rows = self.take_until(EventTime::MAX)?;
        self.emit(&rows, out)?;
        out.push(Message::End);
        Ok(())
    }

    fn checkpoint(&mut self, state: &mut OperatorWriter<'_>) -> Result<(), RuntimeError> {
        let unbounded = matches!(
            self.spec.frame,
            OverFrame::RowsUnbounded | OverFrame::RangeUnbounded
        );
        for key in self.dirty.drain() {
            let Some(p) = self.partitions.get_mut(&key) else {
                state.delete(&key);
                continue;
            };
            let waiting = p
                .waiting
                .iter()
                .map(|w| w.stored(&self.codecs))
                .collect::<Result<Vec<_>, _>>()?;
            let frame = p
                .frame
                .iter()
                .map(|r| {
                    let values = r
                        .values
                        .iter()
                        .zip(&self.codecs)
                        .map(|(v, codec)| v.as_ref().map(|v| codec.encode(v)).transpose())
                        .collect::<Result<Vec<_>, _>>()?;
                    Ok((r.time, values))
                })
                .collect::<Result<Vec<_>, RuntimeError>>()?;
            let accs = match unbounded {
                true => Some(snapshot_accs(&mut p.accs, &self.codecs)?),
                false => None,
            };
            let stored = StoredPartition {
                waiting,
                frame,
                accs,
                last: p.last,
            };
            let value = bincode::serde::encode_to_vec(&stored, bincode::config::standard())
                .map_err(|e| RuntimeError::Internal(format!("encoding an OVER partition: {e}")))?;
            state.put(&key, value);
        }
        Ok(())
    }

    fn restore(&mut self, entries: Vec<(Vec<u8>, Vec<u8>)>) -> Result<(), RuntimeError> {
        for (key, value) in entries {
            let (stored, _): (StoredPartition, usize) =
                bincode::serde::decode_from_slice(&value, bincode::config::standard())
                    .map_err(|e| RuntimeError::Internal(format!("a stored OVER partition: {e}")))?;
            let mut accs = match stored.accs {
                Some(snaps) => restore_accs(snaps, &self.spec.aggs, &self.codecs)?,
                None => self.fresh_accs()?,
            };
            let mut frame = VecDeque::with_capacity(stored.frame.len());
            for (time, encoded) in stored.frame {
                let values = encoded
                    .iter()
                    .zip(&self.codecs)
                    .map(|(v, codec)| v.as_ref().map(|v| codec.decode(v)).transpose())
                    .collect::<Result<Vec<_>, _>>()?;
                // A bounded frame's accumulators hold exactly its rows.
                for (acc, v) in accs.iter_mut().zip(&values) {
                    if let Some(v) = v {
                        acc.update(v.clone(), 1)?;
                    }
                }
                frame.push_back(InFrame { time, values });
            }
            let waiting =
                restore_waiting(&self.order, &self.spec.aggs, &self.codecs, stored.waiting)?;
            let earliest = waiting.iter().map(|w| w.time).min().unwrap_or(i64::MAX);
            if !waiting.is_empty() {
                self.due.entry(earliest).or_default().push(key.clone());
            }
            if let (OverFrame::Range(d), Some(last)) = (self.spec.frame, stored.last) {
                self.expiry
                    .entry(last.saturating_add(d).saturating_add(1))
                    .or_default()
                    .push(key.clone());
            }
            self.partitions.insert(
                key,
                Partition {
                    waiting,
                    earliest,
                    frame,
                    accs,
                    last: stored.last,
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
    use crate::runtime::chunk::Op;
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::datatypes::{Field, Int64Type, Schema, TimeUnit};
    use datafusion::logical_expr::Operator as BinOp;
    use datafusion::physical_expr::expressions::{lit, BinaryExpr, Column};

    const TS: DataType = DataType::Timestamp(TimeUnit::Nanosecond, None);

    /// Over (k, v, ts), per k: SUM(v) and MIN(v) FILTER (WHERE v % 3 = 0)
    /// over `frame`; the output is (k, v, ts, sum, min).
    fn op(frame: OverFrame) -> OverOp {
        let col = |name: &str, i: usize| Arc::new(Column::new(name, i)) as Arc<dyn PhysicalExpr>;
        let call = |kind| AggCall {
            kind,
            args: vec![],
            distinct: false,
            filter: None,
            output_type: DataType::Int64,
        };
        let multiple_of_3 = {
            let rest = BinaryExpr::new(col("v", 1), BinOp::Modulo, lit(3i64));
            Arc::new(BinaryExpr::new(Arc::new(rest), BinOp::Eq, lit(0i64))) as Arc<dyn PhysicalExpr>
        };
        OverOp::new(OverSpec {
            partition: vec![col("k", 0)],
            key_schema: Arc::new(Schema::new(vec![Field::new("k0", DataType::Int64, true)])),
            time: col("ts", 2),
            order: vec![col("ts", 2), col("k", 0), col("v", 1), col("ts", 2)],
            order_types: vec![TS, DataType::Int64, DataType::Int64, TS],
            columns: vec![Some(1), Some(2), Some(3)],
            frame,
            aggs: vec![
                CompiledAgg::new(call(AggKind::Sum), Some(col("v", 1)), Some(DataType::Int64)),
                CompiledAgg::new(call(AggKind::Min), Some(col("v", 1)), Some(DataType::Int64))
                    .with_filter(Some(multiple_of_3)),
            ],
            schema: Arc::new(Schema::new(vec![
                Field::new("k", DataType::Int64, true),
                Field::new("v", DataType::Int64, true),
                Field::new("ts", TS, true),
                Field::new("s", DataType::Int64, true),
                Field::new("m", DataType::Int64, true),
            ])),
        })
        .unwrap()
    }

    /// Rows (k, v, ts).
    fn data(rows: &[(i64, i64, i64)]) -> Message {
        crate::runtime::operators::partition_window::kvts_message(rows)
    }

    /// (k, v, ts, sum, min or None).
    type Row = (i64, i64, i64, i64, Option<i64>);

    fn feed(o: &mut OverOp, msg: Message) -> Vec<Row> {
        let mut out = Vec::new();
        o.handle(msg, &mut out).unwrap();
        let mut v = Vec::new();
        for m in &out {
            if let Message::Data(c) = m {
                let b = &c.batch;
                let int = |j: usize, i: usize| b.column(j).as_primitive::<Int64Type>().value(i);
                let ts = b
                    .column(2)
                    .as_primitive::<datafusion::arrow::datatypes::TimestampNanosecondType>();
                for i in 0..b.num_rows() {
                    assert_eq!(c.op(i), Op::Insert);
                    let min = b.column(4).is_valid(i).then(|| int(4, i));
                    v.push((int(0, i), int(1, i), ts.value(i), int(3, i), min));
                }
            }
        }
        v
    }

    #[test]
    fn rows_and_range_frames_worked_by_hand() {
        // Rows of key 1 at times 1, 2, 2, 5 (v 3, 4, 6, 9), out of order;
        // key 2 at 2 (v 1).
        let input = [(1, 6, 2), (1, 3, 1), (2, 1, 2), (1, 9, 5), (1, 4, 2)];
        let mut o = op(OverFrame::Rows(1));
        assert_eq!(feed(&mut o, data(&input)), vec![]);
        // Times before 2 only: key 1's row at 1.
        assert_eq!(
            feed(&mut o, Message::Watermark(2)),
            vec![(1, 3, 1, 3, Some(3))]
        );
        // The rows at 2 in column order (v 4 before 6), each with the one before.
        assert_eq!(
            feed(&mut o, Message::End),
            vec![
                (1, 4, 2, 7, Some(3)),
                (1, 6, 2, 10, Some(6)),
                (1, 9, 5, 15, Some(6)),
                (2, 1, 2, 1, None),
            ]
        );
        // RANGE 1 (ns): rows of time 2 see each other and the row at 1; the
        // row at 5 sees itself.
        let mut o = op(OverFrame::Range(1));
        feed(&mut o, data(&input));
        assert_eq!(
            feed(&mut o, Message::End),
            vec![
                (1, 3, 1, 3, Some(3)),
                (1, 4, 2, 13, Some(3)),
                (1, 6, 2, 13, Some(3)),
                (1, 9, 5, 9, Some(9)),
                (2, 1, 2, 1, None),
            ]
        );
        // Unbounded: running totals; RANGE makes peers equal.
        let mut o = op(OverFrame::RangeUnbounded);
        feed(&mut o, data(&input));
        let rows = feed(&mut o, Message::End);
        let sums: Vec<i64> = rows.iter().map(|r| r.3).collect();
        assert_eq!(sums, vec![3, 13, 13, 22, 1]);
        let mut o = op(OverFrame::RowsUnbounded);
        feed(&mut o, data(&input));
        let rows = feed(&mut o, Message::End);
        let sums: Vec<i64> = rows.iter().map(|r| r.3).collect();
        assert_eq!(sums, vec![3, 7, 13, 22, 1]);
    }

    #[test]
    fn a_range_partition_goes_once_the_watermark_empties_its_frame() {
        let mut o = op(OverFrame::Range(5));
        feed(&mut o, data(&[(1, 3, 1), (1, 4, 4)]));
        assert_eq!(
            feed(&mut o, Message::Watermark(5)),
            vec![(1, 3, 1, 3, Some(3)), (1, 4, 4, 7, Some(3))]
        );
        feed(&mut o, data(&[(1, 6, 8)]));
        // The row at 1 left the frame [3, 8].
        assert_eq!(
            feed(&mut o, Message::Watermark(9)),
            vec![(1, 6, 8, 10, Some(6))]
        );
        // Past the first rows' expiry (4 + 5), not the last's (8 + 5): kept.
        feed(&mut o, Message::Watermark(11));
        assert_eq!(o.partitions.len(), 1);
        feed(&mut o, data(&[(1, 9, 12)]));
        assert_eq!(
            feed(&mut o, Message::Watermark(13)),
            vec![(1, 9, 12, 15, Some(6))]
        );
        // Past 12 + 5: any later row's frame would hold none of these; the partition goes.
        feed(&mut o, Message::Watermark(18));
        assert_eq!(o.partitions.len(), 0);
        feed(&mut o, data(&[(1, 5, 30)]));
        assert_eq!(feed(&mut o, Message::End), vec![(1, 5, 30, 5, None)]);
    }

    #[test]
    fn a_restored_over_aggregate_gives_the_same_rows_as_one_that_never_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(crate::state::Store::open(dir.path()).unwrap());
        let job = crate::state::JobState::new(store, 1);
        for frame in [
            OverFrame::Rows(2),
            OverFrame::Range(6),
            OverFrame::RowsUnbounded,
            OverFrame::RangeUnbounded,
        ] {
            let (mut straight, mut before) = (op(frame), op(frame));
            let mut emitted = 0;
            for e in 0..40i64 {
                // Times out of order by up to 8, some shared; the watermark 6
                // behind the epoch's base leaves rows waiting across epochs,
                // and a key idle for a while lets a RANGE frame empty.
                let batch: Vec<(i64, i64, i64)> = (0..5)
                    .map(|j| {
                        (
                            (j + e / 10) % 3,
                            (e * 5 + j) % 11,
                            e * 4 + (e * 7 + j * 3) % 9 / 2,
                        )
                    })
                    .collect();
                for msg in [data(&batch), Message::Watermark(e * 4 - 6)] {
                    let mut a = feed(&mut straight, msg.clone());
                    let mut b = feed(&mut before, msg);
                    // Partitions emit in the order they came due, which a restore changes.
                    a.sort();
                    b.sort();
                    emitted += a.len();
                    assert_eq!(b, a, "{frame:?}, epoch {e}");
                }
                let mut w = job.begin(e as u64 + 1);
                before.checkpoint(&mut w.operator(0)).unwrap();
                job.commit(w, &crate::state::EpochRecord::bare(e as u64 + 1))
                    .unwrap();
                if e % 7 == 6 {
                    before = op(frame);
                    before.restore(job.operator_state(0).unwrap()).unwrap();
                }
            }
            assert!(emitted > 150, "{emitted} rows");
            let mut a = feed(&mut straight, Message::End);
            let mut b = feed(&mut before, Message::End);
            a.sort();
            b.sort();
            assert_eq!(b, a, "{frame:?} at the end");
            job.destroy().unwrap();
        }
    }
}
