//! Exactly-once after `kill -9`: a real weir process follows a CSV file that
//! the test keeps appending to, and is killed with SIGKILL at random moments
//! during ingestion, then restarted. At the end every view must equal the
//! result computed here, independently of Weir, from the rows written: no row
//! lost, none counted twice. Each restart runs at another parallelism, so the
//! state is also redistributed between subtasks by key group on restore, and
//! every other run is under a memory budget (keyed views read from the store).

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio_postgres::NoTls;

const ROWS: usize = 40_000;
const CHUNK: usize = 1_000;
const KEYS: i64 = 37;
const DELAY_MS: i64 = 1_000;
const BASE_MS: i64 = 1_704_067_200_000; // 2024-01-01 00:00:00 UTC

/// Row i: key, value, event time (ms). Mostly increasing time with jitter;
/// every 41st row is 3 s behind, so late against a 1 s watermark delay.
fn row(i: usize) -> (i64, i64, i64) {
    let i = i as i64;
    let k = (i * 7919) % KEYS;
    let v = (i * 31) % 101 - 50;
    let mut ts = BASE_MS + i * 5 + (i * 13) % 400;
    if i % 41 == 40 {
        ts -= 3_000;
    }
    (k, v, ts)
}

fn ts_text(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap()
        .naive_utc()
        .format("%Y-%m-%d %H:%M:%S%.3f")
        .to_string()
}

/// The oracle: late rows per the watermark rule (late when below the largest
/// event time before it minus the delay), then the two views' contents.
type PerKey = BTreeMap<i64, (i64, i64)>;
type PerWindow = BTreeMap<(i64, i64), (i64, i64)>;
/// Rows of the append-only view `high` (v > 40), sorted.
type Rows = Vec<(i64, i64, i64)>;
fn expected() -> (PerKey, PerWindow, usize, Rows, BTreeMap<i64, i64>) {
    let mut max: Option<i64> = None;
    let mut distinct: BTreeMap<i64, std::collections::BTreeSet<i64>> = BTreeMap::new();
    let mut high = Vec::new();
    let mut per_key = BTreeMap::new();
    let mut per_window = BTreeMap::new();
    let mut late = 0;
    for i in 0..ROWS {
        let (k, v, ts) = row(i);
        if max.is_some_and(|m| ts < m - DELAY_MS) {
            late += 1;
            continue;
        }
        max = Some(max.map_or(ts, |m| m.max(ts)));
        if v > 40 {
            high.push((k, v, ts));
        }
        distinct.entry(k).or_default().insert(ts);
        let e = per_key.entry(k).or_insert((0, 0));
        e.0 += 1;
        e.1 += v;
        let w = e_window(ts);
        let e = per_window.entry((k, w)).or_insert((0, 0));
        e.0 += 1;
        e.1 += v;
    }
    high.sort();
    let distinct = distinct
        .into_iter()
        .map(|(k, vs)| (k, vs.len() as i64))
        .collect();
    (per_key, per_window, late, high, distinct)
}

/// Info row written with chunk `c` of the main stream: (key, label). Keys
/// 0..=2 get two rows (chunks 0..=2 and 37..=39), so their rows meet both.
fn info_row(c: usize) -> (i64, String) {
    ((c as i64) % KEYS, format!("L{}", c % 5))
}

/// What the join views hold once all of `chunks` chunks' info rows and
/// every accepted main row are in: per label (pairs, sum of v), and the
/// pairs with v > 45 as (k, v, ts, label), sorted.
type PerLabel = BTreeMap<String, (i64, i64)>;
fn joined_expected(chunks: usize) -> (PerLabel, Vec<(i64, i64, i64, String)>) {
    let mut max: Option<i64> = None;
    let mut per_label = BTreeMap::new();
    let mut high = Vec::new();
    for i in 0..ROWS {
        let (k, v, ts) = row(i);
        if max.is_some_and(|m| ts < m - DELAY_MS) {
            continue;
        }
        max = Some(max.map_or(ts, |m| m.max(ts)));
        for (ik, label) in (0..chunks).map(info_row) {
            if ik != k {
                continue;
            }
            let e = per_label.entry(label.clone()).or_insert((0, 0));
            e.0 += 1;
            e.1 += v;
            if v > 45 {
                high.push((k, v, ts, label));
            }
        }
    }
    high.sort();
    (per_label, high)
}

/// The rows that are not late, in arrival order.
fn accepted() -> Vec<(i64, i64, i64)> {
    let mut max: Option<i64> = None;
    let mut out = Vec::new();
    for i in 0..ROWS {
        let (k, v, ts) = row(i);
        if max.is_some_and(|m| ts < m - DELAY_MS) {
            continue;
        }
        max = Some(max.map_or(ts, |m| m.max(ts)));
        out.push((k, v, ts));
    }
    out
}

