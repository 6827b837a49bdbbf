#!/usr/bin/env python3
"""Nexmark throughput: Weir against Apache Flink (PyFlink 2.3) at the same parallelism.

One run:
  1. builds `weir` (release);
  2. writes N Nexmark events once to person.csv, auction.csv and bid.csv, with
     Weir itself: a batch SELECT over bounded `nexmark` streams, printed by psql;
  3. for each query, Weir over the CSV files (file connector; CREATE
     MATERIALIZED VIEW, timed until FLUSH has returned and the job has
     finished, i.e. all input is reflected), Flink over the same files (filesystem connector, streaming
     mode, blackhole sink; timed until the job finishes), and Weir over its
     own `nexmark` generator — each at every parallelism asked for (Weir:
     `--parallelism N` of the server, i.e. N subtasks per keyed operator;
     Flink: `parallelism.default`);
  4. prints a table of rows/s, rows/s per core and ratios, all measured in this run.

Flink's own Nexmark generator (the nexmark/nexmark project) is built from
source with Maven and is not on PyPI, so there is no Flink-generator column.

Usage: python3 benchmarks/nexmark.py [--events N] [--queries q0,q1,...|all]
       [--parallelism 1,2] [--repeat K] [--skip-flink] [--skip-build] [--keep]
       [--checkpoint-interval-ms N]
See benchmarks/README.md.
"""

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pgclient

REPO = Path(__file__).resolve().parent.parent
TARGET_DIR = Path(os.environ.get("CARGO_TARGET_DIR", Path.home() / ".cache/weir-target"))
VENV = Path(os.environ.get("WEIR_BENCH_VENV", Path.home() / ".cache/weir-bench/venv"))
FLINK_VERSION = "2.3.0"

# The standard Nexmark schema (Flink's nexmark connector), with the 4 s
# watermark of the reference queries.
COLUMNS = {
    "person": "id BIGINT, name VARCHAR, email_address VARCHAR, credit_card VARCHAR, "
    "city VARCHAR, state VARCHAR, date_time TIMESTAMP(3), extra VARCHAR",
    "auction": "id BIGINT, item_name VARCHAR, description VARCHAR, initial_bid BIGINT, "
    "reserve BIGINT, date_time TIMESTAMP(3), expires TIMESTAMP(3), seller BIGINT, "
    "category BIGINT, extra VARCHAR",
    "bid": "auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, url VARCHAR, "
    "date_time TIMESTAMP(3), extra VARCHAR",
}
WATERMARK = "WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND"

TUMBLE = (
    "SELECT auction % 1000 AS k, window_start, window_end, COUNT(*) AS n, SUM(price) AS total "
    "FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(date_time), INTERVAL '10' SECOND)) "
    "GROUP BY auction % 1000, window_start, window_end"
)

RANKS = [("price < 10000", "rank1"), ("price >= 10000 AND price < 1000000", "rank2"),
         ("price >= 1000000", "rank3")]


RANK_BIDS = ", ".join(f"COUNT(*) FILTER (WHERE {c}) AS {r}_bids" for c, r in RANKS)


def stats(keys):
    """The counts of Nexmark q15/q16, with FILTER clauses (the same in both engines)."""
    cols = ["COUNT(*) AS total_bids", RANK_BIDS]
    for col, name in keys:
        cols.append(f"COUNT(DISTINCT {col}) AS total_{name}")
        for cond, rank in RANKS:
            cols.append(f"COUNT(DISTINCT {col}) FILTER (WHERE {cond}) AS {rank}_{name}")
    return ", ".join(cols)


DAY = "DATE_FORMAT(date_time, 'yyyy-MM-dd')"
Q14 = (
    "SELECT auction, bidder, 0.908 * price AS price, "
    "CASE WHEN {h} >= 8 AND {h} <= 18 THEN 'dayTime' "
    "WHEN {h} <= 6 OR {h} >= 20 THEN 'nightTime' ELSE 'otherTime' END AS bid_time_type, "
    "date_time, extra, {len}(extra) - {len}(REPLACE(extra, 'c', '')) AS c_counts "
    "FROM bid WHERE 0.908 * price > 1000000 AND 0.908 * price < 50000000"
)
Q17 = (
    "SELECT auction, {day} AS day, COUNT(*) AS total_bids, {ranks}, "
    "MIN(price) AS min_price, MAX(price) AS max_price, AVG(price) AS avg_price, "
    "SUM(price) AS sum_price FROM bid GROUP BY auction, {day}"
)
Q21 = (
    "SELECT auction, bidder, price, channel, CASE WHEN LOWER(channel) = 'apple' THEN '0' "
    "WHEN LOWER(channel) = 'google' THEN '1' WHEN LOWER(channel) = 'facebook' THEN '2' "
    "WHEN LOWER(channel) = 'baidu' THEN '3' ELSE {extract} END AS channel_id FROM bid "
    "WHERE {extract} IS NOT NULL OR LOWER(channel) IN ('apple', 'google', 'facebook', 'baidu')"
)

