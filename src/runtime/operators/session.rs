//! Aggregation over SESSION windows. Per partition key, the open sessions
//! are kept in time order, disjoint: a row at `t` opens `[t, t + gap]`, and
//! every session that window touches merges with it (accumulators merged,
//! bounds widened), as Flink merges session windows. A session closes once
//! the watermark passes its end (no row on time can reach it any more).
//!
//! Emits updates as rows arrive (a session whose bounds changed is deleted
//! and inserted again, since its bounds are part of its key; a session
//! merged into another is deleted), at most once per emission interval, or,
//! with EMIT ON WINDOW CLOSE, each session once when it closes. A
//! checkpoint writes each changed partition's open sessions as one value.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::Array;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::ScalarValue;
use datafusion::physical_expr::PhysicalExpr;
use hashbrown::{HashMap, HashSet};

use super::accumulator::{AccSnapshot, Accumulator};
use super::aggregate::{args_of, evaluate_args, CompiledAgg, EMIT_INTERVAL};
use super::partition_window::{
    keys_and_times, restore_accs, snapshot_accs, value_codecs, values_of, WindowOutput, WindowRow,
};
use crate::plan::WindowBound;
use crate::runtime::chunk::{Chunk, Op};
use crate::runtime::message::{Barrier, EventTime, Message};
use crate::runtime::operator::Operator;
use crate::runtime::RuntimeError;
use crate::state::{OperatorWriter, ScalarCodec};

/// What a session aggregate is built from.
pub struct SessionSpec {
    /// The partition key, over the input.
    pub partition: Vec<Arc<dyn PhysicalExpr>>,
    /// The partition key's schema, as the exchange into the stage encodes it.
    pub key_schema: SchemaRef,
    /// The rows' event time, over the input.
    pub time: Arc<dyn PhysicalExpr>,
    /// Nanoseconds.
    pub gap: i64,
    /// Per group column of the output: the bound it holds (None: the next
    /// partition column).
    pub bounds: Vec<Option<WindowBound>>,
    pub aggs: Vec<CompiledAgg>,
    /// Group columns, then one per aggregate.
    pub schema: SchemaRef,
    pub emit_on_window_close: bool,
}

/// A row emitted for a session: its start, its last row's time, its values.
type Shown = (i64, i64, Vec<ScalarValue>);

struct Session {
    start: i64,
    /// The time of its last row; it ends `gap` later.
    last: i64,
    accs: Vec<Accumulator>,
    /// What downstream holds for it (updates only).
    shown: Option<Shown>,
    /// Changed since it was last emitted.
    touched: bool,
}

/// A partition's open sessions, in time order, disjoint.
#[derive(Default)]
struct Partition {
    list: Vec<Session>,
    /// Listed in `pending`.
    pending: bool,
}

/// A session as a checkpoint stores it.
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredSession {
    start: i64,
    last: i64,
    accs: Vec<AccSnapshot>,
}

pub struct SessionOp {
    spec: SessionSpec,
    output: WindowOutput,
    /// Per aggregate: the codec of what it accumulates.
    codecs: Vec<ScalarCodec>,
    /// Per partition key: its open sessions.
    sessions: HashMap<Vec<u8>, Partition>,
    /// End → partitions with a session ending then (or later: an entry is
    /// looked at again when the watermark passes it).
    closing: BTreeMap<EventTime, Vec<Vec<u8>>>,
    /// Partitions changed since the last checkpoint.
    dirty: HashSet<Vec<u8>>,
    /// Partitions with sessions changed since the last emission, in
    /// first-touch order (listed when their `pending` flag is set).
    pending: Vec<Vec<u8>>,
    /// Rows shown for sessions merged into others: deleted at the next emission.
    retired: Vec<(Vec<u8>, Shown)>,
    emit_interval: Duration,
    last_emit: Instant,
}

impl SessionOp {
    pub fn new(spec: SessionSpec) -> Result<Self, RuntimeError> {
        let codecs = value_codecs(&spec.aggs)?;
        let output = WindowOutput::new(
            spec.key_schema.clone(),
            !spec.partition.is_empty(),
            spec.bounds.clone(),
            spec.schema.clone(),
        )?;
        Ok(SessionOp {
            output,
            spec,
            codecs,
            sessions: HashMap::new(),
            closing: BTreeMap::new(),
            dirty: HashSet::new(),
            pending: Vec::new(),
            retired: Vec::new(),
            emit_interval: EMIT_INTERVAL,
            last_emit: Instant::now(),
        })
    }

