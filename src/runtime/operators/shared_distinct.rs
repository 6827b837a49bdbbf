//! DISTINCT aggregates over the same argument that differ only in their
//! FILTER (`COUNT(DISTINCT bidder)`, `COUNT(DISTINCT bidder) FILTER (WHERE
//! price < 10000)`, ...) share one set of values per group, as Flink's
//! distinct views do: each value carries one bit per aggregate that has seen
//! it, so a row costs one lookup for all of them instead of one each.
//! Only over append-only input, where a value, once seen, stays.

use datafusion::common::ScalarValue;
use hashbrown::HashMap;

use super::accumulator::Arg;
use super::aggregate::CompiledAgg;
use crate::runtime::RuntimeError;

/// The aggregates (indexes into the operator's list) sharing one set; the
/// first is the leader, whose index names the set's checkpoint entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DistinctSet {
    pub members: Vec<usize>,
}

/// One bit per member in a mask, stored as a positive `i64` count would be.
const MAX_MEMBERS: usize = 63;

/// The sets worth sharing among `aggs`: DISTINCT aggregates with one
/// argument, grouped by argument and accumulated type, two or more to a
/// set, at least one of them with a FILTER (without one, such aggregates
/// were each checkpointed on their own before; they still are).
pub fn plan_sets(aggs: &[CompiledAgg]) -> Vec<DistinctSet> {
    let mut sets: Vec<DistinctSet> = Vec::new();
    for (i, a) in aggs.iter().enumerate() {
        if !a.call.distinct || a.call.args.len() != 1 {
            continue;
        }
        let same = |s: &&mut DistinctSet| {
            let leader = &aggs[s.members[0]];
            s.members.len() < MAX_MEMBERS
                && leader.call.args == a.call.args
                && leader.sum_type == a.sum_type
        };
        match sets.iter_mut().find(same) {
            Some(s) => s.members.push(i),
            None => sets.push(DistinctSet { members: vec![i] }),
        }
    }
    sets.retain(|s| s.members.len() > 1 && s.members.iter().any(|&i| aggs[i].filter.is_some()));
    sets
}

/// One group's values of one set, each with the members that have seen it.
#[derive(Debug, Clone)]
pub struct SharedValues {
    masks: Masks,
    /// Values whose mask changed since the last checkpoint (a value can be
    /// listed more than once; its mask is read when written).
    changed: Vec<ScalarValue>,
}

/// 64-bit integers as themselves, other values as `ScalarValue`s.
#[derive(Debug, Clone)]
enum Masks {
    Int(HashMap<i64, u64>),
    Any(HashMap<ScalarValue, u64>),
}

impl SharedValues {
    pub fn new(int: bool) -> Self {
        SharedValues {
            masks: if int {
                Masks::Int(HashMap::new())
            } else {
                Masks::Any(HashMap::new())
            },
            changed: Vec::new(),
        }
    }

    /// Row `row` of `arg` is seen by the members in `mask`; returns those
    /// that had not seen its value yet.
    pub fn add(&mut self, arg: &Arg, row: usize, mask: u64) -> Result<u64, RuntimeError> {
        let (new, value) = match &mut self.masks {
            Masks::Int(m) => {
                let v = arg.int(row).ok_or_else(|| {
                    RuntimeError::Internal("a shared DISTINCT over BIGINT got another type".into())
                })?;
                let seen = m.entry(v).or_insert(0);
                let new = mask & !*seen;
                *seen |= new;
                (new, (new != 0).then(|| ScalarValue::Int64(Some(v))))
            }
            Masks::Any(m) => {
                let v = arg.scalar(row)?;
                let (new, value) = match m.get_mut(&v) {
                    Some(seen) => {
                        let new = mask & !*seen;
                        *seen |= new;
                        (new, v)
                    }
                    None => {
                        m.insert(v.clone(), mask);
                        (mask, v)
                    }
                };
                (new, (new != 0).then_some(value))
            }
        };
        self.changed.extend(value);
        Ok(new)
    }

    /// The mask of `v` (0: not seen).
    pub fn mask(&self, v: &ScalarValue) -> u64 {
        match (&self.masks, v) {
            (Masks::Int(m), ScalarValue::Int64(Some(i))) => m.get(i).copied().unwrap_or(0),
            (Masks::Any(m), _) => m.get(v).copied().unwrap_or(0),
            _ => 0,
        }
    }