# name -> (description, Weir SQL, Flink SQL or None for the same). The text
# is that of Flink's Nexmark suite (q14 with its count_char UDF written out;
# q20's two `date_time` and `extra` columns renamed apart; q3's states in
# lower case, as the `nexmark` crate's generator writes them), run by both
# engines; Flink's differs only where it must quote `day`. Queries read `bid`
# unless TABLES says otherwise.
QUERIES = {
    "q0": (
        "pass-through",
        "SELECT auction, bidder, price, date_time, extra FROM bid",
        None,
    ),
    "q1": (
        "currency conversion",
        "SELECT auction, bidder, 0.908 * price AS price, date_time, extra FROM bid",
        None,
    ),
    "q2": (
        "selection",
        "SELECT auction, price FROM bid WHERE MOD(auction, 123) = 0",
        None,
    ),
    "q3": (
        "local item suggestion: join",
        "SELECT P.name, P.city, P.state, A.id "
        "FROM auction AS A INNER JOIN person AS P ON A.seller = P.id "
        "WHERE A.category = 10 AND (P.state = 'or' OR P.state = 'wa' OR P.state = 'id')",
        None,
    ),
    "q4": (
        "average price per category: join, aggregate of an aggregate",
        "SELECT Q.category, AVG(Q.final) AS avg_final FROM ("
        "SELECT MAX(B.price) AS final, A.category FROM auction A, bid B "
        "WHERE A.id = B.auction AND B.date_time BETWEEN A.date_time AND A.expires "
        "GROUP BY A.id, A.category) Q GROUP BY Q.category",
        None,
    ),
    "q5": (
        "hot items: HOP counts, joined with their maximum",
        "SELECT AuctionBids.auction, AuctionBids.num FROM ("
        "SELECT auction, count(*) AS num, window_start AS starttime, window_end AS endtime "
        "FROM TABLE(HOP(TABLE bid, DESCRIPTOR(date_time), INTERVAL '2' SECOND, INTERVAL '10' SECOND)) "
        "GROUP BY auction, window_start, window_end) AS AuctionBids JOIN ("
        "SELECT max(CountBids.num) AS maxn, CountBids.starttime, CountBids.endtime FROM ("
        "SELECT count(*) AS num, window_start AS starttime, window_end AS endtime "
        "FROM TABLE(HOP(TABLE bid, DESCRIPTOR(date_time), INTERVAL '2' SECOND, INTERVAL '10' SECOND)) "
        "GROUP BY auction, window_start, window_end) AS CountBids "
        "GROUP BY CountBids.starttime, CountBids.endtime) AS MaxBids "
        "ON AuctionBids.starttime = MaxBids.starttime AND AuctionBids.endtime = MaxBids.endtime "
        "AND AuctionBids.num >= MaxBids.maxn",
        None,
    ),
    "q7": (
        "highest bid: join with a TUMBLE aggregate",
        "SELECT B.auction, B.price, B.bidder, B.date_time, B.extra FROM bid B JOIN ("
        "SELECT MAX(price) AS maxprice, window_end AS date_time "
        "FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(date_time), INTERVAL '10' SECOND)) "
        "GROUP BY window_start, window_end) B1 ON B.price = B1.maxprice "
        "WHERE B.date_time BETWEEN B1.date_time - INTERVAL '10' SECOND AND B1.date_time",
        None,
    ),
    "q8": (
        "monitor new users: join of two TUMBLE aggregates",
        "SELECT P.id, P.name, P.starttime FROM ("
        "SELECT id, name, window_start AS starttime, window_end AS endtime "
        "FROM TABLE(TUMBLE(TABLE person, DESCRIPTOR(date_time), INTERVAL '10' SECOND)) "
        "GROUP BY id, name, window_start, window_end) P JOIN ("
        "SELECT seller, window_start AS starttime, window_end AS endtime "
        "FROM TABLE(TUMBLE(TABLE auction, DESCRIPTOR(date_time), INTERVAL '10' SECOND)) "
        "GROUP BY seller, window_start, window_end) A "
        "ON P.id = A.seller AND P.starttime = A.starttime AND P.endtime = A.endtime",
        None,
    ),
    "q9": (
        "winning bids: join, then Top-1",
        "SELECT id, item_name, description, initial_bid, reserve, date_time, expires, seller, "
        "category, extra, auction, bidder, price, bid_date_time, bid_extra FROM ("
        "SELECT A.*, B.auction, B.bidder, B.price, B.date_time AS bid_date_time, "
        "B.extra AS bid_extra, ROW_NUMBER() OVER (PARTITION BY A.id "
        "ORDER BY B.price DESC, B.date_time ASC) AS rownum FROM auction A, bid B "
        "WHERE A.id = B.auction AND B.date_time BETWEEN A.date_time AND A.expires) "
        "WHERE rownum <= 1",
        None,
    ),
    "q10": (
        "formatting, without the file sink",
        "SELECT auction, bidder, price, date_time, extra, DATE_FORMAT(date_time, 'yyyy-MM-dd') AS dt, "
        "DATE_FORMAT(date_time, 'HH:mm') AS hm FROM bid",
        None,
    ),
    "q11": (
        "user sessions: SESSION window count",
        "SELECT bidder, COUNT(*) AS bid_count, window_start AS starttime, window_end AS endtime "
        "FROM TABLE(SESSION(TABLE bid PARTITION BY bidder, DESCRIPTOR(date_time), "
        "INTERVAL '10' SECOND)) GROUP BY bidder, window_start, window_end",
        None,
    ),
    "q12": (
        "processing-time windows: TUMBLE over PROCTIME()",
        "SELECT bidder, COUNT(*) AS bid_count, window_start AS starttime, window_end AS endtime "
        "FROM TUMBLE((SELECT *, PROCTIME() AS p_time FROM bid), p_time, INTERVAL '10' SECOND) "
        "GROUP BY bidder, window_start, window_end",
        "SELECT B.bidder, COUNT(*) AS bid_count, "
        "TUMBLE_START(B.p_time, INTERVAL '10' SECOND) AS starttime, "
        "TUMBLE_END(B.p_time, INTERVAL '10' SECOND) AS endtime "
        "FROM (SELECT *, PROCTIME() AS p_time FROM bid) B "
        "GROUP BY B.bidder, TUMBLE(B.p_time, INTERVAL '10' SECOND)",
    ),
    "q13": (
        "bounded side input join: a lookup join on a 10,000-row table",
        'SELECT B.auction, B.bidder, B.price, B.date_time, S."value" '
        "FROM (SELECT *, PROCTIME() AS p_time FROM bid) B "
        'JOIN side_input FOR SYSTEM_TIME AS OF B.p_time AS S ON MOD(B.auction, 10000) = S."key"',
        "SELECT B.auction, B.bidder, B.price, B.date_time, S.`value` "
        "FROM (SELECT *, PROCTIME() AS p_time FROM bid) B "
        "JOIN side_input FOR SYSTEM_TIME AS OF B.p_time AS S ON MOD(B.auction, 10000) = S.`key`",
    ),
    "q14": (
        "calculation",
        Q14.format(h="HOUR(date_time)", len="CHAR_LENGTH"),
        None,
    ),
    "q15": (
        "bidding statistics per day",
        f"SELECT {DAY} AS day, {stats([('bidder', 'bidders'), ('auction', 'auctions')])} "
        f"FROM bid GROUP BY {DAY}",
        f"SELECT {DAY} AS `day`, {stats([('bidder', 'bidders'), ('auction', 'auctions')])} "
        f"FROM bid GROUP BY {DAY}",
    ),
    "q16": (
        "channel statistics per day",
        f"SELECT channel, {DAY} AS day, MAX(DATE_FORMAT(date_time, 'HH:mm')) AS minute, "
        f"{stats([('bidder', 'bidders'), ('auction', 'auctions')])} "
        f"FROM bid GROUP BY channel, {DAY}",
        f"SELECT channel, {DAY} AS `day`, MAX(DATE_FORMAT(date_time, 'HH:mm')) AS `minute`, "
        f"{stats([('bidder', 'bidders'), ('auction', 'auctions')])} "
        f"FROM bid GROUP BY channel, {DAY}",
    ),
    "q17": (
        "auction statistics per day",
        Q17.format(day=DAY, ranks=RANK_BIDS),
        Q17.format(day=DAY, ranks=RANK_BIDS).replace("AS day", "AS `day`"),
    ),
    "q18": (
        "last bid per bidder and auction: Top-1",
        "SELECT auction, bidder, price, channel, url, date_time, extra FROM ("
        "SELECT *, ROW_NUMBER() OVER (PARTITION BY bidder, auction ORDER BY date_time DESC) "
        "AS rank_number FROM bid) WHERE rank_number <= 1",
        None,
    ),
    "q19": (
        "top 10 bids per auction: Top-N",
        "SELECT * FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY auction ORDER BY price DESC) "
        "AS rank_number FROM bid) WHERE rank_number <= 10",
        None,
    ),
    "q20": (
        "expand bid with auction: join",
        "SELECT auction, bidder, price, channel, url, B.date_time, B.extra, "
        "item_name, description, initial_bid, reserve, A.date_time AS a_date_time, expires, "
        "seller, category, A.extra AS a_extra "
        "FROM bid AS B INNER JOIN auction AS A ON B.auction = A.id WHERE A.category = 10",
        None,
    ),
    "q21": (
        "add channel id",
        Q21.format(extract="REGEXP_EXTRACT(url, '(&|^)channel_id=([^&]*)', 2)"),
        None,
    ),
    "q22": (
        "URL directories",
        "SELECT auction, bidder, price, channel, SPLIT_INDEX(url, '/', 3) AS dir1, "
        "SPLIT_INDEX(url, '/', 4) AS dir2, SPLIT_INDEX(url, '/', 5) AS dir3 FROM bid",
        None,
    ),
    "tumble": (
        "TUMBLE 10 s, COUNT/SUM over 1,000 keys",
        TUMBLE,
        None,
    ),
    "tumble-eowc": (
        "same, EMIT ON WINDOW CLOSE in Weir",
        TUMBLE + " EMIT ON WINDOW CLOSE",
        TUMBLE,
    ),
    "over": (
        "OVER aggregate: sum of each auction's last 10 bids",
        "SELECT auction, price, SUM(price) OVER (PARTITION BY auction ORDER BY date_time "
        "ROWS BETWEEN 9 PRECEDING AND CURRENT ROW) AS last10 FROM bid",
        None,
    ),
}


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def peak_rss_kb(pid):
    """VmHWM (peak resident set) of a live process, in kB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def cpu_seconds(pid):
    """User + system CPU time of a live process (all its threads), in seconds."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


