//! SHOW, EXPLAIN and the metrics text: what the catalog and jobs look like now.

use std::fmt::Write;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, BooleanArray, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray,
};
use datafusion::arrow::datatypes::{Field, Schema};
use datafusion::sql::sqlparser::ast::Statement;

use super::{Database, Session, SessionError, StatementResult};
use crate::catalog::Object;
use crate::planner;
use crate::runtime::JobStatus;
use crate::sql::{ShowKind, SinkInput, WeirStatement};

fn text(v: Vec<String>) -> ArrayRef {
    Arc::new(StringArray::from(v))
}

fn opt_text(v: Vec<Option<String>>) -> ArrayRef {
    Arc::new(StringArray::from(v))
}

fn int(v: Vec<i64>) -> ArrayRef {
    Arc::new(Int64Array::from(v))
}

fn result(cols: Vec<(&str, ArrayRef)>) -> Result<StatementResult, SessionError> {
    let schema = Arc::new(Schema::new(
        cols.iter()
            .map(|(n, a)| Field::new(*n, a.data_type().clone(), true))
            .collect::<Vec<_>>(),
    ));
    let batch = RecordBatch::try_new(schema.clone(), cols.into_iter().map(|(_, a)| a).collect())?;
    Ok(StatementResult::Rows {
        schema,
        batches: vec![batch],
    })
}

/// A watermark as a timestamp in milliseconds, NULL before the first row.
fn watermark_ms(ns: i64) -> Option<i64> {
    (ns != i64::MIN).then(|| ns.div_euclid(1_000_000))
}

