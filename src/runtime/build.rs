//! Turns a stream plan into a reader per source and, per stage of its
//! execution graph, one chain of operators for each parallel subtask.

use std::sync::Arc;

use datafusion::arrow::compute::SortOptions;
use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::common::DFSchema;
use datafusion::execution::context::ExecutionProps;
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::logical_expr::{Expr, ExprSchemable};
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::{create_physical_expr, PhysicalExpr};

use super::job::JobConfig;
use super::operator::{Chain, Operator};
use super::operators::top_n_parts::{OrderBy, TopNSpec};
use super::operators::window_parts::{CountWindowSpec, OverSpec, SessionSpec};
use super::operators::{
    AggregateOp, CountWindowOp, FilterOp, JoinOp, JoinSide, LocalAggregateOp, LookupJoinOp,
    MvSinkOp, OverOp, ProjectOp, SessionOp, TopNOp, UnnestOp, WatermarkOp,
};
use super::RuntimeError;
use crate::connectors::{
    self, with_unread_as_null, Computed, ConnectorOptions, SourceMetrics, SourceReader,
};
use crate::plan::{
    ColumnsRead, Exchange, PartitionWindow, PartitionWindowKind, StageInput, StreamNode, StreamPlan,
};
use crate::runtime::operators::aggregate_parts::CompiledAgg;
use crate::state::{MvStore, TableStore};

/// A relation a plan names: a stream it reads, or a table it looks rows up in.
pub enum Relation {
    Stream(SourceSpec),
    Table(Arc<TableStore>),
}

/// What the runtime needs to read a stream.
#[derive(Clone)]
pub struct SourceSpec {
    pub options: ConnectorOptions,
    pub schema: SchemaRef,
    pub metrics: Arc<SourceMetrics>,
    /// The columns the connector reads, and those computed from them.
    pub stored: SchemaRef,
    pub computed: Arc<[Computed]>,
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
    pub inputs: Vec<StageLink>,
}

/// An input of a stage: the stage it reads and, for a hash exchange, the
/// key expressions (over that stage's output) and the key's schema, as the
/// keyed operator encodes its keys.
pub struct StageLink {
    pub stage: usize,
    pub key: Option<(Vec<Arc<dyn PhysicalExpr>>, SchemaRef)>,
}

/// A source of the job: the stage it starts, its reader (with counters of
/// its own, merged into the stream's).
pub struct BuiltSource {
    pub stage: usize,
    pub reader: Box<dyn SourceReader>,
    pub reader_metrics: Arc<SourceMetrics>,
    pub stream_metrics: Arc<SourceMetrics>,
}

/// A job's parts: its sources, left to right, and its stages, every stage
/// after those it reads; the last ends in the view's sink.
pub struct Built {
    pub sources: Vec<BuiltSource>,
    pub stages: Vec<StagePart>,
    /// Every operator of the job in order (one subtask's worth).
    pub names: Vec<&'static str>,
}