    /// The values changed since the last call.
    pub fn take_changed(&mut self) -> Vec<ScalarValue> {
        std::mem::take(&mut self.changed)
    }

    /// Every value held (each has a checkpoint entry once written).
    pub fn values(&self) -> Vec<ScalarValue> {
        match &self.masks {
            Masks::Int(m) => m.keys().map(|i| ScalarValue::Int64(Some(*i))).collect(),
            Masks::Any(m) => m.keys().cloned().collect(),
        }
    }

    /// Takes back a value's mask from a checkpoint (the members' own
    /// accumulators are restored with the group).
    pub fn restore(&mut self, v: ScalarValue, mask: u64) -> Result<(), RuntimeError> {
        match (&mut self.masks, v) {
            (Masks::Int(m), ScalarValue::Int64(Some(i))) => *m.entry(i).or_insert(0) |= mask,
            (Masks::Any(m), v) => *m.entry(v).or_insert(0) |= mask,
            (Masks::Int(_), other) => {
                return Err(RuntimeError::Internal(format!(
                    "a shared DISTINCT over BIGINT restored {other:?}"
                )))
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{ArrayRef, Int64Array, StringArray};
    use datafusion::arrow::datatypes::DataType;
    use datafusion::logical_expr::{col, lit};

    use super::*;
    use crate::plan::{AggCall, AggKind};

    fn agg(arg: &str, distinct: bool, filtered: bool) -> CompiledAgg {
        let call = AggCall {
            kind: AggKind::Count,
            args: vec![col(arg)],
            distinct,
            filter: filtered.then(|| col("p").gt(lit(1))),
            output_type: DataType::Int64,
        };
        let filter = filtered.then(|| {
            Arc::new(datafusion::physical_expr::expressions::Literal::new(
                ScalarValue::Boolean(Some(true)),
            )) as _
        });
        CompiledAgg::new(call, None, Some(DataType::Int64)).with_filter(filter)
    }

    #[test]
    fn only_distinct_aggregates_of_one_argument_with_a_filter_among_them_share() {
        let aggs = [
            agg("a", true, false),
            agg("b", true, false),
            agg("a", false, true),
            agg("a", true, true),
            agg("b", true, false),
            agg("a", true, true),
        ];
        // a: 0, 3, 5 (3 and 5 filtered); b: 1, 4 (no filter: each its own);
        // 2 is not DISTINCT.
        assert_eq!(
            plan_sets(&aggs),
            vec![DistinctSet {
                members: vec![0, 3, 5]
            }]
        );
    }

    #[test]
    fn each_member_sees_a_value_once() {
        let ints: ArrayRef = Arc::new(Int64Array::from(vec![7, 7, 8, 7]));
        let strs: ArrayRef = Arc::new(StringArray::from(vec!["x", "x", "y", "x"]));
        for col in [&ints, &strs] {
            let arg = Arg::new(Some(col));
            let mut s = SharedValues::new(col.data_type() == &DataType::Int64);
            // Row 0 is seen by member 0; row 1 (same value) by 0 and 1; row
            // 2 by 1; row 3 (same value as 0) by all three.
            let new: Vec<u64> = [(0, 0b001), (1, 0b011), (2, 0b010), (3, 0b111)]
                .iter()
                .map(|&(row, mask)| s.add(&arg, row, mask).unwrap())
                .collect();
            assert_eq!(new, vec![0b001, 0b010, 0b010, 0b100]);
            let first = ScalarValue::try_from_array(col, 0).unwrap();
            let third = ScalarValue::try_from_array(col, 2).unwrap();
            assert_eq!(s.mask(&first), 0b111);
            assert_eq!(s.mask(&third), 0b010);
            assert_eq!(s.take_changed().len(), 4, "every row that set a bit");
            assert!(s.take_changed().is_empty());

            let mut back = SharedValues::new(col.data_type() == &DataType::Int64);
            for v in s.values() {
                let m = s.mask(&v);
                back.restore(v, m).unwrap();
            }
            assert_eq!(
                back.add(&arg, 3, 0b111).unwrap(),
                0,
                "restored: nothing new"
            );
            assert_eq!(back.add(&arg, 2, 0b001).unwrap(), 0b001);
        }
    }
}
