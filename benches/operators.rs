//! Microbenchmarks of the hot operators, each against a baseline doing the
//! same work directly (an Arrow kernel, a hand-written hash aggregation, raw
//! RocksDB), measured in the same run: the ratio is the operator's overhead.
//!
//! `cargo bench --bench operators` (release); under `cargo test` it runs each
//! case once on little data, as a smoke test.

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::{Array, ArrayRef, Int64Array, RecordBatch};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::compute::kernels::{cmp, numeric};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::logical_expr::Operator as BinOp;
use datafusion::physical_expr::expressions::{binary, col, lit};
use datafusion::physical_expr::PhysicalExpr;
use weir::plan::{AggCall, AggKind};
use weir::runtime::chunk::Chunk;
use weir::runtime::message::{Barrier, Message};
use weir::runtime::operator::Operator;
use weir::runtime::operators::aggregate_parts::CompiledAgg;
use weir::runtime::operators::{AggregateOp, FilterOp, ProjectOp};
use weir::state::{JobState, Store};

const KEYS: i64 = 1_000;

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, false),
        Field::new("v", DataType::Int64, false),
    ]))
}

/// `batches` batches of `rows` rows: k = i % KEYS, v = i * 7 % 1000.
fn input(batches: usize, rows: usize) -> Vec<RecordBatch> {
    (0..batches)
        .map(|b| {
            let start = (b * rows) as i64;
            let k: Int64Array = (start..start + rows as i64).map(|i| i % KEYS).collect();
            let v: Int64Array = (start..start + rows as i64).map(|i| i * 7 % 1000).collect();
            RecordBatch::try_new(schema(), vec![Arc::new(k), Arc::new(v)]).unwrap()
        })
        .collect()
}

/// Best of `runs` timings of `f`.
fn time(runs: usize, mut f: impl FnMut()) -> Duration {
    (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .min()
        .unwrap()
}

fn report(name: &str, rows: usize, op: Duration, base: Duration, base_name: &str) {
    let rate = |d: Duration| rows as f64 / d.as_secs_f64() / 1e6;
    println!(
        "| {name} | {:.2} | {:.2} ({base_name}) | {:.3} |",
        rate(op),
        rate(base),
        op.as_secs_f64() / base.as_secs_f64()
    );
}

fn expr(name: &str) -> Arc<dyn PhysicalExpr> {
    col(name, &schema()).unwrap()
}

fn run(op: &mut dyn Operator, data: &[RecordBatch]) -> usize {
    let mut out = Vec::new();
    let mut n = 0;
    for b in data {
        out.clear();
        op.handle(Message::Data(Chunk::inserts(b.clone())), &mut out)
            .unwrap();
        n += out.len();
    }
    n
}

fn filter_and_project(data: &[RecordBatch], runs: usize) {
    let rows = data.iter().map(|b| b.num_rows()).sum();
    let predicate = binary(expr("v"), BinOp::Gt, lit(500i64), &schema()).unwrap();
    let op_time = time(runs, || {
        black_box(run(&mut FilterOp::new(predicate.clone()), data));
    });
    let threshold = Int64Array::new_scalar(500);
    let base = time(runs, || {
        for b in data {
            let mask = cmp::gt(b.column(1), &threshold).unwrap();
            black_box(filter_record_batch(b, &mask).unwrap());
        }
    });
    report("filter v > 500", rows, op_time, base, "Arrow gt + filter");

    let doubled = binary(expr("v"), BinOp::Multiply, lit(2i64), &schema()).unwrap();
    let out = Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, false),
        Field::new("v2", DataType::Int64, false),
    ]));
    let op_time = time(runs, || {
        black_box(run(
            &mut ProjectOp::new(vec![expr("k"), doubled.clone()], out.clone(), &[]),
            data,
        ));
    });
    let two = Int64Array::new_scalar(2);
    let base = time(runs, || {
        for b in data {
            let v2: ArrayRef = numeric::mul(b.column(1), &two).unwrap();
            black_box(RecordBatch::try_new(out.clone(), vec![b.column(0).clone(), v2]).unwrap());
        }
    });
    report("project k, v * 2", rows, op_time, base, "Arrow mul");
}