pub fn show(s: &Session, kind: &ShowKind) -> Result<StatementResult, SessionError> {
    let objects = s.db.catalog.list();
    let streams = objects.iter().filter_map(|o| match o {
        Object::Stream(e) => Some(e.clone()),
        _ => None,
    });
    let views = objects.iter().filter_map(|o| match o {
        Object::View(v) => Some(v.clone()),
        _ => None,
    });
    match kind {
        ShowKind::Streams => {
            let s: Vec<_> = streams.collect();
            result(vec![
                ("name", text(s.iter().map(|e| e.name.clone()).collect())),
                (
                    "connector",
                    text(
                        s.iter()
                            .map(|e| e.options.connector().unwrap_or_default())
                            .collect(),
                    ),
                ),
                (
                    "bounded",
                    Arc::new(BooleanArray::from(
                        s.iter().map(|e| e.bounded).collect::<Vec<_>>(),
                    )),
                ),
                (
                    "watermark",
                    opt_text(s.iter().map(|e| e.watermark_text.clone()).collect()),
                ),
                (
                    "rows",
                    int(s
                        .iter()
                        .map(|e| e.metrics.rows.load(Ordering::Relaxed) as i64)
                        .collect()),
                ),
                (
                    "late_rows",
                    int(s
                        .iter()
                        .map(|e| e.metrics.late.load(Ordering::Relaxed) as i64)
                        .collect()),
                ),
                (
                    "malformed_rows",
                    int(s
                        .iter()
                        .map(|e| e.metrics.malformed.load(Ordering::Relaxed) as i64)
                        .collect()),
                ),
                (
                    "current_watermark",
                    Arc::new(TimestampMillisecondArray::from(
                        s.iter()
                            .map(|e| watermark_ms(e.metrics.watermark.load(Ordering::Relaxed)))
                            .collect::<Vec<_>>(),
                    )),
                ),
            ])
        }
        ShowKind::Watermarks => {
            let s: Vec<_> = streams.filter(|e| e.event_time.is_some()).collect();
            result(vec![
                ("stream", text(s.iter().map(|e| e.name.clone()).collect())),
                (
                    "column",
                    text(
                        s.iter()
                            .map(|e| {
                                e.schema
                                    .field(e.event_time.map_or(0, |t| t.column))
                                    .name()
                                    .clone()
                            })
                            .collect(),
                    ),
                ),
                (
                    "delay_ms",
                    int(s
                        .iter()
                        .map(|e| e.event_time.map_or(0, |t| t.delay / 1_000_000))
                        .collect()),
                ),
                (
                    "watermark",
                    Arc::new(TimestampMillisecondArray::from(
                        s.iter()
                            .map(|e| watermark_ms(e.metrics.watermark.load(Ordering::Relaxed)))
                            .collect::<Vec<_>>(),
                    )),
                ),
                (
                    "late_rows",
                    int(s
                        .iter()
                        .map(|e| e.metrics.late.load(Ordering::Relaxed) as i64)
                        .collect()),
                ),
            ])
        }
        ShowKind::Tables => {
            let t: Vec<_> = objects
                .iter()
                .filter_map(|o| match o {
                    Object::Table(t) => Some(t.clone()),
                    _ => None,
                })
                .collect();
            result(vec![
                ("name", text(t.iter().map(|e| e.name.clone()).collect())),
                (
                    "primary_key",
                    text(
                        t.iter()
                            .map(|e| {
                                e.primary_key
                                    .iter()
                                    .map(|&i| e.schema.field(i).name().clone())
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            })
                            .collect(),
                    ),
                ),
            ])
        }
        ShowKind::Views => {
            let v: Vec<_> = objects
                .iter()
                .filter_map(|o| match o {
                    Object::LogicalView(v) => Some(v.clone()),
                    _ => None,
                })
                .collect();
            result(vec![
                ("name", text(v.iter().map(|e| e.name.clone()).collect())),
                (
                    "depends_on",
                    text(v.iter().map(|e| e.depends_on.join(", ")).collect()),
                ),
            ])
        }
        ShowKind::MaterializedViews => {
            let v: Vec<_> = views.collect();
            result(vec![
                ("name", text(v.iter().map(|e| e.name.clone()).collect())),
                (
                    "rows",
                    int(v.iter().map(|e| e.store.len() as i64).collect()),
                ),
                (
                    "kind",
                    text(
                        v.iter()
                            .map(|e| {
                                if e.plan.append_only() {
                                    "append-only"
                                } else {
                                    "updating"
                                }
                                .to_string()
                            })
                            .collect(),
                    ),
                ),
                (
                    "depends_on",
                    text(v.iter().map(|e| e.depends_on.join(", ")).collect()),
                ),
            ])
        }
        ShowKind::Jobs => {
            let v = s.db.catalog.jobs();
            let status: Vec<JobStatus> = v.iter().map(|e| e.1.status()).collect();
            let chk: Vec<_> = v.iter().map(|e| e.1.last_checkpoint()).collect();
            result(vec![
                ("job", text(v.iter().map(|e| e.0.clone()).collect())),
                (
                    "status",
                    text(status.iter().map(|s| s.name().to_string()).collect()),
                ),
                (
                    "operators",
                    text(v.iter().map(|e| e.1.operators.join(" -> ")).collect()),
                ),
                (
                    "parallelism",
                    Arc::new(Int64Array::from(
                        v.iter().map(|e| e.1.parallelism as i64).collect::<Vec<_>>(),
                    )),
                ),
                (
                    "checkpoint_mode",
                    text(v.iter().map(|e| e.1.guarantee.name().to_string()).collect()),
                ),
                (
                    "emit_interval_ms",
                    Arc::new(Int64Array::from(
                        v.iter()
                            .map(|e| e.1.emit_interval.as_millis() as i64)
                            .collect::<Vec<_>>(),
                    )),
                ),
                (
                    "last_epoch",
                    Arc::new(Int64Array::from(
                        chk.iter()
                            .map(|c| c.as_ref().map(|c| c.epoch as i64))
                            .collect::<Vec<_>>(),
                    )),
                ),
                (
                    "checkpoint_time",
                    Arc::new(TimestampMillisecondArray::from(
                        chk.iter()
                            .map(|c| c.as_ref().map(|c| c.committed_at_ms))
                            .collect::<Vec<_>>(),
                    )),
                ),
                (
                    "checkpoint_ms",
                    Arc::new(Int64Array::from(
                        chk.iter()
                            .map(|c| c.as_ref().map(|c| c.duration_ms as i64))
                            .collect::<Vec<_>>(),
                    )),
                ),
                (
                    "checkpoint_bytes",
                    Arc::new(Int64Array::from(
                        chk.iter()
                            .map(|c| c.as_ref().map(|c| c.bytes as i64))
                            .collect::<Vec<_>>(),
                    )),
                ),
                (
                    "error",
                    opt_text(
                        status
                            .iter()
                            .map(|s| match s {
                                JobStatus::Failed(m) => Some(m.clone()),
                                _ => None,
                            })
                            .collect(),
                    ),
                ),
            ])
        }
        ShowKind::Sinks => {
            let k: Vec<_> = objects
                .iter()
                .filter_map(|o| match o {
                    Object::Sink(k) => Some(k.clone()),
                    _ => None,
                })
                .collect();
            result(vec![
                ("name", text(k.iter().map(|e| e.name.clone()).collect())),
                (
                    "from",
                    text(
                        k.iter()
                            .map(|e| {
                                let into = e.into.as_deref();
                                let read = e.depends_on.iter().filter(|d| Some(d.as_str()) != into);
                                read.cloned().collect::<Vec<_>>().join(", ")
                            })
                            .collect(),
                    ),
                ),
                ("into", opt_text(k.iter().map(|e| e.into.clone()).collect())),
                (
                    "path",
                    opt_text(
                        k.iter()
                            .map(|e| e.path.as_ref().map(|p| p.display().to_string()))
                            .collect(),
                    ),
                ),
            ])
        }
        ShowKind::Variable(name) => {
            let value = s
                .var(name)
                .map(str::to_string)
                .or_else(|| match name.as_str() {
                    "parallelism" => Some(s.db.config.parallelism.to_string()),
                    _ => default_var(name),
                })
                .ok_or_else(|| {
                    SessionError::Catalog(crate::catalog::CatalogError::NotFound {
                        kind: "object",
                        name: format!("configuration parameter {name}"),
                    })
                })?;
            result(vec![(name.as_str(), text(vec![value]))])
        }
    }
}

