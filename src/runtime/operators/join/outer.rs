//! Outer joins: a row of a kept side (LEFT JOIN's left, RIGHT JOIN's right,
//! both of a FULL JOIN) comes out padded with NULLs while it meets nothing;
//! that padded row is taken back when it meets a row, and comes back when
//! the last row it met is taken back. Each kept row counts the rows it
//! meets; a count is not stored, but recounted from both sides' rows of the
//! key when they are read back.

use datafusion::arrow::array::{new_null_array, ArrayRef, RecordBatch, RecordBatchOptions};
use datafusion::arrow::array::{Array, UInt32Array};
use datafusion::arrow::compute::{interleave_record_batch, take_record_batch};

use super::{conform, evaluate, JoinOp};
use crate::runtime::chunk::{Chunk, Op};
use crate::runtime::message::Message;
use crate::runtime::RuntimeError;

/// Where an output row comes from: a pair, a row of this chunk padded, or a
/// stored row of the other side padded.
const PAIR: usize = 0;
const MINE: usize = 1;
const THEIRS: usize = 2;

impl JoinOp {
    /// Rows of side `input` beside rows of the other side: the output's
    /// columns, left first.
    fn beside(
        &self,
        input: usize,
        mine: &[ArrayRef],
        theirs: &[ArrayRef],
        rows: usize,
    ) -> Result<RecordBatch, RuntimeError> {
        let (l, r) = match input {
            0 => (mine, theirs),
            _ => (theirs, mine),
        };
        let columns: Vec<ArrayRef> = l.iter().chain(r).cloned().collect();
        let options = RecordBatchOptions::new().with_row_count(Some(rows));
        Ok(RecordBatch::try_new_with_options(
            self.schema.clone(),
            columns,
            &options,
        )?)
    }

    /// NULLs for every column of side `side`.
    fn nulls(&self, side: usize, rows: usize) -> Vec<ArrayRef> {
        let schema = &self.sides[side].schema;
        schema
            .fields()
            .iter()
            .map(|f| new_null_array(f.data_type(), rows))
            .collect()
    }

    /// Whether the join's condition holds for each row of a joined batch.
    fn holds(&self, joined: &RecordBatch) -> Result<Vec<bool>, RuntimeError> {
        let Some(filter) = &self.filter else {
            return Ok(vec![true; joined.num_rows()]);
        };
        let mask = filter.mask(joined)?;
        Ok((0..mask.len())
            .map(|i| mask.is_valid(i) && mask.value(i))
            .collect())
    }

    /// Counts, for each row of kept side `side` under `key`, the rows of
    /// the other side it meets.
    fn count_matches(&mut self, side: usize, key: &[u8]) -> Result<(), RuntimeError> {
        let (kept, other) = (&self.sides[side], &self.sides[1 - side]);
        let (mine, theirs) = (kept.rows.get(key), other.rows.get(key));
        let mut met = vec![0u32; mine.len()];
        if !mine.is_empty() && !theirs.is_empty() {
            let (m, t) = (mine.len() as u32, theirs.len() as u32);
            let a = kept.codec.decode(mine.iter().map(|(r, _)| &r[..]))?;
            let b = other.codec.decode(theirs.iter().map(|(r, _)| &r[..]))?;
            let ai = UInt32Array::from_iter_values(
                (0..m).flat_map(|i| std::iter::repeat_n(i, t as usize)),
            );
            let bi = UInt32Array::from_iter_values((0..m).flat_map(|_| 0..t));
            let (a, b) = (take_record_batch(&a, &ai)?, take_record_batch(&b, &bi)?);
            let joined = self.beside(side, a.columns(), b.columns(), ai.len())?;
            for (p, holds) in self.holds(&joined)?.into_iter().enumerate() {
                if holds {
                    met[p / t as usize] += theirs[p % t as usize].1;
                }
            }
        }
        self.sides[side].rows.set_matches(key, met);
        Ok(())
    }

