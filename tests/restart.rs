//! The catalog survives a restart: streams, tables (with their rows) and
//! views come back, and views run again (rebuilt by replaying their sources).

mod common;

use common::{connect, http_get, metric, named_rows, start, text_rows};

const BIDS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/sql/data/bids.csv");

/// Per auction over sql/data/bids.csv (see sql/tumble/late_rows.slt): on-time
/// rows 6 for auction 1 (prices sum 225) and 4 for auction 2 (sum 185).
fn expected() -> Vec<Vec<String>> {
    vec![
        vec!["1".into(), "6".into(), "225".into()],
        vec!["2".into(), "4".into(), "185".into()],
    ]
}

/// The `bids` stream over sql/data/bids.csv, 5 s watermark delay.
fn bids_stream() -> String {
    format!(
        "CREATE STREAM bids (auction BIGINT, bidder BIGINT, price BIGINT, ts TIMESTAMP(3),
           WATERMARK FOR ts AS ts - INTERVAL '5' SECOND)
         WITH (connector = 'file', path = '{BIDS}', format = 'csv');"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_and_views_survive_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("weir-data");
    let out = dir.path().join("dear_out");
    // The on-time rows with a price of at least 30, by hand: auction 1 has
    // 30, 40, 60, 70 (4, 200), auction 2 has 50, 35, 80 (3, 165).
    let dear = vec![
        vec!["1".to_string(), "4".to_string(), "200".to_string()],
        vec!["2".to_string(), "3".to_string(), "165".to_string()],
    ];
    // The INSERT INTO job's part file, its lines sorted.
    let written = || {
        let mut lines: Vec<String> = std::fs::read_dir(&out)
            .unwrap()
            .map(|f| f.unwrap())
            .filter(|f| !f.file_name().to_string_lossy().starts_with('.'))
            .flat_map(|f| {
                let text = std::fs::read_to_string(f.path()).unwrap();
                text.lines().map(str::to_string).collect::<Vec<_>>()
            })
            .collect();
        lines.sort();
        lines
    };
    let dear_rows = ["1,30", "1,40", "1,60", "1,70", "2,35", "2,50", "2,80"];
    {
        let server = start(&data).await;
        let c = connect(&server).await;
        c.batch_execute(&format!(
            "{}
             CREATE TABLE names (auction BIGINT PRIMARY KEY, name TEXT);
             INSERT INTO names VALUES (1, 'lamp'), (2, 'vase');
             CREATE MATERIALIZED VIEW per_auction AS
               SELECT auction, COUNT(*) AS n, SUM(price) AS total FROM bids GROUP BY auction;
             CREATE VIEW dear AS SELECT auction, price FROM bids WHERE price >= 30;
             CREATE MATERIALIZED VIEW dear_per_auction AS
               SELECT auction, COUNT(*) AS n, SUM(price) AS total FROM dear GROUP BY auction;
             CREATE TABLE dear_out (auction BIGINT, price BIGINT)
               WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'csv');
             INSERT INTO dear_out SELECT * FROM dear;
             FLUSH;",
            bids_stream(),
            out.display()
        ))
        .await
        .unwrap();
        assert_eq!(
            text_rows(&c, "SELECT * FROM per_auction ORDER BY auction").await,
            expected()
        );
        assert_eq!(
            text_rows(&c, "SELECT * FROM dear_per_auction ORDER BY auction").await,
            dear
        );
        c.batch_execute("CHECKPOINT").await.unwrap();
        assert_eq!(written(), dear_rows);
        let (status, body) = http_get(&server, "/metrics").await;
        assert!(status.contains("200"), "{status}");
        assert!(
            body.contains("weir_source_rows_total{stream=\"bids\"} 13"),
            "{body}"
        );
        assert!(
            body.contains("weir_source_late_rows_total{stream=\"bids\"} 3"),
            "{body}"
        );
        // The checkpoint just forced: the view's operators wrote their
        // state, and the epoch was committed.
        for part in ["snapshot", "commit"] {
            let name = format!("weir_checkpoint_{part}_cpu_seconds_total{{job=\"per_auction\"}}");
            assert!(metric(&body, &name) > 0.0, "{name}: {body}");
        }
        drop(c);
        server.shutdown().await;
    }
    let server = start(&data).await;
    let c = connect(&server).await;
    assert!(http_get(&server, "/health").await.0.contains("200"));
    c.batch_execute("FLUSH").await.unwrap();
    assert_eq!(
        text_rows(&c, "SELECT * FROM per_auction ORDER BY auction").await,
        expected()
    );
    // The view, the view over it and the INSERT INTO job are back; the
    // job's file holds each row once.
    assert_eq!(
        text_rows(&c, "SHOW VIEWS").await,
        vec![vec!["dear".to_string(), "bids".to_string()]]
    );
    assert_eq!(
        text_rows(&c, "SELECT * FROM dear_per_auction ORDER BY auction").await,
        dear
    );
    let sinks = text_rows(&c, "SHOW SINKS").await;
    assert_eq!(sinks.len(), 1);
    assert_eq!(
        sinks[0][..3],
        ["insert_into_dear_out", "bids, dear", "dear_out"]
    );
    c.batch_execute("CHECKPOINT").await.unwrap();
    assert_eq!(written(), dear_rows);
    assert_eq!(
        text_rows(&c, "SELECT n.name, v.total FROM per_auction v JOIN names n USING (auction) ORDER BY n.name").await,
        vec![vec!["lamp".to_string(), "225".to_string()], vec!["vase".to_string(), "185".to_string()]]
    );
    let err = c
        .batch_execute("CREATE TABLE names (x INT)")
        .await
        .unwrap_err();
    assert_eq!(err.as_db_error().unwrap().code().code(), "42P07");
    // Dropped objects stay dropped.
    c.batch_execute(
        "DROP MATERIALIZED VIEW per_auction; DROP TABLE names; DROP SINK insert_into_dear_out;
         DROP MATERIALIZED VIEW dear_per_auction; DROP VIEW dear; DROP TABLE dear_out",
    )
    .await
    .unwrap();
    drop(c);
    server.shutdown().await;
    let server = start(&data).await;
    let c = connect(&server).await;
    assert_eq!(text_rows(&c, "SHOW MATERIALIZED VIEWS").await.len(), 0);
    assert_eq!(text_rows(&c, "SHOW TABLES").await.len(), 0);
    assert_eq!(text_rows(&c, "SHOW STREAMS").await.len(), 1);
    server.shutdown().await;
}