/// The view `top3`: per key the three rows of highest v (earliest ts
/// first among equal v, then arrival), as (k, rank, v, ts), sorted.
fn top3_expected() -> Vec<(i64, i64, i64, i64)> {
    let mut per_key: BTreeMap<i64, Vec<(i64, i64, usize)>> = BTreeMap::new();
    for (n, (k, v, ts)) in accepted().into_iter().enumerate() {
        per_key.entry(k).or_default().push((v, ts, n));
    }
    let mut out = Vec::new();
    for (k, mut rows) in per_key {
        rows.sort_by_key(|&(v, ts, n)| (-v, ts, n));
        for (r, (v, ts, _)) in rows.into_iter().take(3).enumerate() {
            out.push((k, r as i64 + 1, v, ts));
        }
    }
    out
}

/// The view `moving`: each row with the sum of v over it and the three
/// rows before it of its key, in (ts, v) order, as (k, v, ts, sum), sorted.
/// The followed input never ends: a row comes out once the watermark
/// (the largest time less the delay) has passed its time.
fn moving_expected() -> Vec<(i64, i64, i64, i64)> {
    let rows = accepted();
    let watermark = rows.iter().map(|r| r.2).max().unwrap() - DELAY_MS;
    let mut per_key: BTreeMap<i64, Vec<(i64, i64)>> = BTreeMap::new();
    for (k, v, ts) in rows {
        per_key.entry(k).or_default().push((ts, v));
    }
    let mut out = Vec::new();
    for (k, mut rows) in per_key {
        rows.sort();
        for i in 0..rows.len() {
            if rows[i].0 >= watermark {
                continue;
            }
            let sum = rows[i.saturating_sub(3)..=i].iter().map(|r| r.1).sum();
            out.push((k, rows[i].1, rows[i].0, sum));
        }
    }
    out.sort();
    out
}

/// The view `info_high`: per label, the rows of the outer join of the info
/// rows with the main rows of their key with v > 49 and k < 5 (an info row
/// meeting none comes out once, padded), and how many of them met one.
fn info_high_expected() -> PerLabel {
    let rows = accepted();
    let mut out = BTreeMap::new();
    for (ik, label) in (0..ROWS / CHUNK).map(info_row) {
        let met = rows
            .iter()
            .filter(|&&(k, v, _)| k == ik && v > 49 && k < 5)
            .count() as i64;
        let e = out.entry(label).or_insert((0, 0));
        e.0 += met.max(1);
        e.1 += met;
    }
    out
}

/// The view `near`: per key, the pairs of its rows (a row with itself
/// too) whose second is at most 300 ms after the first.
fn near_expected() -> BTreeMap<i64, i64> {
    let mut per_key: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    for (k, _, ts) in accepted() {
        per_key.entry(k).or_default().push(ts);
    }
    per_key
        .into_iter()
        .map(|(k, mut ts)| {
            ts.sort();
            let pairs = (0..ts.len())
                .map(|i| ts[i..].iter().take_while(|&&t| t <= ts[i] + 300).count() as i64)
                .sum();
            (k, pairs)
        })
        .collect()
}

/// The view `hopping`: per key and window of 1 s every 500 ms, the rows.
fn hopping_expected() -> BTreeMap<(i64, i64), i64> {
    let mut out = BTreeMap::new();
    for (k, _, ts) in accepted() {
        let mut start = ts - ts.rem_euclid(500);
        while start > ts - 1_000 {
            *out.entry((k, start)).or_insert(0) += 1;
            start -= 500;
        }
    }
    out
}

/// The view `sessions`: per key, runs of rows each at most 150 ms after
/// the one before, as (k, first ts, last ts + 150) → (rows, sum of v).
fn sessions_expected() -> BTreeMap<(i64, i64, i64), (i64, i64)> {
    let mut per_key: BTreeMap<i64, Vec<(i64, i64)>> = BTreeMap::new();
    for (k, v, ts) in accepted() {
        per_key.entry(k).or_default().push((ts, v));
    }
    let mut out = BTreeMap::new();
    for (k, mut rows) in per_key {
        rows.sort();
        let mut run: Vec<(i64, i64)> = Vec::new();
        for r in rows.into_iter().map(Some).chain([None]) {
            let next = match (r, run.last()) {
                (Some(r), Some(last)) if r.0 - last.0 <= 150 => {
                    run.push(r);
                    continue;
                }
                (r, _) => r,
            };
            if let (Some(first), Some(last)) = (run.first(), run.last()) {
                let total = run.iter().map(|r| r.1).sum();
                out.insert((k, first.0, last.0 + 150), (run.len() as i64, total));
            }
            run = next.into_iter().collect();
        }
    }
    out
}

