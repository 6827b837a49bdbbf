//! Retractable accumulators for the streaming aggregate: COUNT, SUM, MIN,
//! MAX, AVG, each optionally DISTINCT. Arithmetic is DataFusion's
//! (`ScalarValue::add_checked`), so overflow is an error, not a wrap.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};

use datafusion::arrow::datatypes::DataType;
use datafusion::common::ScalarValue;

use crate::plan::{AggCall, AggKind};
use crate::runtime::RuntimeError;
use crate::state::ScalarCodec;

/// A ScalarValue ordered for a BTreeMap (values of one column share a type).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Ordered(ScalarValue);

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

/// The state of one aggregate for one group.
#[derive(Debug, Clone)]
pub enum Accumulator {
    /// Non-null inputs seen (COUNT(*) counts rows: its argument is a literal).
    Count(i64),
    /// Sum and number of non-null inputs (the sum is NULL when none).
    Sum { sum: ScalarValue, n: i64 },
    /// Smallest/largest value; a multiset when inputs can be retracted.
    Extreme {
        max: bool,
        best: Option<ScalarValue>,
        all: Option<BTreeMap<Ordered, i64>>,
    },
    /// DISTINCT: how often each value occurs.
    Distinct { values: HashMap<ScalarValue, i64> },
}

impl Accumulator {
    /// A fresh accumulator; `retractable` keeps what MIN/MAX need to undo.
    pub fn new(
        call: &AggCall,
        sum_type: &DataType,
        retractable: bool,
    ) -> Result<Self, RuntimeError> {
        if call.distinct {
            return Ok(Accumulator::Distinct {
                values: HashMap::new(),
            });
        }
        Ok(match call.kind {
            AggKind::Count => Accumulator::Count(0),
            AggKind::Sum | AggKind::Avg => Accumulator::Sum {
                sum: ScalarValue::new_zero(sum_type)?,
                n: 0,
            },
            AggKind::Min | AggKind::Max => Accumulator::Extreme {
                max: call.kind == AggKind::Max,
                best: None,
                all: retractable.then(BTreeMap::new),
            },
        })
    }

    /// Adds (`sign` = 1) or retracts (`sign` = -1) one value; NULLs are ignored.
    pub fn update(&mut self, v: ScalarValue, sign: i64) -> Result<(), RuntimeError> {
        if v.is_null() {
            return Ok(());
        }
        match self {
            Accumulator::Count(n) => *n += sign,
            Accumulator::Sum { sum, n } => {
                *sum = if sign > 0 {
                    sum.add_checked(&v)?
                } else {
                    sum.sub_checked(&v)?
                };
                *n += sign;
            }
            Accumulator::Extreme { max, best, all } => match all {
                Some(all) => {
                    let e = all.entry(Ordered(v)).or_insert(0);
                    *e += sign;
                    if *e == 0 {
                        all.retain(|_, c| *c != 0);
                    }
                    *best = if *max {
                        all.keys().next_back().map(|o| o.0.clone())
                    } else {
                        all.keys().next().map(|o| o.0.clone())
                    };
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
                        *best = Some(v);
                    }
                }
            },
            Accumulator::Distinct { values } => {
                let e = values.entry(v.clone()).or_insert(0);
                *e += sign;
                if *e <= 0 {
                    values.remove(&v);
                }
            }
        }
        Ok(())
    }

    /// The aggregate's current value, of `call.output_type`.
    pub fn evaluate(
        &self,
        call: &AggCall,
        sum_type: &DataType,
    ) -> Result<ScalarValue, RuntimeError> {
        let out = &call.output_type;
        let v = match self {
            Accumulator::Count(n) => ScalarValue::Int64(Some(*n)),
            Accumulator::Sum { sum, n } => match call.kind {
                _ if *n == 0 => ScalarValue::try_from(out)?,
                AggKind::Avg => average(sum, *n, out)?,
                _ => sum.clone(),
            },
            Accumulator::Extreme { best, .. } => match best {
                Some(b) => b.clone(),
                None => ScalarValue::try_from(out)?,
            },
            Accumulator::Distinct { values } => {
                let mut acc = Accumulator::new(
                    &AggCall {
                        distinct: false,
                        ..call.clone()
                    },
                    sum_type,
                    false,
                )?;
                for v in values.keys() {
                    acc.update(v.clone(), 1)?;
                }
                return acc.evaluate(call, sum_type);
            }
        };
        Ok(v.cast_to(out)?)
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
        a.evaluate(c, &st).unwrap()
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
    pub fn snapshot(&self, codec: &ScalarCodec) -> Result<AccSnapshot, RuntimeError> {
        Ok(match self {
            Accumulator::Count(n) => AccSnapshot::Count(*n),
            Accumulator::Sum { sum, n } => AccSnapshot::Sum {
                sum: codec.encode(sum)?,
                n: *n,
            },
            Accumulator::Extreme { max, best, all } => AccSnapshot::Extreme {
                max: *max,
                best: best.as_ref().map(|b| codec.encode(b)).transpose()?,
                all: all
                    .as_ref()
                    .map(|all| {
                        all.iter()
                            .map(|(v, c)| Ok((codec.encode(&v.0)?, *c)))
                            .collect::<Result<Vec<_>, RuntimeError>>()
                    })
                    .transpose()?,
            },
            Accumulator::Distinct { values } => AccSnapshot::Distinct(
                values
                    .iter()
                    .map(|(v, c)| Ok((codec.encode(v)?, *c)))
                    .collect::<Result<Vec<_>, RuntimeError>>()?,
            ),
        })
    }

    pub fn from_snapshot(s: AccSnapshot, codec: &ScalarCodec) -> Result<Self, RuntimeError> {
        Ok(match s {
            AccSnapshot::Count(n) => Accumulator::Count(n),
            AccSnapshot::Sum { sum, n } => Accumulator::Sum {
                sum: codec.decode(&sum)?,
                n,
            },
            AccSnapshot::Extreme { max, best, all } => Accumulator::Extreme {
                max,
                best: best.map(|b| codec.decode(&b)).transpose()?,
                all: all
                    .map(|all| {
                        all.into_iter()
                            .map(|(v, c)| Ok((Ordered(codec.decode(&v)?), c)))
                            .collect::<Result<BTreeMap<_, _>, RuntimeError>>()
                    })
                    .transpose()?,
            },
            AccSnapshot::Distinct(values) => Accumulator::Distinct {
                values: values
                    .into_iter()
                    .map(|(v, c)| Ok((codec.decode(&v)?, c)))
                    .collect::<Result<HashMap<_, _>, RuntimeError>>()?,
            },
        })
    }
}
