//! Catalog entries: what each kind of object holds at run time.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;

use crate::connectors::{Computed, ConnectorOptions, SourceMetrics};
use crate::plan::{EventTimeSpec, StreamPlan};
use crate::runtime::JobHandle;
use crate::sql::ObjectKind;
use crate::state::{MvStore, TableStore};

/// A declared stream: columns, watermark and connector.
pub struct StreamEntry {
    pub id: u64,
    pub name: String,
    pub sql: String,
    pub schema: SchemaRef,
    pub event_time: Option<EventTimeSpec>,
    /// The watermark clause as written, for SHOW.
    pub watermark_text: Option<String>,
    pub options: ConnectorOptions,
    /// The columns the connector reads (`schema` less the computed ones).
    pub stored: SchemaRef,
    /// Flink's computed columns, added to each batch read.
    pub computed: Arc<[Computed]>,
    pub bounded: bool,
    pub metrics: Arc<SourceMetrics>,
}

/// The name `LATE(stream)` is planned as: the stream's late rows.
pub const LATE_SUFFIX: &str = "$late";

/// The name a lookup join's table (`t FOR SYSTEM_TIME AS OF x`) is planned as.
pub const LOOKUP_SUFFIX: &str = "$lookup";

/// The table a lookup relation name stands for.
pub fn lookup_of(name: &str) -> Option<&str> {
    name.strip_suffix(LOOKUP_SUFFIX)
}

/// The stream whose late rows a relation name stands for.
pub fn late_of(name: &str) -> Option<&str> {
    name.strip_suffix(LATE_SUFFIX)
}

impl StreamEntry {
    /// The columns of `LATE(stream)`: the stream's, then `watermark`, the
    /// watermark each row was late against (None: the stream has no event
    /// time, so no row is ever late).
    pub fn late_schema(&self) -> Option<SchemaRef> {
        let et = self.event_time?;
        let mut fields: Vec<_> = self.schema.fields().iter().cloned().collect();
        let time_type = self.schema.field(et.column).data_type().clone();
        fields.push(Arc::new(datafusion::arrow::datatypes::Field::new(
            "watermark",
            time_type,
            true,
        )));
        Some(Arc::new(datafusion::arrow::datatypes::Schema::new(fields)))
    }
}

/// A stored table.
pub struct TableEntry {
    pub id: u64,
    pub name: String,
    pub sql: String,
    pub schema: SchemaRef,
    pub primary_key: Vec<usize>,
    pub rows: Arc<TableStore>,
}

/// A materialized view and its running job.
pub struct MvEntry {
    pub id: u64,
    pub name: String,
    pub sql: String,
    pub plan: StreamPlan,
    pub depends_on: Vec<String>,
    pub store: Arc<MvStore>,
    pub job: Arc<JobHandle>,
    /// The session settings it was created under that decide how its job
    /// runs, persisted with its statement.
    pub settings: BTreeMap<String, String>,
}

/// A view: a named query, planned into each statement that reads it.
pub struct ViewEntry {
    pub id: u64,
    pub name: String,
    pub sql: String,
    /// Its query's plan (DataFusion inlines it where the view is read).
    pub plan: datafusion::logical_expr::LogicalPlan,
    pub depends_on: Vec<String>,
}

/// A sink: a view's changes written to a file, or a query's rows written
/// by a job of its own to a connector table (`INSERT INTO`).
pub struct SinkEntry {
    pub id: u64,
    pub name: String,
    pub sql: String,
    /// The objects it reads (the view; or the query's streams and tables,
    /// and the table it writes).
    pub depends_on: Vec<String>,
    /// The table an INSERT INTO writes.
    pub into: Option<String>,
    /// The file it writes (none for a `blackhole` table).
    pub path: Option<std::path::PathBuf>,
    /// Its own job, for an INSERT INTO (a view's sink is fed by the view's job).
    pub job: Option<Arc<JobHandle>>,
    /// The session settings its own job was created under.
    pub settings: BTreeMap<String, String>,
}

/// Any catalog object.
#[derive(Clone)]
pub enum Object {
    Stream(Arc<StreamEntry>),
    Table(Arc<TableEntry>),
    View(Arc<MvEntry>),
    LogicalView(Arc<ViewEntry>),
    Sink(Arc<SinkEntry>),
}

impl Object {
    pub fn kind(&self) -> ObjectKind {
        match self {
            Object::Stream(_) => ObjectKind::Stream,
            Object::Table(_) => ObjectKind::Table,
            Object::View(_) => ObjectKind::MaterializedView,
            Object::LogicalView(_) => ObjectKind::View,
            Object::Sink(_) => ObjectKind::Sink,
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Object::Stream(s) => &s.name,
            Object::Table(t) => &t.name,
            Object::View(v) => &v.name,
            Object::LogicalView(v) => &v.name,
            Object::Sink(k) => &k.name,
        }
    }

    pub fn id(&self) -> u64 {
        match self {
            Object::Stream(s) => s.id,
            Object::Table(t) => t.id,
            Object::View(v) => v.id,
            Object::LogicalView(v) => v.id,
            Object::Sink(k) => k.id,
        }
    }

    pub fn sql(&self) -> &str {
        match self {
            Object::Stream(s) => &s.sql,
            Object::Table(t) => &t.sql,
            Object::View(v) => &v.sql,
            Object::LogicalView(v) => &v.sql,
            Object::Sink(k) => &k.sql,
        }
    }

    /// Session settings persisted with the statement.
    pub fn settings(&self) -> BTreeMap<String, String> {
        match self {
            Object::View(v) => v.settings.clone(),
            Object::Sink(k) => k.settings.clone(),
            _ => BTreeMap::new(),
        }
    }

    pub fn schema(&self) -> SchemaRef {
        match self {
            Object::Stream(s) => s.schema.clone(),
            Object::Table(t) => t.schema.clone(),
            Object::View(v) => v.store.schema().clone(),
            Object::LogicalView(v) => v.plan.schema().inner().clone(),
            Object::Sink(_) => Arc::new(datafusion::arrow::datatypes::Schema::empty()),
        }
    }

    /// The objects this one reads.
    pub fn depends_on(&self) -> &[String] {
        match self {
            Object::View(v) => &v.depends_on,
            Object::LogicalView(v) => &v.depends_on,
            Object::Sink(k) => &k.depends_on,
            _ => &[],
        }
    }

    /// The job computing it: a view's, or an INSERT INTO sink's own.
    pub fn job(&self) -> Option<&Arc<JobHandle>> {
        match self {
            Object::View(v) => Some(&v.job),
            Object::Sink(k) => k.job.as_ref(),
            _ => None,
        }
    }
}
