//! Window table functions in FROM: `TUMBLE(t, ts, size)` becomes a derived
//! table adding `window_start` / `window_end` (computed by `tumble_start` /
//! `tumble_end`), so batch and streaming read the same plan; likewise HOP,
//! CUMULATE, SESSION and COUNT_WINDOW. `LATE(stream)` names the stream's
//! late rows.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    Expr, FunctionArg, FunctionArgExpr, ObjectName, SetExpr, Statement, TableFactor, VisitMut,
    VisitorMut,
};
use datafusion::sql::sqlparser::parser::Parser;

use super::PlanError;
use crate::catalog::LATE_SUFFIX;
use crate::functions::{
    COUNT_WINDOW_END, COUNT_WINDOW_START, CUMULATE_ENDS, HOP_END, HOP_WINDOWS, SESSION_END,
    SESSION_START, TUMBLE_END, TUMBLE_START,
};
use crate::sql::dialect;

/// A relation's column names (None: no such relation).
pub type Columns<'a> = &'a dyn Fn(&str) -> Option<Vec<String>>;

/// Rewrites every window table function in `stmt`; `columns` names a
/// relation's columns (COUNT_WINDOW orders rows by all of them).
pub fn rewrite_windows(stmt: &mut Statement, columns: Columns) -> Result<(), PlanError> {
    let mut v = Rewriter { columns };
    match stmt.visit(&mut v) {
        ControlFlow::Continue(()) => Ok(()),
        ControlFlow::Break(e) => Err(e),
    }
}

struct Rewriter<'a> {
    columns: Columns<'a>,
}

impl VisitorMut for Rewriter<'_> {
    type Break = PlanError;

    fn pre_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<PlanError> {
        let TableFactor::Table {
            name,
            alias,
            args: Some(args),
            ..
        } = factor
        else {
            return ControlFlow::Continue(());
        };
        let func = name.to_string().to_ascii_uppercase();
        let replacement = match func.as_str() {
            "TUMBLE" => tumble(&args.args, alias.as_ref().map(|a| a.name.to_string())),
            "HOP" => hop(&args.args, alias.as_ref().map(|a| a.name.to_string())),
            "CUMULATE" => cumulate(&args.args, alias.as_ref().map(|a| a.name.to_string())),
            "SESSION" => session(&args.args, alias.as_ref().map(|a| a.name.to_string())),
            "LATE" => late(&args.args, alias.as_ref().map(|a| a.name.to_string())),
            "COUNT_WINDOW" => count_window(
                &args.args,
                alias.as_ref().map(|a| a.name.to_string()),
                self.columns,
            ),
            _ => return ControlFlow::Continue(()),
        };
        match replacement {
            Ok(f) => {
                *factor = f;
                ControlFlow::Continue(())
            }
            Err(e) => ControlFlow::Break(e),
        }
    }
}

fn positional(args: &[FunctionArg]) -> Result<Vec<&Expr>, PlanError> {
    args.iter()
        .map(|a| match a {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Ok(e),
            FunctionArg::Named {
                arg: FunctionArgExpr::Expr(e),
                ..
            } => Ok(e),
            other => Err(PlanError::Syntax(format!(
                "unexpected window function argument {other}"
            ))),
        })
        .collect()
}

/// `TUMBLE(table, time_column, size)` → `(SELECT *, tumble_start(..) AS window_start, tumble_end(..) AS window_end FROM table) AS alias`.
fn tumble(args: &[FunctionArg], alias: Option<String>) -> Result<TableFactor, PlanError> {
    let args = positional(args)?;
    if args.len() != 3 {
        return Err(PlanError::Syntax(
            "TUMBLE takes (table, time_column, size), e.g. TUMBLE(bids, ts, INTERVAL '10' SECOND)"
                .into(),
        ));
    }
    let (table, alias) = table_and_alias(args[0], alias)?;
    let col = args[1];
    let size = args[2];
    derived(
        &format!(
            "SELECT * FROM (SELECT *, {TUMBLE_START}({col}, {size}) AS window_start, \
             {TUMBLE_END}({col}, {size}) AS window_end FROM {table}) AS {alias}"
        ),
        "TUMBLE",
    )
}