# Extra command-line arguments for every Weir server (--checkpoint-interval-ms).
WEIR_ARGS: list = []


class Weir:
    """A weir server on free ports with a temporary data directory."""

    def __init__(self, binary, workdir, parallelism=1):
        self.data = Path(tempfile.mkdtemp(prefix="weir-data-", dir=workdir))
        self.port = free_port()
        http = free_port()
        self.log = open(self.data / "server.log", "w")
        self.proc = subprocess.Popen(
            [
                str(binary),
                "--data-dir", str(self.data / "db"),
                "--pg-addr", f"127.0.0.1:{self.port}",
                "--http-addr", f"127.0.0.1:{http}",
                "--parallelism", str(parallelism),
                *WEIR_ARGS,
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")},
        )
        deadline = time.time() + 30
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"weir exited: see {self.data / 'server.log'}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                break
            except OSError:
                if time.time() > deadline:
                    raise RuntimeError("weir did not start listening in 30 s")
                time.sleep(0.05)

    def psql(self, *commands, output=None, unaligned=False):
        args = ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1",
                "-p", str(self.port), "-U", "weir", "-d", "weir"]
        if unaligned:
            args += ["-A", "-t", "-F", ","]
        if output:
            args += ["-o", str(output)]
        for c in commands:
            args += ["-c", c]
        r = subprocess.run(args, capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"psql failed ({' '.join(commands)[:200]}): {r.stderr.strip()}")
        return r.stdout

    def scalar(self, sql):
        return self.psql(sql, unaligned=True).strip()

    def stop(self):
        """Stops the server; returns its peak RSS in kB."""
        rss = peak_rss_kb(self.proc.pid)
        self.proc.terminate()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
        return rss


