//! `count_window_start(size, ts, c1, ..)` / `count_window_end(..)`: window
//! functions behind COUNT_WINDOW in batch queries. Within a partition, rows
//! are numbered from 0 in the order of (ts, c1, ..) — the event time, then
//! the whole row, so that rows sharing a time still have one order, the
//! order a view's count windows find them in — and each run of `size` rows
//! is one window: `[start, end)` of row numbers.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, Int64Array};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::common::{plan_err, Result, ScalarValue};
use datafusion::logical_expr::function::{PartitionEvaluatorArgs, WindowUDFFieldArgs};
use datafusion::logical_expr::{PartitionEvaluator, Signature, Volatility, WindowUDFImpl};
use datafusion::physical_expr::expressions::Literal;

use super::FunctionError;

pub const COUNT_WINDOW_START: &str = "count_window_start";
pub const COUNT_WINDOW_END: &str = "count_window_end";

/// One of the two count-window bounds.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct CountBound {
    end: bool,
    signature: Signature,
}

impl CountBound {
    pub fn new(end: bool) -> Self {
        CountBound {
            end,
            signature: Signature::variadic_any(Volatility::Immutable),
        }
    }
}

/// A count window's size: a positive integer constant.
pub fn count_window_size(size: Option<&ScalarValue>) -> Result<i64, FunctionError> {
    let n = size.and_then(|v| match v.cast_to(&DataType::Int64) {
        Ok(ScalarValue::Int64(Some(n))) if v.data_type().is_integer() => Some(n),
        _ => None,
    });
    n.filter(|n| *n > 0).ok_or_else(|| {
        FunctionError::BadWindow(
            "COUNT_WINDOW needs a positive integer constant for its size".into(),
        )
    })
}

/// The sort fields rows of a count window are ordered by: the event time,
/// then every column, ascending (the streaming operator orders alike).
pub fn count_window_order(types: &[DataType]) -> Result<RowConverter> {
    Ok(RowConverter::new(
        types.iter().map(|t| SortField::new(t.clone())).collect(),
    )?)
}

impl WindowUDFImpl for CountBound {
    fn name(&self) -> &str {
        if self.end {
            COUNT_WINDOW_END
        } else {
            COUNT_WINDOW_START
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn partition_evaluator(
        &self,
        args: PartitionEvaluatorArgs,
    ) -> Result<Box<dyn PartitionEvaluator>> {
        let size = args
            .input_exprs()
            .first()
            .and_then(|e| e.downcast_ref::<Literal>())
            .map(|l| l.value());
        let size = count_window_size(size)
            .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?;
        Ok(Box::new(CountWindows {
            end: self.end,
            size,
        }))
    }

    fn field(&self, args: WindowUDFFieldArgs) -> Result<FieldRef> {
        if args.input_fields().len() < 2 {
            return plan_err!("{} takes (size, time, columns...)", self.name());
        }
        Ok(Arc::new(Field::new(args.name(), DataType::Int64, true)))
    }
}

#[derive(Debug)]
struct CountWindows {
    end: bool,
    size: i64,
}

impl PartitionEvaluator for CountWindows {
    fn evaluate_all(&mut self, values: &[ArrayRef], num_rows: usize) -> Result<ArrayRef> {
        let order = &values[1..];
        let types: Vec<DataType> = order.iter().map(|a| a.data_type().clone()).collect();
        let rows = count_window_order(&types)?.convert_columns(order)?;
        let mut by_order: Vec<usize> = (0..num_rows).collect();
        by_order.sort_by(|&a, &b| rows.row(a).cmp(&rows.row(b)));
        let mut bounds = vec![0i64; num_rows];
        for (n, &i) in by_order.iter().enumerate() {
            let start = n as i64 - n as i64 % self.size;
            bounds[i] = if self.end { start + self.size } else { start };
        }
        Ok(Arc::new(Int64Array::from(bounds)))
    }
}