    /// Rows from input `input` of an outer join.
    pub(super) fn process_outer(
        &mut self,
        input: usize,
        chunk: Chunk,
        out: &mut Vec<Message>,
    ) -> Result<(), RuntimeError> {
        let other = 1 - input;
        let batch = conform(&chunk.batch, &self.sides[input].schema)?;
        let n = batch.num_rows();
        let keys = evaluate(&self.sides[input].keys, &batch)?;
        let encoded = self.key_codec.rows(&keys)?;
        let null_key = |i: usize| keys.iter().any(|k| k.is_null(i));
        self.load_keys(input, &keys, &encoded)?;
        for i in (0..n).filter(|&i| !null_key(i)) {
            let key = encoded.row(i);
            for s in 0..2 {
                if self.sides[s].rows.matches_unknown(key.as_ref()) {
                    self.count_matches(s, key.as_ref())?;
                }
            }
        }
        // Each row's candidates: the other side's rows of its key, which
        // this chunk does not change; the condition is evaluated on all at once.
        // Per candidate: its row of this chunk, its position among the stored
        // rows of the key, and how many times that stored row is there.
        let (mut cand_row, mut cand_at, mut cand_count) = (Vec::new(), Vec::new(), Vec::new());
        let mut span = vec![(0, 0); n];
        let theirs = {
            let mut matched: Vec<&[u8]> = Vec::new();
            for i in (0..n).filter(|&i| !null_key(i)) {
                let start = cand_row.len();
                let stored = self.sides[other].rows.get(encoded.row(i).as_ref());
                for (j, (row, count)) in stored.iter().enumerate() {
                    cand_row.push(i as u32);
                    cand_at.push(j);
                    cand_count.push(*count);
                    matched.push(row);
                }
                span[i] = (start, cand_row.len());
            }
            self.sides[other].codec.decode(matched)?
        };
        let mine = take_record_batch(&batch, &UInt32Array::from(cand_row))?;
        let pairs = self.beside(input, mine.columns(), theirs.columns(), mine.num_rows())?;
        let holds = self.holds(&pairs)?;

        let rows = self.sides[input].codec.rows(batch.columns())?;
        let merge = !self.sides[input].append_only;
        let (me_kept, other_kept) = (self.sides[input].preserved, self.sides[other].preserved);
        // The output in order: (source, row of it), and each row's change.
        let mut order: Vec<(usize, usize)> = Vec::new();
        let mut ops: Vec<Op> = Vec::new();
        // Stored rows of the other side to pad: (row of this chunk, position).
        let mut theirs_padded: Vec<(usize, usize)> = Vec::new();
        for (i, &(start, end)) in span.iter().enumerate() {
            let add = chunk.op(i).is_addition();
            let op = if add { Op::Insert } else { Op::Delete };
            if null_key(i) {
                // Meets nothing, ever: only its padded row, never kept.
                if me_kept {
                    order.push((MINE, i));
                    ops.push(op);
                }
                continue;
            }
            let key = encoded.row(i);
            let passing: Vec<(usize, u32)> = (start..end)
                .filter(|&c| holds[c])
                .map(|c| (c, cand_count[c]))
                .collect();
            let met: u32 = passing.iter().map(|p| p.1).sum();
            if add {
                self.sides[input]
                    .rows
                    .add(key.as_ref(), rows.row(i).as_ref(), merge, None, met);
            } else if self.sides[input]
                .rows
                .remove(key.as_ref(), rows.row(i).as_ref())
                .is_none()
            {
                // Never added, so it never came out.
                continue;
            }
            for (c, count) in passing {
                if other_kept {
                    let delta = if add { 1 } else { -1 };
                    let before =
                        self.sides[other]
                            .rows
                            .add_matches(key.as_ref(), cand_at[c], delta);
                    // Its first match takes its padded copies back; its last
                    // one going brings them back.
                    if (add && before == 0) || (!add && before == 1) {
                        let padded_op = if add { Op::Delete } else { Op::Insert };
                        for _ in 0..count {
                            order.push((THEIRS, theirs_padded.len()));
                            ops.push(padded_op);
                        }
                        theirs_padded.push((i, cand_at[c]));
                    }
                }
                for _ in 0..count {
                    order.push((PAIR, c));
                    ops.push(op);
                }
            }
            if me_kept && met == 0 {
                order.push((MINE, i));
                ops.push(op);
            }
        }
        if order.is_empty() {
            return Ok(());
        }
        let empty = RecordBatch::new_empty(self.schema.clone());
        let mine_padded = match me_kept {
            true => self.beside(input, batch.columns(), &self.nulls(other, n), n)?,
            false => empty.clone(),
        };
        let theirs_padded = {
            let stored = &self.sides[other];
            let padded = stored.codec.decode(
                theirs_padded
                    .iter()
                    .map(|&(i, j)| &stored.rows.get(encoded.row(i).as_ref())[j].0[..]),
            )?;
            let rows = padded.num_rows();
            self.beside(other, padded.columns(), &self.nulls(input, rows), rows)?
        };
        let joined = interleave_record_batch(&[&pairs, &mine_padded, &theirs_padded], &order)?;
        out.push(Message::Data(Chunk::with_ops(joined, ops)));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{Array, AsArray, Int64Array};
    use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema};
    use datafusion::logical_expr::Operator as O;
    use datafusion::physical_expr::expressions::{binary, lit, Column};

    use super::super::{JoinOp, JoinSide};
    use crate::runtime::chunk::{Chunk, Op};
    use crate::runtime::message::Message;
    use crate::runtime::operator::Operator;
    use crate::state::{EpochRecord, JobState, Store};

    type Row = (Option<i64>, i64);
    /// An output row: left (k, v), right (k, v), NULLs where padded.
    type Out = (Option<i64>, Option<i64>, Option<i64>, Option<i64>);

