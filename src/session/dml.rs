//! INSERT, UPDATE and DELETE on stored tables: DataFusion plans and computes
//! the affected rows; the table store applies them.

use std::sync::Arc;

use datafusion::arrow::array::{Array, RecordBatch};
use datafusion::arrow::compute::{cast, concat_batches};
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::logical_expr::{DmlStatement, LogicalPlan, WriteOp};
use datafusion::sql::sqlparser::ast::{AssignmentTarget, ObjectName, TableFactor, Update};

use super::{Session, SessionError, StatementResult};
use crate::catalog::Object;

pub async fn execute(s: &Session, dml: DmlStatement) -> Result<StatementResult, SessionError> {
    let name = dml.table_name.table().to_string();
    let table = match s.db.catalog.get(&name) {
        Some(Object::Table(t)) => t,
        Some(o) => {
            return Err(SessionError::NotSupported(format!(
                "writing to {} \"{name}\" (only tables accept INSERT, UPDATE and DELETE)",
                o.kind().name()
            )))
        }
        None => return Err(crate::planner::PlanError::UndefinedTable(name).into()),
    };
    let rows = rows_of(s, dml.input.as_ref().clone(), &table.schema).await?;
    let (tag, n) = match dml.op {
        WriteOp::Insert(_) => {
            check_not_null(&name, &rows, &table.schema)?;
            match table.rows.insert(&rows)? {
                Ok(n) => ("INSERT 0", n),
                Err(dup) => {
                    return Err(SessionError::UniqueViolation {
                        table: name,
                        key: dup.0,
                    })
                }
            }
        }
        WriteOp::Update => {
            if !table.rows.has_primary_key() {
                return Err(SessionError::NotSupported(format!(
                    "UPDATE on table \"{name}\" without a primary key"
                )));
            }
            check_not_null(&name, &rows, &table.schema)?;
            ("UPDATE", table.rows.upsert(&rows)?)
        }
        WriteOp::Delete => ("DELETE", table.rows.delete(&rows)?),
        other => return Err(SessionError::NotSupported(format!("{other}"))),
    };
    Ok(StatementResult::Command {
        tag: tag.to_string(),
        rows: Some(n),
    })
}

/// Runs the plan and shapes its rows as the table's (nullability is checked
/// separately, to name the column).
async fn rows_of(
    s: &Session,
    plan: LogicalPlan,
    schema: &SchemaRef,
) -> Result<RecordBatch, SessionError> {
    let relaxed: SchemaRef = Arc::new(Schema::new(
        schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect::<Vec<_>>(),
    ));
    let batches = s.ctx.execute_logical_plan(plan).await?.collect().await?;
    let mut out = Vec::with_capacity(batches.len());
    for b in batches {
        let cols = b
            .columns()
            .iter()
            .zip(schema.fields())
            .map(|(c, f)| {
                if c.data_type() == f.data_type() {
                    Ok(c.clone())
                } else {
                    cast(c, f.data_type())
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        out.push(RecordBatch::try_new(relaxed.clone(), cols)?);
    }
    Ok(concat_batches(&relaxed, &out)?)
}

fn check_not_null(table: &str, rows: &RecordBatch, schema: &SchemaRef) -> Result<(), SessionError> {
    for (c, f) in rows.columns().iter().zip(schema.fields()) {
        if !f.is_nullable() && c.null_count() > 0 {
            return Err(SessionError::NotNull {
                table: table.to_string(),
                column: f.name().clone(),
            });
        }
    }
    Ok(())
}

/// Refuses an UPDATE that assigns a primary-key column: the store replaces
/// rows by key, so a changed key would leave the old row behind.
pub fn check_update(s: &Session, update: &Update) -> Result<(), SessionError> {
    let TableFactor::Table { name, .. } = &update.table.relation else {
        return Ok(());
    };
    let Some(Object::Table(table)) = s.db.catalog.get(&super::object_name(name)) else {
        return Ok(());
    };
    for a in &update.assignments {
        let targets: Vec<&ObjectName> = match &a.target {
            AssignmentTarget::ColumnName(n) => vec![n],
            AssignmentTarget::Tuple(ns) => ns.iter().collect(),
        };
        for t in targets {
            let col = super::object_name(t);
            if table
                .primary_key
                .iter()
                .any(|&i| table.schema.field(i).name() == &col)
            {
                return Err(SessionError::NotSupported(format!(
                    "UPDATE of primary-key column \"{col}\" (DELETE the row and INSERT it again)"
                )));
            }
        }
    }
    Ok(())
}