# The streams a query reads, when not only `bid`.
TABLES = {"q3": ["auction", "person"], "q4": ["auction", "bid"], "q8": ["person", "auction"],
          "q9": ["auction", "bid"], "q20": ["bid", "auction"]}


def tables_of(q):
    return TABLES.get(q, ["bid"])


# The side table a query looks rows up in (q13): 10,000 rows (key, value),
# written beside the CSV files; Weir loads it into a table before the timed
# part, Flink reads it through its filesystem connector.
SIDE_TABLES = {"q13": "side_input"}
SIDE_ROWS = 10_000


def side_input(data_dir):
    path = data_dir / "side_input.csv"
    if not path.exists():
        path.write_text("".join(f"{k},side-{k * 7 % 1000}\n" for k in range(SIDE_ROWS)))
    return path


def load_side_table(weir, path):
    weir.psql('CREATE TABLE side_input ("key" BIGINT PRIMARY KEY, "value" VARCHAR)')
    rows = [line.split(",") for line in path.read_text().splitlines()]
    for i in range(0, len(rows), 2_000):
        values = ", ".join(f"({k}, '{v}')" for k, v in rows[i:i + 2_000])
        weir.psql(f"INSERT INTO side_input VALUES {values}")


def file_with(data_dir):
    return lambda table: f"connector = 'file', path = '{data_dir / (table + '.csv')}', format = 'csv'"


