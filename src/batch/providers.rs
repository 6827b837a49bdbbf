//! DataFusion table providers for Weir objects. Each scan takes a snapshot:
//! a table's rows, a view's current content, or a bounded stream read to
//! its end (late rows dropped exactly as a streaming job drops them).

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{SchemaProvider, Session, TableProvider};
use datafusion::common::{not_impl_err, DataFusionError, Result};
use datafusion::datasource::{MemTable, TableType, ViewTable};
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;

use crate::catalog::{Catalog, Object, StreamEntry};
use crate::connectors::{self, Poll};
use crate::runtime::operators::{late_batch, WatermarkAssigner};

/// The `public` schema: every catalog object by name.
#[derive(Debug)]
pub struct WeirSchema {
    catalog: Arc<Catalog>,
}

impl WeirSchema {
    pub fn new(catalog: Arc<Catalog>) -> Self {
        WeirSchema { catalog }
    }
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Catalog")
    }
}

#[async_trait]
impl SchemaProvider for WeirSchema {
    fn table_names(&self) -> Vec<String> {
        self.catalog
            .list()
            .iter()
            .map(|o| o.name().to_string())
            .collect()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        if let Some(stream) = self.catalog.late_stream(name) {
            return Ok(Some(Arc::new(LateRows { stream })));
        }
        // A lookup join's table, in a batch query: the table as it is now.
        if let Some(table) = self.catalog.lookup_table(name) {
            let object = Object::Table(table);
            return Ok(Some(Arc::new(ObjectTable { object })));
        }
        Ok(self.catalog.relation(name).map(|o| match o {
            // DataFusion plans a view's query in place of its name.
            Object::LogicalView(v) => Arc::new(ViewTable::new(v.plan.clone(), Some(v.sql.clone())))
                as Arc<dyn TableProvider>,
            object => Arc::new(ObjectTable { object }) as Arc<dyn TableProvider>,
        }))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.catalog.late_stream(name).is_some()
            || self.catalog.lookup_table(name).is_some()
            || self.catalog.relation(name).is_some()
    }
}

/// A catalog object seen as a DataFusion table.
pub struct ObjectTable {
    object: Object,
}

impl std::fmt::Debug for ObjectTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ObjectTable({})", self.object.name())
    }
}

#[async_trait]
impl TableProvider for ObjectTable {
    fn schema(&self) -> SchemaRef {
        self.object.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let mut schema = self.schema();
        let batch = match &self.object {
            Object::Table(t) => t.rows.scan().map_err(external)?,
            Object::View(v) => v.store.snapshot().map_err(external)?,
            Object::Stream(s) => {
                if crate::connectors::is_write_only(&s.options) {
                    return not_impl_err!(
                        "reading \"{}\": its connector only writes (use it as an INSERT INTO target)",
                        s.name
                    );
                }
                if !s.bounded {
                    return not_impl_err!(
                        "reading unbounded stream \"{}\" in a batch query: create a materialized view over it instead",
                        s.name
                    );
                }
                let batch = read_bounded_stream(s, projection.map(Vec::as_slice)).await?;
                // Columns the query does not read are of type Null there.
                schema = batch.schema();
                batch
            }
            Object::Sink(k) => return not_impl_err!("reading sink \"{}\"", k.name),
            // Never scanned: a view's plan is inlined where it is read.
            Object::LogicalView(v) => return not_impl_err!("scanning view \"{}\"", v.name),
        };
        let mem = MemTable::try_new(schema, vec![vec![batch]])?;
        mem.scan(state, projection, filters, limit).await
    }
}

/// `LATE(stream)`: a bounded stream's late rows, each with the watermark it
/// was late against.
pub struct LateRows {
    stream: Arc<StreamEntry>,
}

impl std::fmt::Debug for LateRows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LateRows({})", self.stream.name)
    }
}

#[async_trait]
impl TableProvider for LateRows {
    fn schema(&self) -> SchemaRef {
        self.stream
            .late_schema()
            .unwrap_or_else(|| self.stream.schema.clone())
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let s = &self.stream;
        if !s.bounded {
            return not_impl_err!(
                "reading the late rows of unbounded stream \"{}\" in a batch query: create a materialized view over LATE({}) instead",
                s.name,
                s.name
            );
        }
        let batch = read_stream(s, None, true).await?;
        let mem = MemTable::try_new(self.schema(), vec![vec![batch]])?;
        mem.scan(state, projection, filters, limit).await
    }
}

fn external(e: impl std::error::Error + Send + Sync + 'static) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

/// Reads a bounded stream to its end, dropping late rows as a job would.
/// With `columns`, only those (and the event-time column) need be built;
/// a reader that leaves the others out still checks them, as a job's
/// source does, and gives them as columns of type Null.
pub async fn read_bounded_stream(
    s: &StreamEntry,
    columns: Option<&[usize]>,
) -> Result<RecordBatch> {
    read_stream(s, columns, false).await
}

/// Reads a bounded stream to its end: its on-time rows, or with `late` its
/// late rows (every column read, and the watermark of each).
async fn read_stream(
    s: &StreamEntry,
    columns: Option<&[usize]>,
    late: bool,
) -> Result<RecordBatch> {
    let late_schema = if late { s.late_schema() } else { None };
    let metrics = Arc::new(connectors::SourceMetrics::new());
    let mut reader = connectors::open_stream(
        &s.name,
        &s.options,
        s.stored.clone(),
        &s.computed,
        s.schema.clone(),
        metrics,
    )
    .map_err(external)?;
    reader.set_decode_threads(connectors::cores());
    let mut read = vec![columns.is_none(); s.schema.fields().len()];
    for &c in columns.unwrap_or_default() {
        if let Some(r) = read.get_mut(c) {
            *r = true;
        }
    }
    if let Some(et) = s.event_time {
        read[et.column] = true;
    }
    reader.set_read_columns(&read);
    let mut assigner = s.event_time.map(WatermarkAssigner::new);
    let mut batches = Vec::new();
    loop {
        match reader.poll().map_err(external)? {
            Poll::Batch(b) => match (&mut assigner, &late_schema) {
                (Some(a), Some(schema)) => {
                    let assigned = a.assign(&b).map_err(external)?;
                    batches.push(late_batch(&b, &assigned.late_rows, schema).map_err(external)?);
                }
                (Some(a), None) => batches.push(a.assign(&b).map_err(external)?.on_time),
                (None, _) => batches.push(b),
            },
            Poll::Idle(d) => tokio::time::sleep(d).await,
            Poll::End => break,
        }
    }
    // A reader's batches share one schema: the stream's, or with the
    // columns left out as Null when the reader leaves them out.
    let schema = batches
        .first()
        .map_or_else(|| late_schema.unwrap_or(s.schema.clone()), |b| b.schema());
    Ok(datafusion::arrow::compute::concat_batches(
        &schema, &batches,
    )?)
}
