"""Soak of the lookup API: not a test, a script.

    python benchmarks/soak_lookup.py [--rate 300] [--seconds 60] [--quiet 20] [--rows 200000]
                                     [--publishes 1] [--every 0]

It starts a throwaway embedded PostgreSQL, registers a small model, scores and publishes one
partition of ``--rows`` entities, and serves it with gunicorn (the production settings of
lookup_api/gunicorn.conf.py). A load generator in its own process then asks for random entities
of that model at a fixed rate (open loop: each request has a scheduled time and its latency is
counted from it, so a stall is not hidden by requests that were never sent):

1. ``--quiet`` seconds with nothing else running: the quiet p99;
2. ``--seconds`` seconds while `predstore score --force` re-scores and publishes the partition:
   once by default (a lookup load "while a new run publishes"), or ``--publishes N``
   times (0: until the soak ends), back to back or a run starting every ``--every`` seconds
   (each publish supersedes the last, drops the lookup caches by NOTIFY, and retention detaches
   and drops old runs' tables).

It prints, for each phase, requests, errors (anything but a 200), p50/p99/max latency, and the
gunicorn processes' memory (RSS) sampled every second, and checks the targets: zero
errors, soak p99 <= 1.5 x quiet p99, memory flat (the last sample within 10% of the first after
the warm-up). It also prints the p99 of the requests due in the half second after each publish
commit: what publishing itself costs lookups, apart from the scoring job's CPU before it.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_lookup import HOST, free_port  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
MODEL = "soak"
THREADS = 32
#: Seconds after each publish commit whose requests show what publishing itself costs lookups
#: (the NOTIFY and cache drop, re-planning after ATTACH, retention's DETACH and DROP).
AROUND_PUBLISH = 0.5


def prepare(scratch: Path, url: str, rows: int) -> Path:
    """Register MODEL and publish its partition once; returns the partition's file."""
    import joblib
    import numpy as np
    import pandas as pd
    from sklearn.linear_model import LogisticRegression

    from batch.models import register_model
    from batch.runner import ScoreRequest, score_partition
    from store.settings import Settings

    rng = np.random.default_rng(0)
    train = pd.DataFrame(rng.normal(size=(2000, 3)), columns=["f0", "f1", "f2"])
    model = LogisticRegression().fit(train, (train.f0 + train.f1 > 0).astype(int))
    joblib.dump(model, scratch / "model.joblib")
    settings = Settings(home=scratch / "home", database_url=url)
    register_model(settings, scratch / "model.joblib", name=MODEL)
    data = pd.DataFrame(rng.normal(size=(rows, 3)), columns=["f0", "f1", "f2"])
    data.insert(0, "entity_id", [f"e{i}" for i in range(rows)])
    path = scratch / "part.parquet"
    data.to_parquet(path, index=False, row_group_size=50_000)
    score_partition(settings, ScoreRequest(path=path, model_name=MODEL))
    return path


def _worker(port: int, rate: float, seconds: float, rows: int, start: float, index: int,
            out: list[tuple[float, int, float]]) -> None:
    """Send requests index, index + THREADS, ... at their scheduled times on one keep-alive connection."""
    rng = random.Random(index)
    conn = http.client.HTTPConnection(HOST, port, timeout=10)
    k = index
    while True:
        due = start + k / rate
        if due > start + seconds:
            break
        wait = due - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
        try:
            conn.request("GET", f"/v1/models/{MODEL}/predictions/e{rng.randrange(rows)}")
            response = conn.getresponse()
            response.read()
            status = response.status
        except (OSError, http.client.HTTPException):
            status = -1
            conn.close()
            conn = http.client.HTTPConnection(HOST, port, timeout=10)
        out.append((time.perf_counter() - due, status, time.time() - (time.perf_counter() - due)))
        k += THREADS
    conn.close()


