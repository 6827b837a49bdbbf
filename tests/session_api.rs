//! The session API without the wire protocol: a TUMBLE view over a CSV
//! with late rows, checked against rows worked out by hand.

use datafusion::arrow::util::pretty::pretty_format_batches;
use weir::session::{Database, StatementResult};
use weir::Config;

fn rows(r: &StatementResult) -> String {
    match r {
        StatementResult::Rows { batches, .. } => {
            pretty_format_batches(batches).unwrap().to_string()
        }
        StatementResult::Command { tag, .. } => tag.clone(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tumble_view_over_csv() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("bids.csv");
    // ts seconds: 1, 3, 12, 2 (late: wm = 12-5 = 7), 8 (on time: 8 >= 7), 25, 14 (late: wm 20)
    std::fs::write(
        &csv,
        "1,10,2024-01-01 00:00:01\n1,20,2024-01-01 00:00:03\n2,5,2024-01-01 00:00:12\n\
         1,99,2024-01-01 00:00:02\n2,7,2024-01-01 00:00:08\n1,1,2024-01-01 00:00:25\n2,3,2024-01-01 00:00:14\n",
    )
    .unwrap();
    let config = Config {
        data_dir: dir.path().join("data"),
        ..Config::default()
    };
    let db = Database::open(config).await.unwrap();
    let mut s = db.session();
    let script = format!(
        "CREATE STREAM bids (auction BIGINT, price BIGINT, ts TIMESTAMP(3), \
           WATERMARK FOR ts AS ts - INTERVAL '5' SECOND) \
         WITH (connector = 'file', path = '{}', format = 'csv');
         CREATE MATERIALIZED VIEW m AS SELECT auction, window_start, window_end, COUNT(*) AS n, MAX(price) AS top \
           FROM TUMBLE(bids, ts, INTERVAL '10' SECOND) GROUP BY auction, window_start, window_end;
         FLUSH;
         SELECT * FROM m ORDER BY auction, window_start;
         SELECT auction, window_start, window_end, COUNT(*) AS n, MAX(price) AS top \
           FROM TUMBLE(bids, ts, INTERVAL '10' SECOND) GROUP BY auction, window_start, window_end ORDER BY auction, window_start;
         SHOW STREAMS;
         EXPLAIN SELECT auction, COUNT(*) FROM TUMBLE(bids, ts, INTERVAL '10' SECOND) GROUP BY auction, window_start",
        csv.display()
    );
    let results = s.execute(&script).await;
    for r in &results {
        match r {
            Ok(r) => println!("{}", rows(r)),
            Err(e) => println!("ERROR {e} {:?}", e.category()),
        }
    }
    let expected = "\
+---------+---------------------+---------------------+---+-----+
| auction | window_start        | window_end          | n | top |
+---------+---------------------+---------------------+---+-----+
| 1       | 2024-01-01T00:00:00 | 2024-01-01T00:00:10 | 2 | 20  |
| 1       | 2024-01-01T00:00:20 | 2024-01-01T00:00:30 | 1 | 1   |
| 2       | 2024-01-01T00:00:00 | 2024-01-01T00:00:10 | 1 | 7   |
| 2       | 2024-01-01T00:00:10 | 2024-01-01T00:00:20 | 1 | 5   |
+---------+---------------------+---------------------+---+-----+";
    assert_eq!(rows(results[3].as_ref().unwrap()), expected);
    assert_eq!(rows(results[4].as_ref().unwrap()), expected);
    db.shutdown().await;
}

#[tokio::test]
async fn show_jobs_tells_parallelism_and_checkpoint_mode() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        data_dir: dir.path().join("data"),
        ..Config::default()
    };
    let db = Database::open(config).await.unwrap();
    let mut s = db.session();
    let results = s
        .execute(
            "CREATE STREAM g (id BIGINT) WITH (connector = 'datagen', rows = '10', \
               fields.id.kind = 'sequence', fields.id.start = '1', fields.id.end = '10');
             CREATE MATERIALIZED VIEW a WITH (parallelism = 3, checkpoint_mode = 'at_least_once') AS \
               SELECT id % 2 AS k, COUNT(*) AS n FROM g GROUP BY id % 2;
             SET parallelism = 1;
             CREATE MATERIALIZED VIEW b AS SELECT id FROM g;
             SHOW JOBS",
        )
        .await;
    let table = rows(results.last().unwrap().as_ref().unwrap());
    let line = |name: &str| {
        table
            .lines()
            .find(|l| l.starts_with(&format!("| {name} ")))
            .unwrap_or_else(|| panic!("no job {name} in\n{table}"))
            .to_string()
    };
    assert!(
        line("a").contains("| 3           | at_least_once"),
        "{table}"
    );
    assert!(
        line("b").contains("| 1           | exactly_once"),
        "{table}"
    );
    db.shutdown().await;
}
