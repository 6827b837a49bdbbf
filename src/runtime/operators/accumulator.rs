//! Retractable accumulators for the streaming aggregate: COUNT, SUM, MIN,
//! MAX, AVG, each optionally DISTINCT. A SUM of integers wraps on overflow,
//! as DataFusion's batch SUM does, so a view and the same query over bounded
//! input agree; wrapping also keeps retraction exact (it undoes an addition
//! even across a wrap), where checked arithmetic would fail a job on an
//! intermediate sum.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Float64Array, Int64Array, StringArray,
};
use datafusion::arrow::datatypes::{DataType, Float64Type, Int64Type};
use datafusion::common::ScalarValue;
use hashbrown::{HashMap, HashSet};

use super::agg_value::AggValue;
use super::group_codec::AccRead;
use super::partial::Folded;
use crate::plan::{AggCall, AggKind};
use crate::runtime::RuntimeError;
use crate::state::ScalarCodec;

/// A ScalarValue ordered for a BTreeMap (values of one column share a type).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Ordered(ScalarValue);

impl Ordered {
    pub fn value(&self) -> &ScalarValue {
        &self.0
    }
}

impl PartialOrd for Ordered {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Ordered {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.partial_cmp(&other.0).unwrap_or(Ordering::Equal)
    }
}

/// The type an accumulator sums in, and the argument is cast to before it reaches us.
pub fn input_type(call: &AggCall, arg_type: &DataType) -> DataType {
    match call.kind {
        AggKind::Sum => call.output_type.clone(),
        AggKind::Avg => match arg_type {
            DataType::Decimal128(_, s) => DataType::Decimal128(38, *s),
            _ => DataType::Float64,
        },
        _ => arg_type.clone(),
    }
}

/// The state of one aggregate for one group: 24 bytes (checked below). A group holds its
/// accumulators in place, and every group pays for the largest variant, so
/// the common kinds (64-bit sums, 64-bit extremes without retractions) are
/// kept as plain numbers and every `ScalarValue` (64 bytes) is boxed.
#[derive(Debug, Clone)]
pub enum Accumulator {
    /// Non-null inputs seen (COUNT(*) counts rows: its argument is a literal).
    Count(i64),
    /// A BIGINT sum (wrapping) and the number of non-null inputs (the sum
    /// is NULL when none).
    SumInt { sum: i64, n: i64 },
    /// A DOUBLE sum and the number of non-null inputs.
    SumFloat { sum: f64, n: i64 },
    /// A sum of another type (DECIMAL) and the number of non-null inputs.
    Sum { sum: Box<ScalarValue>, n: i64 },
    /// Smallest/largest BIGINT of inputs that are never retracted.
    ExtremeInt { max: bool, best: Option<i64> },
    /// Smallest/largest value; a multiset when inputs can be retracted.
    Extreme {
        max: bool,
        best: Option<Box<ScalarValue>>,
        #[allow(clippy::box_collection)]
        all: Option<Box<BTreeMap<Ordered, i64>>>,
    },
    /// DISTINCT. The large and rare variants are boxed: a group holds its
    /// accumulators in place, and every group pays for the largest.
    Distinct(Box<DistinctValues>),
}

const _: () = assert!(std::mem::size_of::<Accumulator>() == 24);

/// DISTINCT: how often each value occurs, and the plain accumulator over
/// the values present (a value enters it when its count becomes positive
/// and leaves it when the count drops to zero).
#[derive(Debug, Clone)]
pub struct DistinctValues {
    values: Counts,
    inner: Accumulator,
    /// Values whose count changed since the last checkpoint; its kind says
    /// whether inputs can be retracted (without retractions a value's
    /// count never matters: it is in or not).
    changed: Changed,
}

/// DISTINCT values whose count changed since the last checkpoint.
#[derive(Debug, Clone)]
pub enum Changed {
    /// With retractions a value's count can change many times: a set.
    Set(HashSet<ScalarValue>),
    /// Without, a value only ever enters, once: a list, no hashing.
    Added(Vec<ScalarValue>),
}

impl Changed {
    fn new(retractable: bool) -> Self {
        if retractable {
            Changed::Set(HashSet::new())
        } else {
            Changed::Added(Vec::new())
        }
    }

    /// `v`'s count changed (without retractions: `v` entered).
    fn note(&mut self, v: &ScalarValue) {
        match self {
            Changed::Set(s) => {
                if !s.contains(v) {
                    s.insert(v.clone());
                }
            }
            Changed::Added(a) => a.push(v.clone()),
        }
    }

    /// Undoes the `note` of `v` just made (a value restored, not changed).
    fn unnote(&mut self, v: &ScalarValue) {
        match self {
            Changed::Set(s) => {
                s.remove(v);
            }
            Changed::Added(a) => {
                if a.last() == Some(v) {
                    a.pop();
                }
            }
        }
    }

    /// The changed values with their count now in `values` (0: gone; a
    /// value that only entered is there once).
    fn take(&mut self, values: &Counts) -> Vec<(ScalarValue, i64)> {
        match self {
            Changed::Set(s) => s
                .drain()
                .map(|v| {
                    let n = values.get(&v).unwrap_or(0);
                    (v, n)
                })
                .collect(),
            Changed::Added(a) => std::mem::take(a).into_iter().map(|v| (v, 1)).collect(),
        }
    }