/// The view `late_s`: every late row with the watermark it was late
/// against, as (k, v, ts, watermark), sorted.
fn late_expected() -> Vec<(i64, i64, i64, i64)> {
    let mut max: Option<i64> = None;
    let mut out = Vec::new();
    for i in 0..ROWS {
        let (k, v, ts) = row(i);
        match max {
            Some(m) if ts < m - DELAY_MS => out.push((k, v, ts, m - DELAY_MS)),
            _ => max = Some(max.map_or(ts, |m| m.max(ts))),
        }
    }
    out.sort();
    out
}

/// The view `counted`: per key, rows in (ts, v) order, 50 to a window, as
/// (k, first row's number) → (rows, sum of v). The file is followed, so
/// the watermark stays at the last time minus the delay: later rows wait.
fn counted_expected() -> BTreeMap<(i64, i64), (i64, i64)> {
    let rows = accepted();
    let watermark = rows.iter().map(|r| r.2).max().unwrap() - DELAY_MS;
    let mut per_key: BTreeMap<i64, Vec<(i64, i64)>> = BTreeMap::new();
    for (k, v, ts) in rows.into_iter().filter(|r| r.2 < watermark) {
        per_key.entry(k).or_default().push((ts, v));
    }
    let mut out = BTreeMap::new();
    for (k, mut rows) in per_key {
        rows.sort();
        for (w, chunk) in rows.chunks(50).enumerate() {
            let total = chunk.iter().map(|r| r.1).sum();
            out.insert((k, w as i64 * 50), (chunk.len() as i64, total));
        }
    }
    out
}

fn e_window(ts: i64) -> i64 {
    ts - ts.rem_euclid(1_000)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The server process; killed when dropped, so a failing test leaves none behind.
struct Weir(Child);

impl Drop for Weir {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_with(data: &Path, pg: u16, http: u16, parallelism: u32, extra: &[&str]) -> Weir {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(data.with_extension("log"))
        .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["--data-dir", data.to_str().unwrap()])
        .args(["--pg-addr", &format!("127.0.0.1:{pg}")])
        .args(["--http-addr", &format!("127.0.0.1:{http}")])
        .args(if extra.contains(&"--checkpoint-interval-ms") {
            &[][..]
        } else {
            &["--checkpoint-interval-ms", "50"][..]
        })
        .args(["--parallelism", &parallelism.to_string()])
        .args(extra)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("weir starts");
    Weir(child)
}

async fn connect(pg: u16) -> tokio_postgres::Client {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match tokio_postgres::connect(&format!("host=127.0.0.1 port={pg} user=weir"), NoTls).await {
            Ok((client, conn)) => {
                tokio::spawn(conn);
                return client;
            }
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("server did not come up: {e}"),
        }
    }
}

/// Replays the per-key sink's changelog strictly: an addition must not find
/// its key, a retraction must remove exactly the row it names. `what` goes
/// into failure messages.
fn replay_sink(sink: &Path, what: &str) -> PerKey {
    let mut replayed: PerKey = BTreeMap::new();
    for (n, line) in std::fs::read_to_string(sink).unwrap().lines().enumerate() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let k = v["k"].as_i64().unwrap();
        let row = (v["n"].as_i64().unwrap(), v["total"].as_i64().unwrap());
        match v["op"].as_str().unwrap() {
            "insert" | "update_after" => assert!(
                replayed.insert(k, row).is_none(),
                "line {n}: {line} adds an existing key ({what})"
            ),
            "update_before" | "delete" => assert_eq!(
                replayed.remove(&k),
                Some(row),
                "line {n}: {line} retracts a row not there ({what})"
            ),
            other => panic!("unknown op {other}"),
        }
    }
    replayed
}

/// A test's files: the data directory, the CSV it appends to (created
/// empty) and the sink's path.
fn files(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let csv = dir.join("in.csv");
    std::fs::File::create(&csv).unwrap();
    (dir.join("weir-data"), csv, dir.join("per_key.jsonl"))
}

fn kill9(server: &mut Weir) {
    // SIGKILL: no shutdown, no final checkpoint.
    server.0.kill().unwrap();
    server.0.wait().unwrap();
}

