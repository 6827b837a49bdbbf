//! DataFusion logical plan → stream plan. Decides what each node's output is
//! (append-only or updating, its key, which columns carry event time) and
//! refuses what cannot run incrementally, naming the construct.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::ScalarValue;
use datafusion::common::{Column, DFSchema, NullEquality, NullHandling};
use datafusion::logical_expr::expr::{AggregateFunction, Cast};
use datafusion::logical_expr::type_coercion::binary::comparison_coercion;
use datafusion::logical_expr::utils::{conjunction, split_conjunction};
use datafusion::logical_expr::{
    Distinct, Expr, ExprSchemable, Filter, Join, JoinType, LogicalPlan, Operator, Unnest, Window,
};
use datafusion::optimizer::extract_equijoin_predicate::ExtractEquijoinPredicate;
use datafusion::optimizer::push_down_filter::PushDownFilter;
use datafusion::optimizer::{Optimizer, OptimizerContext};

use super::interval::join_interval;
use super::over::{is_over_aggregate, over_node};
use super::partition_window::{
    is_partition_window, partition_window, window_origin, window_time, WindowOrigin,
};
use super::PlanError;
use crate::catalog::{Catalog, Object, TableEntry};
use crate::functions::{
    interval_nanos, CUMULATE_ENDS, HOP_END, HOP_WINDOWS, PROCTIME, TUMBLE_END, TUMBLE_START,
};
use crate::plan::{AggCall, AggKind, Props, StreamNode, StreamPlan, TimeProp, WindowClose};

/// Converts an analyzed logical plan of a materialized view's query.
pub fn to_stream_plan(
    plan: &LogicalPlan,
    catalog: &Catalog,
    emit_on_window_close: bool,
) -> Result<StreamPlan, PlanError> {
    let mut cx = Converter {
        catalog,
        emit_on_window_close,
        used_emit: false,
        top_n: HashMap::new(),
        partition_windows: HashSet::new(),
    };
    let plan = prepare_joins(plan)?;
    let root = cx.convert(&plan)?;
    if emit_on_window_close && !cx.used_emit {
        return Err(PlanError::Invalid(
            "EMIT ON WINDOW CLOSE needs a GROUP BY on window_start or window_end of a window (TUMBLE, HOP, CUMULATE or SESSION), or on the event-time column".into(),
        ));
    }
    Ok(StreamPlan { root })
}

/// A plan with a join goes through two of DataFusion's optimizer rules, both
/// safe for streams: WHERE conditions move below the join (fewer rows kept
/// in its state) or into its condition, and the equalities between the two
/// sides become its keys.
fn prepare_joins(plan: &LogicalPlan) -> Result<LogicalPlan, PlanError> {
    if !plan.exists(|p| Ok(matches!(p, LogicalPlan::Join(_))))? {
        return Ok(plan.clone());
    }
    let optimizer = Optimizer::with_rules(vec![
        Arc::new(PushDownFilter::new()),
        Arc::new(ExtractEquijoinPredicate::new()),
    ]);
    Ok(optimizer.optimize(plan.clone(), &OptimizerContext::new(), |_, _| {})?)
}

struct Converter<'a> {
    catalog: &'a Catalog,
    emit_on_window_close: bool,
    used_emit: bool,
    /// Window nodes whose row number a filter above limits: their limit.
    top_n: HashMap<*const LogicalPlan, usize>,
    /// SESSION and COUNT_WINDOW window nodes an aggregate above groups by.
    partition_windows: HashSet<*const LogicalPlan>,
}

use super::partition_window::strip_alias;

/// The aggregate a function name stands for.
pub(super) fn agg_kind(name: &str) -> Result<AggKind, PlanError> {
    Ok(match name.to_ascii_lowercase().as_str() {
        "count" => AggKind::Count,
        "sum" => AggKind::Sum,
        "min" => AggKind::Min,
        "max" => AggKind::Max,
        "avg" | "mean" => AggKind::Avg,
        other => {
            return Err(PlanError::Unsupported(format!(
                "the aggregate function {other} in a materialized view (supported: COUNT, SUM, MIN, MAX, AVG)"
            )))
        }
    })
}

fn column_index(schema: &DFSchema, c: &Column) -> Option<usize> {
    schema.index_of_column(c).ok()
}

