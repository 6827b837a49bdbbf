//! Sessions: one per connection; splits and dispatches statements (DDL,
//! SELECT, DML, SHOW, EXPLAIN, SET, FLUSH) and owns session variables.

mod database;
mod ddl;
mod dml;
pub(crate) mod error;
mod insert;
mod show;

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::ParamValues;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{ObjectName, Statement};

pub use database::Database;
pub use error::{ErrorCategory, SessionError};

use crate::planner;
use crate::sql::{parse_statements, WeirStatement};

/// The outcome of one statement.
#[derive(Debug)]
pub enum StatementResult {
    /// A result set (SELECT, SHOW, EXPLAIN).
    Rows {
        schema: SchemaRef,
        batches: Vec<RecordBatch>,
    },
    /// A command completion tag such as `CREATE STREAM` or `INSERT 0 3`;
    /// `rows` is the affected-row count where the tag carries one.
    Command { tag: String, rows: Option<usize> },
}

impl StatementResult {
    fn tag(tag: &str) -> Self {
        StatementResult::Command {
            tag: tag.to_string(),
            rows: None,
        }
    }
}

/// Parameter and result types of a statement, for the extended protocol's Describe.
#[derive(Debug, Clone)]
pub struct Described {
    /// One type per `$n` placeholder (`$1` first); `None` where it cannot be inferred.
    pub params: Vec<Option<DataType>>,
    /// The result columns, or `None` for a statement returning no rows.
    pub schema: Option<SchemaRef>,
}

/// One client connection's state.
pub struct Session {
    db: Arc<Database>,
    ctx: SessionContext,
    vars: BTreeMap<String, String>,
}

/// A catalog name as written: unquoted names fold to lower case.
pub fn normalize_name(name: &str) -> String {
    let t = name.trim();
    if t.len() >= 2 && t.starts_with('"') && t.ends_with('"') {
        t[1..t.len() - 1].replace("\"\"", "\"")
    } else {
        t.to_ascii_lowercase()
    }
}

pub(crate) fn object_name(name: &ObjectName) -> String {
    name.0
        .last()
        .and_then(|p| p.as_ident())
        .map(|i| {
            if i.quote_style.is_some() {
                i.value.clone()
            } else {
                i.value.to_ascii_lowercase()
            }
        })
        .unwrap_or_else(|| normalize_name(&name.to_string()))
}

impl Session {
    pub(crate) fn new(db: Arc<Database>) -> Self {
        let ctx = crate::batch::new_context(db.catalog.clone());
        Session {
            db,
            ctx,
            vars: BTreeMap::new(),
        }
    }

    /// Runs every statement in `sql` in order, stopping after the first error
    /// (its `Err` is the last element).
    pub async fn execute(&mut self, sql: &str) -> Vec<Result<StatementResult, SessionError>> {
        let stmts = match parse_statements(sql) {
            Ok(s) => s,
            Err(e) => return vec![Err(planner::PlanError::from(e).into())],
        };
        let mut out = Vec::with_capacity(stmts.len());
        for s in stmts {
            let r = self.run(s, None).await;
            let failed = r.is_err();
            out.push(r);
            if failed {
                break;
            }
        }
        out
    }

    /// Describes a single statement without running it.
    pub async fn describe(&mut self, sql: &str) -> Result<Described, SessionError> {
        let stmt = single(sql)?;
        match stmt {
            WeirStatement::Sql(s) if is_dataflow_sql(&s) => {
                let plan = self.plan(*s).await?;
                let params = param_types(&plan)?;
                let schema = match &plan {
                    LogicalPlan::Dml(_) => None,
                    p => Some(Arc::new(p.schema().as_arrow().clone())),
                };
                Ok(Described { params, schema })
            }
            WeirStatement::Show(_) | WeirStatement::Explain(_) => {
                let schema = match self.run(stmt, None).await? {
                    StatementResult::Rows { schema, .. } => Some(schema),
                    StatementResult::Command { .. } => None,
                };
                Ok(Described {
                    params: vec![],
                    schema,
                })
            }
            _ => Ok(Described {
                params: vec![],
                schema: None,
            }),
        }
    }

    /// Runs a single statement with values for its `$n` placeholders.
    pub async fn execute_with_params(
        &mut self,
        sql: &str,
        params: ParamValues,
    ) -> Result<StatementResult, SessionError> {
        let stmt = single(sql)?;
        self.run(stmt, Some(params)).await
    }

    /// Re-creates a persisted object under its original id (on start), with
    /// the session settings it was created under.
    pub(crate) async fn replay(
        &mut self,
        sql: &str,
        id: u64,
        settings: &BTreeMap<String, String>,
    ) -> Result<(), SessionError> {
        let stmt = single(sql)?;
        let outer = std::mem::replace(&mut self.vars, settings.clone());
        let done = ddl::create(self, stmt, Some(id)).await.map(|_| ());
        self.vars = outer;
        done
    }