def create_stream(table, with_clause):
    return f"CREATE STREAM {table} ({COLUMNS[table]}, {WATERMARK}) WITH ({with_clause})"


def nexmark_with(events):
    return lambda table: (f"connector = 'nexmark', 'nexmark.table' = '{table}', "
                          f"'nexmark.events' = '{events}'")


def build():
    log("building weir (release)")
    env = {**os.environ, "CARGO_TARGET_DIR": str(TARGET_DIR)}
    subprocess.run(["cargo", "build", "--release", "--bin", "weir"], cwd=REPO, env=env, check=True)


def generate(binary, workdir, events, data_dir):
    """Writes the three CSV files; returns their row counts."""
    log(f"writing {events:,} Nexmark events to {data_dir}")
    data_dir.mkdir(parents=True, exist_ok=True)
    weir = Weir(binary, workdir)
    counts = {}
    try:
        for table in COLUMNS:
            weir.psql(create_stream(table, nexmark_with(events)(table)))
            path = data_dir / f"{table}.csv"
            weir.psql(f"SELECT * FROM {table}", output=path, unaligned=True)
            with open(path, "rb") as f:
                counts[table] = sum(1 for _ in f)
            log(f"  {table}.csv: {counts[table]:,} rows, {path.stat().st_size / 1e6:.0f} MB")
    finally:
        weir.stop()
        shutil.rmtree(weir.data, ignore_errors=True)
    (data_dir / "events").write_text(str(events))
    return counts


def job_status(conn, name):
    """The status of job `name` in SHOW JOBS (None if absent)."""
    for row in conn.query("SHOW JOBS"):
        if row[0] == name:
            return row[1]
    return None


def run_weir(binary, workdir, sql, tables, source_with, parallelism, repeat=1, side=None,
             blackhole=False):
    """The fastest of `repeat` runs, each on a fresh server."""
    return min((run_weir_once(binary, workdir, sql, tables, source_with, parallelism, side,
                              blackhole)
                for _ in range(repeat)),
               key=lambda r: r["seconds"])


def run_weir_once(binary, workdir, sql, tables, source_with, parallelism, side=None,
                  blackhole=False):
    """Creates the streams (`source_with(table)`: their WITH clause) and the
    side table (`side`: its CSV file), then times CREATE MATERIALIZED VIEW + FLUSH;
    with `blackhole`, Flink's CREATE TABLE q WITH ('connector' = 'blackhole')
    AS query (the INSERT INTO job Flink runs) + FLUSH instead."""
    weir = Weir(binary, workdir, parallelism)
    job = "insert_into_q" if blackhole else "q"
    try:
        for table in tables:
            weir.psql(create_stream(table, source_with(table)))
        if side:
            load_side_table(weir, side)
        # Timed over a connection opened beforehand, as Flink's jobs are
        # timed inside its own process: a psql invocation costs 30-50 ms
        # here, a tenth of the fastest runs.
        with pgclient.Connection("127.0.0.1", weir.port) as conn:
            cpu0 = cpu_seconds(weir.proc.pid)
            t0 = time.perf_counter()
            if blackhole:
                conn.query(f"CREATE TABLE q WITH ('connector' = 'blackhole') AS {sql}")
            else:
                conn.query(f"CREATE MATERIALIZED VIEW q AS {sql}")
            conn.query("FLUSH")
            flush = time.perf_counter() - t0
            # The input is bounded: the job finishes once all of it is in
            # the view (End applied, final epoch committed). FLUSH means the
            # same, but before commit 4a69ccf a checkpoint barrier could
            # release a pending FLUSH early, so check the job's status as
            # well.
            while (status := job_status(conn, job)) == "running":
                time.sleep(0.01)
            seconds = time.perf_counter() - t0
            cpu = cpu_seconds(weir.proc.pid) - cpu0
        if status != "finished":
            raise RuntimeError(f"job {job} is {status}")
        rows = None if blackhole else int(weir.scalar("SELECT COUNT(*) FROM q"))
    finally:
        rss = weir.stop()
        shutil.rmtree(weir.data, ignore_errors=True)
    return {"seconds": seconds, "cpu_seconds": cpu, "flush_seconds": flush, "rss_kb": rss,
            "mv_rows": rows}