    /// Emits changes at most every `interval` (zero: after every chunk).
    pub fn with_emit_interval(mut self, interval: Duration) -> Self {
        self.emit_interval = interval;
        self
    }

    fn values(&self, accs: &[Accumulator]) -> Result<Vec<ScalarValue>, RuntimeError> {
        values_of(accs, &self.spec.aggs)
    }

    /// The session of partition `key` a row at `t` belongs to, after
    /// merging every session its window touches; its index.
    fn place(&mut self, key: &[u8], t: i64) -> Result<usize, RuntimeError> {
        let gap = self.spec.gap;
        let list = &mut self.sessions.entry_ref(key).or_default().list;
        // Sessions are disjoint and in order: those touching [t, t + gap]
        // are a run.
        let from = list.partition_point(|s| s.last.saturating_add(gap) < t);
        let to = from + list[from..].partition_point(|s| s.start <= t.saturating_add(gap));
        if from == to {
            list.insert(
                from,
                Session {
                    start: t,
                    last: t,
                    accs: self
                        .spec
                        .aggs
                        .iter()
                        .map(|a| Accumulator::new(&a.call, &a.sum_type, false))
                        .collect::<Result<_, _>>()?,
                    shown: None,
                    touched: true,
                },
            );
            self.closing
                .entry(t.saturating_add(gap))
                .or_default()
                .push(key.to_vec());
            return Ok(from);
        }
        let merged: Vec<Session> = list.drain(from + 1..to).collect();
        let s = &mut list[from];
        for m in merged {
            s.last = s.last.max(m.last);
            for (acc, other) in s.accs.iter_mut().zip(m.accs) {
                acc.merge(other)?;
            }
            if let Some(shown) = m.shown {
                self.retired.push((key.to_vec(), shown));
            }
        }
        s.start = s.start.min(t);
        s.last = s.last.max(t);
        s.touched = true;
        Ok(from)
    }

    /// Output rows (change, partition key, (start, last, values)) as a chunk.
    fn build(&self, rows: &[(Op, &[u8], &Shown)]) -> Result<Option<Chunk>, RuntimeError> {
        let gap = self.spec.gap;
        let rows: Vec<WindowRow> = rows
            .iter()
            .map(|(op, key, (start, last, values))| WindowRow {
                op: *op,
                key,
                start: *start,
                end: last.saturating_add(gap),
                values,
            })
            .collect();
        self.output.chunk(&rows)
    }

    /// Emits the rows of sessions merged away (deleted) and of those
    /// changed since their last emission.
    fn emit(&mut self, out: &mut Vec<Message>) -> Result<(), RuntimeError> {
        self.last_emit = Instant::now();
        if self.spec.emit_on_window_close {
            return Ok(());
        }
        // Merged-away sessions first; no two rows here share bounds (a
        // session's rows stay within its bounds, and sessions are disjoint).
        let retired = std::mem::take(&mut self.retired);
        let mut changes: Vec<(Op, Vec<u8>, Shown)> = retired
            .into_iter()
            .map(|(k, shown)| (Op::Delete, k, shown))
            .collect();
        for key in std::mem::take(&mut self.pending) {
            let Some(part) = self.sessions.get(&key) else {
                continue;
            };
            let mut now = Vec::new();
            for (i, s) in part.list.iter().enumerate() {
                if s.touched {
                    now.push((i, (s.start, s.last, self.values(&s.accs)?)));
                }
            }
            let part = self.sessions.get_mut(&key).expect("present");
            part.pending = false;
            let list = &mut part.list;
            for (i, new) in now {
                let s = &mut list[i];
                s.touched = false;
                match s.shown.take() {
                    Some(old) if old == new => {}
                    Some(old) if old.0 == new.0 && old.1 == new.1 => {
                        changes.push((Op::UpdateBefore, key.clone(), old));
                        changes.push((Op::UpdateAfter, key.clone(), new.clone()));
                    }
                    Some(old) => {
                        changes.push((Op::Delete, key.clone(), old));
                        changes.push((Op::Insert, key.clone(), new.clone()));
                    }
                    None => changes.push((Op::Insert, key.clone(), new.clone())),
                }
                s.shown = Some(new);
            }
        }
        let rows: Vec<(Op, &[u8], &Shown)> = changes
            .iter()
            .map(|(op, k, s)| (*op, k.as_slice(), s))
            .collect();
        if let Some(chunk) = self.build(&rows)? {
            out.push(Message::Data(chunk));
        }
        Ok(())
    }