    async fn plan(&self, stmt: Statement) -> Result<LogicalPlan, SessionError> {
        Ok(planner::plan_statement(&self.ctx.state(), &self.db.catalog, stmt).await?)
    }

    /// Runs one statement; a catalog change is followed by a copy of the
    /// store to fall back to.
    async fn run(
        &mut self,
        stmt: WeirStatement,
        params: Option<ParamValues>,
    ) -> Result<StatementResult, SessionError> {
        let stmt = self.insert_as_sink(stmt)?;
        let changes_catalog = matches!(
            &stmt,
            WeirStatement::CreateStream(_)
                | WeirStatement::CreateMaterializedView(_)
                | WeirStatement::CreateSink(_)
                | WeirStatement::CreateTableAs(_)
                | WeirStatement::Drop { .. }
        ) || matches!(&stmt, WeirStatement::Sql(s)
            if matches!(**s, Statement::CreateTable(_) | Statement::CreateView(_)));
        let done = self.run_statement(stmt, params).await?;
        if changes_catalog {
            self.db.retain_after_ddl().await;
        }
        Ok(done)
    }

    /// An `INSERT INTO` a connector table (Flink's `CREATE TABLE ... WITH
    /// ('connector' = ...)`) is a job, not a write: it runs as `CREATE SINK
    /// insert_into_<table>[_N] INTO ...`, persisted in that form. Other
    /// statements pass as they are.
    pub(super) fn insert_as_sink(
        &self,
        stmt: WeirStatement,
    ) -> Result<WeirStatement, SessionError> {
        let WeirStatement::Sql(sql) = &stmt else {
            return Ok(stmt);
        };
        let Statement::Insert(ins) = sql.as_ref() else {
            return Ok(stmt);
        };
        let datafusion::sql::sqlparser::ast::TableObject::TableName(table) = &ins.table else {
            return Ok(stmt);
        };
        let table = object_name(table);
        let catalog = &self.db.catalog;
        if !matches!(catalog.get(&table), Some(crate::catalog::Object::Stream(_))) {
            return Ok(stmt);
        }
        let base = format!("insert_into_{table}");
        let name = std::iter::once(base.clone())
            .chain((2..).map(|n| format!("{base}_{n}")))
            .find(|n| !catalog.exists(n))
            .expect("an unbounded sequence of names");
        let text = sql.to_string();
        let into = text
            .strip_prefix("INSERT ")
            .ok_or_else(|| SessionError::NotSupported(format!("the statement {text}")))?;
        let text = format!("CREATE SINK {} {into}", quote_ident(&name));
        Ok(WeirStatement::CreateSink(Box::new(
            crate::sql::CreateSink {
                name,
                input: crate::sql::SinkInput::Insert(sql.clone()),
                options: Vec::new(),
                if_not_exists: false,
                text,
            },
        )))
    }

    /// Runs one statement, by kind.
    async fn run_statement(
        &mut self,
        stmt: WeirStatement,
        params: Option<ParamValues>,
    ) -> Result<StatementResult, SessionError> {
        match stmt {
            WeirStatement::CreateStream(_)
            | WeirStatement::CreateMaterializedView(_)
            | WeirStatement::CreateSink(_) => ddl::create(self, stmt, None).await,
            WeirStatement::CreateTableAs(c) => insert::create_table_as(self, *c).await,
            WeirStatement::Sql(s)
                if matches!(*s, Statement::CreateTable(_) | Statement::CreateView(_)) =>
            {
                ddl::create(self, WeirStatement::Sql(s), None).await
            }
            WeirStatement::Drop {
                kind,
                names,
                if_exists,
            } => ddl::drop(self, kind, &names, if_exists).await,
            WeirStatement::Show(kind) => show::show(self, &kind),
            WeirStatement::Explain(inner) => show::explain(self, *inner).await,
            WeirStatement::Set { name, value } => self.set(name, value),
            WeirStatement::Reset(Some(name)) => {
                self.vars.remove(&name);
                Ok(StatementResult::tag("RESET"))
            }
            WeirStatement::Reset(None) => {
                self.vars.clear();
                Ok(StatementResult::tag("RESET"))
            }
            WeirStatement::Flush => {
                self.flush().await?;
                Ok(StatementResult::tag("FLUSH"))
            }
            WeirStatement::Checkpoint => {
                self.db.checkpoint().await?;
                Ok(StatementResult::tag("CHECKPOINT"))
            }
            WeirStatement::Transaction(word) => Ok(StatementResult::tag(match word.as_str() {
                "BEGIN" | "START" => "BEGIN",
                "ROLLBACK" | "ABORT" => "ROLLBACK",
                _ => "COMMIT",
            })),
            WeirStatement::Sql(s) => {
                if !is_dataflow_sql(&s) {
                    return Err(SessionError::NotSupported(format!(
                        "the statement {}",
                        first_words(&s.to_string())
                    )));
                }
                if let Statement::Update(u) = s.as_ref() {
                    dml::check_update(self, u)?;
                }
                let mut plan = self.plan(*s).await?;
                if let Some(p) = params {
                    plan = plan.with_param_values(p)?;
                }
                match plan {
                    LogicalPlan::Dml(dml) => dml::execute(self, dml).await,
                    plan => self.query(plan).await,
                }
            }
        }
    }

