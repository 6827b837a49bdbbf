//! INSERT INTO a connector table (Flink's sink tables): a job of its own
//! writing a query's rows to the table's connector (`CREATE SINK name INTO
//! table AS query`), or, for a query reading no stream, one write; and
//! Flink's CTAS, the table plus that job.

use datafusion::arrow::datatypes::{DataType, Field, SchemaRef};
use datafusion::logical_expr::LogicalPlan;
use datafusion::sql::sqlparser::ast::{ObjectName, Query, SetExpr, Statement};

use super::ddl::{create, drop, job_config, job_settings, relation, views_read};
use super::{object_name, Session, SessionError, StatementResult};
use crate::catalog::{Catalog, Object, SinkEntry};
use crate::connectors::{self, SinkTarget};
use crate::plan::StreamPlan;
use crate::planner;
use crate::runtime::{self, JobConfig};
use crate::sql::{CreateSink, ObjectKind};
use crate::state::JobState;

/// `INSERT INTO table [(columns)] query` on a connector table (run as
/// `CREATE SINK name INTO ...`): a job of its own writes the query's rows
/// to the table's connector, exactly once, until the sink is dropped. The
/// job starts paused; the caller resumes it.
pub(super) async fn insert_job(
    s: &Session,
    k: &CreateSink,
    insert: &Statement,
    id: u64,
    replaying: bool,
) -> Result<Inserted, SessionError> {
    let catalog = &s.db.catalog;
    let Statement::Insert(ins) = insert else {
        unreachable!("the SQL layer makes INSERT statements only");
    };
    let table = insert_target(&ins.table)?;
    let target = match catalog.get(&table) {
        Some(Object::Stream(t)) => t,
        Some(o) => {
            return Err(SessionError::NotSupported(format!(
                "a sink into {} \"{table}\" (a sink writes a connector table: CREATE TABLE ... WITH ('connector' = ...))",
                o.kind().name()
            )))
        }
        None => return Err(planner::PlanError::UndefinedTable(table).into()),
    };
    if !target.computed.is_empty() {
        return Err(SessionError::NotSupported(format!(
            "INSERT INTO \"{table}\", which has computed columns"
        )));
    }
    let sink = connectors::sink_target(&target.options)?;
    let query = insert_query(s, insert).await?;
    if let Some(source) = &ins.source {
        check_types(s, source, &ins.columns, &target.stored).await?;
    }
    if !reads_a_stream(&query, catalog) {
        // Flink's INSERT INTO t VALUES (...): a bounded query, written once.
        let batches = s.ctx.execute_logical_plan(query).await?.collect().await?;
        return Ok(Inserted::Written(write_once(&sink, id, &batches)?));
    }
    let plan = insert_plan(catalog, &query)?;
    if matches!(sink, SinkTarget::Files { .. }) && !plan.append_only() {
        return Err(SessionError::NotSupported(format!(
            "INSERT INTO \"{table}\" of an updating query (a file holds appended rows; \
             write an updating query to a 'blackhole' table, or CREATE SINK ... FROM a \
             materialized view of it for its changes)"
        )));
    }
    let mut depends_on = plan.root.sources();
    depends_on.extend(plan.root.tables());
    depends_on.extend(views_read(s, insert)?);
    depends_on.push(table.clone());
    depends_on.sort();
    depends_on.dedup();
    let job_state = JobState::new(s.db.store.clone(), id);
    if !replaying {
        job_state.destroy()?;
    }
    let config = JobConfig {
        paused: true,
        ..job_config(s, &[])?
    };
    let resolve = |name: &str| relation(catalog, name);
    let job = runtime::spawn_job(&k.name, &plan, &resolve, None, job_state, config)?;
    let path = match &sink {
        SinkTarget::Files { dir, format } => {
            if let Err(e) = job.attach_parts(id, dir, *format) {
                job.stop().await;
                return Err(e.into());
            }
            Some(dir.clone())
        }
        SinkTarget::Print { identifier } => {
            job.attach_print(id, identifier.clone());
            None
        }
        SinkTarget::Blackhole => None,
    };
    Ok(Inserted::Job(SinkEntry {
        id,
        name: k.name.clone(),
        sql: k.text.clone(),
        depends_on,
        into: Some(table),
        path,
        job: Some(job),
        settings: job_settings(s),
    }))
}

/// What an INSERT INTO a connector table did.
pub(super) enum Inserted {
    /// Started a job (its query reads a stream).
    Job(SinkEntry),
    /// Wrote this many rows once (its query reads no stream).
    Written(usize),
}

/// Whether a query reads a stream (else it is bounded: VALUES, tables, views' content).
fn reads_a_stream(query: &LogicalPlan, catalog: &Catalog) -> bool {
    use datafusion::common::tree_node::TreeNode;
    query
        .exists(|p| {
            Ok(matches!(p, LogicalPlan::TableScan(t)
                if matches!(catalog.relation(t.table_name.table()), Some(Object::Stream(_)))
                    || crate::catalog::late_of(t.table_name.table()).is_some()))
        })
        .unwrap_or(true)
}

/// Writes the rows of a bounded INSERT to `sink` once: a published part
/// file, printed lines, or nothing (blackhole). Returns the rows.
fn write_once(
    sink: &SinkTarget,
    id: u64,
    batches: &[datafusion::arrow::array::RecordBatch],
) -> Result<usize, SessionError> {
    let rows = batches.iter().map(|b| b.num_rows()).sum();
    let mut writer = match sink {
        SinkTarget::Blackhole => return Ok(rows),
        SinkTarget::Files { dir, format } => {
            connectors::SinkWriter::Parts(connectors::PartSink::open(dir, id, *format, None)?)
        }
        SinkTarget::Print { identifier } => connectors::SinkWriter::Print(
            connectors::PrintSink::new(identifier.clone(), Box::new(std::io::stdout())),
        ),
    };
    for b in batches {
        writer.write(b, &[])?;
    }
    if let (_, Some(part)) = writer.commit()? {
        part.publish()?;
    }
    Ok(rows)
}