/// Reads SHOW JOBS' `parallelism`, `checkpoint_mode` and `emit_interval_ms`
/// for each job, by column name.
async fn job_settings(c: &tokio_postgres::Client) -> Vec<[String; 4]> {
    let columns = ["job", "parallelism", "checkpoint_mode", "emit_interval_ms"];
    let rows = named_rows(c, "SHOW JOBS", &columns).await;
    let mut out: Vec<_> = rows
        .into_iter()
        .map(|r| [0, 1, 2, 3].map(|i| r[i].clone()))
        .collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_settings_of_a_view_survive_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("weir-data");
    let expected = [
        ["by_set", "3", "at_least_once", "250"],
        ["by_with", "2", "exactly_once", "0"],
        ["default", "1", "exactly_once", "100"],
    ]
    .map(|row| row.map(str::to_string))
    .to_vec();
    {
        let server = start(&data).await;
        let c = connect(&server).await;
        c.batch_execute(&format!(
            "{}
             CREATE MATERIALIZED VIEW default WITH (parallelism = 1) AS SELECT auction, COUNT(*) AS n FROM bids GROUP BY auction;
             SET parallelism = 3;
             SET checkpoint_mode = 'at_least_once';
             SET emit_interval_ms = 250;
             CREATE MATERIALIZED VIEW by_set AS SELECT auction, COUNT(*) AS n FROM bids GROUP BY auction;
             CREATE MATERIALIZED VIEW by_with WITH (parallelism = 2, checkpoint_mode = 'exactly_once', emit_interval_ms = 0)
               AS SELECT auction, COUNT(*) AS n FROM bids GROUP BY auction;",
            bids_stream()
        ))
        .await
        .unwrap();
        assert_eq!(job_settings(&c).await, expected);
        drop(c);
        server.shutdown().await;
    }
    // Restarted at the default parallelism (this machine's cores), each view
    // keeps the parallelism, checkpoint mode and emission interval it was
    // created with.
    let server = start(&data).await;
    let c = connect(&server).await;
    assert_eq!(job_settings(&c).await, expected);
    c.batch_execute("FLUSH").await.unwrap();
    for view in ["default", "by_set", "by_with"] {
        assert_eq!(
            text_rows(&c, &format!("SELECT * FROM {view} ORDER BY auction")).await,
            vec![
                vec!["1".to_string(), "6".to_string()],
                vec!["2".to_string(), "4".to_string()]
            ],
            "{view}"
        );
    }
    server.shutdown().await;
}