    /// Closes every session ending before `wm`: with EMIT ON WINDOW CLOSE
    /// its row goes out now; its state goes.
    fn close_until(&mut self, wm: EventTime, out: &mut Vec<Message>) -> Result<(), RuntimeError> {
        let gap = self.spec.gap;
        let mut finals: Vec<(Vec<u8>, Shown)> = Vec::new();
        while let Some(entry) = self.closing.first_entry() {
            if *entry.key() >= wm {
                break;
            }
            for key in entry.remove() {
                let Some(Partition { list, .. }) = self.sessions.get_mut(&key) else {
                    continue;
                };
                let open = list.partition_point(|s| s.last.saturating_add(gap) < wm);
                if open == 0 {
                    // An entry of a session since extended or merged.
                    if let Some(s) = list.first() {
                        let end = s.last.saturating_add(gap);
                        self.closing.entry(end).or_default().push(key);
                    }
                    continue;
                }
                let closed: Vec<Session> = list.drain(..open).collect();
                let next_end = list.first().map(|s| s.last.saturating_add(gap));
                if list.is_empty() {
                    self.sessions.remove(&key);
                }
                if self.spec.emit_on_window_close {
                    for s in &closed {
                        finals.push((key.clone(), (s.start, s.last, self.values(&s.accs)?)));
                    }
                }
                if let Some(end) = next_end {
                    self.closing.entry(end).or_default().push(key.clone());
                }
                self.dirty.insert(key);
            }
        }
        let rows: Vec<(Op, &[u8], &Shown)> = finals
            .iter()
            .map(|(k, s)| (Op::Insert, k.as_slice(), s))
            .collect();
        if let Some(chunk) = self.build(&rows)? {
            out.push(Message::Data(chunk));
        }
        Ok(())
    }
}

