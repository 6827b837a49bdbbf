//! Schemas of CREATE STREAM / CREATE TABLE (column types through DataFusion's
//! SQL type mapping) and watermark delays.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef};
use datafusion::common::{Constraint, DFSchema, ScalarValue};
use datafusion::logical_expr::{DdlStatement, LogicalPlan};
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{BinaryOperator, ColumnDef, Expr};

use super::PlanError;
use crate::connectors::Computed;
use crate::functions::interval_nanos;
use crate::plan::EventTimeSpec;
use crate::sql::WatermarkClause;

/// A stream's whole schema from its stored columns and Flink's computed
/// columns ((place among all columns, name, expression over the stored
/// ones)), and the computed columns as expressions to evaluate.
pub fn computed_columns(
    ctx: &SessionContext,
    stored: &SchemaRef,
    computed: &[(usize, String, Expr)],
) -> Result<(SchemaRef, Arc<[Computed]>), PlanError> {
    if computed.is_empty() {
        return Ok((stored.clone(), Arc::from(Vec::new())));
    }
    let df = DFSchema::try_from(stored.as_ref().clone())?;
    let state = ctx.state();
    let mut out = Vec::with_capacity(computed.len());
    let mut fields: Vec<FieldRef> = stored.fields().iter().cloned().collect();
    let mut placed: Vec<(usize, FieldRef)> = Vec::new();
    for (position, name, expr) in computed {
        let logical = ctx.parse_sql_expr(&expr.to_string(), &df)?;
        let physical = state.create_physical_expr(logical, &df)?;
        let data_type = physical.data_type(stored)?;
        placed.push((*position, Arc::new(Field::new(name, data_type, true))));
        out.push(Computed {
            position: *position,
            expr: physical,
        });
    }
    for (position, field) in placed {
        if position > fields.len() {
            return Err(PlanError::Invalid(format!(
                "computed column {} is out of place",
                field.name()
            )));
        }
        fields.insert(position, field);
    }
    Ok((Arc::new(Schema::new(fields)), Arc::from(out)))
}

/// The Arrow schema and primary-key columns of a column list.
pub async fn column_schema(
    ctx: &SessionContext,
    columns: &[ColumnDef],
    constraints: &str,
) -> Result<(SchemaRef, Vec<usize>), PlanError> {
    if columns.is_empty() {
        return Err(PlanError::Syntax("a column list is required".into()));
    }
    let cols: Vec<String> = columns.iter().map(|c| c.to_string()).collect();
    let sep = if constraints.is_empty() { "" } else { ", " };
    let sql = format!(
        "CREATE TABLE __weir_columns ({}{sep}{constraints})",
        cols.join(", ")
    );
    let stmt = datafusion::sql::sqlparser::parser::Parser::new(crate::sql::dialect())
        .try_with_sql(&sql)
        .and_then(|mut p| p.parse_statement())
        .map_err(|e| PlanError::Syntax(e.to_string()))?;
    let plan = ctx
        .state()
        .statement_to_plan(datafusion::sql::parser::Statement::Statement(Box::new(
            stmt,
        )))
        .await?;
    let LogicalPlan::Ddl(DdlStatement::CreateMemoryTable(t)) = plan else {
        return Err(PlanError::Syntax("expected a column list".into()));
    };
    let schema: SchemaRef = Arc::new(t.input.schema().as_arrow().clone());
    for f in schema.fields() {
        if matches!(f.data_type(), DataType::Null) {
            return Err(PlanError::Unsupported(format!(
                "the type of column {}",
                f.name()
            )));
        }
    }
    let pk = t
        .constraints
        .iter()
        .find_map(|c| match c {
            Constraint::PrimaryKey(cols) => Some(cols.clone()),
            _ => None,
        })
        .unwrap_or_default();
    // Primary-key columns are NOT NULL, as in Postgres.
    let schema = if pk.is_empty() {
        schema
    } else {
        let fields: Vec<_> = schema
            .fields()
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let f = f.as_ref().clone();
                if pk.contains(&i) {
                    f.with_nullable(false)
                } else {
                    f
                }
            })
            .collect();
        Arc::new(datafusion::arrow::datatypes::Schema::new(fields))
    };
    Ok((schema, pk))
}