    fn schema() -> Arc<Schema> {
        Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, true),
            Field::new("v", DataType::Int64, true),
        ]))
    }

    /// `left JOIN right ON l.k = r.k AND l.v < r.v + 3`, the sides kept as `kept` says.
    fn outer_join(kept: [bool; 2]) -> JoinOp {
        let side = |preserved| JoinSide {
            keys: vec![Arc::new(Column::new("k", 0))],
            schema: schema(),
            append_only: false,
            expiry: None,
            preserved,
        };
        let joined = Schema::new([schema().fields().to_vec(), schema().fields().to_vec()].concat());
        let rv3 = binary(Arc::new(Column::new("v", 3)), O::Plus, lit(3i64), &joined).unwrap();
        let filter = binary(Arc::new(Column::new("v", 1)), O::Lt, rv3, &joined).unwrap();
        let key = Arc::new(schema().project(&[0]).unwrap());
        JoinOp::new(side(kept[0]), side(kept[1]), key, Some(filter), 0).unwrap()
    }

    fn chunk(rows: &[(Row, Op)]) -> Chunk {
        let batch = datafusion::arrow::array::RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.0 .0))),
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0 .1))),
            ],
        )
        .unwrap();
        Chunk::with_ops(batch, rows.iter().map(|r| r.1).collect())
    }

    /// Applies what the join emits to `view`, each change to a row there.
    fn apply(j: &mut JoinOp, side: usize, c: Chunk, view: &mut Vec<Out>) {
        let mut out = Vec::new();
        j.process_input(side, c, &mut out).unwrap();
        for m in out {
            let Message::Data(c) = m else { continue };
            let col = |i: usize| c.batch.column(i).as_primitive::<Int64Type>().clone();
            let cols = [col(0), col(1), col(2), col(3)];
            for i in 0..c.num_rows() {
                let v = |a: &Int64Array| a.is_valid(i).then(|| a.value(i));
                let row = (v(&cols[0]), v(&cols[1]), v(&cols[2]), v(&cols[3]));
                if c.op(i).is_addition() {
                    view.push(row);
                } else {
                    let at = view.iter().position(|r| *r == row);
                    view.swap_remove(
                        at.unwrap_or_else(|| panic!("{row:?} taken back, never there")),
                    );
                }
            }
        }
    }

    /// The outer join of the two sides' rows, worked out directly.
    fn expected(left: &[Row], right: &[Row], kept: [bool; 2]) -> Vec<Out> {
        let meets = |l: &Row, r: &Row| l.0.is_some() && l.0 == r.0 && l.1 < r.1 + 3;
        let mut out = Vec::new();
        for l in left {
            let mut any = false;
            for r in right.iter().filter(|r| meets(l, r)) {
                out.push((l.0, Some(l.1), r.0, Some(r.1)));
                any = true;
            }
            if !any && kept[0] {
                out.push((l.0, Some(l.1), None, None));
            }
        }
        for r in right {
            if kept[1] && !left.iter().any(|l| meets(l, r)) {
                out.push((None, None, r.0, Some(r.1)));
            }
        }
        out.sort();
        out
    }

    #[test]
    fn outer_joins_pad_rows_that_meet_nothing_and_take_the_padding_back() {
        for kept in [[true, false], [false, true], [true, true]] {
            let dir = tempfile::tempdir().unwrap();
            let job = JobState::new(Arc::new(Store::open(dir.path()).unwrap()), 1);
            let mut j = outer_join(kept);
            let mut sides: [Vec<Row>; 2] = [Vec::new(), Vec::new()];
            let mut view = Vec::new();
            let mut next = crate::testing::below(5);
            for step in 0..600 {
                let side = next(2) as usize;
                let mut rows = Vec::new();
                for _ in 0..1 + next(3) {
                    let have = &mut sides[side];
                    if !have.is_empty() && next(3) == 0 {
                        // Take back a row that is there.
                        let row = have.swap_remove(next(have.len() as u64) as usize);
                        rows.push((row, Op::Delete));
                    } else {
                        let k = (next(6) != 0).then(|| next(4) as i64);
                        let row = (k, next(8) as i64);
                        have.push(row);
                        rows.push((row, Op::Insert));
                    }
                }
                apply(&mut j, side, chunk(&rows), &mut view);
                let mut got = view.clone();
                got.sort();
                assert_eq!(
                    got,
                    expected(&sides[0], &sides[1], kept),
                    "{kept:?} step {step}"
                );
                if step % 97 == 96 {
                    // Restored, the counts of matches are recounted.
                    let mut w = job.begin(step + 1);
                    j.checkpoint(&mut w.operator(0)).unwrap();
                    job.commit(w, &EpochRecord::bare(step + 1)).unwrap();
                    j = outer_join(kept);
                    j.restore_entries(job.operator_entries_of(0, 0, 1).unwrap())
                        .unwrap();
                }
            }
        }
    }
}
