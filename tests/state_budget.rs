//! Keyed state larger than its memory budget: with a budget of a few hundred
//! groups, a per-key aggregate over thousands of keys moves committed groups
//! out of memory and reads them back when their keys come again, across
//! checkpoints and a restart, and its view still equals the totals worked
//! out here from the rows written.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use common::{connect, http_get, metric, start_with};
use weir::Config;

const KEYS: i64 = 3_000;

/// Pass `p` writes one row per key: value (k + p) % 7.
fn append_pass(csv: &Path, p: i64) {
    let mut text = String::new();
    for k in 0..KEYS {
        text.push_str(&format!("{k},{}\n", (k + p) % 7));
    }
    let mut f = std::fs::OpenOptions::new().append(true).open(csv).unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

/// k → (rows, sum, distinct values) after passes `0..passes`.
fn expected(passes: i64) -> PerKey {
    (0..KEYS)
        .map(|k| {
            let values: Vec<i64> = (0..passes).map(|p| (k + p) % 7).collect();
            let mut distinct = values.clone();
            distinct.sort();
            distinct.dedup();
            (k, (passes, values.iter().sum(), distinct.len() as i64))
        })
        .collect()
}

async fn view(c: &tokio_postgres::Client) -> PerKey {
    c.query("SELECT k, n, s, d FROM per_key", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2), r.get(3))))
        .collect()
}

type PerKey = BTreeMap<i64, (i64, i64, i64)>;

