//! Statements to DataFusion logical plans: window rewrite, a check that every
//! referenced relation exists (so a missing one is 42P01, not a generic
//! planning error), DataFusion's SQL planner, then its analyzer (type coercion).

use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::execution::SessionState;
use datafusion::logical_expr::{Expr, LogicalPlan};
use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::sqlparser::ast::Statement;

use super::window::rewrite_windows;
use super::PlanError;
use crate::catalog::{late_of, lookup_of, Catalog};
use crate::functions::{
    count_window_size, interval_nanos, session_gap, COUNT_WINDOW_END, COUNT_WINDOW_START,
    SESSION_END, SESSION_START,
};

/// The catalog objects a statement reads by name, sorted (the stream of
/// `LATE(s)`, the table of a lookup join): what it depends on.
pub fn relations_read(
    state: &SessionState,
    catalog: &Catalog,
    stmt: &Statement,
) -> Result<Vec<String>, PlanError> {
    let mut names = rewrite_and_check(state, catalog, &mut stmt.clone())?;
    names.sort();
    names.dedup();
    Ok(names)
}

/// Rewrites window functions and checks that every relation read exists;
/// returns the objects read.
pub fn rewrite_and_check(
    state: &SessionState,
    catalog: &Catalog,
    stmt: &mut Statement,
) -> Result<Vec<String>, PlanError> {
    let columns = |name: &str| {
        let schema = catalog.relation(name)?.schema();
        Some(schema.fields().iter().map(|f| f.name().clone()).collect())
    };
    rewrite_windows(stmt, &columns)?;
    let df = DFStatement::Statement(Box::new(stmt.clone()));
    let refs = state.resolve_table_references(&df)?;
    let mut read = Vec::with_capacity(refs.len());
    for r in refs {
        read.push(
            late_of(r.table())
                .or_else(|| lookup_of(r.table()))
                .unwrap_or(r.table())
                .to_string(),
        );
        if let Some(stream) = late_of(r.table()) {
            if catalog.late_stream(r.table()).is_none() {
                return Err(match catalog.relation(stream) {
                    Some(_) => PlanError::Invalid(format!(
                        "LATE({stream}): \"{stream}\" is not a stream with an event time (WATERMARK FOR), so no row of it is late"
                    )),
                    None => PlanError::UndefinedTable(stream.to_string()),
                });
            }
            continue;
        }
        if let Some(table) = lookup_of(r.table()) {
            if catalog.lookup_table(r.table()).is_none() {
                return Err(match catalog.relation(table) {
                    Some(_) => PlanError::Unsupported(format!(
                        "FOR SYSTEM_TIME AS OF on \"{table}\", which is not a table (a lookup join reads a table)"
                    )),
                    None => PlanError::UndefinedTable(table.to_string()),
                });
            }
            continue;
        }
        if catalog.relation(r.table()).is_none() {
            return Err(PlanError::UndefinedTable(r.table().to_string()));
        }
    }
    Ok(read)
}

/// Plans a statement DataFusion understands (query, INSERT, UPDATE, DELETE,
/// CREATE TABLE) to an analyzed logical plan.
pub async fn plan_statement(
    state: &SessionState,
    catalog: &Catalog,
    mut stmt: Statement,
) -> Result<LogicalPlan, PlanError> {
    rewrite_and_check(state, catalog, &mut stmt)?;
    let plan = state
        .statement_to_plan(DFStatement::Statement(Box::new(stmt)))
        .await?;
    let plan = state
        .analyzer()
        .execute_and_check(plan, state.config_options(), |_, _| {})?;
    check_window_args(&plan)?;
    Ok(plan)
}

/// Checks each SESSION window's gap and COUNT_WINDOW's size when the query
/// is planned (the window functions see them only when they run).
fn check_window_args(plan: &LogicalPlan) -> Result<(), PlanError> {
    let mut bad = None;
    plan.apply_with_subqueries(|node| {
        node.apply_expressions(|e| {
            e.apply(|e| {
                let Expr::WindowFunction(f) = e else {
                    return Ok(TreeNodeRecursion::Continue);
                };
                let literal = |i: usize| match f.params.args.get(i) {
                    Some(Expr::Literal(v, _)) => Some(v),
                    _ => None,
                };
                let checked = match f.fun.name() {
                    SESSION_START | SESSION_END => {
                        session_gap(literal(1).and_then(interval_nanos)).map(|_| ())
                    }
                    COUNT_WINDOW_START | COUNT_WINDOW_END => {
                        count_window_size(literal(0)).map(|_| ())
                    }
                    _ => return Ok(TreeNodeRecursion::Continue),
                };
                match checked {
                    Ok(_) => Ok(TreeNodeRecursion::Continue),
                    Err(e) => {
                        bad = Some(e);
                        Ok(TreeNodeRecursion::Stop)
                    }
                }
            })
        })
    })?;
    match bad {
        Some(e) => Err(PlanError::Invalid(e.to_string())),
        None => Ok(()),
    }
}
