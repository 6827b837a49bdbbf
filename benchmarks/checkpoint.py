#!/usr/bin/env python3
"""Checkpoint cost in Weir: throughput with checkpoints every second against
checkpoints off (same run, same data), checkpoint duration and size, and
recovery time after kill -9, as keyed state grows.

A bounded datagen stream of ROWS rows over KEYS keys feeds
`SELECT k, COUNT(*), SUM(v) FROM g GROUP BY k`; time is measured from
CREATE MATERIALIZED VIEW to the return of FLUSH (all input reflected).

With --state-memory-mb N a third run checkpoints every second under a
memory budget of N MB for keyed state (groups beyond it stay in RocksDB).

With --flink the same job also runs on Apache Flink 2.3 (PyFlink, the venv
nexmark.py installs): Flink's datagen source with the same key range, the
same query into a blackhole sink, checkpoints off and every second, with
the hashmap and the RocksDB (incremental) state backends. That is Flink's
own price for the same durability, measured on the same machine.

Off and on runs alternate, --repeat pairs of them (3 by default); the table
gives the median run of each and, in brackets, each pair's ratio, and the
median CPU time (user and system) the server spent over each kind of run:
with both cores busy, the checkpoints' own cost, steadier than wall time
on a shared machine. "Checkpoint work" is what the server itself counts
(/metrics) in the every-second runs: the CPU time its tasks spent writing
operator state at barriers + the CPU time spent committing epochs, as
shares of the run's CPU time; unlike the difference of two runs' CPU it
is not swamped by run-to-run noise.

Usage: benchmarks/checkpoint.py [--keys 1000000,10000000] [--rows-per-key 2] [--repeat 3] [--state-memory-mb N] [--flink]
Needs psql on PATH; builds weir in release mode first.
"""
import argparse, json, os, shutil, signal, socket, statistics, subprocess, sys, tempfile, threading, time
import urllib.request

import pgclient

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/weir-target"))
WEIR = os.path.join(TARGET, "release", "weir")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def psql(port, sql):
    out = subprocess.run(
        ["psql", "-h", "127.0.0.1", "-p", str(port), "-U", "weir", "-At", "-F", "|", "-c", sql],
        capture_output=True, text=True, check=True)
    return out.stdout.strip()