/// `SELECT k, COUNT(*), SUM(v) FROM t GROUP BY k`, updates out.
fn count_and_sum() -> AggregateOp {
    let out = Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, false),
        Field::new("n", DataType::Int64, false),
        Field::new("s", DataType::Int64, true),
    ]));
    let key_schema = Arc::new(Schema::new(vec![out.field(0).clone()]));
    let call = |kind, output_type| AggCall {
        kind,
        args: vec![],
        distinct: false,
        filter: None,
        output_type,
    };
    AggregateOp::new(
        vec![expr("k")],
        key_schema,
        vec![
            CompiledAgg::new(call(AggKind::Count, DataType::Int64), None, None),
            CompiledAgg::new(
                call(AggKind::Sum, DataType::Int64),
                Some(expr("v")),
                Some(DataType::Int64),
            ),
        ],
        out,
        None,
        false,
        false,
    )
    .unwrap()
}

fn aggregate(data: &[RecordBatch], runs: usize) {
    let rows = data.iter().map(|b| b.num_rows()).sum();
    let op_time = time(runs, || {
        black_box(run(&mut count_and_sum(), data));
    });
    // The same result by hand: a hash map of (count, sum) per key.
    let base = time(runs, || {
        let mut groups: HashMap<i64, (i64, i64)> = HashMap::new();
        for b in data {
            let k = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
            let v = b.column(1).as_any().downcast_ref::<Int64Array>().unwrap();
            for i in 0..b.num_rows() {
                let e = groups.entry(k.value(i)).or_default();
                e.0 += 1;
                e.1 += v.value(i);
            }
        }
        black_box(groups);
    });
    report(
        "GROUP BY k COUNT(*), SUM(v), 1,000 keys, updates out",
        rows,
        op_time,
        base,
        "HashMap<i64, (count, sum)>",
    );
}

/// `rows` rows of keys drawn at random (seeded by `seed`) from `keys`.
fn random_keys(keys: u64, rows: usize, seed: u64) -> Vec<RecordBatch> {
    // SplitMix64: uniform enough that `rows` draws touch about
    // 1 - (1 - 1/keys)^rows of the keys.
    let mix = |i: u64| {
        let mut z = i.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ seed;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    (0..rows as u64)
        .collect::<Vec<_>>()
        .chunks(8192)
        .map(|c| {
            let k: Int64Array = c.iter().map(|&i| (mix(i) % keys) as i64).collect();
            let v: Int64Array = c.iter().map(|&i| (mix(i + 1) % 100) as i64).collect();
            RecordBatch::try_new(schema(), vec![Arc::new(k), Arc::new(v)]).unwrap()
        })
        .collect()
}

/// A checkpoint of the aggregate's changed groups against processing the
/// rows that changed them: `keys` groups, then epochs of `keys` rows at
/// random keys (about 63% of the groups change in each). The ratio is the
/// share a checkpoint a second adds to an aggregate kept that busy.
fn aggregate_checkpoint(keys: usize, runs: usize) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(&dir.path().join("weir")).unwrap());
    let job = JobState::new(store, 1);
    let mut op = count_and_sum();
    let mut epoch = 0;
    let mut step = |op: &mut AggregateOp, data: &[RecordBatch]| {
        epoch += 1;
        let t = Instant::now();
        run(op, data);
        let mut out = Vec::new();
        op.handle(
            Message::Barrier(Barrier {
                epoch,
                checkpoint: true,
            }),
            &mut out,
        )
        .unwrap();
        let processed = t.elapsed();
        let t = Instant::now();
        let mut w = job.begin(epoch);
        op.checkpoint(&mut w.operator(0)).unwrap();
        let checkpointed = t.elapsed();
        black_box(w);
        // Groups written as they were emitted are checkpoint work done
        // while processing (see `emitted_blocks`): moved to the checkpoint.
        let early = Duration::from_nanos(op.early_checkpoint_ns());
        (processed.saturating_sub(early), checkpointed + early)
    };
    let all: Vec<i64> = (0..keys as i64).collect();
    let first: Vec<RecordBatch> = all
        .chunks(8192)
        .map(|c| {
            let k = Int64Array::from(c.to_vec());
            RecordBatch::try_new(schema(), vec![Arc::new(k.clone()), Arc::new(k)]).unwrap()
        })
        .collect();
    step(&mut op, &first);
    let (mut processed, mut checkpointed) = (Duration::MAX, Duration::MAX);
    for run in 0..runs {
        let data = random_keys(keys as u64, keys, run as u64 + 1);
        let (p, c) = step(&mut op, &data);
        processed = processed.min(p);
        checkpointed = checkpointed.min(c);
    }
    report(
        &format!("checkpoint of GROUP BY k COUNT(*), SUM(v), {keys} keys, 63% changed"),
        keys,
        checkpointed,
        processed,
        "processing the epoch's rows",
    );
}