/// `HOP(table, time_column, slide, size)` → each row once per window holding
/// it: `window_start` from an UNNEST of `hop_windows(..)`, `window_end` from `hop_end(start, size)`.
fn hop(args: &[FunctionArg], alias: Option<String>) -> Result<TableFactor, PlanError> {
    let args = positional(args)?;
    if args.len() != 4 {
        return Err(PlanError::Syntax(
            "HOP takes (table, time_column, slide, size), e.g. HOP(bids, ts, INTERVAL '2' SECOND, INTERVAL '10' SECOND)"
                .into(),
        ));
    }
    let (table, alias) = table_and_alias(args[0], alias)?;
    let (col, slide, size) = (args[1], args[2], args[3]);
    derived(
        &format!(
            "SELECT * FROM (SELECT *, {HOP_END}(window_start, {size}) AS window_end FROM \
             (SELECT *, unnest({HOP_WINDOWS}({col}, {slide}, {size})) AS window_start FROM {table})) \
             AS {alias}"
        ),
        "HOP",
    )
}

/// `CUMULATE(table, time_column, step, size)` → each row once per window
/// holding it: `window_start` of the tumbling window of `size`, `window_end`
/// from an UNNEST of `cumulate_ends(..)` (every `step` up to `size`).
fn cumulate(args: &[FunctionArg], alias: Option<String>) -> Result<TableFactor, PlanError> {
    let args = positional(args)?;
    if args.len() != 4 {
        return Err(PlanError::Syntax(
            "CUMULATE takes (table, time_column, step, size), e.g. CUMULATE(bids, ts, INTERVAL '2' SECOND, INTERVAL '10' SECOND)"
                .into(),
        ));
    }
    let (table, alias) = table_and_alias(args[0], alias)?;
    let (col, step, size) = (args[1], args[2], args[3]);
    derived(
        &format!(
            "SELECT * FROM (SELECT *, {TUMBLE_START}({col}, {size}) AS window_start, \
             unnest({CUMULATE_ENDS}({col}, {step}, {size})) AS window_end FROM {table}) AS {alias}"
        ),
        "CUMULATE",
    )
}

/// `SESSION(table, time_column, gap, partition columns...)` (the columns
/// from `PARTITION BY`) → `window_start` / `window_end` from the window
/// functions `session_start` / `session_end` over each partition in time
/// order. Rows without a time belong to no session: they are left out.
fn session(args: &[FunctionArg], alias: Option<String>) -> Result<TableFactor, PlanError> {
    let args = positional(args)?;
    if args.len() < 3 {
        return Err(PlanError::Syntax(
            "SESSION takes (table [PARTITION BY columns], time_column, gap), e.g. SESSION(bids PARTITION BY bidder, ts, INTERVAL '10' SECOND)"
                .into(),
        ));
    }
    let (table, alias) = table_and_alias(args[0], alias)?;
    let (col, gap) = (args[1], args[2]);
    let over = format!("OVER ({}ORDER BY {col})", partition_by(&args[3..]));
    derived(
        &format!(
            "SELECT * FROM (SELECT *, {SESSION_START}({col}, {gap}) {over} AS window_start, \
             {SESSION_END}({col}, {gap}) {over} AS window_end FROM {table} \
             WHERE {col} IS NOT NULL) AS {alias}"
        ),
        "SESSION",
    )
}

/// `COUNT_WINDOW(table, time_column, size, partition columns...)` → per
/// partition, rows numbered in the order of (time, every column), each run of
/// `size` rows one window: `window_start` / `window_end` the row numbers
/// `[start, end)`, from the window functions `count_window_start` /
/// `count_window_end`. Rows without a time are left out.
fn count_window(
    args: &[FunctionArg],
    alias: Option<String>,
    columns: Columns,
) -> Result<TableFactor, PlanError> {
    let args = positional(args)?;
    if args.len() < 3 {
        return Err(PlanError::Syntax(
            "COUNT_WINDOW takes (table [PARTITION BY columns], time_column, size), e.g. COUNT_WINDOW(readings PARTITION BY sensor, ts, 100)"
                .into(),
        ));
    }
    let name = match args[0] {
        Expr::Identifier(i) => i.value.clone(),
        Expr::CompoundIdentifier(parts) => {
            parts.last().map(|p| p.value.clone()).unwrap_or_default()
        }
        _ => String::new(),
    };
    let (table, alias) = table_and_alias(args[0], alias)?;
    let (col, size) = (args[1], args[2]);
    if name.is_empty() {
        return Err(PlanError::Unsupported(
            "COUNT_WINDOW over a query (it orders rows by all the columns of a named stream)"
                .into(),
        ));
    }
    let Some(names) = columns(&name) else {
        return Err(PlanError::UndefinedTable(name));
    };
    let order: Vec<String> = std::iter::once(col.to_string())
        .chain(
            names
                .iter()
                .map(|n| format!("\"{}\"", n.replace('"', "\"\""))),
        )
        .collect();
    let order = order.join(", ");
    let over = format!("OVER ({})", partition_by(&args[3..]));
    derived(
        &format!(
            "SELECT * FROM (SELECT *, {COUNT_WINDOW_START}({size}, {order}) {over} AS window_start, \
             {COUNT_WINDOW_END}({size}, {order}) {over} AS window_end FROM {table} \
             WHERE {col} IS NOT NULL) AS {alias}"
        ),
        "COUNT_WINDOW",
    )
}