def start(data, interval_ms, budget_mb=0):
    port, http = free_port(), free_port()
    p = subprocess.Popen([WEIR, "--data-dir", data, "--pg-addr", f"127.0.0.1:{port}",
                          "--http-addr", f"127.0.0.1:{http}",
                          "--checkpoint-interval-ms", str(interval_ms),
                          "--state-memory-mb", str(budget_mb)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0 = time.time()
    while True:
        try:
            psql(port, "SELECT 1")
            return p, port, http
        except subprocess.CalledProcessError:
            if time.time() - t0 > 600:
                raise RuntimeError("weir did not start")
            time.sleep(0.02)


def cpu_seconds(pid):
    """User and system CPU time of process `pid` so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def job_metric(http, metric, job):
    """A job's counter from the server's /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{http}/metrics", timeout=10) as r:
        for line in r.read().decode().splitlines():
            name, _, value = line.rpartition(" ")
            if name == f'{metric}{{job="{job}"}}':
                return float(value)
    raise RuntimeError(f"{metric} of job {job} not in /metrics")


def peak_rss_mb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def run(keys, rows, interval_ms, budget_mb=0):
    data = tempfile.mkdtemp(prefix="weir-bench-")
    try:
        p, port, http = start(data, interval_ms, budget_mb)
        psql(port, f"""CREATE STREAM g (k BIGINT, v BIGINT) WITH (connector = 'datagen', rows = '{rows}', seed = '1',
             batch.size = '8192', fields.k.kind = 'random', fields.k.min = '0', fields.k.max = '{keys - 1}',
             fields.v.kind = 'random', fields.v.min = '0', fields.v.max = '100')""")
        samples = []
        stop = threading.Event()

        def sample():
            while not stop.is_set():
                try:
                    # Columns by name: SHOW JOBS gains columns over time.
                    out = subprocess.run(
                        ["psql", "-h", "127.0.0.1", "-p", str(port), "-U", "weir", "-A",
                         "-F", "|", "-c", "SHOW JOBS"],
                        capture_output=True, text=True, check=True).stdout.splitlines()
                    if len(out) >= 2:
                        job = dict(zip(out[0].split("|"), out[1].split("|")))
                        if job.get("checkpoint_bytes"):
                            samples.append((int(job["checkpoint_ms"] or 0),
                                            int(job["checkpoint_bytes"] or 0)))
                except subprocess.CalledProcessError:
                    pass
                time.sleep(0.25)

        # Timed over a connection opened beforehand: a psql invocation
        # costs 30-50 ms of start-up here, the same in both runs, which
        # would pull their ratio toward 1.
        with pgclient.Connection("127.0.0.1", port) as conn:
            cpu0 = cpu_seconds(p.pid)
            t0 = time.time()
            conn.query("CREATE MATERIALIZED VIEW agg AS SELECT k, COUNT(*) AS n, SUM(v) AS s FROM g GROUP BY k")
            watcher = threading.Thread(target=sample)
            watcher.start()
            conn.query("FLUSH")
            elapsed = time.time() - t0
            cpu = cpu_seconds(p.pid) - cpu0
        snapshot_s = job_metric(http, "weir_checkpoint_snapshot_cpu_seconds_total", "agg")
        commit_s = job_metric(http, "weir_checkpoint_commit_cpu_seconds_total", "agg")
        stop.set()
        watcher.join()
        groups = int(psql(port, "SELECT COUNT(*) FROM agg"))
        total = int(psql(port, "SELECT SUM(n) FROM agg"))
        assert total == rows, (total, rows)
        rss = peak_rss_mb(p.pid)
        recovery = None
        if interval_ms:
            p.send_signal(signal.SIGKILL)
            p.wait()
            t1 = time.time()
            p, port, _ = start(data, interval_ms, budget_mb)
            psql(port, "FLUSH")
            assert int(psql(port, "SELECT SUM(n) FROM agg")) == rows
            recovery = time.time() - t1
        p.send_signal(signal.SIGTERM)
        p.wait()
        max_ms = max((s[0] for s in samples), default=0)
        max_bytes = max((s[1] for s in samples), default=0)
        return dict(elapsed=elapsed, rate=rows / elapsed, cpu=cpu, groups=groups, rss=rss,
                    snapshot_s=snapshot_s, commit_s=commit_s,
                    max_checkpoint_ms=max_ms, max_checkpoint_bytes=max_bytes, recovery=recovery)
    finally:
        shutil.rmtree(data, ignore_errors=True)


# ---------------------------------------------------------------- Flink side


def run_flink(python, keys, rows, backend, interval_ms):
    """One Flink job in a fresh JVM (after a warm-up job over 1,000 rows)."""
    spec = dict(keys=keys, rows=rows, backend=backend, interval_ms=interval_ms)
    r = subprocess.run([str(python), os.path.abspath(__file__), "--flink-worker", json.dumps(spec)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"flink failed: {r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def flink_worker(spec):
    """Runs inside the PyFlink venv; prints the job's seconds and the checkpoints seen, as JSON."""
    from pyflink.table import EnvironmentSettings, TableDescriptor, TableEnvironment

    ckpt = tempfile.mkdtemp(prefix="flink-ckpt-")
    env = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
    conf = env.get_config()
    conf.set("parallelism.default", str(os.cpu_count()))
    conf.set("state.backend.type", spec["backend"])
    if spec["backend"] == "rocksdb":
        conf.set("execution.checkpointing.incremental", "true")
    if spec["interval_ms"]:
        conf.set("execution.checkpointing.interval", f"{spec['interval_ms']} ms")
        conf.set("execution.checkpointing.dir", f"file://{ckpt}")
        conf.set("state.checkpoints.dir", f"file://{ckpt}")

    def job(rows):
        env.execute_sql("DROP TEMPORARY TABLE IF EXISTS g")
        env.execute_sql(
            "CREATE TEMPORARY TABLE g (k BIGINT, v BIGINT) WITH ('connector' = 'datagen', "
            f"'number-of-rows' = '{rows}', 'rows-per-second' = '1000000000', "
            f"'fields.k.kind' = 'random', 'fields.k.min' = '0', 'fields.k.max' = '{spec['keys'] - 1}', "
            "'fields.v.kind' = 'random', 'fields.v.min' = '0', 'fields.v.max' = '100')")
        t0 = time.perf_counter()
        env.sql_query("SELECT k, COUNT(*) AS n, SUM(v) AS s FROM g GROUP BY k").execute_insert(
            TableDescriptor.for_connector("blackhole").build()).wait()
        return time.perf_counter() - t0

    seen = set()
    stop = threading.Event()

    def watch():
        # Completed checkpoints appear as chk-N directories under the job's directory.
        while not stop.is_set():
            for root, dirs, _ in os.walk(ckpt):
                seen.update(d for d in dirs if d.startswith("chk-"))
            time.sleep(0.05)

    job(1000)
    watcher = threading.Thread(target=watch)
    watcher.start()
    seconds = job(spec["rows"])
    stop.set()
    watcher.join()
    shutil.rmtree(ckpt, ignore_errors=True)
    print(json.dumps({"seconds": seconds, "checkpoints": len(seen)}))


def flink_table(keys_list, rows_per_key):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from nexmark import ensure_flink
    python = ensure_flink()
    head = ("| keys | rows | Flink state backend | checkpoints off rows/s | every 1 s rows/s | on/off "
            "| checkpoints seen |")
    print(f"Flink 2.3 (parallelism {os.cpu_count()}, job time including Flink's fixed cost per job):")
    print(head)
    print("|---" * (head.count("|") - 1) + "|")
    for keys in keys_list:
        rows = keys * rows_per_key
        for backend in ["hashmap", "rocksdb"]:
            off = run_flink(python, keys, rows, backend, 0)
            on = run_flink(python, keys, rows, backend, 1000)
            print(f"| {keys:,} | {rows:,} | {backend} | {rows / off['seconds']:,.0f} | "
                  f"{rows / on['seconds']:,.0f} | {off['seconds'] / on['seconds']:.3f} | "
                  f"{on['checkpoints']} |", flush=True)


def work_share(runs):
    """The median share of the server's CPU time the runs spent on
    checkpoints: operator snapshots (on the job's tasks) + commits (off them)."""
    snap = statistics.median(100 * r["snapshot_s"] / r["cpu"] for r in runs)
    commit = statistics.median(100 * r["commit_s"] / r["cpu"] for r in runs)
    return f"{snap:.1f} + {commit:.1f}"


def median_run(runs):
    """The run of median rate (the lower middle one of an even count)."""
    if not runs:
        return None
    return sorted(runs, key=lambda r: r["rate"])[(len(runs) - 1) // 2]


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--flink-worker":
        flink_worker(json.loads(sys.argv[2]))
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("--keys", default="1000000,10000000")
    ap.add_argument("--rows-per-key", type=int, default=2)
    ap.add_argument("--state-memory-mb", type=int, default=0)
    ap.add_argument("--skip-off", action="store_true", help="no run with checkpoints off")
    ap.add_argument("--flink", action="store_true", help="also run the job on Flink 2.3")
    ap.add_argument("--skip-weir", action="store_true", help="only the Flink runs")
    ap.add_argument("--repeat", type=int, default=3,
                    help="off/on pairs per key count, run alternately; medians are reported")
    args = ap.parse_args()
    keys_list = [int(k) for k in args.keys.split(",")]
    if args.skip_weir:
        flink_table(keys_list, args.rows_per_key)
        return
    budget = args.state_memory_mb
    subprocess.run(["cargo", "build", "--release", "--bin", "weir"], cwd=ROOT, check=True,
                   env=dict(os.environ, CARGO_TARGET_DIR=TARGET))
    print(f"machine: {os.cpu_count()} cores")
    head = ("| keys | rows | checkpoints off rows/s | every 1 s rows/s | on/off (each pair) | CPU s off / on "
            "| checkpoint work, % of CPU on | max checkpoint ms | max checkpoint MB | recovery s | peak RSS MB |")
    if budget:
        head += f" {budget} MB budget rows/s | its peak RSS MB | its recovery s |"
    print(head)
    print("|---" * (head.count("|") - 1) + "|")
    for keys in keys_list:
        rows = keys * args.rows_per_key
        # Off and on alternate, so that a slow spell of a shared machine
        # falls on both; each figure is the median of its runs.
        offs, ons = [], []
        for _ in range(max(args.repeat, 1)):
            if not args.skip_off:
                offs.append(run(keys, rows, 0))
            ons.append(run(keys, rows, 1000))
        off = median_run(offs)
        on = median_run(ons)
        pairs = " ".join(f"{b['rate'] / a['rate']:.2f}" for a, b in zip(offs, ons))
        line = (f"| {keys:,} | {rows:,} | {off['rate'] if off else float('nan'):,.0f} | {on['rate']:,.0f} | "
                f"{on['rate'] / off['rate'] if off else float('nan'):.3f} ({pairs or '-'}) | "
                f"{statistics.median(r['cpu'] for r in offs) if offs else float('nan'):.2f} / "
                f"{statistics.median(r['cpu'] for r in ons):.2f} | "
                f"{work_share(ons)} | "
                f"{on['max_checkpoint_ms']} | {on['max_checkpoint_bytes'] / 1e6:.1f} | {on['recovery']:.2f} | {on['rss']:,.0f} |")
        if budget:
            b = run(keys, rows, 1000, budget)
            line += f" {b['rate']:,.0f} | {b['rss']:,.0f} | {b['recovery']:.2f} |"
        print(line, flush=True)
    if args.flink:
        flink_table(keys_list, args.rows_per_key)


if __name__ == "__main__":
    main()