fn state(keys: usize, runs: usize) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(&dir.path().join("weir")).unwrap());
    let job = JobState::new(store, 1);
    // About the size of one group's encoded aggregate state.
    let value = vec![7u8; 24];
    let op_time = time(runs, || {
        let mut epoch = job.begin(1);
        let mut w = epoch.operator(0);
        for i in 0..keys as u64 {
            w.put(&i.to_be_bytes(), value.clone());
        }
        job.commit(epoch, &weir::state::EpochRecord::bare(1))
            .unwrap();
    });
    let raw_dir = tempfile::tempdir().unwrap();
    let db = rocksdb::DB::open_default(raw_dir.path()).unwrap();
    let base = time(runs, || {
        let mut batch = rocksdb::WriteBatch::default();
        for i in 0..keys as u64 {
            batch.put(i.to_be_bytes(), &value);
        }
        let mut opts = rocksdb::WriteOptions::default();
        opts.set_sync(true);
        db.write_opt(batch, &opts).unwrap();
    });
    report(
        "checkpoint write (keyed state puts, one synced batch)",
        keys,
        op_time,
        base,
        "raw RocksDB WriteBatch",
    );
    let op_time = time(runs, || {
        black_box(job.operator_state(0).unwrap());
    });
    let base = time(runs, || {
        let n = db
            .iterator(rocksdb::IteratorMode::Start)
            .map(|kv| kv.unwrap().1.len())
            .sum::<usize>();
        black_box(n);
    });
    report(
        "restore read (prefix scan)",
        keys,
        op_time,
        base,
        "raw RocksDB iteration",
    );
}

fn main() {
    // `cargo bench` passes --bench; `cargo test` does not: then a smoke run.
    let full = std::env::args().any(|a| a == "--bench");
    // WEIR_BENCH_KEYS sets the checkpoint case's groups (a table that fits
    // the cache, or not).
    let keys = std::env::var("WEIR_BENCH_KEYS").map_or(1_000_000, |k| {
        k.parse().expect("WEIR_BENCH_KEYS is a number of groups")
    });
    let (batches, rows, runs, keys) = if full {
        (500, 4096, 5, keys)
    } else {
        (2, 256, 1, 1_000)
    };
    // Other arguments pick cases by a part of their name, as `cargo bench -- checkpoint`.
    let picked: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let runs_case = |name: &str| picked.is_empty() || picked.iter().any(|p| name.contains(p));
    let data = input(batches, rows);
    println!("| case | Weir M rows/s | baseline M rows/s | Weir time / baseline time |");
    println!("| --- | --- | --- | --- |");
    if runs_case("filter_and_project") {
        filter_and_project(&data, runs);
    }
    if runs_case("aggregate") {
        aggregate(&data, runs);
    }
    if runs_case("aggregate_checkpoint") {
        aggregate_checkpoint(keys, runs);
    }
    if runs_case("state") {
        state(keys, runs);
    }
}
