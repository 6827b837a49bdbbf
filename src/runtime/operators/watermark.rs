//! Watermark assignment at a source partition: the watermark advances row by
//! row (largest event time so far − delay) and a row behind the watermark of
//! the rows before it is late: counted and dropped (or, for `LATE(stream)`,
//! kept and the others dropped). Batching never changes which rows are late.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, BooleanArray, RecordBatch, TimestampNanosecondArray, UInt32Array,
};
use datafusion::arrow::compute::{cast, filter_record_batch, take_record_batch};
use datafusion::arrow::datatypes::SchemaRef;

use super::conform::{nanos, typed};
use crate::connectors::SourceMetrics;
use crate::plan::EventTimeSpec;
use crate::runtime::chunk::Chunk;
use crate::runtime::message::{EventTime, Message};
use crate::runtime::operator::Operator;
use crate::runtime::RuntimeError;
use crate::state::OperatorWriter;

/// Per-partition watermark state.
#[derive(Debug, Clone)]
pub struct WatermarkAssigner {
    spec: EventTimeSpec,
    max_event_time: Option<EventTime>,
}

/// The rows of a batch that are on time, and what happened.
pub struct Assigned {
    pub on_time: RecordBatch,
    /// The late rows: their positions in the batch, and the watermark each
    /// was late against (None: before any, for a row without a time).
    pub late_rows: Vec<(u32, Option<EventTime>)>,
    /// The watermark after the batch, if the partition has one.
    pub watermark: Option<EventTime>,
}

impl WatermarkAssigner {
    pub fn new(spec: EventTimeSpec) -> Self {
        WatermarkAssigner {
            spec,
            max_event_time: None,
        }
    }

    pub fn watermark(&self) -> Option<EventTime> {
        self.max_event_time
            .map(|m| m.saturating_sub(self.spec.delay))
    }

    /// Splits a batch into on-time rows; a row with a NULL event time is late too.
    pub fn assign(&mut self, batch: &RecordBatch) -> Result<Assigned, RuntimeError> {
        let ts = nanos(batch.column(self.spec.column))?;
        let nulls = ts.nulls().filter(|n| n.null_count() > 0);
        let mut late_rows = Vec::new();
        let mut max = self.max_event_time;
        for (i, &t) in ts.values().iter().enumerate() {
            let wm = max.map(|m| m.saturating_sub(self.spec.delay));
            if nulls.is_some_and(|n| n.is_null(i)) || wm.is_some_and(|wm| t < wm) {
                late_rows.push((i as u32, wm));
            } else {
                max = Some(max.map_or(t, |m| m.max(t)));
            }
        }
        self.max_event_time = max;
        let on_time = if late_rows.is_empty() {
            batch.clone()
        } else {
            let mut keep = vec![true; ts.len()];
            for &(i, _) in &late_rows {
                keep[i as usize] = false;
            }
            filter_record_batch(batch, &BooleanArray::from(keep))?
        };
        Ok(Assigned {
            on_time,
            late_rows,
            watermark: self.watermark(),
        })
    }
}

/// The assigner as the first operator after a source: emits on-time rows,
/// then the new watermark when it advanced.
pub struct WatermarkOp {
    assigner: WatermarkAssigner,
    metrics: Arc<SourceMetrics>,
    emitted: Option<EventTime>,
    /// `LATE(stream)`: emit the late rows instead (with the watermark each
    /// was late against, as a last column of this schema) and no watermark.
    late_schema: Option<SchemaRef>,
}

/// The late rows of `batch`, each with its watermark as a last column.
pub fn late_batch(
    batch: &RecordBatch,
    late_rows: &[(u32, Option<EventTime>)],
    schema: &SchemaRef,
) -> Result<RecordBatch, RuntimeError> {
    let indices = UInt32Array::from_iter_values(late_rows.iter().map(|(i, _)| *i));
    let rows = take_record_batch(batch, &indices)?;
    let watermarks: ArrayRef = Arc::new(TimestampNanosecondArray::from_iter(
        late_rows.iter().map(|(_, wm)| *wm),
    ));
    let wm_type = schema.field(schema.fields().len() - 1).data_type();
    let watermarks = cast(&watermarks, wm_type)?;
    let mut columns = rows.columns().to_vec();
    columns.push(watermarks);
    typed(columns, schema, late_rows.len())
}

impl WatermarkOp {
    pub fn new(spec: EventTimeSpec, metrics: Arc<SourceMetrics>) -> Self {
        WatermarkOp {
            assigner: WatermarkAssigner::new(spec),
            metrics,
            emitted: None,
            late_schema: None,
        }
    }

    /// The assigner of `LATE(stream)`, emitting late rows in `schema`.
    pub fn late_rows(spec: EventTimeSpec, metrics: Arc<SourceMetrics>, schema: SchemaRef) -> Self {
        WatermarkOp {
            late_schema: Some(schema),
            ..WatermarkOp::new(spec, metrics)
        }
    }
}

const STATE_KEY: &[u8] = b"watermark";

