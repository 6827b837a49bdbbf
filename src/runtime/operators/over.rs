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

use datafusion::arrow::array::{Array, ArrayRef, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::row::RowConverter;
use datafusion::common::ScalarValue;
use datafusion::physical_expr::PhysicalExpr;
use hashbrown::{HashMap, HashSet};

use super::accumulator::{AccSnapshot, Accumulator};
use super::aggregate::{column_of, evaluate_args, CompiledAgg};
use super::partition_window::{
    keys_and_times, restore_accs, restore_waiting, snapshot_accs, value_codecs, values_of, RowsOf,
    StoredWaiting, Waiting,
};
use super::project::evaluate;
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
    /// What rows are ordered by (the event time, then every input column,
    /// which the output's columns are read back from), and their types.
    pub order: Vec<Arc<dyn PhysicalExpr>>,
    pub order_types: Vec<DataType>,
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
            let taken: Vec<Waiting> = waiting.drain(..ready).collect();
            let mut i = 0;
            while i < taken.len() {
                // RANGE frames take rows of one time together: peers see each other.
                let t = taken[i].time;
                let peers = match frame {
                    OverFrame::Range(_) | OverFrame::RangeUnbounded => {
                        taken[i..].iter().take_while(|w| w.time == t).count()
                    }
                    OverFrame::Rows(_) | OverFrame::RowsUnbounded => 1,
                };
                for w in &taken[i..i + peers] {
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
                for w in taken[i..i + peers].iter() {
                    out.push((
                        Waiting {
                            time: w.time,
                            rows: w.rows.clone(),
                            row: w.row,
                        },
                        values.clone(),
                    ));
                }
                p.last = Some(t);
                i += peers;
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
        // The order key holds the time, then every input column.
        let order = self
            .order
            .convert_rows(rows.iter().map(|(w, _)| w.order()))?;
        let width = self.spec.schema.fields().len() - self.spec.aggs.len();
        let mut columns: Vec<ArrayRef> = order.into_iter().skip(1).take(width).collect();
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
        let (args, filters) = evaluate_args(&self.spec.aggs, batch)?;
        let rows = Arc::new(RowsOf {
            order: self
                .order
                .convert_columns(&evaluate(&self.spec.order, batch)?)?,
            args,
            filters,
        });
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
            if t < p.earliest {
                p.earliest = t;
                self.due.entry(t).or_default().push(key.to_vec());
            }
            p.waiting.push(Waiting {
                time: t,
                rows: rows.clone(),
                row: row as u32,
            });
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
