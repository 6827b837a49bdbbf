//! CREATE STREAM / TABLE / MATERIALIZED VIEW and DROP.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use datafusion::logical_expr::LogicalPlan;
use datafusion::sql::sqlparser::ast::Statement;

use super::{normalize_name, object_name, Database, Session, SessionError, StatementResult};
use crate::catalog::{Catalog, MvEntry, Object, SinkEntry, StreamEntry, TableEntry, ViewEntry};
use crate::connectors::{self, ConnectorOptions, SinkFormat, SinkTarget, SourceMetrics};
use crate::plan::StreamPlan;
use crate::planner;
use crate::runtime::{self, Guarantee, JobConfig, Relation, SourceSpec, EMIT_INTERVAL};
use crate::sql::{CreateSink, ObjectKind, SinkInput, WeirStatement};
use crate::state::{JobState, TableStore};

/// Creates an object; `replay_id` is set when restoring it from the catalog.
pub async fn create(
    s: &mut Session,
    stmt: WeirStatement,
    replay_id: Option<u64>,
) -> Result<StatementResult, SessionError> {
    let db = s.db.clone();
    let _guard = db.ddl.lock().await;
    let persist = replay_id.is_none();
    let catalog = &db.catalog;
    match stmt {
        WeirStatement::CreateStream(c) => {
            let name = normalize_name(&c.name);
            if c.if_not_exists && catalog.exists(&name) {
                return Ok(StatementResult::tag("CREATE STREAM"));
            }
            catalog.check_free(&name)?;
            let (stored, _) = planner::column_schema(&s.ctx, &c.columns, "").await?;
            let (schema, computed) = planner::computed_columns(&s.ctx, &stored, &c.computed)?;
            let event_time = match &c.watermark {
                Some(w) => Some(planner::watermark_delay(&s.ctx, &schema, w).await?),
                None => None,
            };
            let options = ConnectorOptions::new(c.options.clone());
            connectors::validate(&options, &stored)?;
            let bounded = connectors::is_bounded(&options)?;
            let entry = StreamEntry {
                id: replay_id.unwrap_or_else(|| catalog.allocate_id()),
                name,
                sql: c.text.clone(),
                schema,
                event_time,
                watermark_text: c.watermark.as_ref().map(|w| w.expr.to_string()),
                options,
                stored,
                computed,
                bounded,
                metrics: Arc::new(SourceMetrics::new()),
            };
            catalog.add(Object::Stream(Arc::new(entry)), persist)?;
            Ok(StatementResult::tag("CREATE STREAM"))
        }
        WeirStatement::Sql(stmt) if matches!(*stmt, Statement::CreateView(_)) => {
            let Statement::CreateView(cv) = *stmt else {
                unreachable!("matched above")
            };
            let name = object_name(&cv.name);
            if cv.if_not_exists && catalog.exists(&name) {
                return Ok(StatementResult::tag("CREATE VIEW"));
            }
            catalog.check_free(&name)?;
            if cv.materialized || cv.or_replace || cv.or_alter {
                return Err(SessionError::NotSupported(format!(
                    "CREATE {}VIEW",
                    if cv.materialized {
                        "MATERIALIZED "
                    } else {
                        "OR REPLACE "
                    }
                )));
            }
            let query = Statement::Query(cv.query.clone());
            let depends_on = planner::relations_read(&s.ctx.state(), catalog, &query)?;
            let mut plan = s.plan(query).await?;
            if !cv.columns.is_empty() {
                plan = renamed(plan, &cv.columns)?;
            }
            let entry = ViewEntry {
                id: replay_id.unwrap_or_else(|| catalog.allocate_id()),
                name,
                sql: Statement::CreateView(cv).to_string(),
                plan,
                depends_on,
            };
            catalog.add(Object::LogicalView(Arc::new(entry)), persist)?;
            Ok(StatementResult::tag("CREATE VIEW"))
        }
        WeirStatement::Sql(stmt) => {
            let text = stmt.to_string();
            let Statement::CreateTable(ct) = *stmt else {
                return Err(SessionError::NotSupported("this CREATE statement".into()));
            };
            let name = object_name(&ct.name);
            if ct.if_not_exists && catalog.exists(&name) {
                return Ok(StatementResult::tag("CREATE TABLE"));
            }
            if ct.query.is_some() {
                return Err(SessionError::NotSupported(
                    "CREATE TABLE ... AS SELECT".into(),
                ));
            }
            catalog.check_free(&name)?;
            let constraints: Vec<String> = ct.constraints.iter().map(|c| c.to_string()).collect();
            let (schema, primary_key) =
                planner::column_schema(&s.ctx, &ct.columns, &constraints.join(", ")).await?;
            let id = replay_id.unwrap_or_else(|| catalog.allocate_id());
            let rows = Arc::new(TableStore::open(
                db.store.clone(),
                id,
                schema.clone(),
                primary_key.clone(),
            )?);
            let entry = TableEntry {
                id,
                name,
                sql: text,
                schema,
                primary_key,
                rows,
            };
            catalog.add(Object::Table(Arc::new(entry)), persist)?;
            Ok(StatementResult::tag("CREATE TABLE"))
        }
        WeirStatement::CreateMaterializedView(mv) => {
            let name = normalize_name(&mv.name);
            if mv.if_not_exists && catalog.exists(&name) {
                return Ok(StatementResult::tag("CREATE MATERIALIZED VIEW"));
            }
            catalog.check_free(&name)?;
            let config = job_config(s, &mv.options)?;
            let query = Statement::Query(mv.query.clone());
            let views = views_read(s, &query)?;
            let logical = s.plan(query).await?;
            let plan = planner::to_stream_plan(&logical, catalog, mv.emit_on_window_close)?;
            let mut depends_on = plan.root.sources();
            depends_on.extend(plan.root.tables());
            depends_on.extend(views);
            depends_on.sort();
            depends_on.dedup();
            let store = Arc::new(runtime::mv_store(&plan)?);
            let resolve = |name: &str| relation(catalog, name);
            let id = replay_id.unwrap_or_else(|| catalog.allocate_id());
            let job_state = JobState::new(db.store.clone(), id);
            if replay_id.is_none() {
                // A new view starts from nothing, whatever an older object with its id left.
                job_state.destroy()?;
            }
            let config = JobConfig {
                // Restored views wait until every object is back (their sinks too).
                paused: replay_id.is_some(),
                ..config
            };
            let job = runtime::spawn_job(
                &name,
                &plan,
                &resolve,
                Some(store.clone()),
                job_state,
                config,
            )?;
            let entry = MvEntry {
                id,
                name,
                sql: mv.text.clone(),
                plan,
                depends_on,
                store,
                job: job.clone(),
                settings: job_settings(s),
            };
            if let Err(e) = catalog.add(Object::View(Arc::new(entry)), persist) {
                job.stop().await;
                return Err(e.into());
            }
            Ok(StatementResult::tag("CREATE MATERIALIZED VIEW"))
        }
        WeirStatement::CreateSink(k) => {
            if k.if_not_exists && catalog.exists(&k.name) {
                return Ok(StatementResult::tag("CREATE SINK"));
            }
            catalog.check_free(&k.name)?;
            let id = replay_id.unwrap_or_else(|| catalog.allocate_id());
            let entry = match &k.input {
                SinkInput::View(from) => {
                    let path = connectors::sink_path(&ConnectorOptions::new(k.options.clone()))?;
                    let view = match catalog.get_kind(from, ObjectKind::MaterializedView)? {
                        Object::View(v) => v,
                        _ => unreachable!("get_kind checked the kind"),
                    };
                    view.job
                        .attach_sink(id, path.clone(), SinkFormat::Changes)
                        .await?;
                    SinkEntry {
                        id,
                        name: k.name.clone(),
                        sql: k.text.clone(),
                        depends_on: vec![view.name.clone()],
                        into: None,
                        path: Some(path),
                        job: None,
                        settings: BTreeMap::new(),
                    }
                }
                SinkInput::Insert(insert) => {
                    match insert_job(s, &k, insert, id, replay_id.is_some()).await? {
                        Inserted::Job(entry) => entry,
                        Inserted::Written(n) => {
                            return Ok(StatementResult::Command {
                                tag: "INSERT 0".into(),
                                rows: Some(n),
                            })
                        }
                    }
                }
            };
            let sink = Arc::new(entry);
            if let Err(e) = catalog.add(Object::Sink(sink.clone()), persist) {
                stop_sink(&db, &sink).await;
                return Err(e.into());
            }
            if let (Some(job), None) = (&sink.job, replay_id) {
                // A restored sink's job starts once everything is back.
                job.resume();
            }
            Ok(StatementResult::tag("CREATE SINK"))
        }
        _ => Err(SessionError::NotSupported("this statement here".into())),
    }
}