    fn iter(&self) -> Box<dyn Iterator<Item = &ScalarValue> + '_> {
        match self {
            Changed::Set(s) => Box::new(s.iter()),
            Changed::Added(a) => Box::new(a.iter()),
        }
    }
}

/// How often each distinct value occurs (absent: zero); 64-bit integers
/// are kept as themselves, other values as `ScalarValue`s.
#[derive(Debug, Clone)]
pub enum Counts {
    Int(HashMap<i64, i64>),
    Any(HashMap<ScalarValue, i64>),
}

impl Counts {
    fn new(value_type: &DataType) -> Self {
        match value_type {
            DataType::Int64 => Counts::Int(HashMap::new()),
            _ => Counts::Any(HashMap::new()),
        }
    }

    fn get(&self, v: &ScalarValue) -> Result<i64, RuntimeError> {
        Ok(match self {
            Counts::Int(m) => m.get(&int_of(v)?).copied().unwrap_or(0),
            Counts::Any(m) => m.get(v).copied().unwrap_or(0),
        })
    }

    /// Adds `delta` to `v`'s count; returns the count before and after
    /// (a value whose count is no longer positive is removed).
    fn add(&mut self, v: &ScalarValue, delta: i64) -> Result<(i64, i64), RuntimeError> {
        Ok(match self {
            Counts::Int(m) => add(m, &int_of(v)?, delta),
            Counts::Any(m) => add(m, v, delta),
        })
    }

    fn values(&self) -> Vec<ScalarValue> {
        match self {
            Counts::Int(m) => m.keys().map(|i| ScalarValue::Int64(Some(*i))).collect(),
            Counts::Any(m) => m.keys().cloned().collect(),
        }
    }
}

/// Adds `delta` to `v`'s count in `m`; returns the count before and after
/// (a value whose count is no longer positive is removed).
fn add<K: std::hash::Hash + Eq + Clone>(m: &mut HashMap<K, i64>, v: &K, delta: i64) -> (i64, i64) {
    let before = m.get(v).copied().unwrap_or(0);
    let after = before + delta;
    if after <= 0 {
        m.remove(v);
    } else if let Some(n) = m.get_mut(v) {
        *n = after;
    } else {
        m.insert(v.clone(), after);
    }
    (before, after)
}

/// An aggregate's argument column for one chunk (None: COUNT(*), every row
/// counts), with a typed view where a fast path exists.
pub struct Arg<'a> {
    column: Option<&'a ArrayRef>,
    typed: Typed<'a>,
    /// `FILTER (WHERE ...)`: rows where it is not true are skipped.
    filter: Option<&'a BooleanArray>,
}

