//! DataFusion table providers for Weir objects. Each scan takes a snapshot:
//! a table's rows, a view's current content, or a bounded stream read to
//! its end (late rows dropped exactly as a streaming job drops them).

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{SchemaProvider, Session, TableProvider};
use datafusion::common::{not_impl_err, DataFusionError, Result};
use datafusion::datasource::{MemTable, TableType};
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;

use crate::catalog::{Catalog, Object, StreamEntry};
use crate::connectors::{self, Poll};
use crate::runtime::operators::WatermarkAssigner;

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
        Ok(self
            .catalog
            .relation(name)
            .map(|o| Arc::new(ObjectTable { object: o }) as Arc<dyn TableProvider>))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.catalog.relation(name).is_some()
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
        };
        let mem = MemTable::try_new(schema, vec![vec![batch]])?;
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
    let metrics = Arc::new(connectors::SourceMetrics::new());
    let mut reader =
        connectors::open(&s.name, &s.options, s.schema.clone(), metrics).map_err(external)?;
    reader.set_decode_threads(std::thread::available_parallelism().map_or(1, |n| n.get()));
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
            Poll::Batch(b) => match &mut assigner {
                Some(a) => batches.push(a.assign(&b).map_err(external)?.on_time),
                None => batches.push(b),
            },
            Poll::Idle(d) => tokio::time::sleep(d).await,
            Poll::End => break,
        }
    }
    // A reader's batches share one schema: the stream's, or with the
    // columns left out as Null when the reader leaves them out.
    let schema = batches.first().map_or(s.schema.clone(), |b| b.schema());
    Ok(datafusion::arrow::compute::concat_batches(
        &schema, &batches,
    )?)
}