pub async fn drop(
    s: &mut Session,
    kind: ObjectKind,
    names: &[String],
    if_exists: bool,
) -> Result<StatementResult, SessionError> {
    let db = s.db.clone();
    let _guard = db.ddl.lock().await;
    for name in names {
        if if_exists && !db.catalog.exists(name) {
            continue;
        }
        // Flink's DROP TABLE drops a connector table, which is a stream here.
        let kind = match (kind, db.catalog.get(name)) {
            (ObjectKind::Table, Some(Object::Stream(_))) => ObjectKind::Stream,
            _ => kind,
        };
        match db.catalog.remove(name, kind)? {
            Object::View(v) => {
                v.job.stop().await;
                JobState::new(db.store.clone(), v.id).destroy()?;
            }
            Object::Table(t) => t.rows.destroy()?,
            Object::Sink(k) => stop_sink(&db, &k).await,
            Object::Stream(_) | Object::LogicalView(_) => {}
        }
    }
    Ok(StatementResult::tag(match kind {
        ObjectKind::Stream => "DROP STREAM",
        ObjectKind::Table => "DROP TABLE",
        ObjectKind::View => "DROP VIEW",
        ObjectKind::MaterializedView => "DROP MATERIALIZED VIEW",
        ObjectKind::Sink => "DROP SINK",
    }))
}

