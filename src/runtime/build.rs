//! Turns a stream plan into a source reader and a chain of operators.

use std::sync::Arc;

use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::common::DFSchema;
use datafusion::execution::context::ExecutionProps;
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::logical_expr::{Expr, ExprSchemable};
use datafusion::physical_expr::{create_physical_expr, PhysicalExpr};

use super::operator::{Chain, Operator};
use super::operators::{AggregateOp, FilterOp, MvSinkOp, ProjectOp, WatermarkOp};
use super::RuntimeError;
use crate::connectors::{self, ConnectorOptions, SourceMetrics, SourceReader};
use crate::plan::{StreamNode, StreamPlan};
use crate::runtime::operators::aggregate_parts::CompiledAgg;
use crate::state::MvStore;

/// What the runtime needs to read a stream.
#[derive(Clone)]
pub struct SourceSpec {
    pub options: ConnectorOptions,
    pub schema: SchemaRef,
    pub metrics: Arc<SourceMetrics>,
}

fn physical(e: &Expr, schema: &DFSchema) -> Result<Arc<dyn PhysicalExpr>, RuntimeError> {
    Ok(create_physical_expr(
        e,
        schema,
        &ExecutionProps::new(),
        &PhysicalPlanningContext::default(),
    )?)
}

/// A job's parts: its source reader (with counters of its own, merged into
/// the stream's) and its operator chain.
pub struct Built {
    pub reader: Box<dyn SourceReader>,
    pub reader_metrics: Arc<SourceMetrics>,
    pub stream_metrics: Arc<SourceMetrics>,
    pub chain: Chain,
}

/// Builds the reader and operator chain of a job writing into `mv`.
pub fn build(
    job: &str,
    plan: &StreamPlan,
    resolve: &dyn Fn(&str) -> Option<SourceSpec>,
    sink: MvSinkOp,
) -> Result<Built, RuntimeError> {
    let mut ops: Vec<Box<dyn Operator>> = vec![Box::new(sink)];
    let mut node = &plan.root;
    loop {
        match node {
            StreamNode::Source {
                stream, event_time, ..
            } => {
                let spec =
                    resolve(stream).ok_or_else(|| RuntimeError::UnknownStream(stream.clone()))?;
                let local = Arc::new(SourceMetrics::new());
                let reader = connectors::open(
                    &format!("{job}/{stream}"),
                    &spec.options,
                    spec.schema.clone(),
                    local.clone(),
                )?;
                if let Some(et) = event_time {
                    ops.push(Box::new(WatermarkOp::new(*et, local.clone())));
                }
                ops.reverse();
                return Ok(Built {
                    reader,
                    reader_metrics: local,
                    stream_metrics: spec.metrics,
                    chain: Chain::new(ops),
                });
            }
            StreamNode::Project { input, .. } if node.is_identity() => node = input,
            StreamNode::Project {
                input,
                exprs,
                schema,
                ..
            } => {
                let exprs = exprs
                    .iter()
                    .map(|e| physical(e, input.schema()))
                    .collect::<Result<_, _>>()?;
                ops.push(Box::new(ProjectOp::new(exprs, arrow_schema(schema))));
                node = input;
            }
            StreamNode::Filter {
                input, predicate, ..
            } => {
                ops.push(Box::new(FilterOp::new(physical(
                    predicate,
                    input.schema(),
                )?)));
                node = input;
            }
            StreamNode::Aggregate {
                input,
                group,
                aggs,
                window,
                emit_on_window_close,
                schema,
                ..
            } => {
                let in_schema = input.schema();
                let group_exprs = group
                    .iter()
                    .map(|e| physical(e, in_schema))
                    .collect::<Result<Vec<_>, _>>()?;
                let out = arrow_schema(schema);
                let key_schema = Arc::new(Schema::new(out.fields()[..group.len()].to_vec()));
                let compiled = aggs
                    .iter()
                    .map(|c| {
                        let (arg, ty) = match c.args.first() {
                            Some(a) => (
                                Some(physical(a, in_schema)?),
                                Some(a.get_type(in_schema.as_ref())?),
                            ),
                            None => (None, None),
                        };
                        Ok(CompiledAgg::new(c.clone(), arg, ty))
                    })
                    .collect::<Result<Vec<_>, RuntimeError>>()?;
                ops.push(Box::new(AggregateOp::new(
                    group_exprs,
                    key_schema,
                    compiled,
                    out,
                    *window,
                    *emit_on_window_close,
                    !input.props().append_only,
                )?));
                node = input;
            }
        }
    }
}

/// The Arrow schema (unqualified names) of a plan node.
pub fn arrow_schema(schema: &DFSchema) -> SchemaRef {
    Arc::new(schema.as_arrow().clone())
}

/// The store a view's job writes, shaped after its plan.
pub fn mv_store(plan: &StreamPlan) -> Result<MvStore, RuntimeError> {
    Ok(MvStore::new(
        arrow_schema(plan.schema()),
        plan.key().to_vec(),
    )?)
}