/// `LATE(stream)` → the relation `"stream$late"`: the stream's late rows,
/// each with the watermark it was late against.
fn late(args: &[FunctionArg], alias: Option<String>) -> Result<TableFactor, PlanError> {
    let args = positional(args)?;
    let [Expr::Identifier(stream)] = args.as_slice() else {
        return Err(PlanError::Syntax(
            "LATE takes the name of a stream, e.g. LATE(bids)".into(),
        ));
    };
    let alias = alias.unwrap_or_else(|| stream.to_string());
    let name = format!("{}{LATE_SUFFIX}", stream.value).replace('"', "\"\"");
    derived(&format!("SELECT * FROM \"{name}\" AS {alias}"), "LATE")
}

/// A window clause's `PARTITION BY` of these columns (nothing without any).
fn partition_by(keys: &[&Expr]) -> String {
    match keys {
        [] => String::new(),
        keys => {
            let keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
            format!("PARTITION BY {} ", keys.join(", "))
        }
    }
}

/// The FROM item of a one-table SELECT.
fn derived(sql: &str, what: &str) -> Result<TableFactor, PlanError> {
    let query = Parser::new(dialect())
        .try_with_sql(sql)
        .and_then(|mut p| p.parse_query())
        .map_err(|e| PlanError::Syntax(e.to_string()))?;
    match *query.body {
        SetExpr::Select(mut select) => Ok(select.from.remove(0).relation),
        _ => Err(PlanError::Syntax(format!("bad {what} rewrite"))),
    }
}

/// A window function's table, and the name the derived table takes (its
/// alias, else the table's own name).
fn table_and_alias(arg: &Expr, alias: Option<String>) -> Result<(String, String), PlanError> {
    // A query in parentheses: `TUMBLE((SELECT *, PROCTIME() AS p FROM t), p, size)`.
    let query = match arg {
        Expr::Subquery(q) => Some(q),
        Expr::Nested(inner) => match inner.as_ref() {
            Expr::Subquery(q) => Some(q),
            _ => None,
        },
        _ => None,
    };
    if let Some(q) = query {
        let alias = alias.unwrap_or_else(|| "windowed".to_string());
        return Ok((format!("({q}) AS {alias}_rows"), alias));
    }
    let table = match arg {
        Expr::Identifier(i) => ObjectName::from(vec![i.clone()]).to_string(),
        Expr::CompoundIdentifier(parts) => ObjectName::from(parts.clone()).to_string(),
        other => {
            return Err(PlanError::Syntax(format!(
                "a window function's first argument must be a stream or table name, or a query in parentheses, found {other}"
            )))
        }
    };
    let alias = alias.unwrap_or_else(|| match arg {
        Expr::CompoundIdentifier(parts) => parts.last().map(|p| p.to_string()).unwrap_or_default(),
        other => other.to_string(),
    });
    Ok((table, alias))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tumble_becomes_a_derived_table() {
        let mut stmt = Parser::new(dialect())
            .try_with_sql("SELECT window_start, COUNT(*) FROM TUMBLE(bids, ts, INTERVAL '10' SECOND) GROUP BY window_start")
            .unwrap()
            .parse_statement()
            .unwrap();
        rewrite_windows(&mut stmt, &|_| None).unwrap();
        assert_eq!(
            stmt.to_string(),
            "SELECT window_start, COUNT(*) FROM (SELECT *, tumble_start(ts, INTERVAL '10' SECOND) AS window_start, \
             tumble_end(ts, INTERVAL '10' SECOND) AS window_end FROM bids) AS bids GROUP BY window_start"
        );
    }
}
