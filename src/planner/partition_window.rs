//! SESSION and COUNT_WINDOW windows in views. Their window functions
//! (`session_start` .., `count_window_start` ..) see a partition's other
//! rows, which a stream does not have yet; so a view computes them only in
//! the aggregate that groups by them: the planner finds the window node
//! below an aggregate (through projections and aliases), lets its rows pass
//! with their event time in place of each bound, and makes the aggregate a
//! partition-window aggregate, keyed by the window's partition columns.

use datafusion::common::{DFSchema, ScalarValue};
use datafusion::logical_expr::expr::WindowFunction;
use datafusion::logical_expr::{Expr, LogicalPlan, Window};

use super::PlanError;
use crate::functions::{
    count_window_size, interval_nanos, session_gap, COUNT_WINDOW_END, COUNT_WINDOW_START,
    SESSION_END, SESSION_START,
};
use crate::plan::{AggCall, PartitionWindow, PartitionWindowKind, WindowBound};

/// What a window node's functions are.
#[derive(Debug, Clone, PartialEq)]
enum Family {
    /// With the gap (ns) when it is a constant interval.
    Session(Option<i64>),
    /// With the size when it is a constant.
    Count(Option<ScalarValue>),
}

/// What a partition window below an aggregate gives the aggregate's input.
pub(super) struct WindowOrigin {
    /// The window nodes computing the bounds.
    pub windows: Vec<*const LogicalPlan>,
    /// Positions of the columns holding `window_start`, and `window_end`.
    starts: Vec<usize>,
    ends: Vec<usize>,
    /// Per partition column of the window: the positions holding it.
    partition: Vec<Vec<usize>>,
    /// Per column a count window orders rows by: the positions holding it.
    order: Vec<Vec<usize>>,
    family: Family,
}

pub(super) fn strip_alias(e: &Expr) -> &Expr {
    match e {
        Expr::Alias(a) => strip_alias(&a.expr),
        other => other,
    }
}

pub(super) fn column_index(schema: &DFSchema, e: &Expr) -> Option<usize> {
    match strip_alias(e) {
        Expr::Column(c) => schema.index_of_column(c).ok(),
        _ => None,
    }
}

fn literal(e: &Expr) -> Option<&ScalarValue> {
    match strip_alias(e) {
        Expr::Literal(v, _) => Some(v),
        _ => None,
    }
}

/// Per window expression of `w`, when all of them are bounds of one kind of
/// partition window: the bound, and the function.
fn bounds(w: &Window) -> Option<Vec<(WindowBound, &WindowFunction)>> {
    w.window_expr
        .iter()
        .map(|e| match strip_alias(e) {
            Expr::WindowFunction(f) => {
                let bound = match f.fun.name() {
                    SESSION_START | COUNT_WINDOW_START => WindowBound::Start,
                    SESSION_END | COUNT_WINDOW_END => WindowBound::End,
                    _ => return None,
                };
                Some((bound, f.as_ref()))
            }
            _ => None,
        })
        .collect()
}

fn family(f: &WindowFunction) -> Family {
    match f.fun.name() {
        SESSION_START | SESSION_END => Family::Session(
            f.params
                .args
                .get(1)
                .and_then(literal)
                .and_then(interval_nanos),
        ),
        _ => Family::Count(f.params.args.first().and_then(literal).cloned()),
    }
}

/// Whether `w` computes the bounds of a SESSION or COUNT_WINDOW window.
pub(super) fn is_partition_window(w: &Window) -> bool {
    bounds(w).is_some_and(|b| !b.is_empty())
}

/// The event time a partition window node orders its rows by (over its input).
pub(super) fn window_time(w: &Window) -> Option<&Expr> {
    let (_, f) = bounds(w)?.into_iter().next()?;
    match family(f) {
        Family::Session(_) => f.params.args.first(),
        Family::Count(_) => f.params.args.get(1),
    }
}

