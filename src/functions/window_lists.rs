//! The windows behind HOP and CUMULATE, as lists a window table function
//! unnests, all aligned to the Unix epoch as in Flink:
//! `hop_windows(ts, slide, size)`, the starts of the windows of `size`
//! starting every `slide` that hold `ts`, earliest first; `hop_end(start,
//! size)`, a window's end; `cumulate_ends(ts, step, size)`, the ends of the
//! windows that start where the tumbling window of `size` holding `ts`
//! starts, grow by `step`, and hold `ts`.

use std::sync::Arc;

use datafusion::arrow::array::ListBuilder;
use datafusion::arrow::array::{Array, AsArray, ListArray, TimestampNanosecondBuilder};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, TimeUnit, TimestampNanosecondType};
use datafusion::common::{exec_err, plan_err, Result};
use datafusion::logical_expr::{
    ColumnarValue, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};

use super::{interval_nanos, FunctionError};

pub const HOP_WINDOWS: &str = "hop_windows";
pub const CUMULATE_ENDS: &str = "cumulate_ends";

/// `hop_windows` or `cumulate_ends`: a list of window bounds per time.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct WindowList {
    cumulate: bool,
    signature: Signature,
}

impl WindowList {
    pub fn new(cumulate: bool) -> Self {
        WindowList {
            cumulate,
            signature: Signature::any(3, Volatility::Immutable),
        }
    }
}

/// The ends of the cumulating windows (ns) that hold `t`, ascending: from
/// the tumbling window's start, every `step` up to `size`.
pub fn cumulate_ends(t: i64, step: i64, size: i64, out: &mut Vec<i64>) {
    out.clear();
    let start = t - t.rem_euclid(size);
    let mut end = start + step;
    while end < start + size {
        if end > t {
            out.push(end);
        }
        end += step;
    }
    out.push(start + size);
}

/// The starts of the windows of `size` every `slide` (ns) that hold `t`, ascending.
pub fn hop_starts(t: i64, slide: i64, size: i64, out: &mut Vec<i64>) {
    out.clear();
    let mut start = t - t.rem_euclid(slide);
    while start > t - size {
        out.push(start);
        start -= slide;
    }
    out.reverse();
}

impl ScalarUDFImpl for WindowList {
    fn name(&self) -> &str {
        match self.cumulate {
            true => CUMULATE_ENDS,
            false => HOP_WINDOWS,
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        match &arg_types[0] {
            t @ DataType::Timestamp(_, _) => Ok(DataType::List(Arc::new(Field::new_list_field(
                t.clone(),
                true,
            )))),
            other => plan_err!("window time column must be a TIMESTAMP, not {other}"),
        }
    }

    /// Checks the slide (step) and size when the query is planned.
    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        let interval = |i: usize| {
            args.scalar_arguments
                .get(i)
                .copied()
                .flatten()
                .and_then(interval_nanos)
                .filter(|n| *n > 0)
        };
        let what = if self.cumulate { "CUMULATE" } else { "HOP" };
        let bad = |m: String| Err(FunctionError::BadWindow(m).into());
        let (Some(step), Some(size)) = (interval(1), interval(2)) else {
            return bad(format!("{what} needs a positive constant INTERVAL (of days or less) for its slide and its size"));
        };
        if self.cumulate && size % step != 0 {
            return bad("a CUMULATE window's size must be a multiple of its step".into());
        }
        let types: Vec<DataType> = args
            .arg_fields
            .iter()
            .map(|f| f.data_type().clone())
            .collect();
        Ok(Arc::new(Field::new(
            self.name(),
            self.return_type(&types)?,
            true,
        )))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let constant = |i: usize| match &args.args[i] {
            ColumnarValue::Scalar(s) => interval_nanos(s).filter(|n| *n > 0),
            ColumnarValue::Array(_) => None,
        };
        let (Some(slide), Some(size)) = (constant(1), constant(2)) else {
            return exec_err!("a HOP or CUMULATE window's slide (step) and size must be positive constant INTERVALs of days or less");
        };
        if self.cumulate && size % slide != 0 {
            return exec_err!("a CUMULATE window's size must be a multiple of its step");
        }
        let bounds = match self.cumulate {
            true => cumulate_ends,
            false => hop_starts,
        };
        let DataType::List(item) = args.return_type() else {
            return exec_err!("a window list is a list");
        };
        let DataType::Timestamp(_, tz) = item.data_type() else {
            return exec_err!("a window list is a list of timestamps");
        };
        let ns_item = Arc::new(Field::new_list_field(
            DataType::Timestamp(TimeUnit::Nanosecond, tz.clone()),
            true,
        ));
        let ts = args.args[0].to_array(args.number_rows)?;
        let ns = cast(&ts, &DataType::Timestamp(TimeUnit::Nanosecond, tz.clone()))?;
        let ns = ns.as_primitive::<TimestampNanosecondType>();
        let per_row = (size / slide + 1) as usize;
        let values = TimestampNanosecondBuilder::with_capacity(ns.len() * per_row)
            .with_timezone_opt(tz.clone());
        let mut list = ListBuilder::with_capacity(values, ns.len()).with_field(ns_item);
        let mut starts = Vec::with_capacity(per_row);
        for i in 0..ns.len() {
            if ns.is_null(i) {
                list.append_null();
                continue;
            }
            bounds(ns.value(i), slide, size, &mut starts);
            list.values().append_slice(&starts);
            list.append(true);
        }
        let out: ListArray = list.finish();
        // In the time column's own unit, as TUMBLE's bounds are.
        Ok(ColumnarValue::Array(cast(&out, args.return_type())?))
    }
}