/// One epoch of 100,000 changed groups and as many view rows: the groups'
/// blocks (about 2 MB) are written as a file of their own, and so is an
/// append-only view's 3 MB segment; both survive kill -9 as any epoch
/// does, read back from their files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_epoch_written_as_files_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("weir-data");
    let (pg, http) = (free_port(), free_port());
    // No checkpoint on a timer: the CHECKPOINT below takes every change at once.
    let extra = ["--checkpoint-interval-ms", "3600000"];
    let mut server = spawn_with(&data, pg, http, 2, &extra);
    let client = connect(pg).await;
    client
        .batch_execute(
            "CREATE STREAM g (k BIGINT, v BIGINT) WITH (connector = 'datagen', rows = '200000', \
               fields.k.kind = 'sequence', fields.k.start = '0', fields.k.end = '199999', \
               fields.v.kind = 'sequence', fields.v.start = '1', fields.v.end = '200000'); \
             CREATE MATERIALIZED VIEW per_k AS \
               SELECT k % 100000 AS k, COUNT(*) AS n, SUM(v) AS s FROM g GROUP BY k % 100000; \
             CREATE MATERIALIZED VIEW every_row AS SELECT k, v FROM g; \
             FLUSH; CHECKPOINT;",
        )
        .await
        .unwrap();
    kill9(&mut server);
    let _server = spawn_with(&data, pg, http, 2, &extra);
    let client = connect(pg).await;
    client.batch_execute("FLUSH").await.unwrap();
    // Key j saw v = j + 1 and j + 100,001: two rows summing to 2j + 100,002.
    let row = client
        .query_one(
            "SELECT COUNT(*), SUM(n), SUM(CASE WHEN s = 2 * k + 100002 THEN 1 ELSE 0 END) FROM per_k",
            &[],
        )
        .await
        .unwrap();
    let (keys, rows, right): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
    assert_eq!((keys, rows, right), (100_000, 200_000, 100_000));
    let row = client
        .query_one(
            "SELECT COUNT(*), SUM(v), COUNT(DISTINCT k) FROM every_row",
            &[],
        )
        .await
        .unwrap();
    let (rows, sum, keys): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
    // v = 1..=200,000 once each.
    assert_eq!((rows, sum, keys), (200_000, 20_000_100_000, 200_000));
    let files = std::fs::read_dir(data.join("db").join("files"))
        .unwrap()
        .count();
    assert!(files >= 2, "the segment and the blocks are files");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn views_are_exact_after_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let (data, csv, sink) = files(dir.path());
    // A second stream, joined with the first: two sources, each resumed from its offset.
    let info = dir.path().join("info.csv");
    std::fs::File::create(&info).unwrap();
    // The directory an INSERT INTO job writes its part file to.
    let high_out = dir.path().join("high_out");
    let (pg, http) = (free_port(), free_port());
    // Each restart runs at another parallelism: state moves between subtasks by key group.
    let parallelism = [2, 3, 1, 4, 2];
    // And every other one under a memory budget: keyed views then keep only
    // their uncommitted changes in memory and read committed rows from the store.
    let budget = ["1", "0", "1", "0", "1"];
    let start = |i: usize| {
        let i = i % parallelism.len();
        spawn_with(
            &data,
            pg,
            http,
            parallelism[i],
            &["--state-memory-mb", budget[i]],
        )
    };
    let mut restarts = 0;
    let mut server = start(0);
    let client = connect(pg).await;
    client
        .batch_execute(&format!(
            "CREATE STREAM s (k BIGINT, v BIGINT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
               WITH (connector = 'file', path = '{}', format = 'csv', source.monitor-interval = '10 ms');
             CREATE MATERIALIZED VIEW per_key AS SELECT k, COUNT(*) AS n, SUM(v) AS total FROM s GROUP BY k;
             CREATE MATERIALIZED VIEW per_window AS
               SELECT k, window_start, COUNT(*) AS n, SUM(v) AS total
               FROM TUMBLE(s, ts, INTERVAL '1' SECOND) GROUP BY k, window_start;
             CREATE MATERIALIZED VIEW distinct_v AS SELECT k, COUNT(DISTINCT ts) AS d FROM s GROUP BY k;
             CREATE MATERIALIZED VIEW high AS SELECT k, v, ts FROM s WHERE v > 40;
             CREATE SINK per_key_out FROM per_key WITH (connector = 'file', path = '{}', format = 'json');
             CREATE STREAM info (k BIGINT, label TEXT)
               WITH (connector = 'file', path = '{}', format = 'csv', source.monitor-interval = '10 ms');
             CREATE MATERIALIZED VIEW per_label AS
               SELECT i.label, COUNT(*) AS n, SUM(s.v) AS total FROM s JOIN info i ON s.k = i.k GROUP BY i.label;
             CREATE MATERIALIZED VIEW high_labelled AS
               SELECT s.k, s.v, s.ts, i.label FROM s JOIN info i ON s.k = i.k WHERE s.v > 45;
             CREATE MATERIALIZED VIEW top3 AS
               SELECT k, rn, v, ts FROM (
                 SELECT k, v, ts, ROW_NUMBER() OVER (PARTITION BY k ORDER BY v DESC, ts ASC) AS rn FROM s
               ) t WHERE rn <= 3;
             CREATE MATERIALIZED VIEW hopping AS
               SELECT k, window_start, COUNT(*) AS n
               FROM HOP(s, ts, INTERVAL '500' MILLISECOND, INTERVAL '1' SECOND) GROUP BY k, window_start;
             CREATE MATERIALIZED VIEW sessions AS
               SELECT k, window_start, window_end, COUNT(*) AS n, SUM(v) AS total
               FROM SESSION(s PARTITION BY k, ts, INTERVAL '150' MILLISECOND)
               GROUP BY k, window_start, window_end;
             CREATE MATERIALIZED VIEW late_s AS SELECT k, v, ts, watermark FROM LATE(s);
             CREATE MATERIALIZED VIEW counted AS
               SELECT k, window_start, COUNT(*) AS n, SUM(v) AS total
               FROM COUNT_WINDOW(s PARTITION BY k, ts, 50) GROUP BY k, window_start;
             CREATE MATERIALIZED VIEW moving AS
               SELECT k, v, ts, SUM(v) OVER (PARTITION BY k ORDER BY ts ROWS BETWEEN 3 PRECEDING AND CURRENT ROW) AS s
               FROM s;
             CREATE MATERIALIZED VIEW info_high AS
               SELECT i.label, COUNT(*) AS n, COUNT(s.v) AS met FROM info i LEFT JOIN s
                 ON s.k = i.k AND s.v > 49 AND s.k < 5
               GROUP BY i.label;
             CREATE MATERIALIZED VIEW near AS
               SELECT a.k, COUNT(*) AS n FROM s a JOIN s b
                 ON a.k = b.k AND b.ts BETWEEN a.ts AND a.ts + INTERVAL '300' MILLISECOND
               GROUP BY a.k;
             CREATE TABLE high_out (k BIGINT, v BIGINT, ts TIMESTAMP(3))
               WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'csv');
             INSERT INTO high_out SELECT k, v, ts FROM s WHERE v > 40;",
            csv.display(),
            sink.display(),
            info.display(),
            high_out.display()
        ))
        .await
        .unwrap();
    drop(client);

    // Kill points: chunk numbers, from a seed printed for reproduction.
    let seed = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    println!("CRASH_SEED={seed}");
    let chunks = ROWS / CHUNK;
    let mut x = seed | 1;
    let mut kills: Vec<usize> = (0..4)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            1 + (x as usize) % (chunks - 1)
        })
        .collect();
    kills.sort();
    kills.dedup();

    let mut file = std::fs::OpenOptions::new().append(true).open(&csv).unwrap();
    let mut info_file = std::fs::OpenOptions::new()
        .append(true)
        .open(&info)
        .unwrap();
    for c in 0..chunks {
        let (k, label) = info_row(c);
        info_file
            .write_all(format!("{k},{label}\n").as_bytes())
            .unwrap();
        info_file.flush().unwrap();
        let mut text = String::new();
        for i in c * CHUNK..(c + 1) * CHUNK {
            let (k, v, ts) = row(i);
            text.push_str(&format!("{k},{v},{}\n", ts_text(ts)));
        }
        file.write_all(text.as_bytes()).unwrap();
        file.flush().unwrap();
        tokio::time::sleep(Duration::from_millis(15)).await;
        if kills.contains(&c) {
            // Let some of the chunk be ingested (and perhaps checkpointed), then kill.
            tokio::time::sleep(Duration::from_millis((x % 60) as u64)).await;
            kill9(&mut server);
            drop(server);
            restarts += 1;
            server = start(restarts);
        }
    }

    // A last crash, and the final reads under the budget (from the store).
    kill9(&mut server);
    drop(server);
    let server = spawn_with(&data, pg, http, 2, &["--state-memory-mb", "1"]);
    let client = connect(pg).await;
    tokio::time::timeout(Duration::from_secs(120), client.batch_execute("FLUSH"))
        .await
        .expect("FLUSH within 2 minutes")
        .unwrap();
    let (per_key, per_window, late, high, distinct) = expected();
    let mut got_key = BTreeMap::new();
    for r in client
        .query("SELECT k, n, total FROM per_key", &[])
        .await
        .unwrap()
    {
        got_key.insert(r.get::<_, i64>(0), (r.get::<_, i64>(1), r.get::<_, i64>(2)));
    }
    assert_eq!(
        got_key, per_key,
        "per_key differs (CRASH_SEED={seed}, kills after chunks {kills:?})"
    );
    let mut got_window = BTreeMap::new();
    for r in client
        .query("SELECT k, CAST(EXTRACT(EPOCH FROM window_start) * 1000 AS BIGINT), n, total FROM per_window", &[])
        .await
        .unwrap()
    {
        got_window.insert((r.get::<_, i64>(0), r.get::<_, i64>(1)), (r.get::<_, i64>(2), r.get::<_, i64>(3)));
    }
    assert_eq!(got_window.len(), per_window.len(), "CRASH_SEED={seed}");
    assert_eq!(
        got_window, per_window,
        "per_window differs (CRASH_SEED={seed})"
    );
    // COUNT(DISTINCT): its values are checkpointed one by one.
    let got_distinct = two_columns(&client, "SELECT k, d FROM distinct_v").await;
    assert_eq!(
        got_distinct, distinct,
        "distinct_v differs (CRASH_SEED={seed})"
    );
    // The append-only view: every row exactly once (its checkpoints are Arrow segments).
    let got_high: Rows = sorted(
        &client,
        "SELECT k, v, CAST(ROUND(EXTRACT(EPOCH FROM ts) * 1000) AS BIGINT) FROM high",
        |r| (r.get(0), r.get(1), r.get(2)),
    )
    .await;
    assert_eq!(got_high.len(), high.len(), "CRASH_SEED={seed}");
    assert_eq!(got_high, high, "high differs (CRASH_SEED={seed})");
    // The sink's changelog, replayed strictly, is consistent and ends at the view's content.
    client.batch_execute("CHECKPOINT").await.unwrap();
    let replayed = replay_sink(&sink, &format!("CRASH_SEED={seed}"));
    assert_eq!(replayed, per_key, "sink changelog (CRASH_SEED={seed})");
    // The INSERT INTO job's CSV part file: every row of `high` exactly once.
    let mut written: Rows = Vec::new();
    // What a reader of the directory sees: the published parts (hidden
    // ones, of checkpoints not committed, are skipped).
    for part in std::fs::read_dir(&high_out).unwrap() {
        let part = part.unwrap();
        if part.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let text = std::fs::read_to_string(part.path()).unwrap();
        for line in text.lines() {
            let f: Vec<&str> = line.split(',').collect();
            let ts = chrono::NaiveDateTime::parse_from_str(f[2], "%Y-%m-%d %H:%M:%S%.f")
                .unwrap_or_else(|e| panic!("{line}: {e}"));
            written.push((
                f[0].parse().unwrap(),
                f[1].parse().unwrap(),
                ts.and_utc().timestamp_millis(),
            ));
        }
    }
    written.sort();
    assert_eq!(written.len(), high.len(), "CRASH_SEED={seed}");
    assert_eq!(written, high, "high_out differs (CRASH_SEED={seed})");
    // The joins: both sides' rows kept exactly once across the crashes.
    let (per_label, high_labelled) = joined_expected(chunks);
    let got_label = per_label_rows(&client, "SELECT label, n, total FROM per_label").await;
    assert_eq!(
        got_label, per_label,
        "per_label differs (CRASH_SEED={seed})"
    );
    let got_labelled: Vec<(i64, i64, i64, String)> = sorted(
        &client,
        "SELECT k, v, CAST(ROUND(EXTRACT(EPOCH FROM ts) * 1000) AS BIGINT), label FROM high_labelled",
        |r| (r.get(0), r.get(1), r.get(2), r.get(3)),
    )
    .await;
    assert_eq!(got_labelled.len(), high_labelled.len(), "CRASH_SEED={seed}");
    assert_eq!(
        got_labelled, high_labelled,
        "high_labelled differs (CRASH_SEED={seed})"
    );
    // Top-N: each key's three rows, ranks and all.
    let got_top3: Vec<(i64, i64, i64, i64)> = sorted(
        &client,
        "SELECT k, CAST(rn AS BIGINT), v, CAST(ROUND(EXTRACT(EPOCH FROM ts) * 1000) AS BIGINT) FROM top3",
        |r| (r.get(0), r.get(1), r.get(2), r.get(3)),
    )
    .await;
    assert_eq!(
        got_top3,
        top3_expected(),
        "top3 differs (CRASH_SEED={seed})"
    );
    // HOP: every row in each of its two windows.
    let got_hopping: BTreeMap<(i64, i64), i64> = client
        .query(
            "SELECT k, CAST(ROUND(EXTRACT(EPOCH FROM window_start) * 1000) AS BIGINT), n FROM hopping",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| ((r.get(0), r.get(1)), r.get(2)))
        .collect();
    assert_eq!(
        got_hopping,
        hopping_expected(),
        "hopping differs (CRASH_SEED={seed})"
    );
    // SESSION: runs of each key's rows, merged as rows arrived between them.
    let got_sessions: BTreeMap<(i64, i64, i64), (i64, i64)> = client
        .query(
            "SELECT k, CAST(ROUND(EXTRACT(EPOCH FROM window_start) * 1000) AS BIGINT), \
             CAST(ROUND(EXTRACT(EPOCH FROM window_end) * 1000) AS BIGINT), n, total FROM sessions",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| ((r.get(0), r.get(1), r.get(2)), (r.get(3), r.get(4))))
        .collect();
    let want = sessions_expected();
    assert!(want.len() > 1000, "{} sessions", want.len());
    assert_eq!(got_sessions, want, "sessions differ (CRASH_SEED={seed})");
    // LATE(s): each late row once, with its watermark.
    let got_late: Vec<(i64, i64, i64, i64)> = sorted(
        &client,
        "SELECT k, v, CAST(ROUND(EXTRACT(EPOCH FROM ts) * 1000) AS BIGINT), \
             CAST(ROUND(EXTRACT(EPOCH FROM watermark) * 1000) AS BIGINT) FROM late_s",
        |r| (r.get(0), r.get(1), r.get(2), r.get(3)),
    )
    .await;
    assert_eq!(got_late.len(), late, "CRASH_SEED={seed}");
    assert_eq!(
        got_late,
        late_expected(),
        "late_s differs (CRASH_SEED={seed})"
    );
    // OVER: each on-time row once, with the sum over it and the 3 before it.
    let got_moving: Vec<(i64, i64, i64, i64)> = sorted(
        &client,
        "SELECT k, v, CAST(ROUND(EXTRACT(EPOCH FROM ts) * 1000) AS BIGINT), s FROM moving",
        |r| (r.get(0), r.get(1), r.get(2), r.get(3)),
    )
    .await;
    let moving = moving_expected();
    assert_eq!(got_moving.len(), moving.len(), "CRASH_SEED={seed}");
    assert_eq!(got_moving, moving, "moving differs (CRASH_SEED={seed})");
    // COUNT_WINDOW: each key's rows in time order, 50 to a window.
    let got_counted: BTreeMap<(i64, i64), (i64, i64)> = client
        .query("SELECT k, window_start, n, total FROM counted", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| ((r.get(0), r.get(1)), (r.get(2), r.get(3))))
        .collect();
    assert_eq!(
        got_counted,
        counted_expected(),
        "counted differs (CRASH_SEED={seed})"
    );
    // The interval join forgot rows as the watermark passed them, across
    // the restarts (and under the budgets of each).
    let got_near = two_columns(&client, "SELECT k, n FROM near").await;
    // The outer join took its padded rows back as matches came, across the
    // restarts.
    let got_info_high = per_label_rows(&client, "SELECT label, n, met FROM info_high").await;
    assert_eq!(
        got_info_high,
        info_high_expected(),
        "info_high differs (CRASH_SEED={seed})"
    );
    assert_eq!(
        got_near,
        near_expected(),
        "near differs (CRASH_SEED={seed})"
    );
    let streams = common::text_rows(&client, "SHOW STREAMS").await;
    let s_row = streams.iter().find(|r| r[0] == "s").expect("stream s");
    // Several views read s: the stream counts what its furthest reader did.
    assert_eq!(s_row[4], ROWS.to_string(), "rows accepted");
    assert_eq!(s_row[5], late.to_string(), "late rows");
    drop(server);
}