/// The session settings that decide how a view's job runs.
const JOB_SETTINGS: [&str; 3] = ["parallelism", "checkpoint_mode", "emit_interval_ms"];

/// A view's query with its columns named as `CREATE VIEW name (columns)` lists them.
fn renamed(
    plan: LogicalPlan,
    columns: &[datafusion::sql::sqlparser::ast::ViewColumnDef],
) -> Result<LogicalPlan, SessionError> {
    let fields = plan.schema().columns();
    if fields.len() != columns.len() {
        return Err(planner::PlanError::Syntax(format!(
            "the view names {} columns but its query has {}",
            columns.len(),
            fields.len()
        ))
        .into());
    }
    let exprs = fields
        .into_iter()
        .zip(columns)
        .map(|(c, name)| datafusion::prelude::Expr::Column(c).alias(name.name.value.clone()));
    Ok(datafusion::logical_expr::LogicalPlanBuilder::from(plan)
        .project(exprs)?
        .build()?)
}

/// The views a statement reads by name: what it depends on beyond the
/// streams and tables its plan reads (a view's query is planned in place).
fn views_read(s: &Session, stmt: &Statement) -> Result<Vec<String>, SessionError> {
    let catalog = &s.db.catalog;
    Ok(planner::relations_read(&s.ctx.state(), catalog, stmt)?
        .into_iter()
        .filter(|n| matches!(catalog.get(n), Some(Object::LogicalView(_))))
        .collect())
}

/// The session's settings that decide how a job runs, to persist with it.
fn job_settings(s: &Session) -> BTreeMap<String, String> {
    JOB_SETTINGS
        .iter()
        .filter_map(|k| Some((k.to_string(), s.var(k)?.to_string())))
        .collect()
}

/// What a job reads under a relation name: a stream's source, or a table's rows.
fn relation(catalog: &Catalog, name: &str) -> Option<Relation> {
    match catalog.get(name) {
        Some(Object::Stream(e)) => Some(Relation::Stream(SourceSpec {
            options: e.options.clone(),
            schema: e.schema.clone(),
            metrics: e.metrics.clone(),
            stored: e.stored.clone(),
            computed: e.computed.clone(),
        })),
        Some(Object::Table(t)) => Some(Relation::Table(t.rows.clone())),
        _ => None,
    }
}

