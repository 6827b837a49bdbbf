//! Flink's OVER aggregation (`agg(...) OVER (PARTITION BY ... ORDER BY
//! time ROWS|RANGE BETWEEN ... PRECEDING AND CURRENT ROW)`) as a stream
//! node: over an append-only stream, ordered by its event time, every
//! aggregate of one SELECT over the same window, as Flink requires.

use datafusion::logical_expr::expr::WindowFunction;
use datafusion::logical_expr::{
    Expr, Window, WindowFrame, WindowFrameBound, WindowFrameUnits, WindowFunctionDefinition,
};

use super::partition_window::{column_index, strip_alias};
use super::stream::agg_kind;
use super::PlanError;
use crate::functions::interval_nanos;
use crate::plan::{AggCall, OverFrame, Props, StreamNode, TimeProp};

/// Every window function of `w` is an aggregate (not ROW_NUMBER, RANK, ...).
pub(super) fn is_over_aggregate(w: &Window) -> bool {
    w.window_expr.iter().all(|e| {
        matches!(strip_alias(e), Expr::WindowFunction(f)
            if matches!(f.fun, WindowFunctionDefinition::AggregateUDF(_)))
    })
}

fn unsupported(what: &str) -> PlanError {
    PlanError::Unsupported(format!(
        "{what} (an OVER aggregate is ordered by the event time, ascending, with a frame ending at the CURRENT ROW: ROWS or RANGE BETWEEN ... PRECEDING AND CURRENT ROW, as in Flink)"
    ))
}

/// The OVER aggregate of window node `w` over its converted input.
pub(super) fn over_node(input: StreamNode, w: &Window) -> Result<StreamNode, PlanError> {
    let in_schema = input.schema().clone();
    let in_props = input.props().clone();
    if !in_props.append_only {
        return Err(PlanError::Unsupported(
            "an OVER aggregate over an updating input (Flink runs them over append-only streams)"
                .into(),
        ));
    }
    let width = in_schema.fields().len();
    let mut calls = Vec::with_capacity(w.window_expr.len());
    let mut window: Option<&WindowFunction> = None;
    for (i, e) in w.window_expr.iter().enumerate() {
        let Expr::WindowFunction(f) = strip_alias(e) else {
            return Err(unsupported("this window expression"));
        };
        let WindowFunctionDefinition::AggregateUDF(udaf) = &f.fun else {
            return Err(unsupported("this window function"));
        };
        let p = &f.params;
        match window {
            None => window = Some(f),
            Some(first) => {
                let same = first.params.partition_by == p.partition_by
                    && first.params.order_by == p.order_by
                    && first.params.window_frame == p.window_frame;
                if !same {
                    return Err(PlanError::Unsupported(
                        "OVER aggregates over different windows in one SELECT (as in Flink, they must share one)".into(),
                    ));
                }
            }
        }
        if p.args.len() > 1 {
            return Err(PlanError::Unsupported(format!(
                "{}() with several arguments",
                udaf.name()
            )));
        }
        calls.push(AggCall {
            kind: agg_kind(udaf.name())?,
            args: p.args.clone(),
            distinct: p.distinct,
            filter: p.filter.as_deref().cloned(),
            output_type: w.schema.field(width + i).data_type().clone(),
        });
    }
    let params = &window.ok_or_else(|| unsupported("an empty window"))?.params;
    let [sort] = params.order_by.as_slice() else {
        return Err(unsupported(
            "an OVER aggregate without ORDER BY, or with several",
        ));
    };
    let time = column_index(&in_schema, &sort.expr)
        .filter(|&j| in_props.time[j] == TimeProp::EventTime && sort.asc)
        .ok_or_else(|| unsupported(&format!("ORDER BY {sort}")))?;
    let frame = over_frame(&params.window_frame)?;
    let time_expr = Expr::Column(in_schema.columns()[time].clone());
    // The event time, then every column: one order for every row, however
    // the input was cut into chunks.
    let order: Vec<Expr> = std::iter::once(time_expr.clone())
        .chain(in_schema.columns().into_iter().map(Expr::Column))
        .collect();
    let mut times = in_props.time.clone();
    times.extend(std::iter::repeat_n(TimeProp::None, calls.len()));
    Ok(StreamNode::Over {
        input: Box::new(input),
        partition: params.partition_by.clone(),
        time: time_expr,
        order,
        frame,
        aggs: calls,
        schema: w.schema.clone(),
        props: Props {
            append_only: true,
            key: Vec::new(),
            time: times,
        },
    })
}

fn over_frame(f: &WindowFrame) -> Result<OverFrame, PlanError> {
    if !matches!(f.end_bound, WindowFrameBound::CurrentRow) {
        return Err(unsupported(&format!("a frame ending at {}", f.end_bound)));
    }
    Ok(match (&f.units, &f.start_bound) {
        (WindowFrameUnits::Rows, WindowFrameBound::CurrentRow) => OverFrame::Rows(0),
        (WindowFrameUnits::Range, WindowFrameBound::CurrentRow) => OverFrame::Range(0),
        (WindowFrameUnits::Rows, WindowFrameBound::Preceding(v)) if v.is_null() => {
            OverFrame::RowsUnbounded
        }
        (WindowFrameUnits::Range, WindowFrameBound::Preceding(v)) if v.is_null() => {
            OverFrame::RangeUnbounded
        }
        (WindowFrameUnits::Rows, WindowFrameBound::Preceding(v)) => {
            let n = v
                .cast_to(&datafusion::arrow::datatypes::DataType::UInt64)
                .ok()
                .and_then(|n| match n {
                    datafusion::common::ScalarValue::UInt64(n) => n,
                    _ => None,
                })
                .ok_or_else(|| unsupported(&format!("ROWS {v} PRECEDING")))?;
            OverFrame::Rows(n)
        }
        (WindowFrameUnits::Range, WindowFrameBound::Preceding(v)) => OverFrame::Range(
            interval_nanos(v)
                .filter(|d| *d >= 0)
                .ok_or_else(|| unsupported(&format!("RANGE {v} PRECEDING (an interval)")))?,
        ),
        _ => return Err(unsupported(&format!("the frame {f}"))),
    })
}
