//! SQL functions Weir adds to DataFusion: the window bounds behind TUMBLE,
//! HOP, CUMULATE, SESSION and COUNT_WINDOW, `PROCTIME()`,
//! and Flink's functions that DataFusion lacks or spells differently
//! (`DATE_FORMAT`, `HOUR` and the other fields, `MOD`, `SPLIT_INDEX`,
//! `REGEXP_EXTRACT`), so that Flink SQL runs unchanged.

mod civil;
mod count_window;
mod date_format;
mod modulo;
mod proctime;
mod session;
mod strings;
mod time_field;
mod tumble;
mod window_lists;

use std::sync::Arc;

use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::common::{plan_err, DataFusionError, Result, ScalarValue};
use datafusion::logical_expr::{ColumnarValue, ScalarUDF, WindowUDF};

pub use count_window::{
    count_window_order, count_window_size, COUNT_WINDOW_END, COUNT_WINDOW_START,
};
pub use proctime::{wall_clock_ns, PROCTIME};
pub use session::{session_gap, SESSION_END, SESSION_START};
pub use tumble::{TumbleBound, TUMBLE_END, TUMBLE_START};
pub use window_lists::{CUMULATE_ENDS, HOP_END, HOP_WINDOWS};

/// `tumble_start(ts, size)`: the start of the tumbling window holding `ts`.
pub fn tumble_start() -> Arc<ScalarUDF> {
    Arc::new(ScalarUDF::new_from_impl(TumbleBound::new(false)))
}

/// `tumble_end(ts, size)`: the (exclusive) end of the tumbling window holding `ts`.
pub fn tumble_end() -> Arc<ScalarUDF> {
    Arc::new(ScalarUDF::new_from_impl(TumbleBound::new(true)))
}

/// Every function Weir registers with DataFusion.
pub fn all() -> Vec<Arc<ScalarUDF>> {
    let mut all = vec![
        tumble_start(),
        tumble_end(),
        Arc::new(ScalarUDF::new_from_impl(window_lists::WindowList::new(
            false,
        ))),
        Arc::new(ScalarUDF::new_from_impl(window_lists::WindowList::new(
            true,
        ))),
        Arc::new(ScalarUDF::new_from_impl(window_lists::HopEnd::new())),
        Arc::new(ScalarUDF::new_from_impl(date_format::DateFormat::new())),
        Arc::new(ScalarUDF::new_from_impl(proctime::ProcTime::new())),
        Arc::new(ScalarUDF::new_from_impl(modulo::Mod::new())),
        Arc::new(ScalarUDF::new_from_impl(strings::FlinkString::new(
            strings::StringFn::SplitIndex,
        ))),
        Arc::new(ScalarUDF::new_from_impl(strings::FlinkString::new(
            strings::StringFn::RegexpExtract,
        ))),
    ];
    for (name, part) in time_field::FIELDS {
        all.push(Arc::new(ScalarUDF::new_from_impl(
            time_field::TimeField::new(name, part),
        )));
    }
    all
}

/// The window functions Weir registers with DataFusion: the bounds of
/// SESSION and COUNT_WINDOW windows.
pub fn window_functions() -> Vec<WindowUDF> {
    vec![
        WindowUDF::new_from_impl(session::SessionBound::new(false)),
        WindowUDF::new_from_impl(session::SessionBound::new(true)),
        WindowUDF::new_from_impl(count_window::CountBound::new(false)),
        WindowUDF::new_from_impl(count_window::CountBound::new(true)),
    ]
}

/// A bad argument to one of Weir's functions, found when the query is
/// planned (a constant argument) or run.
#[derive(Debug, thiserror::Error)]
pub enum FunctionError {
    /// A `DATE_FORMAT` pattern it cannot follow.
    #[error("{0}")]
    BadDatePattern(String),
    /// A HOP or CUMULATE window's slide, step or size it cannot use.
    #[error("{0}")]
    BadWindow(String),
    /// A regular expression that does not compile.
    #[error("{function}: bad regular expression: {message}")]
    BadRegex {
        function: &'static str,
        message: String,
    },
}

impl From<FunctionError> for DataFusionError {
    fn from(e: FunctionError) -> Self {
        DataFusionError::External(Box::new(e))
    }
}

/// The constant text argument at `index`, if the call has one there.
fn constant_text<'a>(args: &'a [Option<&'a ScalarValue>], index: usize) -> Option<&'a str> {
    match args.get(index).copied().flatten()? {
        ScalarValue::Utf8(Some(s))
        | ScalarValue::LargeUtf8(Some(s))
        | ScalarValue::Utf8View(Some(s)) => Some(s),
        _ => None,
    }
}

/// An argument as a column of the type asked for; a constant is a column
/// of one row, read for every row (not repeated for each).
struct ArgColumn {
    array: ArrayRef,
    constant: bool,
}

impl ArgColumn {
    fn new(arg: &ColumnarValue, to: &DataType) -> Result<Self> {
        let (array, constant) = match arg {
            ColumnarValue::Scalar(s) => (s.to_array()?, true),
            ColumnarValue::Array(a) => (a.clone(), false),
        };
        Ok(ArgColumn {
            array: datafusion::arrow::compute::cast(&array, to)?,
            constant,
        })
    }

    /// The row of the column holding the argument of row `i`.
    fn row(&self, i: usize) -> usize {
        if self.constant {
            0
        } else {
            i
        }
    }
}

/// A function's result: a scalar when every argument was one.
fn columnar(out: ArrayRef, scalar: bool) -> Result<ColumnarValue> {
    if scalar {
        Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?))
    } else {
        Ok(ColumnarValue::Array(out))
    }
}

/// The type a timestamp argument is coerced to: timestamps and dates as
/// they are, text parsed as a timestamp (as Flink accepts it).
fn timestamp_arg(function: &str, t: &DataType) -> Result<DataType> {
    match t {
        DataType::Timestamp(_, _) | DataType::Date32 | DataType::Date64 => Ok(t.clone()),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null => {
            Ok(DataType::Timestamp(TimeUnit::Nanosecond, None))
        }
        other => plan_err!("{function} takes a TIMESTAMP, not {other}"),
    }
}

/// A fixed-length interval in nanoseconds; `None` for month-based or non-interval values.
pub fn interval_nanos(v: &ScalarValue) -> Option<i64> {
    match v {
        ScalarValue::IntervalMonthDayNano(Some(i)) if i.months == 0 => {
            Some(i.days as i64 * 86_400_000_000_000 + i.nanoseconds)
        }
        ScalarValue::IntervalDayTime(Some(i)) => {
            Some(i.days as i64 * 86_400_000_000_000 + i.milliseconds as i64 * 1_000_000)
        }
        ScalarValue::IntervalYearMonth(Some(0)) => Some(0),
        ScalarValue::DurationNanosecond(Some(n)) => Some(*n),
        ScalarValue::DurationMicrosecond(Some(n)) => Some(n * 1_000),
        ScalarValue::DurationMillisecond(Some(n)) => Some(n * 1_000_000),
        ScalarValue::DurationSecond(Some(n)) => Some(n * 1_000_000_000),
        _ => None,
    }
}