/// Stops what feeds a sink: its own job (whose state goes too), or its
/// view's writing to it.
async fn stop_sink(db: &Database, sink: &SinkEntry) {
    match &sink.job {
        Some(job) => {
            job.stop().await;
            if let Err(e) = JobState::new(db.store.clone(), sink.id).destroy() {
                tracing::warn!(sink = %sink.name, error = %e, "could not remove a sink's state");
            }
        }
        None => {
            if let Some(Object::View(v)) = sink.depends_on.first().and_then(|n| db.catalog.get(n)) {
                v.job.detach_sink(sink.id);
            }
        }
    }
}

/// `INSERT INTO table [(columns)] query` on a connector table (run as
/// `CREATE SINK name INTO ...`): a job of its own writes the query's rows
/// to the table's connector, exactly once, until the sink is dropped. The
/// job starts paused; the caller resumes it.
async fn insert_job(
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
enum Inserted {
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

/// How to run a view's job: its `WITH (parallelism = N, checkpoint_mode =
/// 'exactly_once' | 'at_least_once', emit_interval_ms = N)` options, else
/// the session's settings (`SET parallelism`, ...), else the server's
/// `--parallelism` (every core unless set), exactly once, and
/// [`EMIT_INTERVAL`].
pub(super) fn job_config(
    s: &Session,
    options: &[(String, String)],
) -> Result<JobConfig, SessionError> {
    let mut parallelism = s.var("parallelism").map(str::to_string);
    let mut mode = s.var("checkpoint_mode").map(str::to_string);
    let mut emit = s.var("emit_interval_ms").map(str::to_string);
    for (k, v) in options {
        match k.to_ascii_lowercase().as_str() {
            "parallelism" => parallelism = Some(v.clone()),
            "checkpoint_mode" => mode = Some(v.clone()),
            "emit_interval_ms" => emit = Some(v.clone()),
            _ => {
                return Err(SessionError::InvalidParameter(format!(
                "unknown materialized view option '{k}' (expected parallelism, checkpoint_mode or emit_interval_ms)"
            )))
            }
        }
    }
    let parallelism = match parallelism {
        Some(v) => parse_parallelism(&v)?,
        None => s.db.config.parallelism,
    };
    let guarantee = match mode.as_deref() {
        Some(v) => parse_checkpoint_mode(v)?,
        None => Guarantee::ExactlyOnce,
    };
    let emit_interval = match emit {
        Some(v) => parse_emit_interval(&v)?,
        None => EMIT_INTERVAL,
    };
    Ok(JobConfig {
        parallelism,
        guarantee,
        emit_interval,
        paused: false,
        budget: s.db.budget.clone(),
    })
}

pub(super) fn parse_parallelism(v: &str) -> Result<u32, SessionError> {
    v.trim()
        .parse::<u32>()
        .ok()
        .filter(|n| (1..=crate::plan::MAX_PARALLELISM).contains(n))
        .ok_or_else(|| {
            SessionError::InvalidParameter(format!(
                "parallelism must be an integer from 1 to {} (the number of key groups), not {v}",
                crate::plan::MAX_PARALLELISM
            ))
        })
}

/// Milliseconds from 0 (emit after every batch) to one hour.
pub(super) fn parse_emit_interval(v: &str) -> Result<Duration, SessionError> {
    v.trim()
        .parse::<u64>()
        .ok()
        .filter(|ms| *ms <= 3_600_000)
        .map(Duration::from_millis)
        .ok_or_else(|| {
            SessionError::InvalidParameter(format!(
                "emit_interval_ms must be a number of milliseconds from 0 to 3600000, not {v}"
            ))
        })
}

pub(super) fn parse_checkpoint_mode(v: &str) -> Result<Guarantee, SessionError> {
    match v.trim().to_ascii_lowercase().as_str() {
        "exactly_once" | "exactly-once" => Ok(Guarantee::ExactlyOnce),
        "at_least_once" | "at-least-once" => Ok(Guarantee::AtLeastOnce),
        _ => Err(SessionError::InvalidParameter(format!(
            "checkpoint_mode must be 'exactly_once' or 'at_least_once', not '{v}'"
        ))),
    }
}
