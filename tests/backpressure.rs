//! Backpressure end to end: a sink nobody reads (a FIFO whose buffer is
//! full) stalls the whole job — the bounded channels fill up to the source,
//! which stops reading — instead of queueing rows in memory; once the sink
//! is read again, the source resumes. Checkpoints are off: a checkpoint
//! cannot record a FIFO's length (a sink must be a regular file to be cut
//! back on recovery), and the test is about the data path.

mod common;

use std::io::Read;
use std::time::{Duration, Instant};

use common::{connect, named_rows, start_with, text_rows};

/// The job's status (SHOW JOBS, column `status`).
async fn status(c: &tokio_postgres::Client) -> String {
    named_rows(c, "SHOW JOBS", &["status"]).await[0][0].clone()
}

/// Rows the stream's source has accepted (SHOW STREAMS, column `rows`).
async fn accepted(c: &tokio_postgres::Client) -> u64 {
    named_rows(c, "SHOW STREAMS", &["rows"]).await[0][0]
        .parse()
        .unwrap()
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sink_nobody_reads_stalls_the_source() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("out.fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    // The reading end: opened (so the sink can open the FIFO), then not read
    // until told; a kernel pipe holds 64 KiB, so the sink soon blocks (the
    // view emits its changes after every batch, not held back to coalesce
    // them, so that its rows reach the sink as fast as they come).
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || {
            let mut f = std::fs::File::open(&fifo).unwrap();
            go_rx.recv().unwrap();
            let mut total = 0u64;
            let mut buf = vec![0u8; 1 << 16];
            loop {
                match f.read(&mut buf) {
                    Ok(0) | Err(_) => return total,
                    Ok(n) => total += n as u64,
                }
            }
        })
    };

    let config = weir::Config {
        checkpoint_interval: None,
        ..weir::Config::default()
    };
    let server = start_with(&dir.path().join("data"), config).await;
    let c = connect(&server).await;
    c.batch_execute(&format!(
        "CREATE STREAM g (k BIGINT, v BIGINT) WITH (connector = 'datagen', seed = '1',
           fields.k.kind = 'random', fields.k.min = '0', fields.k.max = '9',
           fields.v.kind = 'random', fields.v.min = '0', fields.v.max = '100');
         CREATE MATERIALIZED VIEW per_key WITH (emit_interval_ms = 0) AS
           SELECT k, COUNT(*) AS n, SUM(v) AS s FROM g GROUP BY k;
         CREATE SINK out FROM per_key WITH (connector = 'file', path = '{}', format = 'json');",
        fifo.display()
    ))
    .await
    .unwrap();

    // The source stops: two readings 300 ms apart agree.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = accepted(&c).await;
    let stalled_at = loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = accepted(&c).await;
        if now == last && now > 0 {
            break now;
        }
        assert!(
            Instant::now() < deadline,
            "the source never stalled ({now} rows)"
        );
        last = now;
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        accepted(&c).await,
        stalled_at,
        "still stalled a second later"
    );
    assert_eq!(status(&c).await, "running", "stalled, not failed");
    // What is held back is bounded: a few channel slots of batches per stage.
    assert!(stalled_at < 5_000_000, "{stalled_at} rows before stalling");
    // The server still answers while the job waits.
    assert_eq!(text_rows(&c, "SELECT 1").await, vec![vec!["1".to_string()]]);

    // Reading the sink again lets the source go on.
    go_tx.send(()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while accepted(&c).await < stalled_at + 100_000 {
        assert!(
            Instant::now() < deadline,
            "the source did not resume: {} rows, jobs {:?}",
            accepted(&c).await,
            text_rows(&c, "SHOW JOBS").await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(c);
    server.shutdown().await;
    assert!(reader.join().unwrap() > 0);
}
