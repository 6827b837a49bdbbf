//! Finds the time bounds a join's condition puts between the event times of
//! its two sides (`a.t BETWEEN b.t - INTERVAL '10' SECOND AND b.t`), which
//! make it an interval join: its state keeps a row only while a row still to
//! come on the other side can meet it.

use datafusion::arrow::datatypes::DataType;
use datafusion::common::DFSchema;
use datafusion::logical_expr::utils::split_conjunction;
use datafusion::logical_expr::{BinaryExpr, Expr, Operator};

use super::partition_window::strip_alias;
use crate::functions::interval_nanos;
use crate::plan::{JoinInterval, Props, TimeProp};

/// The bounds `filter` (over the join's output: the left side's `width`
/// columns, then the right side's) puts on `left time - right time`, for a
/// pair of columns whose watermark closes them; the pair with both bounds
/// if there is one.
pub(super) fn join_interval(
    filter: &Expr,
    schema: &DFSchema,
    width: usize,
    left: &Props,
    right: &Props,
) -> Option<JoinInterval> {
    let mut found: Vec<JoinInterval> = Vec::new();
    for conjunct in split_conjunction(filter) {
        for (x, op, y) in comparisons(strip_alias(conjunct)) {
            let (Some((cx, dx)), Some((cy, dy))) = (term(x, schema), term(y, schema)) else {
                continue;
            };
            // `lt - rt` against a constant, and on which side of it.
            let (lt, rt, d, op) = match (cx < width, cy < width) {
                (true, false) => (cx, cy - width, dy - dx, op),
                (false, true) => (cy, cx - width, dx - dy, flip(op)),
                _ => continue,
            };
            let (Some(lo), Some(ro)) = (offset(left.time[lt]), offset(right.time[rt])) else {
                continue;
            };
            let i = match found
                .iter()
                .position(|f| f.left_time == lt && f.right_time == rt)
            {
                Some(i) => i,
                None => {
                    found.push(JoinInterval {
                        left_time: lt,
                        right_time: rt,
                        left_offset: lo,
                        right_offset: ro,
                        lower: None,
                        upper: None,
                    });
                    found.len() - 1
                }
            };
            let f = &mut found[i];
            // A strict bound is kept as the inclusive one: the state may
            // keep a row a little longer, never shorter.
            if matches!(op, Operator::Gt | Operator::GtEq | Operator::Eq) {
                f.lower = Some(f.lower.map_or(d, |l| l.max(d)));
            }
            if matches!(op, Operator::Lt | Operator::LtEq | Operator::Eq) {
                f.upper = Some(f.upper.map_or(d, |u| u.min(d)));
            }
        }
    }
    let both = found
        .iter()
        .position(|f| f.lower.is_some() && f.upper.is_some());
    found
        .get(both.unwrap_or(0))
        .copied()
        .filter(|f| f.lower.is_some() || f.upper.is_some())
}

/// The comparisons a condition is: one, or a BETWEEN's two.
fn comparisons(e: &Expr) -> Vec<(&Expr, Operator, &Expr)> {
    match e {
        Expr::BinaryExpr(BinaryExpr { left, op, right })
            if matches!(
                op,
                Operator::Eq | Operator::Lt | Operator::LtEq | Operator::Gt | Operator::GtEq
            ) =>
        {
            vec![(left, *op, right)]
        }
        Expr::Between(b) if !b.negated => vec![
            (&b.expr, Operator::GtEq, &b.low),
            (&b.expr, Operator::LtEq, &b.high),
        ],
        _ => Vec::new(),
    }
}

/// `x op y` read as `y op' x`.
fn flip(op: Operator) -> Operator {
    match op {
        Operator::Lt => Operator::Gt,
        Operator::LtEq => Operator::GtEq,
        Operator::Gt => Operator::Lt,
        Operator::GtEq => Operator::LtEq,
        other => other,
    }
}

/// A column plus or minus constant intervals: (its index, the constant in ns).
fn term(e: &Expr, schema: &DFSchema) -> Option<(usize, i64)> {
    match strip_alias(e) {
        Expr::Column(c) => schema.index_of_column(c).ok().map(|i| (i, 0)),
        // Between timestamp units the instant is kept.
        Expr::Cast(c) if matches!(c.field.data_type(), DataType::Timestamp(_, _)) => {
            term(&c.expr, schema)
        }
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
            let constant = |e: &Expr| match strip_alias(e) {
                Expr::Literal(v, _) => interval_nanos(v),
                _ => None,
            };
            match op {
                Operator::Plus => match (term(left, schema), constant(right)) {
                    (Some((c, d)), Some(n)) => Some((c, d.checked_add(n)?)),
                    _ => {
                        let (c, d) = term(right, schema)?;
                        Some((c, d.checked_add(constant(left)?)?))
                    }
                },
                Operator::Minus => {
                    let (c, d) = term(left, schema)?;
                    Some((c, d.checked_sub(constant(right)?)?))
                }
                _ => None,
            }
        }
        _ => None,
    }
}

/// The close offset of an event-time column (not one the wall clock closes).
fn offset(p: TimeProp) -> Option<i64> {
    match p {
        TimeProp::EventTime | TimeProp::WindowStart(_) | TimeProp::WindowEnd(_) => p.close_offset(),
        _ => None,
    }
}