impl Converter<'_> {
    fn convert(&mut self, plan: &LogicalPlan) -> Result<StreamNode, PlanError> {
        match plan {
            LogicalPlan::TableScan(scan) => {
                let name = scan.table_name.table();
                if self.catalog.lookup_table(name).is_some() {
                    return Err(PlanError::Unsupported(
                        "a table with FOR SYSTEM_TIME AS OF other than as a side of a join".into(),
                    ));
                }
                if let Some(stream) = self.catalog.late_stream(name) {
                    // LATE(stream): its late rows, with no event time of their own.
                    let n = scan.projected_schema.fields().len();
                    return Ok(StreamNode::Source {
                        stream: stream.name.clone(),
                        schema: scan.projected_schema.clone(),
                        event_time: stream.event_time,
                        late: true,
                        props: Props {
                            append_only: true,
                            key: vec![],
                            time: vec![TimeProp::None; n],
                        },
                    });
                }
                let stream = match self.catalog.relation(name) {
                    Some(Object::Stream(s)) => s,
                    Some(Object::Table(_)) => {
                        return Err(PlanError::Unsupported(format!(
                            "a materialized view reading table \"{name}\" (views read streams; query tables with SELECT)"
                        )))
                    }
                    Some(Object::View(_)) => {
                        return Err(PlanError::Unsupported(format!(
                            "a materialized view reading materialized view \"{name}\""
                        )))
                    }
                    Some(Object::Sink(_)) | None => {
                        return Err(PlanError::UndefinedTable(name.to_string()))
                    }
                    Some(Object::LogicalView(_)) => {
                        return Err(PlanError::Unsupported(format!(
                            "view \"{name}\" read without its query"
                        )))
                    }
                };
                if crate::connectors::is_write_only(&stream.options) {
                    return Err(PlanError::Unsupported(format!(
                        "reading \"{name}\": its connector only writes (use it as an INSERT INTO target)"
                    )));
                }
                if scan.projection.is_some() || !scan.filters.is_empty() {
                    return Err(PlanError::Unsupported("a pre-optimized scan".into()));
                }
                let n = scan.projected_schema.fields().len();
                let mut time = vec![TimeProp::None; n];
                if let Some(et) = stream.event_time {
                    time[et.column] = TimeProp::EventTime;
                }
                Ok(StreamNode::Source {
                    stream: name.to_string(),
                    schema: scan.projected_schema.clone(),
                    event_time: stream.event_time,
                    late: false,
                    props: Props {
                        append_only: true,
                        key: vec![],
                        time,
                    },
                })
            }
            LogicalPlan::Projection(p) => {
                let input = self.convert(&p.input)?;
                self.project(input, p.expr.clone(), p.schema.clone())
            }
            LogicalPlan::SubqueryAlias(a) => {
                // Same rows under new qualifiers: an identity projection.
                let input = self.convert(&a.input)?;
                let exprs = input
                    .schema()
                    .columns()
                    .into_iter()
                    .map(Expr::Column)
                    .collect();
                self.project(input, exprs, a.schema.clone())
            }
            LogicalPlan::Window(w) if self.partition_windows.contains(&(plan as *const LogicalPlan)) => {
                self.partition_window_rows(w)
            }
            LogicalPlan::Window(w) if is_partition_window(w) => Err(PlanError::Unsupported(
                "a SESSION or COUNT_WINDOW window in a materialized view other than under a GROUP BY of its window_start or window_end (and its partition columns)".into(),
            )),
            LogicalPlan::Window(w) if self.top_n.contains_key(&(plan as *const LogicalPlan)) => {
                self.top_n_node(plan, w)
            }
            LogicalPlan::Window(w) if !is_over_aggregate(w) => self.top_n_node(plan, w),
            LogicalPlan::Window(w) => {
                let input = self.convert(&w.input)?;
                over_node(input, w)
            }
            LogicalPlan::Unnest(u) => self.unnest(u),
            LogicalPlan::Filter(f) => {
                if let Some((window, limit, rest)) = self.rank_filter(f) {
                    self.top_n.insert(window, limit);
                    let input = self.convert(&f.input)?;
                    // The Top-N emits no row beyond the limit: only the rest filters.
                    let Some(predicate) = rest else {
                        return Ok(input);
                    };
                    let props = input.props().clone();
                    return Ok(StreamNode::Filter {
                        input: Box::new(input),
                        predicate,
                        props,
                    });
                }
                if f.predicate.exists(|e| {
                    Ok(matches!(
                        e,
                        Expr::ScalarSubquery(_) | Expr::InSubquery(_) | Expr::Exists(_)
                    ))
                })? {
                    return Err(PlanError::Unsupported(
                        "a subquery in a materialized view's WHERE".into(),
                    ));
                }
                let input = self.convert(&f.input)?;
                let props = input.props().clone();
                Ok(StreamNode::Filter {
                    input: Box::new(input),
                    predicate: f.predicate.clone(),
                    props,
                })
            }
            LogicalPlan::Join(j) => self.join(j),
            LogicalPlan::Aggregate(a) => {
                let origin = window_origin(&a.input)?;
                if let Some(o) = &origin {
                    self.partition_windows.extend(o.windows.iter().copied());
                }
                let input = self.convert(&a.input)?;
                self.aggregate(
                    input,
                    &a.group_expr,
                    &a.aggr_expr,
                    a.schema.clone(),
                    origin.as_ref(),
                )
            }
            LogicalPlan::Distinct(Distinct::All(inner)) => {
                let input = self.convert(inner)?;
                let group: Vec<Expr> = input
                    .schema()
                    .columns()
                    .into_iter()
                    .map(Expr::Column)
                    .collect();
                let schema = input.schema().clone();
                self.aggregate(input, &group, &[], schema, None)
            }
            other => Err(PlanError::Unsupported(format!(
                "{} in a materialized view",
                describe(other)
            ))),
        }
    }

    /// A filter limiting a row number, `rn <= N` (or `rn < N`, `rn = 1`)
    /// among its conjuncts: the window node computing `rn`, the limit, and
    /// the other conjuncts.
    fn rank_filter(&self, f: &Filter) -> Option<(*const LogicalPlan, usize, Option<Expr>)> {
        let conjuncts = split_conjunction(&f.predicate);
        for (i, c) in conjuncts.iter().enumerate() {
            let Some((column, limit)) = rank_limit(c) else {
                continue;
            };
            let Some(window) = row_number_origin(&f.input, &column) else {
                continue;
            };
            let rest = conjuncts
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, e)| (*e).clone())
                .reduce(Expr::and);
            return Some((window, limit, rest));
        }
        None
    }

    /// A window node: Flink's Top-N when a filter above limits its row number.
    fn top_n_node(&mut self, plan: &LogicalPlan, w: &Window) -> Result<StreamNode, PlanError> {
        let unsupported = || {
            PlanError::Unsupported(
                "an OVER window in a materialized view (supported: Flink's Top-N, ROW_NUMBER() OVER (PARTITION BY ... ORDER BY ...) in a subquery filtered by its row number <= N)".into(),
            )
        };
        let limit = *self
            .top_n
            .get(&(plan as *const LogicalPlan))
            .ok_or_else(unsupported)?;
        let [Expr::WindowFunction(f)] = w.window_expr.as_slice() else {
            return Err(unsupported());
        };
        if f.params.order_by.is_empty() {
            return Err(PlanError::Unsupported(
                "ROW_NUMBER() without ORDER BY in a materialized view".into(),
            ));
        }
        let input = self.convert(&w.input)?;
        let width = input.schema().fields().len();
        let columns: Option<Vec<usize>> = f
            .params
            .partition_by
            .iter()
            .map(|e| match strip_alias(e) {
                Expr::Column(c) => column_index(input.schema(), c),
                _ => None,
            })
            .collect();
        // Each partition holds one row per row number (one row in all when
        // the limit is 1).
        let key = match columns {
            Some(mut key) => {
                if limit > 1 || key.is_empty() {
                    key.push(width);
                }
                key
            }
            None => Vec::new(),
        };
        let props = Props {
            append_only: false,
            key,
            time: vec![TimeProp::None; width + 1],
        };
        Ok(StreamNode::TopN {
            input: Box::new(input),
            partition: f.params.partition_by.clone(),
            order: f.params.order_by.clone(),
            limit,
            schema: w.schema.clone(),
            props,
        })
    }

    /// A SESSION or COUNT_WINDOW window under the aggregate that computes
    /// it: its rows pass with their event time in place of each bound (the
    /// aggregate finds their windows).
    fn partition_window_rows(&mut self, w: &Window) -> Result<StreamNode, PlanError> {
        let input = self.convert(&w.input)?;
        if !input.props().append_only {
            return Err(PlanError::Unsupported(
                "a SESSION or COUNT_WINDOW window over an updating input".into(),
            ));
        }
        let ts = window_time(w)
            .ok_or_else(|| PlanError::Invalid("not a partition window".into()))?
            .clone();
        if time_prop(strip_alias(&ts), input.schema(), input.props()) != TimeProp::EventTime {
            return Err(PlanError::Unsupported(format!(
                "a SESSION or COUNT_WINDOW window in a materialized view on {ts}, which is not the stream's event time (its WATERMARK FOR column)"
            )));
        }
        let mut exprs: Vec<Expr> = input
            .schema()
            .columns()
            .into_iter()
            .map(Expr::Column)
            .collect();
        let mut time = input.props().time.clone();
        let ts_type = ts.get_type(input.schema().as_ref())?;
        for e in &w.window_expr {
            let Expr::WindowFunction(f) = strip_alias(e) else {
                return Err(PlanError::Invalid("not a partition window".into()));
            };
            // A count window's bounds are row numbers: the time as nanoseconds.
            let placeholder = match (w.schema.field(exprs.len()).data_type(), &ts_type) {
                (DataType::Int64, DataType::Timestamp(_, tz)) => Expr::Cast(Cast::new(
                    Box::new(Expr::Cast(Cast::new(
                        Box::new(ts.clone()),
                        DataType::Timestamp(TimeUnit::Nanosecond, tz.clone()),
                    ))),
                    DataType::Int64,
                )),
                _ => ts.clone(),
            };
            exprs.push(placeholder.alias(f.fun.name()));
            time.push(TimeProp::None);
        }
        let props = Props {
            append_only: true,
            key: Vec::new(),
            time,
        };
        Ok(StreamNode::Project {
            input: Box::new(input),
            exprs,
            schema: w.schema.clone(),
            props,
        })
    }

    /// UNNEST of one list column (what a HOP window is made of).
    fn unnest(&mut self, u: &Unnest) -> Result<StreamNode, PlanError> {
        let unsupported =
            |what: &str| PlanError::Unsupported(format!("UNNEST {what} in a materialized view"));
        let [(column, list)] = u.list_type_columns.as_slice() else {
            return Err(unsupported("of several columns"));
        };
        if list.depth != 1 || !u.struct_type_columns.is_empty() {
            return Err(unsupported("of nested lists or structs"));
        }
        let input = self.convert(&u.input)?;
        let width = input.schema().fields().len();
        if u.schema.fields().len() != width
            || u.dependency_indices != (0..width).collect::<Vec<_>>()
        {
            return Err(unsupported("that reorders columns"));
        }
        let in_props = input.props();
        let mut time = in_props.time.clone();
        time[*column] = match time[*column] {
            TimeProp::HopStarts(size) => TimeProp::WindowStart(size),
            TimeProp::CumulateEnds(size) => TimeProp::WindowEnd(size),
            TimeProp::ProcHopStarts(size) => TimeProp::ProcWindowStart(size),
            TimeProp::ProcCumulateEnds(size) => TimeProp::ProcWindowEnd(size),
            _ => TimeProp::None,
        };
        let props = Props {
            append_only: in_props.append_only,
            // A row's copies share its key.
            key: Vec::new(),
            time,
        };
        Ok(StreamNode::Unnest {
            input: Box::new(input),
            column: *column,
            keep_null: u.options.null_handling != NullHandling::Drop,
            keep_empty: u.options.null_handling == NullHandling::PreserveAndExpandEmpty,
            schema: u.schema.clone(),
            props,
        })
    }

    /// The table a join side looks rows up in (`t FOR SYSTEM_TIME AS OF x`),
    /// through aliases, and the conditions on it that filters hold.
    fn lookup_side(&self, plan: &LogicalPlan) -> Option<(Arc<TableEntry>, Vec<Expr>)> {
        match plan {
            LogicalPlan::TableScan(scan) if scan.filters.is_empty() => self
                .catalog
                .lookup_table(scan.table_name.table())
                .map(|t| (t, Vec::new())),
            LogicalPlan::SubqueryAlias(a) => {
                // Conditions below the alias name its input's columns: renamed.
                let (t, conditions) = self.lookup_side(&a.input)?;
                let renamed = conditions
                    .into_iter()
                    .map(|c| {
                        c.transform(|e| match &e {
                            Expr::Column(col) => match a.input.schema().index_of_column(col) {
                                Ok(i) => Ok(Transformed::yes(Expr::Column(Column::from(
                                    a.schema.qualified_field(i),
                                )))),
                                Err(_) => Ok(Transformed::no(e)),
                            },
                            _ => Ok(Transformed::no(e)),
                        })
                        .map(|t| t.data)
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .ok()?;
                Some((t, renamed))
            }
            LogicalPlan::Filter(f) => {
                let (t, mut conditions) = self.lookup_side(&f.input)?;
                conditions.push(f.predicate.clone());
                Some((t, conditions))
            }
            _ => None,
        }
    }

    /// A join of a stream with a table it looks rows up in by primary key.
    fn lookup_join(
        &mut self,
        j: &Join,
        table: Arc<TableEntry>,
        conditions: Vec<Expr>,
        table_first: bool,
        outer: bool,
    ) -> Result<StreamNode, PlanError> {
        let (stream_side, table_side) = match table_first {
            true => (&j.right, &j.left),
            false => (&j.left, &j.right),
        };
        let input = self.convert(stream_side)?;
        if !input.props().append_only {
            return Err(PlanError::Unsupported(
                "a lookup join of an updating input".into(),
            ));
        }
        if table.primary_key.is_empty() {
            return Err(PlanError::Unsupported(format!(
                "a lookup join on table \"{}\", which has no PRIMARY KEY",
                table.name
            )));
        }
        let table_schema = table_side.schema();
        let mut keys: Vec<Option<Expr>> = vec![None; table.primary_key.len()];
        let mut rest = conditions;
        for (l, r) in &j.on {
            let (mine, theirs) = match table_first {
                true => (r, l),
                false => (l, r),
            };
            let pk = match strip_alias(theirs) {
                Expr::Column(c) => table_schema
                    .index_of_column(c)
                    .ok()
                    .and_then(|i| table.primary_key.iter().position(|&p| p == i)),
                _ => None,
            };
            match pk {
                Some(k) if keys[k].is_none() => {
                    let ty = table_schema.field(table.primary_key[k]).data_type();
                    keys[k] = Some(mine.clone().cast_to(ty, input.schema().as_ref())?);
                }
                _ => rest.push(l.clone().eq(r.clone())),
            }
        }
        let keys: Vec<Expr> = keys.into_iter().collect::<Option<_>>().ok_or_else(|| {
            PlanError::Unsupported(format!(
                "a lookup join without an equality on each PRIMARY KEY column of \"{}\"",
                table.name
            ))
        })?;
        rest.extend(j.filter.clone());
        let filter = rest.into_iter().reduce(Expr::and);
        // Rows pass with their times: a lookup keeps nothing to outlive them.
        let width = table_schema.fields().len();
        let mut time = input.props().time.clone();
        match table_first {
            true => time.splice(0..0, vec![TimeProp::None; width]),
            false => time.splice(time.len().., vec![TimeProp::None; width]),
        };
        let props = Props {
            append_only: true,
            key: Vec::new(),
            time,
        };
        Ok(StreamNode::LookupJoin {
            input: Box::new(input),
            table: table.name.clone(),
            keys,
            table_first,
            outer,
            filter,
            schema: j.schema.clone(),
            props,
        })
    }

    fn join(&mut self, j: &Join) -> Result<StreamNode, PlanError> {
        // A lookup join may keep every row of its stream (LEFT JOIN with the
        // table on the right, RIGHT JOIN with it on the left).
        match (
            self.lookup_side(&j.left),
            self.lookup_side(&j.right),
            j.join_type,
        ) {
            (Some(_), Some(_), _) => {
                return Err(PlanError::Unsupported(
                    "a join of two lookup tables in a materialized view".into(),
                ))
            }
            (Some((t, c)), None, JoinType::Inner | JoinType::Right) => {
                let outer = j.join_type == JoinType::Right;
                return self.lookup_join(j, t, c, true, outer);
            }
            (None, Some((t, c)), JoinType::Inner | JoinType::Left) => {
                let outer = j.join_type == JoinType::Left;
                return self.lookup_join(j, t, c, false, outer);
            }
            _ => {}
        }
        let outer = match j.join_type {
            JoinType::Inner => [false, false],
            JoinType::Left => [true, false],
            JoinType::Right => [false, true],
            JoinType::Full => [true, true],
            JoinType::LeftSemi | JoinType::RightSemi => {
                return Err(PlanError::Unsupported(
                    "an IN or EXISTS subquery (a semi-join) in a materialized view".into(),
                ))
            }
            other => {
                return Err(PlanError::Unsupported(format!(
                    "{} (an anti-join or mark join) in a materialized view; INNER, LEFT, RIGHT and FULL joins are supported",
                    other.to_string().to_uppercase()
                )))
            }
        };
        if j.on.is_empty() {
            return Err(PlanError::Unsupported(
                "a join without an equality between columns of its two sides (a cross join) in a materialized view".into(),
            ));
        }
        if j.null_equality == NullEquality::NullEqualsNull {
            return Err(PlanError::Unsupported(
                "IS NOT DISTINCT FROM as a join condition in a materialized view".into(),
            ));
        }
        let left = self.convert(&j.left)?;
        let right = self.convert(&j.right)?;
        let (mut left_keys, mut right_keys) = (Vec::new(), Vec::new());
        for (l, r) in &j.on {
            let lt = l.get_type(left.schema().as_ref())?;
            let rt = r.get_type(right.schema().as_ref())?;
            if lt == rt {
                left_keys.push(l.clone());
                right_keys.push(r.clone());
                continue;
            }
            // Both sides' keys are encoded alike, to meet in the same key group.
            let common = comparison_coercion(&lt, &rt).ok_or_else(|| {
                PlanError::Invalid(format!("cannot compare {lt} with {rt} in a join condition"))
            })?;
            left_keys.push(l.clone().cast_to(&common, left.schema().as_ref())?);
            right_keys.push(r.clone().cast_to(&common, right.schema().as_ref())?);
        }
        let (lp, rp) = (left.props(), right.props());
        let width = left.schema().fields().len();
        // A pair of rows is unique by the two sides' keys together.
        let key = match lp.key.is_empty() || rp.key.is_empty() {
            true => Vec::new(),
            false => lp
                .key
                .iter()
                .copied()
                .chain(rp.key.iter().map(|k| k + width))
                .collect(),
        };
        // Equal window bounds (Flink's window join, Nexmark q5 and q8) bound
        // the times as well as the condition's comparisons do.
        let conditions =
            j.on.iter()
                .map(|(l, r)| l.clone().eq(r.clone()))
                .chain(j.filter.clone());
        // An outer join keeps every row (a row's NULL-padded twin is taken
        // back when it meets one, however late).
        let interval = conjunction(conditions)
            .filter(|_| outer == [false, false])
            .and_then(|c| join_interval(&c, &j.schema, width, lp, rp));
        // A stored row may match long after the watermark passed its time:
        // a regular join's output has no event time (as in Flink). An
        // interval join's two time columns keep theirs, the join holding its
        // output watermark back as far as a pair's times can trail it.
        let mut time = vec![TimeProp::None; j.schema.fields().len()];
        if let Some(i) = interval.filter(|i| i.hold().is_some()) {
            time[i.left_time] = lp.time[i.left_time];
            time[width + i.right_time] = rp.time[i.right_time];
        }
        let props = Props {
            // A NULL-padded row is taken back when its row meets one.
            append_only: lp.append_only && rp.append_only && outer == [false, false],
            // Padded rows have NULLs where the other side's key would be.
            key: if outer == [false, false] {
                key
            } else {
                Vec::new()
            },
            time,
        };
        Ok(StreamNode::Join {
            left: Box::new(left),
            right: Box::new(right),
            left_keys,
            right_keys,
            filter: j.filter.clone(),
            outer,
            interval,
            schema: j.schema.clone(),
            props,
        })
    }

    fn project(
        &mut self,
        input: StreamNode,
        exprs: Vec<Expr>,
        schema: Arc<DFSchema>,
    ) -> Result<StreamNode, PlanError> {
        let in_schema = input.schema().clone();
        let in_props = input.props().clone();
        let time: Vec<TimeProp> = exprs
            .iter()
            .map(|e| time_prop(strip_alias(e), &in_schema, &in_props))
            .collect();
        // The key survives if every key column is projected as is.
        let key: Option<Vec<usize>> = in_props
            .key
            .iter()
            .map(|&k| {
                let col = Column::from(in_schema.qualified_field(k));
                exprs
                    .iter()
                    .position(|e| matches!(strip_alias(e), Expr::Column(c) if *c == col))
            })
            .collect();
        let props = Props {
            append_only: in_props.append_only,
            key: key.unwrap_or_default(),
            time,
        };
        Ok(StreamNode::Project {
            input: Box::new(input),
            exprs,
            schema,
            props,
        })
    }

    fn aggregate(
        &mut self,
        input: StreamNode,
        group: &[Expr],
        aggr: &[Expr],
        schema: Arc<DFSchema>,
        origin: Option<&WindowOrigin>,
    ) -> Result<StreamNode, PlanError> {
        let in_schema = input.schema().clone();
        let in_props = input.props().clone();
        let mut calls = Vec::with_capacity(aggr.len());
        for (i, e) in aggr.iter().enumerate() {
            let Expr::AggregateFunction(AggregateFunction { func, params }) = strip_alias(e) else {
                return Err(PlanError::Unsupported(format!("aggregate expression {e}")));
            };
            let kind = agg_kind(func.name())?;
            if !params.order_by.is_empty() {
                return Err(PlanError::Unsupported(format!(
                    "ORDER BY inside {}()",
                    func.name()
                )));
            }
            if params.args.len() > 1 {
                return Err(PlanError::Unsupported(format!(
                    "{}() with several arguments",
                    func.name()
                )));
            }
            calls.push(AggCall {
                kind,
                args: params.args.clone(),
                distinct: params.distinct,
                filter: params.filter.as_deref().cloned(),
                output_type: schema.field(group.len() + i).data_type().clone(),
            });
        }
        let mut window = None;
        let mut time = vec![TimeProp::None; group.len() + aggr.len()];
        for (i, g) in group.iter().enumerate() {
            let prop = match strip_alias(g) {
                Expr::Column(c) => column_index(&in_schema, c)
                    .map(|j| in_props.time[j])
                    .unwrap_or(TimeProp::None),
                Expr::GroupingSet(_) => {
                    return Err(PlanError::Unsupported(
                        "GROUPING SETS, CUBE and ROLLUP".into(),
                    ))
                }
                _ => TimeProp::None,
            };
            time[i] = prop;
            // A window's end closes it no later than its start does (a
            // cumulating window ends before its start + size): preferred.
            let is_end = matches!(prop, TimeProp::WindowEnd(_) | TimeProp::ProcWindowEnd(_));
            let chosen_end = window.is_some_and(|w: WindowClose| {
                matches!(
                    time[w.key_index],
                    TimeProp::WindowEnd(_) | TimeProp::ProcWindowEnd(_)
                )
            });
            if window.is_none() || (is_end && !chosen_end) {
                if let Some(offset) = prop.close_offset() {
                    window = Some(WindowClose {
                        key_index: i,
                        offset,
                        processing_time: matches!(
                            prop,
                            TimeProp::ProcWindowStart(_) | TimeProp::ProcWindowEnd(_)
                        ),
                    });
                }
            }
        }
        let partition_window = match origin {
            Some(o) => partition_window(o, group, &calls, &in_schema)?,
            None => None,
        };
        if partition_window.is_some() {
            window = None;
            time = vec![TimeProp::None; group.len() + aggr.len()];
        }
        let emit = self.emit_on_window_close && (window.is_some() || partition_window.is_some());
        if emit {
            self.used_emit = true;
        }
        let props = Props {
            append_only: emit,
            key: (0..group.len()).collect(),
            time,
        };
        Ok(StreamNode::Aggregate {
            input: Box::new(input),
            group: group.to_vec(),
            aggs: calls,
            window,
            partition_window,
            emit_on_window_close: emit,
            schema,
            props,
        })
    }
}

/// `column <= N` and its spellings: the column and the limit.
fn rank_limit(e: &Expr) -> Option<(Column, usize)> {
    let Expr::BinaryExpr(b) = e else {
        return None;
    };
    let value = |e: &Expr| match strip_cast(e) {
        Expr::Literal(v, _) => v.cast_to(&DataType::Int64).ok().and_then(|v| match v {
            ScalarValue::Int64(Some(n)) => Some(n),
            _ => None,
        }),
        _ => None,
    };
    let column = |e: &Expr| match strip_cast(e) {
        Expr::Column(c) => Some(c.clone()),
        _ => None,
    };
    let (c, op, n) = match (column(&b.left), value(&b.right)) {
        (Some(c), Some(n)) => (c, b.op, n),
        _ => (column(&b.right)?, b.op.swap()?, value(&b.left)?),
    };
    let limit = match op {
        Operator::LtEq => n,
        Operator::Lt => n - 1,
        Operator::Eq if n == 1 => 1,
        _ => return None,
    };
    (limit >= 1).then_some((c, limit as usize))
}

fn strip_cast(e: &Expr) -> &Expr {
    match e {
        Expr::Cast(c) => strip_cast(&c.expr),
        Expr::TryCast(c) => strip_cast(&c.expr),
        Expr::Alias(a) => strip_cast(&a.expr),
        other => other,
    }
}

/// The window node computing `column` as `ROW_NUMBER()` below `plan`,
/// through projections, aliases and filters that keep it as it is.
fn row_number_origin(plan: &LogicalPlan, column: &Column) -> Option<*const LogicalPlan> {
    let i = plan.schema().index_of_column(column).ok()?;
    match plan {
        LogicalPlan::Projection(p) => match strip_alias(&p.expr[i]) {
            Expr::Column(c) => row_number_origin(&p.input, c),
            _ => None,
        },
        LogicalPlan::SubqueryAlias(a) => {
            let c = Column::from(a.input.schema().qualified_field(i));
            row_number_origin(&a.input, &c)
        }
        LogicalPlan::Filter(f) => row_number_origin(&f.input, column),
        LogicalPlan::Window(w) => {
            let width = w.input.schema().fields().len();
            let is_row_number = matches!(
                w.window_expr.as_slice(),
                [Expr::WindowFunction(f)] if f.fun.name().eq_ignore_ascii_case("row_number")
            );
            (i == width && is_row_number).then_some(plan as *const LogicalPlan)
        }
        _ => None,
    }
}

/// The event-time role of a projected expression.
fn time_prop(e: &Expr, schema: &DFSchema, props: &Props) -> TimeProp {
    match e {
        Expr::Column(c) => column_index(schema, c)
            .map(|i| props.time[i])
            .unwrap_or(TimeProp::None),
        // A window's start plus its size: the window's end.
        Expr::ScalarFunction(f) if f.args.len() == 2 && f.func.name() == HOP_END => {
            match (
                time_prop(strip_alias(&f.args[0]), schema, props),
                literal_nanos(&f.args[1]),
            ) {
                (TimeProp::WindowStart(size), Some(n)) if n == size => TimeProp::WindowEnd(size),
                (TimeProp::ProcWindowStart(size), Some(n)) if n == size => {
                    TimeProp::ProcWindowEnd(size)
                }
                _ => TimeProp::None,
            }
        }
        Expr::ScalarFunction(f) if f.args.is_empty() && f.func.name() == PROCTIME => {
            TimeProp::ProcTime
        }
        Expr::ScalarFunction(f) if f.args.len() == 2 => {
            let name = f.func.name();
            let on = time_prop(strip_alias(&f.args[0]), schema, props);
            let size = match strip_alias(&f.args[1]) {
                Expr::Literal(v, _) => interval_nanos(v),
                _ => None,
            };
            match (name, on, size) {
                (TUMBLE_START, TimeProp::EventTime, Some(s)) => TimeProp::WindowStart(s),
                (TUMBLE_END, TimeProp::EventTime, Some(s)) => TimeProp::WindowEnd(s),
                (TUMBLE_START, TimeProp::ProcTime, Some(s)) => TimeProp::ProcWindowStart(s),
                (TUMBLE_END, TimeProp::ProcTime, Some(s)) => TimeProp::ProcWindowEnd(s),
                _ => TimeProp::None,
            }
        }
        Expr::ScalarFunction(f)
            if f.args.len() == 3 && [HOP_WINDOWS, CUMULATE_ENDS].contains(&f.func.name()) =>
        {
            let on = time_prop(strip_alias(&f.args[0]), schema, props);
            let hop = f.func.name() == HOP_WINDOWS;
            match (on, literal_nanos(&f.args[2])) {
                (TimeProp::EventTime, Some(size)) if hop => TimeProp::HopStarts(size),
                (TimeProp::EventTime, Some(size)) => TimeProp::CumulateEnds(size),
                (TimeProp::ProcTime, Some(size)) if hop => TimeProp::ProcHopStarts(size),
                (TimeProp::ProcTime, Some(size)) => TimeProp::ProcCumulateEnds(size),
                _ => TimeProp::None,
            }
        }
        Expr::Cast(c) => match time_prop(strip_alias(&c.expr), schema, props) {
            // Casting between timestamp units keeps the instant.
            p if matches!(
                c.field.data_type(),
                datafusion::arrow::datatypes::DataType::Timestamp(_, _)
            ) =>
            {
                p
            }
            _ => TimeProp::None,
        },
        _ => TimeProp::None,
    }
}

/// A constant interval's length in nanoseconds.
fn literal_nanos(e: &Expr) -> Option<i64> {
    match strip_alias(e) {
        Expr::Literal(v, _) => interval_nanos(v),
        _ => None,
    }
}

fn describe(plan: &LogicalPlan) -> String {
    match plan {
        LogicalPlan::Sort(_) => "ORDER BY".into(),
        LogicalPlan::Limit(_) => "LIMIT".into(),
        LogicalPlan::Union(_) => "UNION".into(),
        LogicalPlan::Values(_) | LogicalPlan::EmptyRelation(_) => {
            "a query without a stream in FROM".into()
        }
        other => format!(
            "the {} operator",
            other.display().to_string().split(':').next().unwrap_or("?")
        ),
    }
}