fn default_var(name: &str) -> Option<String> {
    Some(match name {
        "checkpoint_mode" => "exactly_once".to_string(),
        "emit_interval_ms" => crate::runtime::EMIT_INTERVAL.as_millis().to_string(),
        "server_version" => "15.0 (weir)".to_string(),
        "client_encoding" | "server_encoding" => "UTF8".to_string(),
        "datestyle" => "ISO, MDY".to_string(),
        "timezone" => "UTC".to_string(),
        "transaction_isolation" => "read committed".to_string(),
        "standard_conforming_strings" => "on".to_string(),
        _ => return None,
    })
}

/// EXPLAIN: the stream plan of a view (or of a query over streams); the
/// DataFusion plan of a batch query.
pub async fn explain(s: &Session, inner: WeirStatement) -> Result<StatementResult, SessionError> {
    // An INSERT INTO's job ends in its sink, not in a view.
    let mut into = None;
    let (logical, eowc, config) = match s.insert_as_sink(inner)? {
        WeirStatement::CreateMaterializedView(mv) => {
            let config = super::ddl::job_config(s, &mv.options)?;
            let logical = s.plan(Statement::Query(mv.query)).await?;
            (logical, mv.emit_on_window_close, config)
        }
        WeirStatement::CreateSink(k) => match k.input {
            SinkInput::Insert(insert) => {
                if let Statement::Insert(i) = insert.as_ref() {
                    into = Some(i.table.to_string());
                }
                let logical = super::insert::insert_query(s, &insert).await?;
                (logical, false, super::ddl::job_config(s, &[])?)
            }
            SinkInput::View(_) => {
                return Err(SessionError::NotSupported(
                    "EXPLAIN of a sink of a view".into(),
                ))
            }
        },
        WeirStatement::Sql(q) if matches!(*q, Statement::Query(_)) => {
            (s.plan(*q).await?, false, super::ddl::job_config(s, &[])?)
        }
        WeirStatement::Sql(q) => {
            let plan = s.plan(*q).await?;
            return lines(plan.display_indent().to_string());
        }
        _ => {
            return Err(SessionError::NotSupported(
                "EXPLAIN of this statement".into(),
            ))
        }
    };
    let plan = match into {
        Some(_) => super::insert::insert_plan(&s.db.catalog, &logical),
        None => planner::to_stream_plan(&logical, &s.db.catalog, eowc),
    };
    match plan {
        Ok(plan) => lines(plan.explain(config.parallelism, into.as_deref())),
        Err(planner::PlanError::Unsupported(_)) if !eowc => {
            lines(format!("Batch plan:\n{}", logical.display_indent()))
        }
        Err(e) => Err(e.into()),
    }
}

fn lines(s: String) -> Result<StatementResult, SessionError> {
    result(vec![(
        "QUERY PLAN",
        text(s.lines().map(str::to_string).collect()),
    )])
}