impl Operator for SessionOp {
    fn name(&self) -> &'static str {
        "SessionAggregate"
    }

    fn process(&mut self, chunk: Chunk, out: &mut Vec<Message>) -> Result<(), RuntimeError> {
        let (keys, time) = keys_and_times(
            &chunk,
            &self.spec.partition,
            &self.output.key_codec,
            &self.spec.time,
        )?;
        let batch = &chunk.batch;
        let inputs = evaluate_args(&self.spec.aggs, batch)?;
        let args = args_of(&inputs);
        for row in 0..batch.num_rows() {
            // A row without a time is late: it never reaches here.
            if time.is_null(row) {
                continue;
            }
            let key = keys.as_ref().map_or(&[][..], |k| k.row(row).data());
            let i = self.place(key, time.value(row))?;
            let part = self.sessions.get_mut(key).expect("placed");
            for (acc, arg) in part.list[i].accs.iter_mut().zip(&args) {
                acc.update_at(arg, row, 1)?;
            }
            if !self.dirty.contains(key) {
                self.dirty.insert(key.to_vec());
            }
            if !self.spec.emit_on_window_close && !part.pending {
                part.pending = true;
                self.pending.push(key.to_vec());
            }
        }
        if self.last_emit.elapsed() >= self.emit_interval {
            self.emit(out)?;
        }
        Ok(())
    }

    fn on_watermark(&mut self, wm: EventTime, out: &mut Vec<Message>) -> Result<(), RuntimeError> {
        self.emit(out)?;
        self.close_until(wm, out)?;
        out.push(Message::Watermark(wm));
        Ok(())
    }

    fn on_barrier(&mut self, barrier: Barrier, out: &mut Vec<Message>) -> Result<(), RuntimeError> {
        self.emit(out)?;
        out.push(Message::Barrier(barrier));
        Ok(())
    }

    fn on_end(&mut self, out: &mut Vec<Message>) -> Result<(), RuntimeError> {
        self.emit(out)?;
        self.close_until(EventTime::MAX, out)?;
        out.push(Message::End);
        Ok(())
    }

    fn on_tick(
        &mut self,
        now: Instant,
        out: &mut Vec<Message>,
    ) -> Result<Option<Instant>, RuntimeError> {
        if self.pending.is_empty() && self.retired.is_empty() {
            return Ok(None);
        }
        let due = self.last_emit + self.emit_interval;
        if now < due {
            return Ok(Some(due));
        }
        self.emit(out)?;
        Ok(None)
    }

    fn checkpoint(&mut self, state: &mut OperatorWriter<'_>) -> Result<(), RuntimeError> {
        for key in self.dirty.drain() {
            let Some(part) = self.sessions.get_mut(&key) else {
                state.delete(&key);
                continue;
            };
            let mut stored = Vec::with_capacity(part.list.len());
            for s in part.list.iter_mut() {
                let accs = snapshot_accs(&mut s.accs, &self.codecs)?;
                stored.push(StoredSession {
                    start: s.start,
                    last: s.last,
                    accs,
                });
            }
            let value = bincode::serde::encode_to_vec(&stored, bincode::config::standard())
                .map_err(|e| RuntimeError::Internal(format!("encoding sessions: {e}")))?;
            state.put(&key, value);
        }
        Ok(())
    }

    fn restore(&mut self, entries: Vec<(Vec<u8>, Vec<u8>)>) -> Result<(), RuntimeError> {
        for (key, value) in entries {
            let (stored, _): (Vec<StoredSession>, usize) =
                bincode::serde::decode_from_slice(&value, bincode::config::standard())
                    .map_err(|e| RuntimeError::Internal(format!("a stored session: {e}")))?;
            let mut list = Vec::with_capacity(stored.len());
            for s in stored {
                let accs = restore_accs(s.accs, &self.spec.aggs, &self.codecs)?;
                // Updates were all emitted before the checkpoint: what
                // downstream holds is the session as it was then.
                let shown = match self.spec.emit_on_window_close {
                    true => None,
                    false => Some((s.start, s.last, self.values(&accs)?)),
                };
                self.closing
                    .entry(s.last.saturating_add(self.spec.gap))
                    .or_default()
                    .push(key.clone());
                list.push(Session {
                    start: s.start,
                    last: s.last,
                    accs,
                    shown,
                    touched: false,
                });
            }
            self.sessions.insert(
                key,
                Partition {
                    list,
                    pending: false,
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
    use crate::state::RowCodec;
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::array::{ArrayRef, Int64Array};
    use datafusion::arrow::compute::cast;
    use datafusion::arrow::datatypes::{DataType, TimeUnit};
    use datafusion::arrow::datatypes::{Field, Int64Type, Schema};
    use datafusion::physical_expr::expressions::Column;

    const TS: DataType = DataType::Timestamp(TimeUnit::Nanosecond, None);

    /// Per k, sessions of gap 5 over column ts: (k, start, end, COUNT(*), SUM(v)).
    fn op(emit_on_close: bool) -> SessionOp {
        let call = |kind| AggCall {
            kind,
            args: vec![],
            distinct: false,
            filter: None,
            output_type: DataType::Int64,
        };
        let v: Arc<dyn PhysicalExpr> = Arc::new(Column::new("v", 1));
        let out = Schema::new(vec![
            Field::new("k", DataType::Int64, true),
            Field::new("window_start", TS, true),
            Field::new("window_end", TS, true),
            Field::new("n", DataType::Int64, true),
            Field::new("s", DataType::Int64, true),
        ]);
        SessionOp::new(SessionSpec {
            partition: vec![Arc::new(Column::new("k", 0))],
            key_schema: Arc::new(Schema::new(vec![Field::new("k0", DataType::Int64, true)])),
            time: Arc::new(Column::new("ts", 2)),
            gap: 5,
            bounds: vec![None, Some(WindowBound::Start), Some(WindowBound::End)],
            aggs: vec![
                CompiledAgg::new(call(AggKind::Count), None, None),
                CompiledAgg::new(call(AggKind::Sum), Some(v), Some(DataType::Int64)),
            ],
            schema: Arc::new(out),
            emit_on_window_close: emit_on_close,
        })
        .unwrap()
        .with_emit_interval(Duration::ZERO)
    }

    /// Rows (k, v, ts).
    fn input(rows: &[(i64, i64, i64)]) -> Chunk {
        crate::runtime::operators::partition_window::kvts_chunk(rows)
    }

    type Row = (Op, [i64; 5]);

    fn rows(out: &[Message]) -> Vec<Row> {
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

    fn feed(s: &mut SessionOp, msg: Message) -> Vec<Row> {
        let mut out = Vec::new();
        s.handle(msg, &mut out).unwrap();
        rows(&out)
    }

    fn data(r: &[(i64, i64, i64)]) -> Message {
        Message::Data(input(r))
    }

    #[test]
    fn sessions_grow_merge_and_close() {
        use Op::{Delete as D, Insert as I, UpdateAfter as UA, UpdateBefore as UB};
        let mut s = op(false);
        assert_eq!(feed(&mut s, data(&[(1, 1, 0)])), vec![(I, [1, 0, 5, 1, 1])]);
        assert_eq!(
            feed(&mut s, data(&[(1, 2, 10), (2, 7, 3)])),
            vec![(I, [1, 10, 15, 1, 2]), (I, [2, 3, 8, 1, 7])]
        );
        // 5 touches both [0, 5] and [10, 15]: one session; the later one goes.
        assert_eq!(
            feed(&mut s, data(&[(1, 4, 5)])),
            vec![
                (D, [1, 10, 15, 1, 2]),
                (D, [1, 0, 5, 1, 1]),
                (I, [1, 0, 15, 3, 7])
            ]
        );
        // Touching at the end (15 = 10 + 5) extends it; inside it, only values change.
        assert_eq!(
            feed(&mut s, data(&[(1, 8, 15)])),
            vec![(D, [1, 0, 15, 3, 7]), (I, [1, 0, 20, 4, 15])]
        );
        assert_eq!(
            feed(&mut s, data(&[(1, 16, 12)])),
            vec![(UB, [1, 0, 20, 4, 15]), (UA, [1, 0, 20, 5, 31])]
        );
        assert_eq!(
            feed(&mut s, data(&[(1, 32, 21)])),
            vec![(I, [1, 21, 26, 1, 32])]
        );
        // The watermark passes the end of [0, 20] and [3, 8]: they leave state.
        assert_eq!(feed(&mut s, Message::Watermark(21)), vec![]);
        assert_eq!(s.sessions[&key(1)].list.len(), 1);
        assert!(!s.sessions.contains_key(&key(2)));
    }

    fn key(k: i64) -> Vec<u8> {
        let codec = RowCodec::new(Arc::new(Schema::new(vec![Field::new(
            "k0",
            DataType::Int64,
            true,
        )])))
        .unwrap();
        let arr: ArrayRef = Arc::new(Int64Array::from(vec![k]));
        codec.rows(&[arr]).unwrap().row(0).data().to_vec()
    }

    #[test]
    fn emit_on_window_close_emits_each_session_once_when_the_watermark_passes_it() {
        use Op::Insert as I;
        let mut s = op(true);
        for r in [
            (1, 1, 0),
            (1, 2, 10),
            (2, 7, 3),
            (1, 4, 5),
            (1, 8, 15),
            (1, 32, 21),
        ] {
            assert_eq!(feed(&mut s, data(&[r])), vec![]);
        }
        // [3, 8] ends before 20; [0, 20] does not (a row at 20 would extend it).
        assert_eq!(
            feed(&mut s, Message::Watermark(20)),
            vec![(I, [2, 3, 8, 1, 7])]
        );
        assert_eq!(
            feed(&mut s, Message::Watermark(21)),
            vec![(I, [1, 0, 20, 4, 15])]
        );
        assert_eq!(feed(&mut s, Message::End), vec![(I, [1, 21, 26, 1, 32])]);
    }

    #[test]
    fn a_restored_session_aggregate_gives_the_same_changes_as_one_that_never_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(crate::state::Store::open(dir.path()).unwrap());
        let job = crate::state::JobState::new(store, 1);
        for emit_on_close in [false, true] {
            let (mut straight, mut before) = (op(emit_on_close), op(emit_on_close));
            let mut seen = Vec::new();
            for e in 0..40i64 {
                // Times wander forward, up to 8 apart within an epoch, and
                // each key skips three epochs in nine: sessions open, extend,
                // merge and close.
                let batch: Vec<(i64, i64, i64)> = (0..5)
                    .filter(|j| (e / 3 + j) % 3 != 0)
                    .map(|j| (j % 3, e * 5 + j, e * 4 + (e * 7 + j * 3) % 9 - 6))
                    .collect();
                for msg in [data(&batch), Message::Watermark(e * 4 - 6)] {
                    let a = feed(&mut straight, msg.clone());
                    seen.extend(a.iter().map(|r| r.0));
                    assert_eq!(feed(&mut before, msg), a, "epoch {e}");
                }
                let mut w = job.begin(e as u64 + 1);
                before.checkpoint(&mut w.operator(0)).unwrap();
                job.commit(w, &crate::state::EpochRecord::bare(e as u64 + 1))
                    .unwrap();
                if e % 7 == 6 {
                    before = op(emit_on_close);
                    before.restore(job.operator_state(0).unwrap()).unwrap();
                }
            }
            assert_eq!(
                feed(&mut before, Message::End),
                feed(&mut straight, Message::End)
            );
            // Sessions merged or grew (updates), or closed on the watermark.
            let count = |op: Op| seen.iter().filter(|o| **o == op).count();
            match emit_on_close {
                false => assert!(count(Op::Delete) > 20, "{seen:?}"),
                true => assert!(count(Op::Insert) > 20, "{seen:?}"),
            }
            job.destroy().unwrap();
        }
    }
}