/// Builds the readers and the stages of a job writing into the sink `sink`
/// makes, with the job's parallelism and emission interval.
pub fn build(
    job: &str,
    plan: &StreamPlan,
    config: &JobConfig,
    resolve: &dyn Fn(&str) -> Option<Relation>,
    sink: &dyn Fn() -> MvSinkOp,
) -> Result<Built, RuntimeError> {
    let parallelism = config.parallelism;
    let graph = plan.execution_graph(parallelism);
    let read = plan.columns_read();
    let mut sources = Vec::new();
    let mut stages = Vec::with_capacity(graph.stages.len());
    let mut names = Vec::new();
    let mut next_id = 0;
    for (index, stage) in graph.stages.iter().enumerate() {
        // The counters a source stage's watermark counts late rows in.
        let local = Arc::new(SourceMetrics::new());
        if let Some(stream) = stage.source() {
            let Some(Relation::Stream(spec)) = resolve(stream) else {
                return Err(RuntimeError::UnknownStream(stream.to_string()));
            };
            let mut reader = connectors::open_stream(
                &format!("{job}/{stream}"),
                &spec.options,
                spec.stored.clone(),
                &spec.computed,
                spec.schema.clone(),
                local.clone(),
            )?;
            reader.set_decode_threads(decode_threads(parallelism, connectors::cores()));
            // LATE(stream) adds a column the reader does not make.
            let columns = read.of(stage.nodes[0]);
            let width = spec.schema.fields().len().min(columns.len());
            reader.set_read_columns(&columns[..width]);
            sources.push(BuiltSource {
                stage: index,
                reader,
                reader_metrics: local.clone(),
                stream_metrics: spec.metrics,
            });
        }
        // The first node of a stage fed by a local aggregate is its global half.
        let folded = |input: &StageInput| graph.stages[input.stage].folds_for.is_some();
        let merging = stage.inputs.first().is_some_and(folded);
        if merging {
            let local = graph.stages[stage.inputs[0].stage].folds_for;
            if !stage
                .nodes
                .first()
                .is_some_and(|n| local.is_some_and(|l| std::ptr::eq(*n, l)))
            {
                return Err(RuntimeError::Internal(
                    "a local aggregate feeds a stage that does not start with its aggregate".into(),
                ));
            }
        }
        let mut chains = Vec::with_capacity(stage.parallelism as usize);
        for _ in 0..stage.parallelism {
            let mut ops: Vec<Box<dyn Operator>> = Vec::new();
            for (i, node) in stage.nodes.iter().enumerate() {
                let merging = merging && i == 0;
                if let Some(op) = operator(node, &read, config, &local, resolve, merging)? {
                    ops.push(op);
                }
            }
            if stage.sink {
                ops.push(Box::new(sink()));
            }
            let mut chain = Chain::starting_at(next_id, ops);
            if let Some(aggregate) = stage.folds_for {
                chain = chain.then_stateless(local_aggregate(aggregate, config)?);
            }
            chains.push(chain);
        }
        names.extend(chains[0].names());
        next_id += chains[0].numbered();
        let inputs = stage
            .inputs
            .iter()
            .enumerate()
            .map(|(side, input)| {
                let key = match (input.exchange, stage.nodes.first()) {
                    (Exchange::Hash(_), Some(node)) if folded(input) => Some(partial_key(node)?),
                    (Exchange::Hash(_), Some(node)) => Some(exchange_key(node, side)?),
                    _ => None,
                };
                Ok(StageLink {
                    stage: input.stage,
                    key,
                })
            })
            .collect::<Result<_, RuntimeError>>()?;
        stages.push(StagePart { chains, inputs });
    }
    Ok(Built {
        sources,
        stages,
        names,
    })
}

/// The threads a source decodes on at parallelism `parallelism` on
/// `cores` cores: a source runs once, so it decodes on up to N threads,
/// but leaves a core to the job's own tasks. With one, the reading thread
/// and the job share the decoding instead of two more threads taking
/// turns on the same cores (at parallelism 2 on 2 cores, one decoding
/// thread was measured 5-15% faster than two, for a pass-through, a
/// selection and a TUMBLE aggregate).
fn decode_threads(parallelism: u32, cores: usize) -> usize {
    (parallelism as usize).min(cores.saturating_sub(1)).max(1)
}