/// Prometheus text: per-stream counters and watermarks, per-view rows, job states.
pub fn metrics_text(db: &Database) -> String {
    let mut out = String::new();
    let objects = db.catalog.list();
    let _ = writeln!(out, "# TYPE weir_uptime_seconds gauge");
    let _ = writeln!(
        out,
        "weir_uptime_seconds {}",
        db.started.elapsed().as_secs_f64()
    );
    for (metric, help) in [
        (
            "weir_source_rows_total",
            "rows accepted from a stream's source",
        ),
        (
            "weir_source_late_rows_total",
            "rows behind the watermark, dropped",
        ),
        (
            "weir_source_malformed_rows_total",
            "rows that could not be parsed, skipped",
        ),
        ("weir_stream_watermark_seconds", "current watermark"),
    ] {
        let _ = writeln!(out, "# HELP {metric} {help}");
        let kind = if metric.ends_with("_total") {
            "counter"
        } else {
            "gauge"
        };
        let _ = writeln!(out, "# TYPE {metric} {kind}");
        for o in &objects {
            if let Object::Stream(e) = o {
                let m = &e.metrics;
                let v = match metric {
                    "weir_source_rows_total" => m.rows.load(Ordering::Relaxed) as f64,
                    "weir_source_late_rows_total" => m.late.load(Ordering::Relaxed) as f64,
                    "weir_source_malformed_rows_total" => {
                        m.malformed.load(Ordering::Relaxed) as f64
                    }
                    _ => match m.watermark.load(Ordering::Relaxed) {
                        i64::MIN => continue,
                        ns => ns as f64 / 1e9,
                    },
                };
                let _ = writeln!(out, "{metric}{{stream=\"{}\"}} {v}", e.name);
            }
        }
    }
    let _ = writeln!(out, "# TYPE weir_view_rows gauge");
    for o in &objects {
        if let Object::View(v) = o {
            let _ = writeln!(
                out,
                "weir_view_rows{{view=\"{}\"}} {}",
                v.name,
                v.store.len()
            );
        }
    }
    let _ = writeln!(out, "# TYPE weir_job_running gauge");
    let jobs = db.catalog.jobs();
    for (name, job) in &jobs {
        let running = matches!(job.status(), JobStatus::Running | JobStatus::Finished) as i32;
        let _ = writeln!(out, "weir_job_running{{job=\"{name}\"}} {running}");
    }
    let work: Vec<_> = jobs
        .iter()
        .map(|(name, job)| (name, job.checkpoint_seconds()))
        .collect();
    for (metric, help, values) in [
        (
            "weir_checkpoint_snapshot_cpu_seconds_total",
            "CPU time the job's tasks spent writing operator state at checkpoint barriers, summed over subtasks",
            work.iter().map(|(n, t)| (n, t.0)).collect::<Vec<_>>(),
        ),
        (
            "weir_checkpoint_commit_cpu_seconds_total",
            "CPU time spent committing the job's checkpoints, off its tasks (the view's changes, the state file)",
            work.iter().map(|(n, t)| (n, t.1)).collect(),
        ),
    ] {
        let _ = writeln!(out, "# HELP {metric} {help}");
        let _ = writeln!(out, "# TYPE {metric} counter");
        for (name, v) in values {
            let _ = writeln!(out, "{metric}{{job=\"{name}\"}} {v}");
        }
    }
    let b = &db.budget;
    for (metric, kind, help, value) in [
        (
            "weir_state_memory_bytes",
            "gauge",
            "keyed operator state held in memory (estimated)",
            b.used() as f64,
        ),
        (
            "weir_state_memory_limit_bytes",
            "gauge",
            "the budget for it (--state-memory-mb); absent when unlimited",
            b.limit().map_or(f64::NAN, |l| l as f64),
        ),
        (
            "weir_state_evicted_keys_total",
            "counter",
            "keys whose state left memory for the store",
            b.evicted() as f64,
        ),
        (
            "weir_state_loaded_keys_total",
            "counter",
            "keys whose state was read back from the store",
            b.loaded() as f64,
        ),
    ] {
        if value.is_nan() {
            continue;
        }
        let _ = writeln!(out, "# HELP {metric} {help}");
        let _ = writeln!(out, "# TYPE {metric} {kind}");
        let _ = writeln!(out, "{metric} {value}");
    }
    out
}