def _generate(port: int, rate: float, seconds: float, rows: int, results: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    start = time.perf_counter() + 0.5
    outs: list[list[tuple[float, int, float]]] = [[] for _ in range(THREADS)]
    threads = [threading.Thread(target=_worker, args=(port, rate, seconds, rows, start, i, outs[i]))
               for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    results.put([item for out in outs for item in out])


def phase(port: int, *, rate: float, seconds: float, rows: int, server: psutil.Process,
          then: Callable[[], None] | None = None) -> tuple[dict[str, float], list[tuple[float, float]]]:
    """Drive the API for ``seconds``, calling ``then`` once the load runs: latency percentiles,
    errors and memory samples, and each request's (due time as epoch seconds, latency)."""
    results: multiprocessing.Queue = multiprocessing.Queue()  # type: ignore[type-arg]
    process = multiprocessing.Process(target=_generate, args=(port, rate, seconds, rows, results))
    # Forked before any publish starts: a fork while a publish runs would hold its output pipes open.
    process.start()
    if then is not None:
        then()
    memory: list[float] = []
    deadline = time.monotonic() + seconds + 0.5
    while time.monotonic() < deadline:
        memory.append(_rss(server) / 2**20)
        time.sleep(1.0)
    answers = results.get(timeout=seconds + 120)
    process.join(timeout=30)
    latencies = [latency for latency, _, _ in answers]
    return ({"requests": len(latencies), "rate": len(latencies) / seconds,
             "errors": sum(1 for _, s, _ in answers if s != 200), "p50_ms": percentile(latencies, 0.5),
             "p99_ms": percentile(latencies, 0.99), "max_ms": max(latencies) * 1000,
             "rss_first_mb": memory[min(2, len(memory) - 1)], "rss_last_mb": memory[-1], "rss_max_mb": max(memory)},
            [(due, latency) for latency, _, due in answers])


def percentile(latencies: list[float], q: float) -> float:
    """The ``q`` quantile of ``latencies`` (seconds), in milliseconds."""
    ordered = sorted(latencies)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else float("nan")


def published_at(url: str) -> list[float]:
    """When each run of MODEL was published (epoch seconds of its publish transaction)."""
    import psycopg

    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT extract(epoch FROM published_at)::float8 FROM runs "
                            "WHERE model_name = %s AND published_at IS NOT NULL", [MODEL]).fetchall()
    return [row[0] for row in rows]


def _rss(server: psutil.Process) -> int:
    try:
        return sum(p.memory_info().rss for p in [server, *server.children(recursive=True)])
    except psutil.NoSuchProcess:
        return 0


def publish_loop(path: Path, env: dict[str, str], stop: threading.Event, published: list[float],
                 every: float, count: int) -> None:
    """Score and publish the partition again, a run starting every ``every`` seconds (0: back to
    back), ``count`` times (0: any number) or until told to stop."""
    next_start = time.perf_counter()
    while (not count or len(published) < count) and not stop.wait(max(0.0, next_start - time.perf_counter())):
        started = time.perf_counter()
        next_start = started + every
        done = subprocess.run([sys.executable, "-m", "store", "score", str(path), "--model", MODEL, "--force",
                               "--json"], env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"a publish failed: {done.stderr.strip().splitlines()[-1:]}")
        published.append(time.perf_counter() - started)
        result = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"  published run {result['run_id']} in {published[-1]:.1f} s (scoring {result['duration_s']:.1f} s, "
              f"stages {result['stages']})", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=300.0, help="requests per second (fixed)")
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the soak, while runs publish")
    parser.add_argument("--quiet", type=float, default=20.0, help="length of the quiet phase measured first")
    parser.add_argument("--rows", type=int, default=200_000, help="entities in the partition re-published")
    parser.add_argument("--publishes", type=int, default=1, help="runs published during the soak (0: until it ends)")
    parser.add_argument("--every", type=float, default=0.0,
                        help="seconds between the starts of two publishes (0: back to back)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--cache-size", type=int, help="PREDSTORE_API_CACHE_SIZE of the API (0: no cache)")
    args = parser.parse_args()
    if args.publishes < 0 or args.every < 0:
        parser.error("--publishes and --every take 0 or more")

    from store.db import start_embedded, stop_embedded
    from store.migrate import upgrade

    scratch = Path(tempfile.mkdtemp(prefix="predstore-soak-"))
    pgdata = scratch / "pgdata"
    server = None
    try:
        url = start_embedded(pgdata)
        upgrade(url)
        path = prepare(scratch, url, args.rows)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREDSTORE_")}
        env.update(PREDSTORE_DATABASE_URL=url, PREDSTORE_HOME=str(scratch / "home"))
        api_env = {**env, "PROMETHEUS_MULTIPROC_DIR": str(scratch / "metrics")}
        if args.cache_size is not None:
            api_env["PREDSTORE_API_CACHE_SIZE"] = str(args.cache_size)
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "lookup_api:create_app()", "-c", str(REPO / "lookup_api" /
             "gunicorn.conf.py"), "--bind", f"{HOST}:{port}", "--workers", str(args.workers)],
            cwd=REPO, env=api_env,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(300):
            try:
                http.client.HTTPConnection(HOST, port, timeout=2).request("GET", "/healthz")
                break
            except OSError:
                time.sleep(0.1)
        gunicorn = psutil.Process(server.pid)
        print(f"{os.cpu_count()} cores; gunicorn {args.workers} gthread workers; {args.rows:,} entities; "
              f"{args.rate:g} requests/s fixed rate", flush=True)
        phase(port, rate=args.rate, seconds=5, rows=args.rows, server=gunicorn)  # warm the caches and pools
        quiet, _ = phase(port, rate=args.rate, seconds=args.quiet, rows=args.rows, server=gunicorn)
        stop, published = threading.Event(), []
        publisher = threading.Thread(target=publish_loop, args=(path, env, stop, published, args.every,
                                                                    args.publishes))
        try:
            soak, timeline = phase(port, rate=args.rate, seconds=args.seconds, rows=args.rows, server=gunicorn,
                                   then=publisher.start)
        finally:
            stop.set()
            if publisher.ident is not None:
                publisher.join()
        for name, f in (("quiet", quiet), ("soak", soak)):
            print(f"{name:>5}: {f['requests']:6d} requests ({f['rate']:.0f}/s)  errors {f['errors']}  "
                  f"p50 {f['p50_ms']:6.2f} ms  p99 {f['p99_ms']:6.2f} ms  max {f['max_ms']:7.2f} ms  "
                  f"RSS {f['rss_first_mb']:.0f} -> {f['rss_last_mb']:.0f} MB (max {f['rss_max_mb']:.0f})")
        print(f"publishes during the soak: {len(published)} (each {min(published, default=0):.1f}-"
              f"{max(published, default=0):.1f} s)")
        commits = published_at(url)
        around = [latency for due, latency in timeline
                  if any(0 <= due - commit < AROUND_PUBLISH for commit in commits)]
        print(f"requests due within {AROUND_PUBLISH} s after a publish commit: {len(around)}, "
              f"p99 {percentile(around, 0.99):.2f} ms (ratio to the quiet p99 "
              f"{percentile(around, 0.99) / quiet['p99_ms']:.2f})")
        ratio = soak["p99_ms"] / quiet["p99_ms"]
        flat = soak["rss_last_mb"] <= 1.10 * quiet["rss_first_mb"]
        print(f"targets: zero errors {'ok' if soak['errors'] == 0 else 'MISSED'}; p99 ratio {ratio:.2f} "
              f"(<= 1.5: {'ok' if ratio <= 1.5 else 'MISSED'}); memory flat {'ok' if flat else 'MISSED'}")
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
        stop_embedded(pgdata)
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