/// The key rows are hashed on into a keyed node's stage, from its input
/// `side`: an aggregate's group key, or a join's key of that side.
fn exchange_key(
    node: &StreamNode,
    side: usize,
) -> Result<(Vec<Arc<dyn PhysicalExpr>>, SchemaRef), RuntimeError> {
    match node {
        StreamNode::Join {
            left,
            right,
            left_keys,
            right_keys,
            ..
        } => {
            let (input, keys) = match side {
                0 => (left, left_keys),
                _ => (right, right_keys),
            };
            let exprs = keys
                .iter()
                .map(|e| physical(e, input.schema()))
                .collect::<Result<Vec<_>, _>>()?;
            Ok((exprs, join_key_schema(node)?))
        }
        StreamNode::TopN {
            input, partition, ..
        }
        | StreamNode::Over {
            input, partition, ..
        }
        | StreamNode::Aggregate {
            input,
            partition_window: Some(PartitionWindow { partition, .. }),
            ..
        } => {
            let exprs = partition
                .iter()
                .map(|e| physical(e, input.schema()))
                .collect::<Result<Vec<_>, _>>()?;
            Ok((exprs, key_schema(partition, input.schema())?))
        }
        _ => group_key(node),
    }
}

/// The key partial rows are hashed on into an aggregate's global half:
/// the key's columns, first in those rows, encoded as the aggregate's own
/// key is, so each key goes to the subtask it would go to unsplit.
fn partial_key(node: &StreamNode) -> Result<(Vec<Arc<dyn PhysicalExpr>>, SchemaRef), RuntimeError> {
    let (_, key_schema) = group_key(node)?;
    let columns = key_schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| Arc::new(Column::new(f.name(), i)) as Arc<dyn PhysicalExpr>)
        .collect();
    Ok((columns, key_schema))
}

/// The local half of a split aggregate (see [`LocalAggregateOp`]).
fn local_aggregate(
    node: &StreamNode,
    config: &JobConfig,
) -> Result<Box<dyn Operator>, RuntimeError> {
    let StreamNode::Aggregate {
        input,
        aggs,
        window,
        ..
    } = node
    else {
        return Err(RuntimeError::Internal("only an aggregate is split".into()));
    };
    let (group_exprs, key_schema) = group_key(node)?;
    Ok(Box::new(
        LocalAggregateOp::new(
            group_exprs,
            &key_schema,
            compile_aggs(aggs, input.schema())?,
            input.props().append_only,
        )?
        // Half the global half's emission interval: together a change waits
        // at most one and a half intervals.
        .with_gathering(config.emit_interval / 2, *window),
    ))
}

/// The schema both sides' join keys are encoded with (their common types).
fn join_key_schema(node: &StreamNode) -> Result<SchemaRef, RuntimeError> {
    let StreamNode::Join {
        left, left_keys, ..
    } = node
    else {
        return Err(RuntimeError::Internal("not a join".into()));
    };
    key_schema(left_keys, left.schema())
}

