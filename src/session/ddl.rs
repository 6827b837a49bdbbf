//! CREATE STREAM / TABLE / VIEW / MATERIALIZED VIEW / SINK, and DROP.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use datafusion::logical_expr::LogicalPlan;
use datafusion::sql::sqlparser::ast::Statement;

use super::insert::Inserted;
use super::{normalize_name, object_name, Database, Session, SessionError, StatementResult};
use crate::catalog::{Catalog, MvEntry, Object, SinkEntry, StreamEntry, TableEntry, ViewEntry};
use crate::connectors::{self, ConnectorOptions, SinkFormat, SourceMetrics};
use crate::planner;
use crate::runtime::{self, Guarantee, JobConfig, Relation, SourceSpec, EMIT_INTERVAL};
use crate::sql::{ObjectKind, SinkInput, WeirStatement};
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
                    match super::insert::insert_job(s, &k, insert, id, replay_id.is_some()).await? {
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
pub(super) fn views_read(s: &Session, stmt: &Statement) -> Result<Vec<String>, SessionError> {
    let catalog = &s.db.catalog;
    Ok(planner::relations_read(&s.ctx.state(), catalog, stmt)?
        .into_iter()
        .filter(|n| matches!(catalog.get(n), Some(Object::LogicalView(_))))
        .collect())
}

/// The session's settings that decide how a job runs, to persist with it.
pub(super) fn job_settings(s: &Session) -> BTreeMap<String, String> {
    JOB_SETTINGS
        .iter()
        .filter_map(|k| Some((k.to_string(), s.var(k)?.to_string())))
        .collect()
}

/// What a job reads under a relation name: a stream's source, or a table's rows.
pub(super) fn relation(catalog: &Catalog, name: &str) -> Option<Relation> {
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