/// Fails naming how many keys differ and the first few, not the whole map.
fn assert_same(got: &PerKey, want: &PerKey, what: &str) {
    let wrong: Vec<_> = want
        .iter()
        .filter(|(k, v)| got.get(k) != Some(v))
        .map(|(k, v)| (*k, got.get(k).copied(), *v))
        .collect();
    assert!(
        wrong.is_empty() && got.len() == want.len(),
        "{what}: {} of {} keys differ (key, got, want), first: {:?}; {} rows",
        wrong.len(),
        want.len(),
        &wrong[..wrong.len().min(3)],
        got.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_beyond_the_memory_budget_stays_exact() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("weir-data");
    let csv = dir.path().join("in.csv");
    std::fs::File::create(&csv).unwrap();
    let config = || Config {
        // A few hundred groups' worth.
        state_memory: Some(128 * 1024),
        checkpoint_interval: Some(Duration::from_millis(20)),
        parallelism: 2,
        ..Config::default()
    };
    let server = start_with(&data, config()).await;
    let c = connect(&server).await;
    c.batch_execute(&format!(
        "CREATE STREAM s (k BIGINT, v BIGINT)
           WITH (connector = 'file', path = '{}', format = 'csv', source.monitor-interval = '10 ms');
         CREATE MATERIALIZED VIEW per_key AS
           SELECT k, COUNT(*) AS n, SUM(v) AS s, COUNT(DISTINCT v) AS d FROM s GROUP BY k;",
        csv.display()
    ))
    .await
    .unwrap();
    for p in 0..3 {
        append_pass(&csv, p);
        // Committed before the next pass, so its groups may leave memory.
        c.batch_execute("FLUSH; CHECKPOINT; CHECKPOINT")
            .await
            .unwrap();
        assert_same(
            &view(&c).await,
            &expected(p + 1),
            &format!("after pass {p}"),
        );
    }
    let (_, text) = http_get(&server, "/metrics").await;
    assert_eq!(metric(&text, "weir_state_memory_limit_bytes"), 131072.0);
    assert!(
        metric(&text, "weir_state_evicted_keys_total") > 0.0,
        "{text}"
    );
    assert!(
        metric(&text, "weir_state_loaded_keys_total") > 0.0,
        "{text}"
    );
    drop(c);
    server.shutdown().await;

    // Restored under the same budget: what does not fit stays in the store.
    let server = start_with(&data, config()).await;
    let c = connect(&server).await;
    append_pass(&csv, 3);
    c.batch_execute("FLUSH").await.unwrap();
    assert_same(&view(&c).await, &expected(4), "after a restart");
    let (_, text) = http_get(&server, "/metrics").await;
    assert!(
        metric(&text, "weir_state_loaded_keys_total") > 0.0,
        "{text}"
    );
    server.shutdown().await;
}

/// Joined pairs: (k, v, label) for each row of `s` in passes `0..passes`.
fn pairs(passes: i64) -> Vec<(i64, i64, String)> {
    let mut out: Vec<(i64, i64, String)> = (0..passes)
        .flat_map(|p| (0..KEYS).map(move |k| (k, (k + p) % 7, format!("l{k}"))))
        .collect();
    out.sort();
    out
}

/// Top-2 values per key (rank, value) after passes `0..passes`.
fn top2(passes: i64) -> Vec<(i64, i64, i64)> {
    let mut out = Vec::new();
    for k in 0..KEYS {
        let mut values: Vec<i64> = (0..passes).map(|p| (k + p) % 7).collect();
        values.sort_by(|a, b| b.cmp(a));
        for (r, v) in values.into_iter().take(2).enumerate() {
            out.push((k, r as i64 + 1, v));
        }
    }
    out
}

/// Checks the views `joined` and `top2` after passes `0..passes`.
async fn check(c: &tokio_postgres::Client, passes: i64) {
    let mut got: Vec<(i64, i64, String)> = c
        .query("SELECT k, v, label FROM joined", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    got.sort();
    assert!(
        got == pairs(passes),
        "joined after {passes} passes: {} rows",
        got.len()
    );
    let mut got: Vec<(i64, i64, i64)> = c
        .query("SELECT k, CAST(rn AS BIGINT), v FROM top2", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    got.sort();
    assert!(
        got == top2(passes),
        "top2 after {passes} passes: {} rows",
        got.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_and_top_n_state_beyond_the_memory_budget_stays_exact() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("weir-data");
    let csv = dir.path().join("in.csv");
    let labels = dir.path().join("labels.csv");
    std::fs::File::create(&csv).unwrap();
    let text: String = (0..KEYS).map(|k| format!("{k},l{k}\n")).collect();
    std::fs::write(&labels, text).unwrap();
    let config = || Config {
        state_memory: Some(128 * 1024),
        checkpoint_interval: Some(Duration::from_millis(20)),
        parallelism: 2,
        ..Config::default()
    };
    let server = start_with(&data, config()).await;
    let c = connect(&server).await;
    c.batch_execute(&format!(
        "CREATE STREAM s (k BIGINT, v BIGINT)
           WITH (connector = 'file', path = '{}', format = 'csv', source.monitor-interval = '10 ms');
         CREATE STREAM t (k BIGINT, label TEXT)
           WITH (connector = 'file', path = '{}', format = 'csv', source.monitor-interval = '10 ms');
         CREATE MATERIALIZED VIEW joined AS SELECT s.k, v, label FROM s JOIN t ON s.k = t.k;
         CREATE MATERIALIZED VIEW top2 AS SELECT k, rn, v FROM (
           SELECT k, v, ROW_NUMBER() OVER (PARTITION BY k ORDER BY v DESC) AS rn FROM s) x
           WHERE rn <= 2;",
        csv.display(),
        labels.display()
    ))
    .await
    .unwrap();
    for p in 0..3 {
        append_pass(&csv, p);
        c.batch_execute("FLUSH; CHECKPOINT; CHECKPOINT")
            .await
            .unwrap();
        check(&c, p + 1).await;
    }
    let (_, text) = http_get(&server, "/metrics").await;
    assert!(
        metric(&text, "weir_state_evicted_keys_total") > 0.0,
        "{text}"
    );
    assert!(
        metric(&text, "weir_state_loaded_keys_total") > 0.0,
        "{text}"
    );
    drop(c);
    server.shutdown().await;

    // Restored under the same budget: what does not fit stays in the store.
    let server = start_with(&data, config()).await;
    let c = connect(&server).await;
    append_pass(&csv, 3);
    c.batch_execute("FLUSH").await.unwrap();
    check(&c, 4).await;
    let (_, text) = http_get(&server, "/metrics").await;
    assert!(
        metric(&text, "weir_state_loaded_keys_total") > 0.0,
        "{text}"
    );
    server.shutdown().await;
}

/// Keys stored for `job`-relative `part` ("v/" view rows, "o/" operator
/// state) in the store of data directory `data`, over every job.
fn stored_keys(data: &Path, part: &str) -> usize {
    let store = weir::state::Store::open(&data.join("db")).unwrap();
    store
        .scan_prefix(b"j/")
        .unwrap()
        .iter()
        .filter(|(k, _)| k.get(19..19 + part.len()) == Some(part.as_bytes()))
        .count()
}

/// k → (rows × 10, sum) for the keys whose sum is not a multiple of 3,
/// after passes `0..passes` (keys leave the view and come back).
fn expected_big(passes: i64) -> PerKey {
    expected(passes)
        .into_iter()
        .filter(|(_, (_, s, _))| s % 3 != 0)
        .map(|(k, (n, s, _))| (k, (n * 10, s, 0)))
        .collect()
}

async fn big(c: &tokio_postgres::Client) -> PerKey {
    c.query("SELECT k, n10, s FROM big", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2), 0)))
        .collect()
}

/// Restarts on `data` with `config`: the view `big` holds passes
/// `0..pass`; after pass `pass` is written and flushed, `0..=pass`.
async fn restart_for_pass(data: &Path, csv: &Path, config: Config, pass: i64, what: &str) {
    let server = start_with(data, config).await;
    let c = connect(&server).await;
    assert_same(
        &big(&c).await,
        &expected_big(pass),
        &format!("rebuilt {what}"),
    );
    append_pass(csv, pass);
    c.batch_execute("FLUSH; CHECKPOINT").await.unwrap();
    assert_same(
        &big(&c).await,
        &expected_big(pass + 1),
        &format!("{what}, then a pass"),
    );
    drop(c);
    server.shutdown().await;
}

/// A view that is a per-key aggregate's output through a filter and a
/// projection is not written by checkpoints: recovery rebuilds it from the
/// aggregate's groups. Rebuilt at another parallelism, under a memory
/// budget (then its rows are written again, for reads from the store) and
/// back without one, it still equals the totals worked out here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_view_rebuilt_from_its_aggregate_stays_exact_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("weir-data");
    let csv = dir.path().join("in.csv");
    std::fs::File::create(&csv).unwrap();
    let config = |parallelism: u32, budget: Option<usize>| Config {
        state_memory: budget,
        checkpoint_interval: Some(Duration::from_millis(20)),
        parallelism,
        ..Config::default()
    };
    let server = start_with(&data, config(2, None)).await;
    let c = connect(&server).await;
    c.batch_execute(&format!(
        "CREATE STREAM s (k BIGINT, v BIGINT)
           WITH (connector = 'file', path = '{}', format = 'csv', source.monitor-interval = '10 ms');
         CREATE MATERIALIZED VIEW big AS
           SELECT k, COUNT(*) * 10 AS n10, SUM(v) AS s FROM s GROUP BY k HAVING SUM(v) % 3 <> 0;",
        csv.display()
    ))
    .await
    .unwrap();
    append_pass(&csv, 0);
    append_pass(&csv, 1);
    c.batch_execute("FLUSH; CHECKPOINT").await.unwrap();
    assert_same(&big(&c).await, &expected_big(2), "before a restart");
    drop(c);
    server.shutdown().await;
    assert_eq!(stored_keys(&data, "v/"), 0, "no view rows stored");
    assert!(stored_keys(&data, "o/") > 0, "groups stored");

    // At parallelism 1, from the groups alone.
    restart_for_pass(&data, &csv, config(1, None), 2, "without a budget").await;

    // Under a budget of a few hundred groups: the view is read from the
    // store, so the restore rebuilds it there, groups beyond the budget
    // read back from the store too.
    restart_for_pass(
        &data,
        &csv,
        config(2, Some(128 * 1024)),
        3,
        "under a budget",
    )
    .await;
    assert_eq!(
        stored_keys(&data, "v/"),
        expected_big(4).len(),
        "the view's rows stored under a budget"
    );

    // Without one again: keys leave the view and come back, and the rows
    // stored under the budget are deleted with the first epoch.
    restart_for_pass(&data, &csv, config(2, None), 4, "without a budget again").await;
    assert_eq!(
        stored_keys(&data, "v/"),
        0,
        "the rows stored under the budget deleted"
    );

    // Under the budget once more: rebuilt from the groups alone.
    restart_for_pass(
        &data,
        &csv,
        config(1, Some(128 * 1024)),
        5,
        "under a budget again",
    )
    .await;
}