# ---------------------------------------------------------------- Flink side


def ensure_flink():
    python = VENV / "bin" / "python"
    if python.exists():
        r = subprocess.run([str(python), "-c", "import pyflink.version as v; print(v.__version__)"],
                           capture_output=True, text=True)
        if r.stdout.strip() == FLINK_VERSION:
            return python
    log(f"installing apache-flink=={FLINK_VERSION} into {VENV}")
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", f"apache-flink=={FLINK_VERSION}"],
                   check=True)
    log(f"  installed in {time.perf_counter() - t0:.0f} s")
    return python


def run_flink(python, sql, tables, data_dir, workdir, parallelism, repeat, side=None):
    """Runs the query in a fresh JVM, after two small jobs over 1,000 rows
    of each table (a warm-up, then one that measures the fixed cost of a
    job); the fastest of `repeat` runs."""
    small = Path(tempfile.mkdtemp(prefix="flink-warmup-", dir=workdir))
    for table in tables:
        with open(data_dir / f"{table}.csv") as src, open(small / f"{table}.csv", "w") as dst:
            for i, line in enumerate(src):
                if i == 1000:
                    break
                dst.write(line)
    args = [str(python), __file__, "--flink-worker", json.dumps({
        "sql": sql,
        "tables": tables,
        "warmup": str(small),
        "path": str(data_dir),
        "parallelism": parallelism,
        "repeat": repeat,
        "side": str(side) if side else None,
    })]
    # In a process group of its own: the worker's JVM outlives it by a
    # second or two of shutdown at more than a core, which would otherwise
    # overlap whatever is measured next.
    worker = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              start_new_session=True)
    stdout, stderr = worker.communicate()
    end_group(worker.pid)
    shutil.rmtree(small, ignore_errors=True)
    if worker.returncode != 0:
        raise RuntimeError(f"flink failed: {stderr[-3000:]}")
    return json.loads(stdout.strip().splitlines()[-1])


def end_group(pgid, timeout=30.0):
    """Kills what is left of process group `pgid` and waits until it is gone."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = False
        for d in Path("/proc").iterdir():
            if not d.name.isdigit():
                continue
            try:
                fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            # State, parent, process group; a zombie has let go of its memory.
            if int(fields[2]) == pgid and fields[0] != "Z":
                alive = True
                break
        if not alive:
            return
        time.sleep(0.05)


def flink_worker(spec):
    """Runs inside the PyFlink venv: prints the timings and the JVM's peak RSS as JSON."""
    from pyflink.table import EnvironmentSettings, TableDescriptor, TableEnvironment

    env = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
    env.get_config().set("parallelism.default", str(spec["parallelism"]))

    def jvm():
        """The JVM: the child of this process (the Py4J gateway)."""
        me = str(os.getpid())
        for d in Path("/proc").iterdir():
            if d.name.isdigit():
                try:
                    stat = (d / "stat").read_text()
                except OSError:
                    continue
                if stat.rsplit(")", 1)[1].split()[1] == me:
                    return int(d.name)
        return None

    def run(path):
        for table in spec["tables"]:
            env.execute_sql(f"DROP TEMPORARY TABLE IF EXISTS {table}")
            env.execute_sql(
                f"CREATE TEMPORARY TABLE {table} ({COLUMNS[table]}, {WATERMARK}) WITH ("
                f"'connector' = 'filesystem', 'path' = 'file://{path}/{table}.csv', "
                f"'format' = 'csv')"
            )
        if spec.get("side"):
            env.execute_sql("DROP TEMPORARY TABLE IF EXISTS side_input")
            env.execute_sql(
                "CREATE TEMPORARY TABLE side_input (`key` BIGINT, `value` VARCHAR) WITH ("
                f"'connector' = 'filesystem', 'path' = 'file://{spec['side']}', 'format' = 'csv')"
            )
        cpu0 = cpu_seconds(pid) if pid else float("nan")
        t0 = time.perf_counter()
        env.sql_query(spec["sql"]).execute_insert(
            TableDescriptor.for_connector("blackhole").build()
        ).wait()
        seconds = time.perf_counter() - t0
        return seconds, (cpu_seconds(pid) if pid else float("nan")) - cpu0

    pid = jvm()
    warmup, _ = run(spec["warmup"])
    # A second small job: what any job costs once the JVM is warm (planning,
    # submission, task deployment, shutdown), whatever its input.
    overhead, _ = run(spec["warmup"])
    seconds, cpu = min(run(spec["path"]) for _ in range(spec["repeat"]))
    rss = peak_rss_kb(pid) if pid else None
    print(json.dumps({"seconds": seconds, "cpu_seconds": cpu, "warmup_seconds": warmup,
                      "overhead_seconds": overhead, "rss_kb": rss}))