/// The schema of a key made of these expressions over `schema`: columns
/// `k0`, `k1`, ... of their types.
fn key_schema(exprs: &[Expr], schema: &DFSchema) -> Result<SchemaRef, RuntimeError> {
    let fields = exprs
        .iter()
        .enumerate()
        .map(|(i, e)| Ok(Field::new(format!("k{i}"), e.get_type(schema)?, true)))
        .collect::<Result<Vec<_>, RuntimeError>>()?;
    Ok(Arc::new(Schema::new(fields)))
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
        return Err(RuntimeError::Internal(
            "only an aggregate or a join is keyed".into(),
        ));
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
/// output columns later operators read; `merging`: an aggregate is the
/// global half of a split one, fed partial rows.
fn operator(
    node: &StreamNode,
    read: &ColumnsRead,
    config: &JobConfig,
    source_metrics: &Arc<SourceMetrics>,
    resolve: &dyn Fn(&str) -> Option<Relation>,
    merging: bool,
) -> Result<Option<Box<dyn Operator>>, RuntimeError> {
    Ok(Some(match node {
        StreamNode::LookupJoin {
            input,
            table,
            keys,
            table_first,
            outer,
            filter,
            schema,
            ..
        } => {
            let Some(Relation::Table(store)) = resolve(table) else {
                return Err(RuntimeError::UnknownStream(table.to_string()));
            };
            let keys = keys
                .iter()
                .map(|e| physical(e, input.schema()))
                .collect::<Result<_, _>>()?;
            let filter = filter.as_ref().map(|f| physical(f, schema)).transpose()?;
            Box::new(LookupJoinOp::new(
                store,
                keys,
                *table_first,
                *outer,
                arrow_schema(schema),
                filter,
            ))
        }
        StreamNode::Source {
            event_time,
            late,
            schema,
            ..
        } => match (event_time, late) {
            (Some(et), true) => Box::new(WatermarkOp::late_rows(
                *et,
                source_metrics.clone(),
                arrow_schema(schema),
            )),
            (Some(et), false) => Box::new(WatermarkOp::new(*et, source_metrics.clone())),
            (None, _) => return Ok(None),
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
            Box::new(ProjectOp::new(exprs, arrow_schema(schema), read.of(node)))
        }
        StreamNode::Filter {
            input, predicate, ..
        } => Box::new(FilterOp::new(physical(predicate, input.schema())?)),
        StreamNode::Unnest {
            column,
            keep_null,
            keep_empty,
            ..
        } => Box::new(UnnestOp::new(*column, *keep_null, *keep_empty)),
        StreamNode::TopN {
            input,
            order,
            limit,
            schema,
            ..
        } => {
            let in_schema = input.schema();
            let (partition, key_schema) = exchange_key(node, 0)?;
            let order = order
                .iter()
                .map(|s| {
                    Ok(OrderBy {
                        expr: physical(&s.expr, in_schema)?,
                        options: SortOptions {
                            descending: !s.asc,
                            nulls_first: s.nulls_first,
                        },
                        data_type: s.expr.get_type(in_schema.as_ref())?,
                    })
                })
                .collect::<Result<Vec<_>, RuntimeError>>()?;
            let width = in_schema.fields().len();
            Box::new(TopNOp::new(TopNSpec {
                partition,
                key_schema,
                order,
                input_schema: with_unread_as_null(&arrow_schema(in_schema), read.of(input)),
                rank_name: schema.field(width).name().clone(),
                limit: *limit,
                with_rank: read.of(node).get(width).copied().unwrap_or(true),
                append_only: input.props().append_only,
            })?)
        }
        StreamNode::Join {
            left,
            right,
            filter,
            outer,
            interval,
            schema,
            ..
        } => {
            let expiry = |i: usize| {
                interval.and_then(|iv| match i {
                    0 => iv.left_retention().map(|r| (iv.left_time, r)),
                    _ => iv.right_retention().map(|r| (iv.right_time, r)),
                })
            };
            let side = |input: &StreamNode, i: usize| -> Result<JoinSide, RuntimeError> {
                let (keys, _) = exchange_key(node, i)?;
                Ok(JoinSide {
                    keys,
                    schema: with_unread_as_null(&arrow_schema(input.schema()), read.of(input)),
                    append_only: input.props().append_only,
                    expiry: expiry(i),
                    preserved: outer[i],
                })
            };
            let filter = filter.as_ref().map(|f| physical(f, schema)).transpose()?;
            let hold = interval.and_then(|i| i.hold()).unwrap_or(0);
            Box::new(JoinOp::new(
                side(left, 0)?,
                side(right, 1)?,
                join_key_schema(node)?,
                filter,
                hold,
            )?)
        }
        StreamNode::Over {
            input,
            time,
            order,
            frame,
            aggs,
            schema,
            ..
        } => {
            let in_schema = input.schema();
            let (partition, key_schema) = exchange_key(node, 0)?;
            // The order key: the time, then the input columns read later
            // (each output column's place in it, or None: not read).
            let read_out = read.of(node);
            let is_read = |j: usize| read_out.get(j).copied().unwrap_or(true);
            let mut kept = vec![order[0].clone()];
            let mut columns = Vec::with_capacity(order.len() - 1);
            for (j, e) in order[1..].iter().enumerate() {
                columns.push(is_read(j).then(|| {
                    kept.push(e.clone());
                    kept.len() - 1
                }));
            }
            Box::new(OverOp::new(OverSpec {
                partition,
                key_schema,
                time: physical(time, in_schema)?,
                order: physical_all(&kept, in_schema)?,
                order_types: types_of(&kept, in_schema)?,
                columns,
                frame: *frame,
                aggs: compile_aggs(aggs, in_schema)?,
                schema: with_unread_as_null(&arrow_schema(schema), read_out),
            })?)
        }
        StreamNode::Aggregate {
            input,
            group,
            aggs,
            window,
            partition_window,
            emit_on_window_close,
            schema,
            ..
        } => {
            let in_schema = input.schema();
            let compiled = compile_aggs(aggs, in_schema)?;
            if let Some(w) = partition_window {
                let (partition, key_schema) = exchange_key(node, 0)?;
                let time = physical(&w.time, in_schema)?;
                let op: Box<dyn Operator> = match &w.kind {
                    PartitionWindowKind::Session { gap } => Box::new(
                        SessionOp::new(SessionSpec {
                            partition,
                            key_schema,
                            time,
                            gap: *gap,
                            bounds: w.bounds.clone(),
                            aggs: compiled,
                            schema: arrow_schema(schema),
                            emit_on_window_close: *emit_on_window_close,
                        })?
                        .with_emit_interval(config.emit_interval),
                    ),
                    PartitionWindowKind::Count { size, order } => {
                        Box::new(CountWindowOp::new(CountWindowSpec {
                            partition,
                            key_schema,
                            time,
                            order: physical_all(order, in_schema)?,
                            order_types: types_of(order, in_schema)?,
                            size: *size,
                            bounds: w.bounds.clone(),
                            aggs: compiled,
                            schema: arrow_schema(schema),
                            emit_on_window_close: *emit_on_window_close,
                        })?)
                    }
                };
                return Ok(Some(op));
            }
            let (group_exprs, key_schema) = group_key(node)?;
            debug_assert_eq!(group_exprs.len(), group.len());
            let op = AggregateOp::new(
                group_exprs,
                key_schema,
                compiled,
                arrow_schema(schema),
                *window,
                *emit_on_window_close,
                !input.props().append_only,
            )?
            .with_emit_interval(config.emit_interval);
            Box::new(match merging {
                true => op.merging()?,
                false => op,
            })
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

/// Expressions compiled over `in_schema`.
fn physical_all(
    exprs: &[Expr],
    in_schema: &datafusion::common::DFSchemaRef,
) -> Result<Vec<Arc<dyn PhysicalExpr>>, RuntimeError> {
    exprs.iter().map(|e| physical(e, in_schema)).collect()
}

/// The types of expressions over `in_schema`.
fn types_of(
    exprs: &[Expr],
    in_schema: &datafusion::common::DFSchemaRef,
) -> Result<Vec<datafusion::arrow::datatypes::DataType>, RuntimeError> {
    Ok(exprs
        .iter()
        .map(|e| e.get_type(in_schema.as_ref()))
        .collect::<Result<_, _>>()?)
}

/// The aggregate calls with their arguments and filters compiled over `in_schema`.
fn compile_aggs(
    aggs: &[crate::plan::AggCall],
    in_schema: &datafusion::common::DFSchemaRef,
) -> Result<Vec<CompiledAgg>, RuntimeError> {
    aggs.iter()
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
        .collect()
}

#[cfg(test)]
mod tests {
    use super::decode_threads;

    #[test]
    fn a_source_decodes_on_up_to_n_threads_leaving_a_core_to_the_job() {
        assert_eq!(decode_threads(1, 8), 1);
        assert_eq!(decode_threads(2, 2), 1, "2 cores: the job helps instead");
        assert_eq!(decode_threads(4, 8), 4);
        assert_eq!(decode_threads(8, 4), 3);
        assert_eq!(decode_threads(2, 1), 1);
    }
}
