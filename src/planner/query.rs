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
use crate::catalog::Catalog;
use crate::functions::{interval_nanos, session_gap, SESSION_END, SESSION_START};

/// Rewrites window functions and checks that every relation read exists.
pub fn rewrite_and_check(
    state: &SessionState,
    catalog: &Catalog,
    stmt: &mut Statement,
) -> Result<(), PlanError> {
    rewrite_windows(stmt)?;
    let df = DFStatement::Statement(Box::new(stmt.clone()));
    let refs = state.resolve_table_references(&df)?;
    for r in refs {
        if catalog.relation(r.table()).is_none() {
            return Err(PlanError::UndefinedTable(r.table().to_string()));
        }
    }
    Ok(())
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
    check_session_gaps(&plan)?;
    Ok(plan)
}

/// Checks each SESSION window's gap when the query is planned (the window
/// functions see it only when they run).
fn check_session_gaps(plan: &LogicalPlan) -> Result<(), PlanError> {
    let mut bad = None;
    plan.apply_with_subqueries(|node| {
        node.apply_expressions(|e| {
            e.apply(|e| {
                let Expr::WindowFunction(f) = e else {
                    return Ok(TreeNodeRecursion::Continue);
                };
                if ![SESSION_START, SESSION_END].contains(&f.fun.name()) {
                    return Ok(TreeNodeRecursion::Continue);
                }
                let gap = match f.params.args.get(1) {
                    Some(Expr::Literal(v, _)) => interval_nanos(v),
                    _ => None,
                };
                match session_gap(gap) {
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