pub const HOP_END: &str = "hop_end";

/// `hop_end(window_start, size)`: the (exclusive) end of a window, its start
/// plus its size, added as integers (an interval added to a timestamp goes
/// through the calendar for each value).
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct HopEnd {
    signature: Signature,
}

impl HopEnd {
    pub fn new() -> Self {
        HopEnd {
            signature: Signature::any(2, Volatility::Immutable),
        }
    }
}

impl Default for HopEnd {
    fn default() -> Self {
        Self::new()
    }
}

impl ScalarUDFImpl for HopEnd {
    fn name(&self) -> &str {
        HOP_END
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        match &arg_types[0] {
            t @ DataType::Timestamp(_, _) => Ok(t.clone()),
            other => plan_err!("a window start is a TIMESTAMP, not {other}"),
        }
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let size = match &args.args[1] {
            ColumnarValue::Scalar(s) => interval_nanos(s).filter(|n| *n > 0),
            ColumnarValue::Array(_) => None,
        };
        let Some(size) = size else {
            return exec_err!("a window size must be a positive constant INTERVAL of days or less");
        };
        let out_type = args.return_type().clone();
        let DataType::Timestamp(_, tz) = &out_type else {
            return exec_err!("hop_end returns a timestamp");
        };
        let ns_type = DataType::Timestamp(TimeUnit::Nanosecond, tz.clone());
        let start = args.args[0].to_array(args.number_rows)?;
        let ns = cast(&start, &ns_type)?;
        let end = ns
            .as_primitive::<TimestampNanosecondType>()
            .unary::<_, TimestampNanosecondType>(|t| t + size)
            .with_timezone_opt(tz.clone());
        Ok(ColumnarValue::Array(cast(&end, &out_type)?))
    }
}

#[cfg(test)]
mod tests {
    use super::{cumulate_ends, hop_starts};

    #[test]
    fn every_cumulating_window_holding_a_time_and_no_other() {
        let mut out = Vec::new();
        // Size 10, step 5: windows [0,5) and [0,10).
        cumulate_ends(3, 5, 10, &mut out);
        assert_eq!(out, vec![5, 10]);
        cumulate_ends(5, 5, 10, &mut out);
        assert_eq!(out, vec![10]);
        cumulate_ends(-1, 2, 6, &mut out);
        assert_eq!(out, vec![0]);
        // Against the definition: windows [s, s + j * step) for the
        // tumbling start s, j = 1..size/step, that hold t.
        for (step, size) in [(1, 4), (2, 10), (5, 5), (3, 12)] {
            for t in -50..50i64 {
                cumulate_ends(t, step, size, &mut out);
                let s = t.div_euclid(size) * size;
                let expected: Vec<i64> = (1..=size / step)
                    .map(|j| s + j * step)
                    .filter(|e| t < *e)
                    .collect();
                assert_eq!(out, expected, "t={t} step={step} size={size}");
            }
        }
    }

    #[test]
    fn every_window_holding_a_time_and_no_other() {
        let mut out = Vec::new();
        // Windows of 10 every 4: [0,10) [4,14) [8,18) hold 9; [12,22) does not.
        hop_starts(9, 4, 10, &mut out);
        assert_eq!(out, vec![0, 4, 8]);
        // On a window boundary: 12 is in [4,14), [8,18) and [12,22), not [0,10).
        hop_starts(12, 4, 10, &mut out);
        assert_eq!(out, vec![4, 8, 12]);
        // Before the epoch, and slide = size (tumbling).
        hop_starts(-1, 5, 10, &mut out);
        assert_eq!(out, vec![-10, -5]);
        hop_starts(7, 5, 5, &mut out);
        assert_eq!(out, vec![5]);
        // Against the definition, for many times and shapes.
        for (slide, size) in [(2, 10), (3, 10), (5, 5), (7, 3)] {
            for t in -50..50 {
                hop_starts(t, slide, size, &mut out);
                let expected: Vec<i64> = (-100..100)
                    .filter(|s| s % slide == 0 && *s <= t && t < s + size)
                    .collect();
                assert_eq!(out, expected, "t={t} slide={slide} size={size}");
            }
        }
    }
}