/// Finds the partition window whose bounds `plan`'s output carries (None:
/// no such window, or something else in between).
pub(super) fn window_origin(plan: &LogicalPlan) -> Result<Option<WindowOrigin>, PlanError> {
    match plan {
        LogicalPlan::Window(w) => {
            let Some(exprs) = bounds(w).filter(|b| !b.is_empty()) else {
                return Ok(None);
            };
            let first = exprs[0].1;
            let fam = family(first);
            let in_schema = w.input.schema();
            let columns = |es: &[Expr], what: &str| {
                es.iter()
                    .map(|e| column_index(in_schema, e).map(|i| vec![i]))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| PlanError::Unsupported(format!("a window {what} an expression")))
            };
            let partition = columns(&first.params.partition_by, "partitioned by")?;
            let order = match fam {
                Family::Session(_) => Vec::new(),
                Family::Count(_) => columns(&first.params.args[1..], "ordered by")?,
            };
            let mut o = match window_origin(&w.input)? {
                // Bounds computed in two window nodes: one window still.
                Some(o) if o.family == fam && o.partition == partition => o,
                Some(_) => {
                    return Err(PlanError::Unsupported(
                        "two SESSION or COUNT_WINDOW windows under one aggregate".into(),
                    ))
                }
                None => WindowOrigin {
                    windows: Vec::new(),
                    starts: Vec::new(),
                    ends: Vec::new(),
                    partition,
                    order,
                    family: fam,
                },
            };
            o.windows.push(plan as *const LogicalPlan);
            let width = in_schema.fields().len();
            for (i, (bound, _)) in exprs.iter().enumerate() {
                match bound {
                    WindowBound::Start => o.starts.push(width + i),
                    WindowBound::End => o.ends.push(width + i),
                }
            }
            Ok(Some(o))
        }
        LogicalPlan::SubqueryAlias(a) => window_origin(&a.input),
        LogicalPlan::Filter(f) if window_origin(&f.input)?.is_some() => {
            Err(PlanError::Unsupported(
                "a WHERE between a SESSION or COUNT_WINDOW window and its GROUP BY in a materialized view (its windows would be made of the rows the condition drops)".into(),
            ))
        }
        LogicalPlan::Projection(p) => {
            let Some(inner) = window_origin(&p.input)? else {
                return Ok(None);
            };
            let in_schema = p.input.schema();
            let remap = |tracked: &[Vec<usize>]| -> Vec<Vec<usize>> {
                tracked
                    .iter()
                    .map(|at| {
                        (0..p.expr.len())
                            .filter(|&i| column_index(in_schema, &p.expr[i]).is_some_and(|j| at.contains(&j)))
                            .collect()
                    })
                    .collect()
            };
            let on_bound = |j: usize| inner.starts.contains(&j) || inner.ends.contains(&j);
            for e in &p.expr {
                let computed = column_index(in_schema, e).is_none();
                let reads_bound = e
                    .column_refs()
                    .into_iter()
                    .any(|c| in_schema.index_of_column(c).is_ok_and(on_bound));
                if computed && reads_bound {
                    return Err(PlanError::Unsupported(format!(
                        "computing on a window's bounds before its GROUP BY ({e})"
                    )));
                }
            }
            let o = WindowOrigin {
                windows: inner.windows.clone(),
                starts: remap(std::slice::from_ref(&inner.starts)).remove(0),
                ends: remap(std::slice::from_ref(&inner.ends)).remove(0),
                partition: remap(&inner.partition),
                order: remap(&inner.order),
                family: inner.family,
            };
            Ok(Some(o))
        }
        _ => Ok(None),
    }
}

/// The partition window an aggregate over `o`'s output computes: None
/// when it groups by neither bound (then an aggregate like any other).
pub(super) fn partition_window(
    o: &WindowOrigin,
    group: &[Expr],
    calls: &[AggCall],
    in_schema: &DFSchema,
) -> Result<Option<PartitionWindow>, PlanError> {
    let position = |e: &Expr| column_index(in_schema, e);
    let on_bound = |e: &Expr| {
        e.column_refs().into_iter().any(|c| {
            in_schema
                .index_of_column(c)
                .is_ok_and(|j| o.starts.contains(&j) || o.ends.contains(&j))
        })
    };
    if calls
        .iter()
        .any(|c| c.args.iter().chain(&c.filter).any(on_bound))
    {
        return Err(PlanError::Unsupported(
            "an aggregate of a window's bounds".into(),
        ));
    }
    let bounds: Vec<Option<WindowBound>> = group
        .iter()
        .map(|g| match position(g) {
            Some(j) if o.starts.contains(&j) => Some(WindowBound::Start),
            Some(j) if o.ends.contains(&j) => Some(WindowBound::End),
            _ => None,
        })
        .collect();
    let Some(first) = bounds.iter().position(Option::is_some) else {
        if group.iter().any(on_bound) {
            return Err(PlanError::Unsupported(
                "grouping by an expression of a window's bounds".into(),
            ));
        }
        return Ok(None);
    };
    let mut covered = vec![false; o.partition.len()];
    let mut partition = Vec::new();
    for (g, b) in group.iter().zip(&bounds) {
        if b.is_some() {
            continue;
        }
        let k = position(g).and_then(|j| o.partition.iter().position(|at| at.contains(&j)));
        let Some(k) = k else {
            return Err(PlanError::Unsupported(format!(
                "grouping a SESSION or COUNT_WINDOW window by {g}, which is not one of its partition columns (GROUP BY window_start, window_end and the columns of PARTITION BY)"
            )));
        };
        covered[k] = true;
        partition.push(g.clone());
    }
    if covered.contains(&false) {
        return Err(PlanError::Unsupported(
            "a GROUP BY over a SESSION or COUNT_WINDOW window without all of its partition columns"
                .into(),
        ));
    }
    let invalid = |e: crate::functions::FunctionError| PlanError::Invalid(e.to_string());
    let kind = match &o.family {
        Family::Session(gap) => PartitionWindowKind::Session {
            gap: session_gap(*gap).map_err(invalid)?,
        },
        Family::Count(size) => {
            let order = o
                .order
                .iter()
                .map(|at| {
                    at.first()
                        .map(|&j| Expr::Column(in_schema.columns()[j].clone()))
                        .ok_or_else(|| {
                            PlanError::Unsupported(
                                "a COUNT_WINDOW view leaving out a column of the windowed stream before its GROUP BY (rows are ordered by all of them)".into(),
                            )
                        })
                })
                .collect::<Result<Vec<_>, _>>()?;
            PartitionWindowKind::Count {
                size: count_window_size(size.as_ref()).map_err(invalid)?,
                order,
            }
        }
    };
    Ok(Some(PartitionWindow {
        partition,
        bounds,
        time: strip_alias(&group[first]).clone(),
        kind,
    }))
}