# ---------------------------------------------------------------- report


def machine():
    cpu = "?"
    for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
        if line.startswith("Model name:"):
            cpu = line.split(":", 1)[1].strip()
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB RAM"


def rate(rows, seconds):
    return rows / seconds if seconds else float("nan")


def fmt_rate(r):
    return "-" if r is None else f"{r:,.0f}"


def fmt_mb(kb):
    return "-" if not kb else f"{kb / 1024:,.0f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=1_000_000,
                    help="Nexmark events in all (person+auction+bid); default 1,000,000")
    ap.add_argument("--queries", default="all",
                    help=f"comma-separated, from {', '.join(QUERIES)}; default all")
    ap.add_argument("--skip-flink", action="store_true")
    ap.add_argument("--skip-build", action="store_true")
    ap.add_argument("--parallelism", default="1,2",
                    help="comma-separated parallelisms, each run by both engines (default 1,2)")
    ap.add_argument("--repeat", type=int, default=1,
                    help="runs per engine and query, the fastest counts (default 1)")
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "weir-nexmark",
                    help="CSV files and temporary data directories (default /tmp/weir-nexmark)")
    ap.add_argument("--keep", action="store_true", help="keep the CSV files for the next run")
    ap.add_argument("--checkpoint-interval-ms", type=int,
                    help="Weir's checkpoint interval (0: off; default: the server's, 1 s)")
    ap.add_argument("--flink-worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.flink_worker:
        flink_worker(json.loads(args.flink_worker))
        return

    if args.checkpoint_interval_ms is not None:
        WEIR_ARGS.extend(["--checkpoint-interval-ms", str(args.checkpoint_interval_ms)])
    queries = [q.strip() for q in args.queries.split(",") if q.strip()]
    if queries == ["all"]:
        queries = list(QUERIES)
    for q in queries:
        if q not in QUERIES:
            ap.error(f"unknown query {q} (known: {', '.join(QUERIES)})")
    if not args.skip_build:
        build()
    binary = TARGET_DIR / "release" / "weir"
    python = None if args.skip_flink else ensure_flink()

    workdir = args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    data_dir = workdir / f"csv-{args.events}"
    stamp = data_dir / "events"
    if stamp.exists() and stamp.read_text() == str(args.events):
        counts = {}
        for table in COLUMNS:
            with open(data_dir / f"{table}.csv", "rb") as f:
                counts[table] = sum(1 for _ in f)
        log(f"reusing {data_dir} ({', '.join(f'{n:,} {t}' for t, n in counts.items())} rows)")
    else:
        counts = generate(binary, workdir, args.events, data_dir)

    parallelisms = [int(p) for p in str(args.parallelism).split(",") if p.strip()]
    results = []
    for q in queries:
        desc, weir_sql, flink_sql = QUERIES[q]
        tables = tables_of(q)
        names = " and ".join(f"{t}.csv" for t in tables)
        side = side_input(data_dir) if q in SIDE_TABLES else None
        for p in parallelisms:
            log(f"{q}: weir over {names}, parallelism {p}")
            w = run_weir(binary, workdir, weir_sql, tables, file_with(data_dir), p, args.repeat,
                         side)
            log(f"  {w['seconds']:.2f} s (FLUSH returned after {w['flush_seconds']:.2f} s), {w['mv_rows']:,} rows in the view, peak RSS {fmt_mb(w['rss_kb'])} MB")
            log(f"{q}: weir over its nexmark generator, parallelism {p}")
            g = run_weir(binary, workdir, weir_sql, tables, nexmark_with(args.events), p,
                         args.repeat, side)
            log(f"  {g['seconds']:.2f} s (FLUSH returned after {g['flush_seconds']:.2f} s), {g['mv_rows']:,} rows in the view, peak RSS {fmt_mb(g['rss_kb'])} MB")
            if w["mv_rows"] != g["mv_rows"]:
                log(f"  WARNING: the view has {w['mv_rows']} rows over the CSV, {g['mv_rows']} over the generator")
            log(f"{q}: weir over {names} into a blackhole table, parallelism {p}")
            try:
                b = run_weir(binary, workdir, weir_sql.removesuffix(" EMIT ON WINDOW CLOSE"),
                             tables, file_with(data_dir), p, args.repeat, side, blackhole=True)
                log(f"  {b['seconds']:.2f} s, peak RSS {fmt_mb(b['rss_kb'])} MB")
            except (RuntimeError, subprocess.CalledProcessError) as e:
                log(f"  weir could not run it into a blackhole table: {str(e)[-600:]}")
                b = None
            w["blackhole"] = b
            f = None
            if python:
                log(f"{q}: flink over {names} (parallelism {p})")
                try:
                    f = run_flink(python, flink_sql or weir_sql, tables, data_dir, workdir, p,
                                  args.repeat, side)
                except RuntimeError as e:
                    log(f"  flink could not run it: {str(e)[-600:]}")
                    results.append((q, desc, p, w, g, None))
                    continue
                log(f"  {f['seconds']:.2f} s (jobs over 1,000 rows: first {f['warmup_seconds']:.2f} s, "
                    f"then {f['overhead_seconds']:.2f} s), "
                    f"JVM peak RSS {fmt_mb(f['rss_kb'])} MB")
            results.append((q, desc, p, w, g, f))

    if not args.keep:
        shutil.rmtree(data_dir, ignore_errors=True)

    print()
    print(f"Nexmark, {args.events:,} events ({', '.join(f'{n:,} {t}' for t, n in counts.items())} rows; "
          f"q3 and q8 read person and auction, q4, q9 and q20 auction and bid, the others bid). {machine()}.")
    print("Rows/s = rows of the tables read / wall time (Weir: CREATE MATERIALIZED VIEW until FLUSH has returned and the job has finished;")
    print("'blackhole': Weir running what Flink runs, the query into a blackhole table (CREATE TABLE q WITH ('connector' = 'blackhole') AS query), timed the same way;")
    print(f"Flink {FLINK_VERSION}: job submission until it finishes, after a warm-up job). Per core: rows/s / parallelism.")
    if args.repeat > 1:
        print(f"Fastest of {args.repeat} runs per engine and query.")
    print()
    head = ("| query | p | Weir s | Flink s | Weir CPU s | Flink CPU s | Weir rows/s | Flink rows/s "
            "| Weir rows/s/core | Flink rows/s/core | Weir / Flink "
            "| Weir s, blackhole | Weir / Flink, blackhole "
            "| Weir rows/s, nexmark connector | Weir peak RSS MB (CSV / connector) "
            "| Flink JVM peak RSS MB | rows in view |")
    print(head)
    # CPU s: user + system time of the weir process / the Flink JVM during
    # the timed run (all threads: more than the wall time means more than
    # one core was busy).
    print("| --- " * (head.count("|") - 1) + "|")
    for q, desc, p, w, g, f in results:
        rows = sum(counts[t] for t in tables_of(q))
        wr = rate(rows, w["seconds"])
        gr = rate(rows, g["seconds"])
        fr = rate(rows, f["seconds"]) if f else None
        ratio = f"{wr / fr:.2f}" if fr else "-"
        b = w.get("blackhole")
        bs = f"{b['seconds']:.2f}" if b else "-"
        bratio = f"{rate(rows, b['seconds']) / fr:.2f}" if b and fr else "-"
        fs = f"{f['seconds']:.2f}" if f else "-"
        fc = f"{f['cpu_seconds']:.2f}" if f else "-"
        print(f"| {q} ({desc}) | {p} | {w['seconds']:.2f} | {fs} | {w['cpu_seconds']:.2f} | {fc} "
              f"| {fmt_rate(wr)} | {fmt_rate(fr)} | {fmt_rate(wr / p)} | {fmt_rate(fr / p if fr else None)} | {ratio} "
              f"| {bs} | {bratio} "
              f"| {fmt_rate(gr)} | {fmt_mb(w['rss_kb'])} / {fmt_mb(g['rss_kb'])} "
              f"| {fmt_mb(f['rss_kb']) if f else '-'} | {w['mv_rows']:,} |")
    print()
    fixed = [f["overhead_seconds"] for *_, f in results if f]
    if fixed:
        print(f"Flink's fixed cost per job (a job over 1,000 rows, JVM warm): "
              f"{min(fixed):.2f}-{max(fixed):.2f} s, included in 'Flink s'.")
    print("Flink nexmark generator: not measured (not available from PyPI; the nexmark/nexmark project is built with Maven).")


if __name__ == "__main__":
    main()