    async fn query(&self, plan: LogicalPlan) -> Result<StatementResult, SessionError> {
        let df = self.ctx.execute_logical_plan(plan).await?;
        let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
        let batches = df.collect().await?;
        Ok(StatementResult::Rows { schema, batches })
    }

    /// Waits until every view reflects all input accepted so far.
    pub async fn flush(&self) -> Result<(), SessionError> {
        let jobs = self.db.catalog.jobs();
        let results = futures::future::join_all(jobs.iter().map(|(_, j)| j.flush())).await;
        for r in results {
            r?;
        }
        Ok(())
    }

    fn set(&mut self, name: String, value: String) -> Result<StatementResult, SessionError> {
        let (name, value) = flink_setting(name, value)?;
        match name.as_str() {
            "parallelism" => {
                ddl::parse_parallelism(&value)?;
            }
            "checkpoint_mode" => {
                ddl::parse_checkpoint_mode(&value)?;
            }
            "emit_interval_ms" => {
                ddl::parse_emit_interval(&value)?;
            }
            _ => {}
        }
        self.vars.insert(name, value);
        Ok(StatementResult::tag("SET"))
    }

    pub(crate) fn var(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(String::as_str)
    }
}

/// Flink's configuration keys that have a Weir setting, as that setting:
/// `parallelism.default`, `execution.checkpointing.mode` and
/// `table.exec.mini-batch.allow-latency` (a duration: how long changes are
/// gathered before they are emitted). Other names pass as they are.
fn flink_setting(name: String, value: String) -> Result<(String, String), SessionError> {
    Ok(match name.as_str() {
        "parallelism.default" => ("parallelism".into(), value),
        "execution.checkpointing.mode" => ("checkpoint_mode".into(), value),
        "table.exec.mini-batch.allow-latency" => {
            let d = crate::connectors::parse_duration(&value).ok_or_else(|| {
                SessionError::InvalidParameter(format!(
                    "{name} must be a duration such as '500 ms' or '1 s', not '{value}'"
                ))
            })?;
            ("emit_interval_ms".into(), d.as_millis().to_string())
        }
        _ => (name, value),
    })
}

pub(super) fn single(sql: &str) -> Result<WeirStatement, SessionError> {
    let mut stmts = parse_statements(sql).map_err(planner::PlanError::from)?;
    match stmts.len() {
        1 => Ok(stmts.remove(0)),
        0 => Err(SessionError::InvalidParameter("empty statement".into())),
        _ => Err(SessionError::InvalidParameter(
            "a prepared statement must hold exactly one statement".into(),
        )),
    }
}

/// Statements DataFusion plans for us.
fn is_dataflow_sql(s: &Statement) -> bool {
    matches!(
        s,
        Statement::Query(_) | Statement::Insert(_) | Statement::Update(_) | Statement::Delete(_)
    )
}

fn first_words(s: &str) -> String {
    s.split_whitespace().take(2).collect::<Vec<_>>().join(" ")
}

/// Each parameter's type: what DataFusion infers, else the type a cast
/// right around it names (`$1::BIGINT`, `CAST($1 AS DOUBLE)`), as Postgres
/// infers it.
fn param_types(plan: &LogicalPlan) -> Result<Vec<Option<DataType>>, SessionError> {
    let types = plan.get_parameter_types()?;
    let casts = placeholder_casts(plan)?;
    let mut out = vec![None; types.len()];
    for (name, ty) in types {
        if let Some(i) = name.strip_prefix('$').and_then(|n| n.parse::<usize>().ok()) {
            if i >= 1 && i <= out.len() {
                out[i - 1] = ty.or_else(|| casts.get(&name).cloned());
            }
        }
    }
    Ok(out)
}

/// The first type each placeholder is cast to, anywhere in the plan.
fn placeholder_casts(plan: &LogicalPlan) -> Result<BTreeMap<String, DataType>, SessionError> {
    use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
    use datafusion::logical_expr::expr::{Cast, Placeholder, TryCast};
    use datafusion::logical_expr::Expr;
    let mut casts = BTreeMap::new();
    plan.apply_with_subqueries(|node| {
        node.apply_expressions(|e| {
            e.apply(|e| {
                if let Expr::Cast(Cast { expr, field }) | Expr::TryCast(TryCast { expr, field }) = e
                {
                    if let Expr::Placeholder(Placeholder { id, .. }) = expr.as_ref() {
                        casts
                            .entry(id.clone())
                            .or_insert_with(|| field.data_type().clone());
                    }
                }
                Ok(TreeNodeRecursion::Continue)
            })
        })
    })?;
    Ok(casts)
}

/// A name as a quoted SQL identifier.
pub(crate) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}
