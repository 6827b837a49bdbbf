//! `session_start(ts, gap)` / `session_end(ts, gap)`: window functions
//! behind SESSION windows in batch queries. Over a partition ordered by
//! `ts`, rows belong to one session while each follows the one before by at
//! most `gap` (Flink's rule: windows `[ts, ts + gap)` that touch merge). A
//! session starts at its first row's time and ends `gap` after its last.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, PrimitiveArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, TimeUnit, TimestampNanosecondType};
use datafusion::common::{plan_err, Result};
use datafusion::logical_expr::function::{PartitionEvaluatorArgs, WindowUDFFieldArgs};
use datafusion::logical_expr::{PartitionEvaluator, Signature, Volatility, WindowUDFImpl};
use datafusion::physical_expr::expressions::Literal;

use super::{interval_nanos, FunctionError};

pub const SESSION_START: &str = "session_start";
pub const SESSION_END: &str = "session_end";

/// One of the two session bounds.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct SessionBound {
    end: bool,
    signature: Signature,
}

impl SessionBound {
    pub fn new(end: bool) -> Self {
        SessionBound {
            end,
            signature: Signature::any(2, Volatility::Immutable),
        }
    }
}

/// A session gap: a positive constant interval of days or less (ns).
pub fn session_gap(gap: Option<i64>) -> Result<i64, FunctionError> {
    gap.filter(|g| *g > 0).ok_or_else(|| {
        FunctionError::BadWindow(
            "SESSION needs a positive constant INTERVAL (of days or less) for its gap".into(),
        )
    })
}

impl WindowUDFImpl for SessionBound {
    fn name(&self) -> &str {
        if self.end {
            SESSION_END
        } else {
            SESSION_START
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn partition_evaluator(
        &self,
        args: PartitionEvaluatorArgs,
    ) -> Result<Box<dyn PartitionEvaluator>> {
        let gap = args
            .input_exprs()
            .get(1)
            .and_then(|e| e.downcast_ref::<Literal>())
            .and_then(|l| interval_nanos(l.value()));
        let gap = session_gap(gap)
            .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?;
        Ok(Box::new(Sessions { end: self.end, gap }))
    }

    fn field(&self, args: WindowUDFFieldArgs) -> Result<FieldRef> {
        let t = args.input_fields()[0].data_type();
        if !matches!(t, DataType::Timestamp(_, _)) {
            return plan_err!("a SESSION window's time column must be a TIMESTAMP, not {t}");
        }
        Ok(Arc::new(Field::new(args.name(), t.clone(), true)))
    }
}

#[derive(Debug)]
struct Sessions {
    end: bool,
    gap: i64,
}

/// Per row of times in ascending order (NULLs anywhere, left out): the
/// start (or end) of its session.
pub fn session_bounds(times: &[Option<i64>], gap: i64, end: bool) -> Vec<Option<i64>> {
    let mut out = vec![None; times.len()];
    let mut first = 0;
    while first < times.len() {
        // The rows [first, last] of one session (NULLs between them included).
        let Some(start) = times[first] else {
            first += 1;
            continue;
        };
        let (mut last, mut prev) = (first, start);
        for (i, t) in times.iter().enumerate().skip(first + 1) {
            match t {
                None => last = i,
                Some(t) if *t - prev <= gap => (last, prev) = (i, *t),
                Some(_) => break,
            }
        }
        let bound = if end { prev + gap } else { start };
        for (o, t) in out[first..=last].iter_mut().zip(&times[first..=last]) {
            if t.is_some() {
                *o = Some(bound);
            }
        }
        first = last + 1;
    }
    out
}

impl PartitionEvaluator for Sessions {
    fn evaluate_all(&mut self, values: &[ArrayRef], _num_rows: usize) -> Result<ArrayRef> {
        let ts = &values[0];
        let out_type = ts.data_type().clone();
        let DataType::Timestamp(_, tz) = &out_type else {
            return plan_err!("a SESSION window's time column must be a TIMESTAMP");
        };
        let ns = cast(ts, &DataType::Timestamp(TimeUnit::Nanosecond, tz.clone()))?;
        let ns = ns.as_primitive::<TimestampNanosecondType>();
        let times: Vec<Option<i64>> = ns.iter().collect();
        let bounds: PrimitiveArray<TimestampNanosecondType> =
            session_bounds(&times, self.gap, self.end)
                .into_iter()
                .collect();
        let bounds = bounds.with_timezone_opt(tz.clone());
        Ok(cast(&bounds, &out_type)?)
    }
}

#[cfg(test)]
mod tests {
    use super::session_bounds;

    #[test]
    fn rows_a_gap_or_less_apart_share_a_session() {
        let t = [
            Some(0),
            Some(10),
            Some(20),
            Some(31),
            None,
            Some(35),
            Some(100),
        ];
        assert_eq!(
            session_bounds(&t, 10, false),
            [
                Some(0),
                Some(0),
                Some(0),
                Some(31),
                None,
                Some(31),
                Some(100)
            ]
        );
        assert_eq!(
            session_bounds(&t, 10, true),
            [
                Some(30),
                Some(30),
                Some(30),
                Some(45),
                None,
                Some(45),
                Some(110)
            ]
        );
        assert_eq!(session_bounds(&[None, None], 5, true), [None, None]);
        assert!(session_bounds(&[], 5, false).is_empty());
    }
}