/// Reads `WATERMARK FOR ts AS ts [- INTERVAL ...]` against the stream's columns.
pub async fn watermark_delay(
    ctx: &SessionContext,
    schema: &SchemaRef,
    clause: &WatermarkClause,
) -> Result<EventTimeSpec, PlanError> {
    let column = schema
        .fields()
        .iter()
        .position(|f| f.name().eq_ignore_ascii_case(&clause.column))
        .ok_or_else(|| {
            PlanError::Invalid(format!(
                "watermark column {} is not a column of the stream",
                clause.column
            ))
        })?;
    if !matches!(schema.field(column).data_type(), DataType::Timestamp(_, _)) {
        return Err(PlanError::Invalid(format!(
            "watermark column {} must be a TIMESTAMP, not {}",
            clause.column,
            schema.field(column).data_type()
        )));
    }
    let bad = || {
        PlanError::Invalid(format!(
            "watermark must be `{0}` or `{0} - INTERVAL '<n>' <unit>`, found {1}",
            clause.column, clause.expr
        ))
    };
    let same_column =
        |e: &Expr| matches!(e, Expr::Identifier(i) if i.value.eq_ignore_ascii_case(&clause.column));
    let delay = match &clause.expr {
        e if same_column(e) => 0,
        Expr::BinaryOp {
            left,
            op: BinaryOperator::Minus,
            right,
        } if same_column(left) => {
            let batches = ctx
                .sql(&format!("SELECT {right}"))
                .await
                .map_err(|_| bad())?
                .collect()
                .await?;
            let v = batches
                .first()
                .filter(|b| b.num_rows() == 1)
                .map(|b| ScalarValue::try_from_array(b.column(0), 0))
                .transpose()?
                .ok_or_else(bad)?;
            interval_nanos(&v).filter(|d| *d >= 0).ok_or_else(bad)?
        }
        _ => return Err(bad()),
    };
    Ok(EventTimeSpec { column, delay })
}

/// The SQL type that declares a column of `t` (as DataFusion reads it back
/// in a column list), for a table made from a query's columns.
pub fn sql_type(t: &DataType) -> Option<String> {
    use datafusion::arrow::datatypes::TimeUnit;
    Some(match t {
        DataType::Boolean => "BOOLEAN".into(),
        DataType::Int8 => "TINYINT".into(),
        DataType::Int16 => "SMALLINT".into(),
        DataType::Int32 => "INT".into(),
        DataType::Int64 => "BIGINT".into(),
        DataType::UInt8 => "TINYINT UNSIGNED".into(),
        DataType::UInt16 => "SMALLINT UNSIGNED".into(),
        DataType::UInt32 => "INT UNSIGNED".into(),
        DataType::UInt64 => "BIGINT UNSIGNED".into(),
        DataType::Float32 => "REAL".into(),
        DataType::Float64 => "DOUBLE".into(),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "VARCHAR".into(),
        DataType::Date32 => "DATE".into(),
        DataType::Decimal128(p, s) => format!("DECIMAL({p}, {s})"),
        // A zoned one (PROCTIME()'s, Flink's TIMESTAMP_LTZ) as its time in
        // UTC: a declared column has no zone.
        DataType::Timestamp(unit, _) => format!(
            "TIMESTAMP({})",
            match unit {
                TimeUnit::Second => 0,
                TimeUnit::Millisecond => 3,
                TimeUnit::Microsecond => 6,
                TimeUnit::Nanosecond => 9,
            }
        ),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::TimeUnit;
    use datafusion::sql::sqlparser::ast::Statement;

    /// Each type's SQL name, read back as a column list, is the type again
    /// (DataFusion's reading of column types is the oracle).
    #[tokio::test]
    async fn sql_type_names_read_back_as_the_same_type() {
        let ctx = SessionContext::new();
        let types = [
            DataType::Boolean,
            DataType::Int16,
            DataType::Int32,
            DataType::Int64,
            DataType::Float32,
            DataType::Float64,
            DataType::Utf8,
            DataType::Date32,
            DataType::Decimal128(10, 2),
            DataType::Timestamp(TimeUnit::Second, None),
            DataType::Timestamp(TimeUnit::Millisecond, None),
            DataType::Timestamp(TimeUnit::Microsecond, None),
            DataType::Timestamp(TimeUnit::Millisecond, Some("+00:00".into())),
        ];
        for t in types {
            let name = sql_type(&t).unwrap();
            let sql = format!("CREATE TABLE x (c {name})");
            let stmt = datafusion::sql::sqlparser::parser::Parser::new(crate::sql::dialect())
                .try_with_sql(&sql)
                .and_then(|mut p| p.parse_statement())
                .unwrap();
            let Statement::CreateTable(ct) = stmt else {
                panic!("{sql}")
            };
            let (schema, _) = column_schema(&ctx, &ct.columns, "").await.unwrap();
            // Strings of every kind are declared VARCHAR, read as string views.
            // A zoned timestamp (PROCTIME()'s) becomes one in UTC without a zone.
            let want = match t {
                DataType::Utf8 => DataType::Utf8View,
                DataType::Timestamp(unit, Some(_)) => DataType::Timestamp(unit, None),
                t => t,
            };
            assert_eq!(schema.field(0).data_type(), &want, "{name}");
        }
        assert_eq!(sql_type(&DataType::Binary), None);
    }
}