/// Flink's `CREATE TABLE name WITH ('connector' = ...) AS query`: the
/// table, declared with the query's columns (and persisted so), then the
/// INSERT INTO job writing the query's rows to it. If the job cannot be
/// made, the table goes again.
pub async fn create_table_as(
    s: &mut Session,
    c: crate::sql::CreateTableAs,
) -> Result<StatementResult, SessionError> {
    let name = c.name.clone();
    if c.if_not_exists && s.db.catalog.exists(&name) {
        return Ok(StatementResult::tag("CREATE TABLE"));
    }
    s.db.catalog.check_free(&name)?;
    let query = Statement::Query(c.query.clone());
    let logical = s.plan(query.clone()).await?;
    let mut columns = Vec::new();
    for f in logical.schema().fields() {
        let ty = planner::sql_type(f.data_type()).ok_or_else(|| {
            SessionError::NotSupported(format!(
                "a table column of type {} (column \"{}\")",
                f.data_type(),
                f.name()
            ))
        })?;
        columns.push(format!("{} {ty}", super::quote_ident(f.name())));
    }
    let options: Vec<String> = c
        .options
        .iter()
        .map(|(k, v)| format!("'{}' = '{}'", k.replace('\'', "''"), v.replace('\'', "''")))
        .collect();
    let table = format!(
        "CREATE TABLE {} ({}) WITH ({})",
        super::quote_ident(&name),
        columns.join(", "),
        options.join(", ")
    );
    create(s, super::single(&table)?, None).await?;
    let insert = format!("INSERT INTO {} {query}", super::quote_ident(&name));
    let sink = super::single(&insert).and_then(|stmt| s.insert_as_sink(stmt));
    let made = match sink {
        Ok(stmt) => create(s, stmt, None).await,
        Err(e) => Err(e),
    };
    if let Err(e) = made {
        drop(s, ObjectKind::Stream, std::slice::from_ref(&name), true).await?;
        return Err(e);
    }
    Ok(StatementResult::tag("CREATE TABLE"))
}

/// The query an INSERT writes, its columns cast to the table's (by
/// position, or as its column list names them; the others NULL).
pub(super) async fn insert_query(
    s: &Session,
    insert: &Statement,
) -> Result<LogicalPlan, SessionError> {
    match s.plan(insert.clone()).await? {
        LogicalPlan::Dml(dml) => Ok(dml.input.as_ref().clone()),
        other => Err(SessionError::Runtime(runtime::RuntimeError::Internal(
            format!("an INSERT planned as {}", other.display()),
        ))),
    }
}

/// An INSERT INTO's job, as Flink runs it: window aggregates emit each
/// window once it closes, so a windowed query is append-only (and can be
/// written to a file).
pub(super) fn insert_plan(
    catalog: &Catalog,
    query: &LogicalPlan,
) -> Result<StreamPlan, planner::PlanError> {
    planner::to_stream_plan(query, catalog, true)
        .or_else(|_| planner::to_stream_plan(query, catalog, false))
}

/// The table an INSERT names.
fn insert_target(
    table: &datafusion::sql::sqlparser::ast::TableObject,
) -> Result<String, SessionError> {
    match table {
        datafusion::sql::sqlparser::ast::TableObject::TableName(name) => Ok(object_name(name)),
        other => Err(SessionError::NotSupported(format!("INSERT INTO {other}"))),
    }
}

/// What kind of value a type holds, for which assignments are allowed.
#[derive(PartialEq)]
enum Kind {
    Text,
    Number,
    Time,
    Bool,
    Other,
}

fn kind(t: &DataType) -> Kind {
    match t {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Kind::Text,
        t if t.is_numeric() => Kind::Number,
        DataType::Timestamp(..)
        | DataType::Date32
        | DataType::Date64
        | DataType::Time32(_)
        | DataType::Time64(_)
        | DataType::Interval(_)
        | DataType::Duration(_) => Kind::Time,
        DataType::Boolean => Kind::Bool,
        _ => Kind::Other,
    }
}

/// Refuses, as Postgres does (42804), an INSERT whose query gives a column
/// a value of another kind than the column's: text into a number, a number
/// into a timestamp. Anything goes into a text column, and text literals of
/// a `VALUES` list into any column (read as the column's type).
async fn check_types(
    s: &Session,
    source: &Query,
    columns: &[ObjectName],
    table: &SchemaRef,
) -> Result<(), SessionError> {
    let literals = matches!(*source.body, SetExpr::Values(_));
    let query = s.plan(Statement::Query(Box::new(source.clone()))).await?;
    let targets: Vec<&Field> = match columns.is_empty() {
        true => table.fields().iter().map(|f| f.as_ref()).collect(),
        false => columns
            .iter()
            .filter_map(|c| table.field_with_name(&object_name(c)).ok())
            .collect(),
    };
    for (target, from) in targets.into_iter().zip(query.schema().fields()) {
        let (into, from_type) = (target.data_type(), from.data_type());
        let fits = match (kind(into), kind(from_type)) {
            _ if *from_type == DataType::Null => true,
            (Kind::Text, _) => true,
            (_, Kind::Text) => literals,
            (a, b) => a == b,
        };
        if !fits {
            let name = |t: &DataType| planner::sql_type(t).unwrap_or_else(|| t.to_string());
            return Err(SessionError::DatatypeMismatch(format!(
                "column \"{}\" is of type {} but expression is of type {}",
                target.name(),
                name(into),
                name(from_type)
            )));
        }
    }
    Ok(())
}
