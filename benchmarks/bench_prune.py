"""Benchmark of retention: lookups while `predstore runs prune` drops expired partitions. A script.

    python benchmarks/bench_prune.py [--expired 300] [--rows 10000] [--kept 65] [--seconds 8]

It starts a throwaway embedded PostgreSQL, publishes ``--expired`` daily partitions of ``--rows``
predictions each, dated more than a year back, and ``--kept`` recent ones, and serves them with the
lookup API (cache off, under granian as `predstore serve` runs it). A load generator in its own process
(``--connections`` keep-alive connections, loopback only) looks up random ids of every partition:

1. quiet: for ``--seconds``, nothing else running;
2. pruning: from the start of ``predstore runs prune --older-than 365d --pace 3`` (the scheduler's
   pace, ``--pace``) until it exits.

It prints requests/s and p99 of both, their ratio (target: p99 while pruning <= 1.5x quiet), the
answers that were neither 200 nor 404 (target: none), and what the prune dropped. Ids of expired
partitions answer 200 until their run expires and 404 after, never an error.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench_lookup import Load, _generate, free_port, publish, serve, stop, throwaway_store

from store.features import FeatureSchema

REPO = Path(__file__).resolve().parents[1]


def seed(url: str, *, expired: int, kept: int, rows: int) -> None:
    """``expired`` partitions published 400+ days ago and ``kept`` recent ones, ``rows`` ids each."""
    import numpy as np
    import psycopg

    from store import registry

    rng = np.random.default_rng(0)
    with psycopg.connect(url) as conn:
        registry.insert_model(conn, name="daily", version=1, artifact_uri="bench", sha256="0" * 64, format="joblib",
                              task="classification",
                              feature_schema=FeatureSchema(()), classes=["no", "yes"], training_metrics=None)
        registry.set_alias(conn, "daily", "current", 1)
        conn.commit()
        for day in range(expired + kept):
            ids = np.arange(day * rows, (day + 1) * rows)
            publish(conn, "daily", f"day-{day:04d}", ids, rng.random(rows))
        old = datetime.now(UTC) - timedelta(days=400 + expired)
        conn.execute("""UPDATE runs SET published_at = %s + make_interval(days => run_id::int)
                        WHERE run_id IN (SELECT run_id FROM runs ORDER BY run_id LIMIT %s)""", [old, expired])
        conn.commit()
        conn.autocommit = True
        conn.execute("VACUUM ANALYZE")


def measure(load: Load, until: Any) -> dict[str, float]:
    """Drive ``load`` in slices of ``load.seconds`` until ``until()`` is true; pooled figures."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    started = time.perf_counter()
    while True:
        queue: multiprocessing.Queue = multiprocessing.Queue()  # type: ignore[type-arg]
        process = multiprocessing.Process(target=_generate, args=(load, queue))
        process.start()
        slice_latencies, slice_statuses, _ = queue.get(timeout=load.warmup + load.seconds + 120)
        process.join(timeout=30)
        latencies += slice_latencies
        for status, n in slice_statuses.items():
            statuses[status] = statuses.get(status, 0) + n
        if until():
            break
    latencies.sort()
    n = len(latencies)
    return {"requests": n, "rps": n / (time.perf_counter() - started),
            "p99_ms": latencies[min(n - 1, int(0.99 * n))] * 1000 if n else float("nan"),
            "errors": sum(c for s, c in statuses.items() if s not in (200, 404)),
            "not_found": statuses.get(404, 0)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--expired", type=int, default=300)
    parser.add_argument("--kept", type=int, default=65)
    parser.add_argument("--rows", type=int, default=10_000, help="predictions per partition")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--pace", type=float, default=3.0, help="runs prune --pace (the scheduler's is 3)")
    parser.add_argument("--server", default="granian", help="granian (what `predstore serve` runs) or gunicorn")
    args = parser.parse_args()

    with throwaway_store() as (url, scratch):
        started = time.perf_counter()
        seed(url, expired=args.expired, kept=args.kept, rows=args.rows)
        total = (args.expired + args.kept) * args.rows
        print(f"published {args.expired + args.kept} partitions of {args.rows:,} predictions ({args.expired} of them "
              f"older than a year) in {time.perf_counter() - started:.0f} s; {os.cpu_count()} cores; "
              f"{args.connections} connections", flush=True)
        port = free_port()
        server = serve(args.server, "lookup_api:create_app()", url=url, port=port, scratch=scratch, cache=False)
        try:
            load = Load(port=port, connections=args.connections, seconds=args.seconds, warmup=1.0, rows=total,
                        model="daily")
            quiet = measure(load, until=lambda: True)
            env = {**{k: v for k, v in os.environ.items() if not k.startswith("PREDSTORE_")},
                   "PREDSTORE_DATABASE_URL": url, "PREDSTORE_HOME": str(scratch / "home")}
            began = time.perf_counter()
            prune = subprocess.Popen([sys.executable, "-m", "store", "runs", "prune", "--older-than", "365d",
                                      "--pace", str(args.pace)],
                                     cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            busy = measure(Load(**{**load.__dict__, "seconds": 2.0, "warmup": 0.0}),
                           until=lambda: prune.poll() is not None)
            out, err = prune.communicate(timeout=600)
            took = time.perf_counter() - began
        finally:
            stop(server)
        print(f"quiet:   {quiet['rps']:7.0f} requests/s  p99 {quiet['p99_ms']:6.2f} ms  errors {quiet['errors']:.0f}")
        print(f"pruning: {busy['rps']:7.0f} requests/s  p99 {busy['p99_ms']:6.2f} ms  errors {busy['errors']:.0f}  "
              f"(404 {busy['not_found']:.0f}: ids of runs already expired)")
        print(f"prune: exit {prune.returncode} in {took:.1f} s: {(out.strip().splitlines() or [err.strip()])[-1]}")
        print(f"ratio p99 pruning/quiet: {busy['p99_ms'] / quiet['p99_ms']:.2f} (target <= 1.5; errors target 0)")


if __name__ == "__main__":
    main()