impl Operator for WatermarkOp {
    fn name(&self) -> &'static str {
        "WatermarkAssigner"
    }

    fn checkpoint(&mut self, state: &mut OperatorWriter<'_>) -> Result<(), RuntimeError> {
        if let Some(max) = self.assigner.max_event_time {
            let mut v = max.to_be_bytes().to_vec();
            v.extend_from_slice(&self.emitted.unwrap_or(i64::MIN).to_be_bytes());
            state.put(STATE_KEY, v);
        }
        Ok(())
    }

    fn restore(&mut self, entries: Vec<(Vec<u8>, Vec<u8>)>) -> Result<(), RuntimeError> {
        for (k, v) in entries {
            if k == STATE_KEY && v.len() == 16 {
                let max = i64::from_be_bytes(v[..8].try_into().expect("8 bytes"));
                let emitted = i64::from_be_bytes(v[8..].try_into().expect("8 bytes"));
                self.assigner.max_event_time = Some(max);
                self.emitted = (emitted != i64::MIN).then_some(emitted);
                self.metrics.watermark.fetch_max(
                    self.assigner.watermark().unwrap_or(i64::MIN),
                    Ordering::Relaxed,
                );
            }
        }
        Ok(())
    }

    fn process(&mut self, chunk: Chunk, out: &mut Vec<Message>) -> Result<(), RuntimeError> {
        let a = self.assigner.assign(&chunk.batch)?;
        if !a.late_rows.is_empty() {
            self.metrics
                .late
                .fetch_add(a.late_rows.len() as u64, Ordering::Relaxed);
        }
        if let Some(schema) = &self.late_schema {
            if !a.late_rows.is_empty() {
                let late = late_batch(&chunk.batch, &a.late_rows, schema)?;
                out.push(Message::Data(Chunk::inserts(late)));
            }
            if let Some(wm) = a.watermark {
                self.metrics.watermark.fetch_max(wm, Ordering::Relaxed);
            }
            return Ok(());
        }
        if a.on_time.num_rows() > 0 {
            out.push(Message::Data(Chunk::inserts(a.on_time)));
        }
        if let Some(wm) = a.watermark {
            if self.emitted.is_none_or(|e| wm > e) {
                self.emitted = Some(wm);
                self.metrics.watermark.fetch_max(wm, Ordering::Relaxed);
                out.push(Message::Watermark(wm));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{AsArray, Int64Array, TimestampMillisecondArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};

    fn batch(ts_ms: &[i64]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), true),
        ]));
        let ids: Vec<i64> = (0..ts_ms.len() as i64).collect();
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(ids)),
                Arc::new(TimestampMillisecondArray::from(ts_ms.to_vec())),
            ],
        )
        .unwrap()
    }

    const MS: i64 = 1_000_000;

    #[test]
    fn late_rows_do_not_depend_on_batching() {
        // delay 5 ms; times: 10, 3 (wm 5: late), 7 (wm 5: on time), 20, 14 (wm 15: late), 15 (on time)
        let times = [10, 3, 7, 20, 14, 15];
        let spec = EventTimeSpec {
            column: 1,
            delay: 5 * MS,
        };
        let mut whole = WatermarkAssigner::new(spec);
        let a = whole.assign(&batch(&times)).unwrap();
        assert_eq!(a.late_rows.len(), 2);
        assert_eq!(a.watermark, Some(15 * MS));
        let kept = a
            .on_time
            .column(1)
            .as_primitive::<datafusion::arrow::datatypes::TimestampMillisecondType>()
            .values()
            .to_vec();
        assert_eq!(kept, vec![10, 7, 20, 15]);
        // The late rows, and the watermark each was late against.
        assert_eq!(a.late_rows, vec![(1, Some(5 * MS)), (4, Some(15 * MS))]);
        let mut rows = WatermarkAssigner::new(spec);
        let late: Vec<Option<i64>> = times
            .iter()
            .flat_map(|t| rows.assign(&batch(&[*t])).unwrap().late_rows)
            .map(|(_, wm)| wm)
            .collect();
        assert_eq!(late, vec![Some(5 * MS), Some(15 * MS)]);
        assert_eq!(rows.watermark(), Some(15 * MS));
    }

    #[test]
    fn restored_watermark_judges_rows_the_same() {
        let spec = EventTimeSpec {
            column: 1,
            delay: 5 * MS,
        };
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(crate::state::Store::open(dir.path()).unwrap());
        let job = crate::state::JobState::new(store, 1);
        let mut op = WatermarkOp::new(spec, Arc::new(SourceMetrics::new()));
        let mut out = Vec::new();
        op.process(Chunk::inserts(batch(&[10, 20])), &mut out)
            .unwrap();
        let mut epoch = job.begin(1);
        op.checkpoint(&mut epoch.operator(0)).unwrap();
        let record = crate::state::EpochRecord::bare(1);
        job.commit(epoch, &record).unwrap();
        let metrics = Arc::new(SourceMetrics::new());
        let mut restored = WatermarkOp::new(spec, metrics.clone());
        restored.restore(job.operator_state(0).unwrap()).unwrap();
        out.clear();
        // 14 is behind the restored watermark 15; 16 is not, and moves nothing.
        restored
            .process(Chunk::inserts(batch(&[14, 16])), &mut out)
            .unwrap();
        assert_eq!(metrics.late.load(Ordering::Relaxed), 1);
        assert!(matches!(out.as_slice(), [Message::Data(c)] if c.num_rows() == 1));
    }
}
