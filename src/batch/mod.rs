//! Batch queries on DataFusion: a session context whose tables are Weir's
//! catalog objects (stored tables, materialized-view snapshots, bounded streams).

mod providers;

use std::sync::Arc;

use datafusion::catalog::{CatalogProvider, MemoryCatalogProvider};
use datafusion::prelude::{SessionConfig, SessionContext};

pub use providers::{read_bounded_stream, WeirSchema};

use crate::catalog::Catalog;

/// The catalog and schema names DataFusion resolves unqualified names in.
pub const CATALOG: &str = "weir";
pub const SCHEMA: &str = "public";

/// A DataFusion context over the Weir catalog, with Weir's functions.
pub fn new_context(catalog: Arc<Catalog>) -> SessionContext {
    let mut config = SessionConfig::new()
        .with_default_catalog_and_schema(CATALOG, SCHEMA)
        .with_create_default_catalog_and_schema(false)
        .with_information_schema(false)
        .with_target_partitions(2);
    // TIMESTAMPTZ columns hold UTC instants.
    config.options_mut().execution.time_zone = Some("+00:00".to_string());
    let ctx = SessionContext::new_with_config(config);
    let cat = MemoryCatalogProvider::new();
    cat.register_schema(SCHEMA, Arc::new(WeirSchema::new(catalog)))
        .expect("fresh catalog");
    ctx.register_catalog(CATALOG, Arc::new(cat));
    for f in crate::functions::all() {
        ctx.register_udf(f.as_ref().clone());
    }
    for f in crate::functions::window_functions() {
        ctx.register_udwf(f);
    }
    ctx
}