enum Typed<'a> {
    Int64(&'a Int64Array),
    Float64(&'a Float64Array),
    Utf8(&'a StringArray),
    Other,
}

impl<'a> Arg<'a> {
    pub fn new(column: Option<&'a ArrayRef>) -> Self {
        let typed = match column.map(|c| (c, c.data_type())) {
            Some((c, DataType::Int64)) => Typed::Int64(c.as_primitive::<Int64Type>()),
            Some((c, DataType::Float64)) => Typed::Float64(c.as_primitive::<Float64Type>()),
            Some((c, DataType::Utf8)) => Typed::Utf8(c.as_string::<i32>()),
            _ => Typed::Other,
        };
        Arg {
            column,
            typed,
            filter: None,
        }
    }

    pub fn with_filter(self, filter: Option<&'a BooleanArray>) -> Self {
        Arg { filter, ..self }
    }

    /// The row is aggregated: it passes the filter and its argument is not NULL.
    pub fn is_valid(&self, row: usize) -> bool {
        self.filter.is_none_or(|f| f.is_valid(row) && f.value(row))
            && self.column.is_none_or(|c| c.is_valid(row))
    }

    /// Every row is aggregated: no filter, and no NULL argument.
    pub fn all_valid(&self) -> bool {
        self.filter.is_none() && self.column.is_none_or(|c| c.null_count() == 0)
    }

    /// The argument's values if it is a 64-bit integer column.
    pub fn int64s(&self) -> Option<&'a [i64]> {
        match self.typed {
            Typed::Int64(a) => Some(a.values()),
            _ => None,
        }
    }

    /// The argument at `row` if it is a 64-bit integer column.
    pub fn int(&self, row: usize) -> Option<i64> {
        match self.typed {
            Typed::Int64(a) => Some(a.value(row)),
            _ => None,
        }
    }

    pub fn scalar(&self, row: usize) -> Result<ScalarValue, RuntimeError> {
        Ok(match self.column {
            None => ScalarValue::Int64(Some(1)),
            Some(c) => ScalarValue::try_from_array(c, row)?,
        })
    }
}

impl Accumulator {
    /// A fresh accumulator; `retractable` keeps what MIN/MAX need to undo.
    pub fn new(
        call: &AggCall,
        sum_type: &DataType,
        retractable: bool,
    ) -> Result<Self, RuntimeError> {
        if call.distinct {
            let plain = AggCall {
                distinct: false,
                ..call.clone()
            };
            return Ok(Accumulator::Distinct(Box::new(DistinctValues {
                values: Counts::new(sum_type),
                inner: Accumulator::new(&plain, sum_type, true)?,
                changed: Changed::new(retractable),
            })));
        }
        Ok(match call.kind {
            AggKind::Count => Accumulator::Count(0),
            AggKind::Sum | AggKind::Avg => Self::sum(ScalarValue::new_zero(sum_type)?, 0),
            AggKind::Min | AggKind::Max => Self::extreme(
                call.kind == AggKind::Max,
                sum_type,
                None,
                retractable.then(Box::default),
            )?,
        })
    }

    /// Heap bytes of the value this kind of accumulator boxes (a sum's, an
    /// extreme's best once it has one), with the allocation's header; an
    /// extreme's multiset is not counted (the estimate does not follow it).
    pub fn boxed_bytes(&self) -> usize {
        match self {
            Accumulator::Sum { .. } | Accumulator::Extreme { .. } => {
                std::mem::size_of::<ScalarValue>() + 16
            }
            _ => 0,
        }
    }

    /// A sum of `sum` over `n` inputs, in place where its type allows.
    fn sum(sum: ScalarValue, n: i64) -> Self {
        match sum {
            ScalarValue::Int64(Some(sum)) => Accumulator::SumInt { sum, n },
            ScalarValue::Float64(Some(sum)) => Accumulator::SumFloat { sum, n },
            sum => Accumulator::Sum {
                sum: Box::new(sum),
                n,
            },
        }
    }

    /// An extreme of values of `value_type`: a BIGINT one without
    /// retractions in place, others boxed.
    #[allow(clippy::box_collection)]
    fn extreme(
        max: bool,
        value_type: &DataType,
        best: Option<ScalarValue>,
        all: Option<Box<BTreeMap<Ordered, i64>>>,
    ) -> Result<Self, RuntimeError> {
        Ok(match (value_type, all) {
            (DataType::Int64, None) => Accumulator::ExtremeInt {
                max,
                best: best.as_ref().map(int_of).transpose()?,
            },
            (_, all) => Accumulator::Extreme {
                max,
                best: best.map(Box::new),
                all,
            },
        })
    }

    /// Adds (`sign` = 1) or retracts (`sign` = -1) row `row` of `arg`; the
    /// common cases (counts, 64-bit sums and extremes) without a ScalarValue.
    pub fn update_at(&mut self, arg: &Arg, row: usize, sign: i64) -> Result<(), RuntimeError> {
        if !arg.is_valid(row) {
            return Ok(());
        }
        match (&mut *self, &arg.typed) {
            (Accumulator::Count(n), _) => {
                *n += sign;
                return Ok(());
            }
            (Accumulator::SumInt { sum, n }, Typed::Int64(a)) => {
                add_int(sum, a.value(row), sign);
                *n += sign;
                return Ok(());
            }
            (Accumulator::SumFloat { sum, n }, Typed::Float64(a)) => {
                *sum += sign as f64 * a.value(row);
                *n += sign;
                return Ok(());
            }
            (Accumulator::ExtremeInt { max, best }, Typed::Int64(a)) => {
                offer_int(*max, best, a.value(row));
                return Ok(());
            }
            (
                Accumulator::Extreme {
                    max,
                    best,
                    all: None,
                },
                Typed::Utf8(a),
            ) => {
                // Only a better string is copied.
                let v = a.value(row);
                match best.as_deref_mut() {
                    Some(ScalarValue::Utf8(Some(b))) => {
                        if (*max && v > b.as_str()) || (!*max && v < b.as_str()) {
                            v.clone_into(b);
                        }
                    }
                    _ => *best = Some(Box::new(ScalarValue::Utf8(Some(v.to_string())))),
                }
                return Ok(());
            }
            (Accumulator::Distinct(d), Typed::Int64(a)) => {
                let DistinctValues {
                    values: Counts::Int(m),
                    inner,
                    changed,
                } = &mut **d
                else {
                    return self.update(arg.scalar(row)?, sign);
                };
                let v = a.value(row);
                if let Changed::Added(_) = changed {
                    if sign > 0 {
                        if let hashbrown::hash_map::Entry::Vacant(e) = m.entry(v) {
                            e.insert(1);
                            changed.note(&ScalarValue::Int64(Some(v)));
                            inner.update_at(arg, row, 1)?;
                        }
                    }
                    return Ok(());
                }
                changed.note(&ScalarValue::Int64(Some(v)));
                let (before, after) = add(m, &v, sign);
                if before <= 0 && after > 0 {
                    inner.update_at(arg, row, 1)?;
                } else if before > 0 && after <= 0 {
                    inner.update_at(arg, row, -1)?;
                }
                return Ok(());
            }
            _ => {}
        }
        self.update(arg.scalar(row)?, sign)
    }

    /// Adds what one chunk's rows of this group folded to (see
    /// [`Partial`](super::partial::Partial)), as their `update_at`s one by one would.
    pub fn add_folded(&mut self, folded: Folded) -> Result<(), RuntimeError> {
        match (self, folded) {
            (Accumulator::Count(n), Folded::Count(m)) => *n += m,
            (Accumulator::SumInt { sum, n }, Folded::Sum(t, m)) => {
                *sum = sum.wrapping_add(t);
                *n += m;
            }
            (Accumulator::ExtremeInt { max, best }, Folded::Extreme(v)) => offer_int(*max, best, v),
            _ => {
                return Err(RuntimeError::Internal(
                    "a chunk's fold added to another aggregate's accumulator".into(),
                ))
            }
        }
        Ok(())
    }

    /// Adds (`sign` = 1) or retracts (`sign` = -1) one value; NULLs are ignored.
    pub fn update(&mut self, v: ScalarValue, sign: i64) -> Result<(), RuntimeError> {
        if v.is_null() {
            return Ok(());
        }
        match self {
            Accumulator::Count(n) => *n += sign,
            Accumulator::SumInt { sum, n } => {
                add_int(sum, int_of(&v)?, sign);
                *n += sign;
            }
            Accumulator::SumFloat { sum, n } => {
                let ScalarValue::Float64(Some(v)) = v else {
                    return Err(RuntimeError::Internal(format!("a DOUBLE sum got {v:?}")));
                };
                *sum += sign as f64 * v;
                *n += sign;
            }
            Accumulator::Sum { sum, n } => {
                **sum = if sign > 0 { sum.add(&v)? } else { sum.sub(&v)? };
                *n += sign;
            }
            Accumulator::ExtremeInt { max, best } => offer_int(*max, best, int_of(&v)?),
            Accumulator::Extreme { max, best, all } => match all {
                Some(all) => {
                    let e = all.entry(Ordered(v)).or_insert(0);
                    *e += sign;
                    if *e == 0 {
                        all.retain(|_, c| *c != 0);
                    }
                    let best_key = if *max {
                        all.keys().next_back()
                    } else {
                        all.keys().next()
                    };
                    *best = best_key.map(|o| Box::new(o.0.clone()));
                }
                None => {
                    let better = match best {
                        None => true,
                        Some(b) => {
                            let ord = v.partial_cmp(b).unwrap_or(Ordering::Equal);
                            (*max && ord == Ordering::Greater) || (!*max && ord == Ordering::Less)
                        }
                    };
                    if better {
                        *best = Some(Box::new(v));
                    }
                }
            },
            Accumulator::Distinct(d) => {
                let DistinctValues {
                    values,
                    inner,
                    changed,
                } = &mut **d;
                if let Changed::Added(_) = changed {
                    if sign > 0 && values.get(&v)? == 0 {
                        values.add(&v, 1)?;
                        changed.note(&v);
                        inner.update(v, 1)?;
                    }
                    return Ok(());
                }
                changed.note(&v);
                let (before, after) = values.add(&v, sign)?;
                if before <= 0 && after > 0 {
                    inner.update(v, 1)?;
                } else if before > 0 && after <= 0 {
                    inner.update(v, -1)?;
                }
            }
        }
        Ok(())
    }

    /// The aggregate's current value as a group keeps it: BIGINT counts,
    /// sums and extremes and DOUBLE sums without a `ScalarValue`.
    pub fn output(&self, call: &AggCall) -> Result<AggValue, RuntimeError> {
        let ints = matches!(call.output_type, DataType::Int64);
        let sum = call.kind == AggKind::Sum;
        Ok(match self {
            Accumulator::Count(n) if ints => AggValue::Int(*n),
            Accumulator::SumInt { n: 0, .. } | Accumulator::SumFloat { n: 0, .. } => AggValue::Null,
            Accumulator::SumInt { sum: s, .. } if ints && sum => AggValue::Int(*s),
            Accumulator::SumFloat { sum: s, .. }
                if sum && matches!(call.output_type, DataType::Float64) =>
            {
                AggValue::Float(*s)
            }
            Accumulator::ExtremeInt { best, .. } if ints => {
                best.map_or(AggValue::Null, AggValue::Int)
            }
            _ => AggValue::from_scalar(self.evaluate(call)?),
        })
    }

    /// The aggregate's current value, of `call.output_type`.
    pub fn evaluate(&self, call: &AggCall) -> Result<ScalarValue, RuntimeError> {
        let out = &call.output_type;
        let v = match self {
            Accumulator::Count(n) => ScalarValue::Int64(Some(*n)),
            Accumulator::SumInt { n: 0, .. }
            | Accumulator::SumFloat { n: 0, .. }
            | Accumulator::Sum { n: 0, .. } => ScalarValue::try_from(out)?,
            Accumulator::SumInt { sum, n } => sum_value(call, ScalarValue::Int64(Some(*sum)), *n)?,
            Accumulator::SumFloat { sum, n } => {
                sum_value(call, ScalarValue::Float64(Some(*sum)), *n)?
            }
            Accumulator::Sum { sum, n } => sum_value(call, (**sum).clone(), *n)?,
            Accumulator::ExtremeInt { best, .. } => ScalarValue::Int64(*best),
            Accumulator::Extreme { best, .. } => match best {
                Some(b) => (**b).clone(),
                None => ScalarValue::try_from(out)?,
            },
            Accumulator::Distinct(d) => return d.inner.evaluate(call),
        };
        // ScalarValue::cast_to goes through a one-row array: only when needed.
        if &v.data_type() == out {
            Ok(v)
        } else {
            Ok(v.cast_to(out)?)
        }
    }
}

impl Accumulator {
    /// Adds what `other` (of the same aggregate, over append-only input)
    /// accumulated: two session windows becoming one.
    pub fn merge(&mut self, other: Accumulator) -> Result<(), RuntimeError> {
        match (self, other) {
            (Accumulator::Count(n), Accumulator::Count(m)) => *n += m,
            (Accumulator::SumInt { sum, n }, Accumulator::SumInt { sum: s, n: m }) => {
                *sum = sum.wrapping_add(s);
                *n += m;
            }
            (Accumulator::SumFloat { sum, n }, Accumulator::SumFloat { sum: s, n: m }) => {
                if m > 0 {
                    *sum += s;
                    *n += m;
                }
            }
            (Accumulator::Sum { sum, n }, Accumulator::Sum { sum: s, n: m }) => {
                if m > 0 {
                    **sum = sum.add(&*s)?;
                    *n += m;
                }
            }
            (acc @ Accumulator::ExtremeInt { .. }, Accumulator::ExtremeInt { best, .. }) => {
                if let Some(b) = best {
                    acc.update(ScalarValue::Int64(Some(b)), 1)?;
                }
            }
            (acc @ Accumulator::Extreme { .. }, Accumulator::Extreme { best, all, .. }) => {
                match all {
                    Some(all) => {
                        for (v, c) in *all {
                            acc.update(v.0, c)?;
                        }
                    }
                    None => {
                        if let Some(b) = best {
                            acc.update(*b, 1)?;
                        }
                    }
                }
            }
            (acc @ Accumulator::Distinct(_), other @ Accumulator::Distinct(_)) => {
                for (v, c) in other.value_counts() {
                    if c > 0 {
                        acc.update(v, c)?;
                    }
                }
            }
            _ => {
                return Err(RuntimeError::Internal(
                    "merging accumulators of different aggregates".into(),
                ))
            }
        }
        Ok(())
    }

    /// The whole state as a snapshot, DISTINCT values included.
    pub fn full_snapshot(&self, codec: &ScalarCodec) -> Result<AccSnapshot, RuntimeError> {
        match self {
            Accumulator::Distinct(_) => Ok(AccSnapshot::Distinct(
                self.value_counts()
                    .into_iter()
                    .map(|(v, c)| Ok((codec.encode(&v)?, c)))
                    .collect::<Result<_, RuntimeError>>()?,
            )),
            other => other.snapshot(codec),
        }
    }
}

/// Keeps `v` as a 64-bit extreme's best value if it is better (or the first).
fn offer_int(max: bool, best: &mut Option<i64>, v: i64) {
    match best {
        Some(b) => {
            if (max && v > *b) || (!max && v < *b) {
                *b = v;
            }
        }
        None => *best = Some(v),
    }
}

/// The BIGINT an aggregate over BIGINT values was given.
fn int_of(v: &ScalarValue) -> Result<i64, RuntimeError> {
    match v {
        ScalarValue::Int64(Some(i)) => Ok(*i),
        other => Err(RuntimeError::Internal(format!(
            "an aggregate over BIGINT got {other:?}"
        ))),
    }
}

/// Adds (`sign` > 0) or subtracts `v`, wrapping as DataFusion's SUM does.
fn add_int(sum: &mut i64, v: i64, sign: i64) {
    *sum = if sign > 0 {
        sum.wrapping_add(v)
    } else {
        sum.wrapping_sub(v)
    };
}

/// A sum's value, `n` > 0 inputs: itself, or for AVG divided by `n`.
fn sum_value(call: &AggCall, sum: ScalarValue, n: i64) -> Result<ScalarValue, RuntimeError> {
    match call.kind {
        AggKind::Avg => average(&sum, n, &call.output_type),
        _ => Ok(sum),
    }
}

fn average(sum: &ScalarValue, n: i64, out: &DataType) -> Result<ScalarValue, RuntimeError> {
    Ok(match (sum, out) {
        (ScalarValue::Decimal128(Some(s), _, in_scale), DataType::Decimal128(p, out_scale)) => {
            let shift = (*out_scale as i32 - *in_scale as i32).max(0) as u32;
            let scaled = s
                .checked_mul(10i128.pow(shift))
                .ok_or_else(|| RuntimeError::Internal("AVG overflow".into()))?;
            ScalarValue::Decimal128(Some(scaled / n as i128), *p, *out_scale)
        }
        _ => {
            let s = sum.cast_to(&DataType::Float64)?;
            match s {
                ScalarValue::Float64(Some(f)) => ScalarValue::Float64(Some(f / n as f64)),
                _ => ScalarValue::Float64(None),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(kind: AggKind, distinct: bool, out: DataType) -> AggCall {
        AggCall {
            kind,
            args: vec![],
            distinct,
            filter: None,
            output_type: out,
        }
    }

    fn run(c: &AggCall, retract: bool, ops: &[(i64, i64)]) -> ScalarValue {
        let st = input_type(c, &DataType::Int64);
        let mut a = Accumulator::new(c, &st, retract).unwrap();
        for (v, sign) in ops {
            let v = ScalarValue::Int64(Some(*v)).cast_to(&st).unwrap();
            a.update(v, *sign).unwrap();
        }
        a.evaluate(c).unwrap()
    }

    #[test]
    fn sums_counts_and_averages_with_retraction() {
        let ops = [(4, 1), (6, 1), (5, 1), (6, -1)];
        assert_eq!(
            run(&call(AggKind::Sum, false, DataType::Int64), true, &ops),
            ScalarValue::Int64(Some(9))
        );
        assert_eq!(
            run(&call(AggKind::Count, false, DataType::Int64), true, &ops),
            ScalarValue::Int64(Some(2))
        );
        assert_eq!(
            run(&call(AggKind::Avg, false, DataType::Float64), true, &ops),
            ScalarValue::Float64(Some(4.5))
        );
        assert_eq!(
            run(&call(AggKind::Max, false, DataType::Int64), true, &ops),
            ScalarValue::Int64(Some(5))
        );
        assert_eq!(
            run(
                &call(AggKind::Min, false, DataType::Int64),
                false,
                &ops[..3]
            ),
            ScalarValue::Int64(Some(4))
        );
        assert_eq!(
            run(
                &call(AggKind::Sum, false, DataType::Int64),
                true,
                &[(1, 1), (1, -1)]
            ),
            ScalarValue::Int64(None)
        );
    }

    #[test]
    fn typed_fast_paths_skip_nulls_retract_and_wrap_as_batch_sum_does() {
        let col: ArrayRef =
            std::sync::Arc::new(Int64Array::from(vec![Some(4), None, Some(6), Some(-3)]));
        let arg = Arg::new(Some(&col));
        let signs = [1, 1, 1, -1];
        let mut results = Vec::new();
        for kind in [AggKind::Sum, AggKind::Count, AggKind::Max, AggKind::Min] {
            let c = call(kind, false, DataType::Int64);
            let mut a = Accumulator::new(&c, &DataType::Int64, false).unwrap();
            for (row, sign) in signs.iter().enumerate() {
                a.update_at(&arg, row, *sign).unwrap();
            }
            results.push(a.evaluate(&c).unwrap());
        }
        // SUM 4 + 6 - (-3) = 13; COUNT two non-null additions minus one
        // retraction = 1; an append-only MIN/MAX sees every non-null value.
        let ints: Vec<ScalarValue> = [13, 1, 6, -3]
            .iter()
            .map(|v| ScalarValue::Int64(Some(*v)))
            .collect();
        assert_eq!(results, ints);

        // i64::MAX + 1 wraps to i64::MIN (DataFusion's batch SUM gives the
        // same); retracting the 1 comes back exactly, on both paths.
        let big: ArrayRef = std::sync::Arc::new(Int64Array::from(vec![i64::MAX, 1]));
        let c = call(AggKind::Sum, false, DataType::Int64);
        for typed in [true, false] {
            let mut a = Accumulator::new(&c, &DataType::Int64, true).unwrap();
            let step = |a: &mut Accumulator, row: usize, sign: i64| {
                if typed {
                    a.update_at(&Arg::new(Some(&big)), row, sign).unwrap()
                } else {
                    let v = ScalarValue::try_from_array(&big, row).unwrap();
                    a.update(v, sign).unwrap()
                }
            };
            step(&mut a, 0, 1);
            step(&mut a, 1, 1);
            assert_eq!(a.evaluate(&c).unwrap(), ScalarValue::Int64(Some(i64::MIN)));
            step(&mut a, 1, -1);
            assert_eq!(a.evaluate(&c).unwrap(), ScalarValue::Int64(Some(i64::MAX)));
        }
    }

    #[test]
    fn distinct_survives_a_snapshot() {
        let c = call(AggKind::Count, true, DataType::Int64);
        let codec = ScalarCodec::new(DataType::Int64).unwrap();
        let mut a = Accumulator::new(&c, &DataType::Int64, true).unwrap();
        for (v, sign) in [(1, 1), (1, 1), (2, 1), (3, 1), (3, -1)] {
            a.update(ScalarValue::Int64(Some(v)), sign).unwrap();
        }
        let snap = a.snapshot(&codec).unwrap();
        let mut b = Accumulator::from_snapshot(snap, &codec, &c, &DataType::Int64, true).unwrap();
        let mut changed = a.take_changed();
        changed.sort_by_key(|(v, _)| v.to_string());
        // 3 was added then retracted: it is written as gone (count 0).
        assert_eq!(
            changed,
            vec![
                (ScalarValue::Int64(Some(1)), 2),
                (ScalarValue::Int64(Some(2)), 1),
                (ScalarValue::Int64(Some(3)), 0)
            ]
        );
        assert!(a.take_changed().is_empty(), "taken once");
        for (v, n) in changed {
            b.restore_value(v, n).unwrap();
        }
        assert!(
            b.take_changed().is_empty(),
            "restored values are not changes"
        );
        assert_eq!(b.evaluate(&c).unwrap(), ScalarValue::Int64(Some(2)));
        // One of the two 1s leaves: 1 is still there; then the other: gone.
        b.update(ScalarValue::Int64(Some(1)), -1).unwrap();
        assert_eq!(b.evaluate(&c).unwrap(), ScalarValue::Int64(Some(2)));
        b.update(ScalarValue::Int64(Some(1)), -1).unwrap();
        assert_eq!(b.evaluate(&c).unwrap(), ScalarValue::Int64(Some(1)));
    }

    #[test]
    fn kinds_are_kept_in_place_or_boxed_and_restored_as_such() {
        use datafusion::arrow::datatypes::DataType::{Decimal128, Float64, Int64, Utf8};
        let int = |v: i64| ScalarValue::Int64(Some(v));
        let dec = |v: i128| ScalarValue::Decimal128(Some(v), 10, 2);
        let text = |v: &str| ScalarValue::Utf8(Some(v.into()));
        // (aggregate, its value type, retractable, inputs, result by hand)
        let cases = [
            (
                call(AggKind::Sum, false, Int64),
                Int64,
                true,
                vec![(int(4), 1), (int(9), 1), (int(4), -1)],
                int(9),
            ),
            (
                call(AggKind::Avg, false, Float64),
                Float64,
                false,
                vec![
                    (ScalarValue::Float64(Some(1.5)), 1),
                    (ScalarValue::Float64(Some(2.5)), 1),
                ],
                ScalarValue::Float64(Some(2.0)),
            ),
            (
                call(AggKind::Sum, false, Decimal128(38, 2)),
                Decimal128(38, 2),
                true,
                vec![(dec(125), 1), (dec(100), 1)],
                ScalarValue::Decimal128(Some(225), 38, 2),
            ),
            (
                call(AggKind::Max, false, Int64),
                Int64,
                false,
                vec![(int(3), 1), (int(8), 1), (int(-2), 1)],
                int(8),
            ),
            (
                call(AggKind::Min, false, Int64),
                Int64,
                true,
                vec![(int(3), 1), (int(-2), 1), (int(-2), -1)],
                int(3),
            ),
            (
                call(AggKind::Min, false, Utf8),
                Utf8,
                false,
                vec![(text("pear"), 1), (text("fig"), 1)],
                text("fig"),
            ),
        ];
        for (c, ty, retract, ops, want) in cases {
            let codec = ScalarCodec::new(ty.clone()).unwrap();
            let mut a = Accumulator::new(&c, &ty, retract).unwrap();
            for (v, sign) in ops {
                let v = v.cast_to(&ty).unwrap();
                a.update(v, sign).unwrap();
            }
            let got = a.evaluate(&c).unwrap();
            assert_eq!(got.cast_to(&want.data_type()).unwrap(), want, "{c:?}");
            let b =
                Accumulator::from_snapshot(a.snapshot(&codec).unwrap(), &codec, &c, &ty, retract)
                    .unwrap();
            assert_eq!(b.evaluate(&c).unwrap(), got, "{c:?} restored");
            // BIGINT sums and extremes without retractions hold numbers in
            // place, DOUBLE sums too; the rest box their value.
            let in_place = match (&b, &ty) {
                (Accumulator::SumInt { .. }, Int64)
                | (Accumulator::SumFloat { .. }, Float64)
                | (Accumulator::ExtremeInt { .. }, Int64) => true,
                (Accumulator::Sum { .. } | Accumulator::Extreme { .. }, _) => false,
                other => panic!("{c:?} restored as {other:?}"),
            };
            let expect = matches!(ty, Int64 | Float64)
                && !(retract && matches!(c.kind, AggKind::Min | AggKind::Max));
            assert_eq!(in_place, expect, "{c:?}: {b:?}");
        }
    }

    #[test]
    fn distinct_counts_each_value_once() {
        let ops = [(1, 1), (1, 1), (2, 1), (3, 1), (3, -1)];
        assert_eq!(
            run(&call(AggKind::Count, true, DataType::Int64), true, &ops),
            ScalarValue::Int64(Some(2))
        );
        assert_eq!(
            run(&call(AggKind::Sum, true, DataType::Int64), true, &ops),
            ScalarValue::Int64(Some(3))
        );
    }
}

impl Accumulator {
    /// DISTINCT: the values whose count changed since the last call, with
    /// their count now (0: gone). Other accumulators have none.
    pub fn take_changed(&mut self) -> Vec<(ScalarValue, i64)> {
        match self {
            Accumulator::Distinct(d) => d.changed.take(&d.values),
            _ => Vec::new(),
        }
    }

    /// DISTINCT: every value that may have a checkpointed entry (those held,
    /// and those changed since the last checkpoint, gone ones included).
    pub fn entry_values(&self) -> Vec<ScalarValue> {
        match self {
            Accumulator::Distinct(d) => {
                let DistinctValues {
                    values, changed, ..
                } = &**d;
                let mut all = values.values();
                all.extend(
                    changed
                        .iter()
                        .filter(|v| values.get(v).unwrap_or(0) == 0)
                        .cloned(),
                );
                all
            }
            _ => Vec::new(),
        }
    }

    /// DISTINCT: every value held, with its count.
    pub fn value_counts(&self) -> Vec<(ScalarValue, i64)> {
        match self {
            Accumulator::Distinct(d) => match &d.values {
                Counts::Int(m) => m
                    .iter()
                    .map(|(i, n)| (ScalarValue::Int64(Some(*i)), *n))
                    .collect(),
                Counts::Any(m) => m.iter().map(|(v, n)| (v.clone(), *n)).collect(),
            },
            _ => Vec::new(),
        }
    }

    /// DISTINCT: sets a value's count from a checkpoint record, whatever
    /// it was (0: the value is gone).
    pub fn set_value_count(&mut self, v: ScalarValue, count: i64) -> Result<(), RuntimeError> {
        let Accumulator::Distinct(d) = self else {
            return Ok(());
        };
        let now = d.values.get(&v)?;
        if count != now {
            self.restore_value(v, count - now)?;
        }
        Ok(())
    }

    /// DISTINCT: takes back a value and its count from a checkpoint.
    pub fn restore_value(&mut self, v: ScalarValue, count: i64) -> Result<(), RuntimeError> {
        if !matches!(self, Accumulator::Distinct(_)) {
            return Ok(());
        }
        self.update(v.clone(), count)?;
        if let Accumulator::Distinct(d) = self {
            d.changed.unnote(&v);
        }
        Ok(())
    }
}

/// An accumulator as stored in a checkpoint; values are encoded by a
/// [`ScalarCodec`] of the accumulator's value type.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub enum AccSnapshot {
    Count(i64),
    Sum {
        sum: Vec<u8>,
        n: i64,
    },
    Extreme {
        max: bool,
        best: Option<Vec<u8>>,
        all: Option<Vec<(Vec<u8>, i64)>>,
    },
    Distinct(Vec<(Vec<u8>, i64)>),
}

impl Accumulator {
    /// The snapshot as a value: what `GroupWriter` writes straight into a
    /// buffer (DISTINCT values apart), which tests check against it.
    pub fn snapshot(&self, codec: &ScalarCodec) -> Result<AccSnapshot, RuntimeError> {
        Ok(match self {
            Accumulator::Count(n) => AccSnapshot::Count(*n),
            Accumulator::SumInt { sum, n } => AccSnapshot::Sum {
                sum: codec.encode(&ScalarValue::Int64(Some(*sum)))?,
                n: *n,
            },
            Accumulator::SumFloat { sum, n } => AccSnapshot::Sum {
                sum: codec.encode(&ScalarValue::Float64(Some(*sum)))?,
                n: *n,
            },
            Accumulator::Sum { sum, n } => AccSnapshot::Sum {
                sum: codec.encode(sum)?,
                n: *n,
            },
            Accumulator::ExtremeInt { max, best } => AccSnapshot::Extreme {
                max: *max,
                best: best
                    .map(|b| codec.encode(&ScalarValue::Int64(Some(b))))
                    .transpose()?,
                all: None,
            },
            Accumulator::Extreme { max, best, all } => AccSnapshot::Extreme {
                max: *max,
                best: best.as_deref().map(|b| codec.encode(b)).transpose()?,
                all: all
                    .as_ref()
                    .map(|all| {
                        all.iter()
                            .map(|(v, c)| Ok((codec.encode(&v.0)?, *c)))
                            .collect::<Result<Vec<_>, RuntimeError>>()
                    })
                    .transpose()?,
            },
            // Its values are checkpointed one by one (`take_changed`).
            Accumulator::Distinct(_) => AccSnapshot::Distinct(Vec::new()),
        })
    }

    /// Rebuilds an accumulator of `call` from what a group's reader gave.
    pub fn from_read(
        r: AccRead<'_>,
        codec: &ScalarCodec,
        call: &AggCall,
        sum_type: &DataType,
        retractable: bool,
    ) -> Result<Self, RuntimeError> {
        Ok(match r {
            AccRead::Count(n) => Accumulator::Count(n),
            AccRead::Sum { sum, n } => Self::sum(codec.decode(sum)?, n),
            AccRead::Other(s) => Self::from_snapshot(s, codec, call, sum_type, retractable)?,
        })
    }

    /// Rebuilds an accumulator of `call` from its snapshot.
    pub fn from_snapshot(
        s: AccSnapshot,
        codec: &ScalarCodec,
        call: &AggCall,
        sum_type: &DataType,
        retractable: bool,
    ) -> Result<Self, RuntimeError> {
        Ok(match s {
            AccSnapshot::Count(n) => Accumulator::Count(n),
            AccSnapshot::Sum { sum, n } => Self::sum(codec.decode(&sum)?, n),
            AccSnapshot::Extreme { max, best, all } => Self::extreme(
                max,
                sum_type,
                best.map(|b| codec.decode(&b)).transpose()?,
                all.map(|all| {
                    all.into_iter()
                        .map(|(v, c)| Ok((Ordered(codec.decode(&v)?), c)))
                        .collect::<Result<BTreeMap<_, _>, RuntimeError>>()
                        .map(Box::new)
                })
                .transpose()?,
            )?,
            // Values written in the snapshot itself (older checkpoints) or
            // taken back one by one afterwards (`restore_value`).
            AccSnapshot::Distinct(values) => {
                let mut acc = Accumulator::new(call, sum_type, retractable)?;
                for (v, c) in values {
                    acc.restore_value(codec.decode(&v)?, c)?;
                }
                acc
            }
        })
    }
}
