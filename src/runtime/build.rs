//! Turns a stream plan into a source reader and, per stage of its execution
//! graph, one chain of operators for each parallel subtask.

use std::sync::Arc;

use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::common::DFSchema;
use datafusion::execution::context::ExecutionProps;
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::logical_expr::{Expr, ExprSchemable};
use datafusion::physical_expr::{create_physical_expr, PhysicalExpr};

use super::job::JobConfig;
use super::operator::{Chain, Operator};
use super::operators::{AggregateOp, FilterOp, MvSinkOp, ProjectOp, WatermarkOp};
use super::RuntimeError;
use crate::connectors::{self, ConnectorOptions, SourceMetrics, SourceReader};
use crate::plan::{Exchange, StreamNode, StreamPlan};
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

/// One stage of a job: a chain per subtask, and how rows reach it.
pub struct StagePart {
    pub chains: Vec<Chain>,
    /// For a hash exchange into this stage: the key expressions (over the
    /// stage's input) and the key's schema, as its keyed operator encodes them.
    pub key: Option<(Vec<Arc<dyn PhysicalExpr>>, SchemaRef)>,
}

/// A job's parts: its source reader (with counters of its own, merged into
/// the stream's) and its stages, source first; the last ends in the view's sink.
pub struct Built {
    pub reader: Box<dyn SourceReader>,
    pub reader_metrics: Arc<SourceMetrics>,
    pub stream_metrics: Arc<SourceMetrics>,
    pub stages: Vec<StagePart>,
    /// Every operator of the job in order (one subtask's worth).
    pub names: Vec<&'static str>,
}

/// Builds the reader and the stages of a job writing into the sink `sink`
/// makes, with the job's parallelism and emission interval.
pub fn build(
    job: &str,
    plan: &StreamPlan,
    config: &JobConfig,
    resolve: &dyn Fn(&str) -> Option<SourceSpec>,
    sink: &dyn Fn() -> MvSinkOp,
) -> Result<Built, RuntimeError> {
    let parallelism = config.parallelism;
    let graph = plan.execution_graph(parallelism);
    let Some(StreamNode::Source { stream, .. }) = plan.pipeline().first().copied() else {
        return Err(RuntimeError::Internal(
            "a stream plan starts at a source".into(),
        ));
    };
    let spec = resolve(stream).ok_or_else(|| RuntimeError::UnknownStream(stream.clone()))?;
    let local = Arc::new(SourceMetrics::new());
    let mut reader = connectors::open(
        &format!("{job}/{stream}"),
        &spec.options,
        spec.schema.clone(),
        local.clone(),
    )?;
    // The source runs once; at parallelism N it decodes on N threads.
    reader.set_decode_threads(parallelism as usize);
    let read = plan.columns_read();
    reader.set_read_columns(read.first().map_or(&[][..], Vec::as_slice));
    let pipeline = plan.pipeline();
    let read_by = |node: &StreamNode| {
        let at = pipeline.iter().position(|n| std::ptr::eq(*n, node));
        at.and_then(|i| read.get(i)).map_or(&[][..], Vec::as_slice)
    };
    let mut stages = Vec::with_capacity(graph.stages.len());
    let mut names = Vec::new();
    let mut next_id = 0;
    for stage in &graph.stages {
        let mut chains = Vec::with_capacity(stage.parallelism as usize);
        for _ in 0..stage.parallelism {
            let mut ops: Vec<Box<dyn Operator>> = Vec::new();
            for node in &stage.nodes {
                if let Some(op) = operator(node, read_by(node), config, &local)? {
                    ops.push(op);
                }
            }
            if stage.sink {
                ops.push(Box::new(sink()));
            }
            chains.push(Chain::starting_at(next_id, ops));
        }
        names.extend(chains[0].names());
        next_id += chains[0].len();
        let key = match (stage.input, stage.nodes.first()) {
            (Exchange::Hash(_), Some(node)) => Some(group_key(node)?),
            _ => None,
        };
        stages.push(StagePart { chains, key });
    }
    Ok(Built {
        reader,
        reader_metrics: local,
        stream_metrics: spec.metrics,
        stages,
        names,
    })
}

/// The group key of an aggregate: its expressions over the input, and the
/// schema of the key columns (the first columns of its output).
fn group_key(node: &StreamNode) -> Result<(Vec<Arc<dyn PhysicalExpr>>, SchemaRef), RuntimeError> {
    let StreamNode::Aggregate {
        input,
        group,
        schema,
        ..
    } = node
    else {
        return Err(RuntimeError::Internal("only an aggregate is keyed".into()));
    };
    let exprs = group
        .iter()
        .map(|e| physical(e, input.schema()))
        .collect::<Result<Vec<_>, _>>()?;
    let out = arrow_schema(schema);
    Ok((
        exprs,
        Arc::new(Schema::new(out.fields()[..group.len()].to_vec())),
    ))
}

/// The operator a plan node runs as (a source runs as its watermark
/// assigner, or nothing when it has no event time); `read`: which of its
/// output columns later operators read.
fn operator(
    node: &StreamNode,
    read: &[bool],
    config: &JobConfig,
    source_metrics: &Arc<SourceMetrics>,
) -> Result<Option<Box<dyn Operator>>, RuntimeError> {
    Ok(Some(match node {
        StreamNode::Source { event_time, .. } => match event_time {
            Some(et) => Box::new(WatermarkOp::new(*et, source_metrics.clone())),
            None => return Ok(None),
        },
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
            Box::new(ProjectOp::new(exprs, arrow_schema(schema), read))
        }
        StreamNode::Filter {
            input, predicate, ..
        } => Box::new(FilterOp::new(physical(predicate, input.schema())?)),
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
            let (group_exprs, key_schema) = group_key(node)?;
            debug_assert_eq!(group_exprs.len(), group.len());
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
                    let filter = c
                        .filter
                        .as_ref()
                        .map(|f| physical(f, in_schema))
                        .transpose()?;
                    Ok(CompiledAgg::new(c.clone(), arg, ty).with_filter(filter))
                })
                .collect::<Result<Vec<_>, RuntimeError>>()?;
            Box::new(
                AggregateOp::new(
                    group_exprs,
                    key_schema,
                    compiled,
                    arrow_schema(schema),
                    *window,
                    *emit_on_window_close,
                    !input.props().append_only,
                )?
                .with_emit_interval(config.emit_interval),
            )
        }
    }))
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
        plan.append_only(),
    )?)
}