/// A query's rows, each read by `row`, sorted.
async fn sorted<T: Ord>(
    client: &tokio_postgres::Client,
    sql: &str,
    row: impl Fn(&tokio_postgres::Row) -> T,
) -> Vec<T> {
    let mut rows: Vec<T> = client
        .query(sql, &[])
        .await
        .unwrap()
        .iter()
        .map(row)
        .collect();
    rows.sort();
    rows
}

/// A query's rows of a label and two BIGINT columns, as a map from the label.
async fn per_label_rows(client: &tokio_postgres::Client, sql: &str) -> PerLabel {
    client
        .query(sql, &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect()
}

/// A query's rows of two BIGINT columns, as a map from the first.
async fn two_columns(client: &tokio_postgres::Client, sql: &str) -> BTreeMap<i64, i64> {
    client
        .query(sql, &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// Per key over rows `0..n` (none of the first rows is late for this view:
/// it has no watermark).
fn per_key_of(n: usize) -> PerKey {
    let mut out = BTreeMap::new();
    for i in 0..n {
        let (k, v, _) = row(i);
        let e = out.entry(k).or_insert((0, 0));
        e.0 += 1;
        e.1 += v;
    }
    out
}

async fn per_key_now(client: &tokio_postgres::Client) -> PerKey {
    client
        .query("SELECT k, n, total FROM per_key", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect()
}

fn append_rows(csv: &Path, rows: std::ops::Range<usize>) {
    let mut text = String::new();
    for i in rows {
        let (k, v, ts) = row(i);
        text.push_str(&format!("{k},{v},{}\n", ts_text(ts)));
    }
    let mut file = std::fs::OpenOptions::new().append(true).open(csv).unwrap();
    file.write_all(text.as_bytes()).unwrap();
}

/// The newest retained checkpoint's sequence number.
fn newest_retained(data: &Path) -> u64 {
    std::fs::read_dir(data.join("checkpoints"))
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .max()
                .unwrap_or(0)
        })
        .unwrap_or(0)
}

/// Each table file of the live store is replaced by zeros of the same size
/// (a new file: the retained copies keep theirs); returns how many.
fn damage_table_files(db: &Path) -> usize {
    let mut damaged = 0;
    for entry in std::fs::read_dir(db).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "sst") {
            let len = std::fs::metadata(&path).unwrap().len();
            std::fs::remove_file(&path).unwrap();
            std::fs::write(&path, vec![0u8; len as usize]).unwrap();
            damaged += 1;
        }
    }
    damaged
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_or_missing_store_falls_back_to_the_previous_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let (data, csv, sink) = files(dir.path());
    let (pg, http) = (free_port(), free_port());
    let retain = ["--retain-interval-ms", "0"];
    let mut server = spawn_with(&data, pg, http, 2, &retain);
    let client = connect(pg).await;
    client
        .batch_execute(&format!(
            "CREATE STREAM s (k BIGINT, v BIGINT, ts TIMESTAMP(3))
               WITH (connector = 'file', path = '{}', format = 'csv', source.monitor-interval = '10 ms');
             CREATE MATERIALIZED VIEW per_key AS SELECT k, COUNT(*) AS n, SUM(v) AS total FROM s GROUP BY k;
             CREATE SINK per_key_out FROM per_key WITH (connector = 'file', path = '{}', format = 'json');",
            csv.display(),
            sink.display()
        ))
        .await
        .unwrap();
    // A third of the rows, committed, then copied to a retained checkpoint by
    // a catalog change (the only copies: the interval is off) ...
    let third = ROWS / 3;
    append_rows(&csv, 0..third);
    client
        .batch_execute("FLUSH; CHECKPOINT; CREATE TABLE marker (id BIGINT PRIMARY KEY)")
        .await
        .unwrap();
    // ... then the rest, committed in the live store only, and a crash.
    append_rows(&csv, third..ROWS);
    client.batch_execute("FLUSH; CHECKPOINT").await.unwrap();
    assert_eq!(per_key_now(&client).await, per_key_of(ROWS));
    drop(client);
    kill9(&mut server);
    drop(server);

    let log = data.with_extension("log");
    let fallbacks = || {
        std::fs::read_to_string(&log)
            .unwrap()
            .matches("fell back to the previous complete checkpoint")
            .count()
    };
    assert_eq!(fallbacks(), 0);
    // Copies were taken after each of the four catalog changes only, so the
    // newest holds the first third of the rows and the rest must be replayed.
    assert_eq!(newest_retained(&data), 4);
    for (round, damage) in ["damaged table files", "missing store"].iter().enumerate() {
        let db = data.join("db");
        if round == 0 {
            assert!(damage_table_files(&db) > 0, "the store has table files");
        } else {
            std::fs::remove_dir_all(&db).unwrap();
        }
        let mut server = spawn_with(&data, pg, http, 3, &retain);
        let client = connect(pg).await;
        assert_eq!(fallbacks(), round + 1, "{damage}: the fallback is reported");
        client.batch_execute("FLUSH; CHECKPOINT").await.unwrap();
        assert_eq!(per_key_now(&client).await, per_key_of(ROWS), "{damage}");
        // The sink was cut back to the older checkpoint's length and the
        // replayed changes written again: still one consistent changelog.
        let replayed = replay_sink(&sink, damage);
        assert_eq!(replayed, per_key_of(ROWS), "{damage}: sink");
        drop(client);
        kill9(&mut server);
    }
    // Every copy damaged as well: the server refuses to start, saying why.
    for entry in std::fs::read_dir(data.join("checkpoints")).unwrap() {
        std::fs::remove_file(entry.unwrap().path().join("CURRENT")).unwrap();
    }
    std::fs::remove_file(data.join("db").join("CURRENT")).unwrap();
    let mut server = spawn_with(&data, pg, http, 1, &retain);
    let status = server.0.wait().unwrap();
    assert!(!status.success());
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("no retained checkpoint is intact"),
        "{}",
        &text[text.len().saturating_sub(2000)..]
    );
}
