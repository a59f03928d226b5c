"""Benchmark of the lookup API (issue 4): not a test, a script.

    python benchmarks/bench_lookup.py [--rows 1000000] [--partitions 4] [--seconds 10]

It starts a throwaway embedded PostgreSQL, publishes ``--rows`` predictions of one model over
``--partitions`` runs, then drives, in the same run and with the same gunicorn settings:

(a) a naive Flask + psycopg view (one connection and one query per request),
(b) the lookup API (``lookup_api:create_app()``),

with a load generator in its own process (a selector loop, HTTP/1.1 keep-alive, loopback only,
``--connections`` concurrent connections, random keys, a fixed duration), and prints requests/s
and latency percentiles for single-key lookups, and ids/s for the batch endpoint.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"  # loopback only
MODEL = "bench"


def naive_app():  # type: ignore[no-untyped-def]
    """The baseline: Flask, and per request one new psycopg connection and one query."""
    import psycopg
    from flask import Flask, abort

    from store import lookups

    url = os.environ["PREDSTORE_DATABASE_URL"]
    app = Flask("naive")

    @app.get("/v1/models/<name>/predictions/<entity_id>")
    def prediction(name: str, entity_id: str) -> dict[str, object]:
        with psycopg.connect(url, autocommit=True) as conn:
            found = lookups.current_prediction(conn, name, entity_id)
        if found is None:
            abort(404)
        return {"entity_id": found.entity_id, "model": found.model, "model_version": found.model_version,
                "run_id": found.run_id, "partition": found.partition, "scored_at": found.scored_at.isoformat(),
                "prediction": found.prediction, "label": found.label, "scores": found.scores}

    return app


# --- data -----------------------------------------------------------------------------------------

def seed(url: str, *, rows: int, partitions: int) -> None:
    """Publish ``rows`` predictions of MODEL, entity e<i> in partition i % partitions."""
    import numpy as np
    import psycopg
    import pyarrow as pa

    from store import ledger, predictions, registry

    columns = ["entity_id", "row_number", "prediction", "label", "scores"]
    rng = np.random.default_rng(0)
    with psycopg.connect(url) as conn:
        registry.insert_model(conn, name=MODEL, version=1, artifact_uri="bench", sha256="0" * 64, format="joblib",
                              task="classification", feature_schema={}, classes=["no", "yes"],
                              training_metrics=None)
        registry.set_alias(conn, MODEL, "current", 1)
        conn.commit()
        for part in range(partitions):
            ids = np.arange(part, rows, partitions)
            p = rng.random(len(ids))
            batch = pa.record_batch(
                [pa.array([f"e{i}" for i in ids]), pa.array(np.arange(len(ids))), pa.array(p),
                 pa.array(np.where(p >= 0.5, "yes", "no")),
                 pa.ListArray.from_arrays(pa.array(np.arange(0, 2 * len(ids) + 1, 2, dtype=np.int32)),
                                          pa.array(np.column_stack([1 - p, p]).ravel()))],
                schema=predictions.arrow_schema(columns))
            run_id = ledger.start_run(conn, model_name=MODEL, model_version=1, model_sha256="0" * 64,
                                      partition_key=f"part-{part}", input_uri="bench://", code_version="bench",
                                      host=socket.gethostname(), pid=os.getpid())
            conn.commit()
            predictions.create_run_table(conn, run_id)
            with predictions.copy_predictions(conn, run_id, columns) as write:
                write(batch)
            predictions.index_run_table(conn, run_id)
            ledger.finish_run(conn, run_id, rows_in=len(ids), rows_scored=len(ids))
            predictions.publish(conn, run_id, model_name=MODEL, partition_key=f"part-{part}")
            conn.commit()
            ledger.release_run(conn, run_id)
            conn.commit()
        conn.autocommit = True
        conn.execute("VACUUM ANALYZE")


# --- load generator (its own process) ---------------------------------------------------------------

@dataclass(frozen=True)
class Load:
    port: int
    connections: int
    seconds: float
    warmup: float
    rows: int
    batch: int  # 0: single-key GETs; n: POST n ids per request


def _request(load: Load, rng: random.Random) -> bytes:
    if not load.batch:
        path = f"/v1/models/{MODEL}/predictions/e{rng.randrange(load.rows)}"
        return f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode()
    body = json.dumps({"entity_ids": [f"e{rng.randrange(load.rows)}" for _ in range(load.batch)]}).encode()
    head = (f"POST /v1/models/{MODEL}/predictions:batch HTTP/1.1\r\nHost: {HOST}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


class _Connection:
    """One keep-alive HTTP/1.1 connection, driven by `_generate`'s selector loop."""

    def __init__(self, load: Load, seed: int) -> None:
        self.load, self.rng = load, random.Random(seed)
        self.sock = self.connect()
        self.buffer = b""
        self.started = 0.0
        self.closing = False

    def connect(self) -> socket.socket:
        sock = socket.create_connection((HOST, self.load.port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        return sock

    def send(self) -> None:
        self.buffer = b""
        self.started = time.perf_counter()
        self.sock.sendall(_request(self.load, self.rng))

    def receive(self) -> int | None:
        """The status once a whole response has arrived, else None."""
        self.buffer += self.sock.recv(1 << 20)
        head_end = self.buffer.find(b"\r\n\r\n")
        if head_end < 0:
            return None
        head = self.buffer[:head_end].lower()
        at = head.find(b"content-length:")
        length = int(head[at + 15:head.find(b"\r\n", at) if head.find(b"\r\n", at) > 0 else None]) if at >= 0 else 0
        if len(self.buffer) < head_end + 4 + length:
            return None
        self.closing = b"connection: close" in head  # a server without keep-alive: reconnect
        return int(self.buffer[9:12])


def _generate(load: Load, results: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    """Closed loop: each connection sends its next request as soon as the last one is answered."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    selector = selectors.DefaultSelector()
    connections = [_Connection(load, i) for i in range(load.connections)]
    measure_from = time.perf_counter() + load.warmup
    until = measure_from + load.seconds
    for c in connections:
        selector.register(c.sock, selectors.EVENT_READ, c)
        c.send()
    open_ = len(connections)
    while open_:
        for key, _ in selector.select(timeout=5):
            c = key.data
            status = c.receive()
            if status is None:
                continue
            now = time.perf_counter()
            if c.started >= measure_from:
                latencies.append(now - c.started)
                statuses[status] = statuses.get(status, 0) + 1
            if c.closing:
                selector.unregister(c.sock)
                c.sock.close()
                c.sock = c.connect()
                selector.register(c.sock, selectors.EVENT_READ, c)
            if now < until:
                c.send()
            else:
                selector.unregister(c.sock)
                c.sock.close()
                open_ -= 1
    results.put((latencies, statuses, time.process_time()))


def drive(load: Load) -> dict[str, float]:
    """Run the load generator in a process of its own; requests/s and latency percentiles."""
    results: multiprocessing.Queue = multiprocessing.Queue()  # type: ignore[type-arg]
    process = multiprocessing.Process(target=_generate, args=(load, results))
    busy_before = psutil.cpu_times()
    process.start()
    latencies, statuses, generator_cpu = results.get(timeout=load.warmup + load.seconds + 120)
    busy_after = psutil.cpu_times()
    process.join(timeout=30)
    idle = (busy_after.idle - busy_before.idle) / (load.warmup + load.seconds) / (os.cpu_count() or 1)
    latencies.sort()
    n = len(latencies)

    def pct(q: float) -> float:
        return latencies[min(n - 1, int(q * n))] * 1000 if n else float("nan")

    return {"requests": n, "rps": n / load.seconds, "p50_ms": pct(0.50), "p99_ms": pct(0.99),
            "max_ms": latencies[-1] * 1000 if n else float("nan"),
            "non_200": sum(c for s, c in statuses.items() if s != 200),
            "generator_cores": generator_cpu / (load.warmup + load.seconds), "idle": idle}


# --- servers --------------------------------------------------------------------------------------

def gunicorn(app: str, *, url: str, port: int, scratch: Path, workers: int | None = None,
             threads: int | None = None, worker_class: str | None = None) -> subprocess.Popen[bytes]:
    """Serve ``app`` with the repository's gunicorn.conf.py, overriding what is given."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREDSTORE_")}
    env.update(PREDSTORE_DATABASE_URL=url, PREDSTORE_HOME=str(scratch / "home"),
               PROMETHEUS_MULTIPROC_DIR=str(scratch / f"metrics-{port}"), PYTHONPATH=str(REPO / "benchmarks"))
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", app, "-c", str(REPO / "lookup_api" / "gunicorn.conf.py"),
         "--bind", f"{HOST}:{port}",
         *[arg for flag, value in (("--workers", workers), ("--threads", threads), ("--worker-class", worker_class))
           if value is not None for arg in (flag, str(value))]],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(300):
        try:
            with urllib.request.urlopen(f"http://{HOST}:{port}/v1/models/{MODEL}/predictions/e1", timeout=2):
                return server
        except OSError:
            assert server.poll() is None, f"gunicorn for {app} exited with {server.returncode}"
            time.sleep(0.1)
    raise RuntimeError(f"gunicorn for {app} did not answer")


def stop(server: subprocess.Popen[bytes]) -> None:
    server.send_signal(signal.SIGTERM)
    server.wait(timeout=30)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--workers", type=int, help="gunicorn workers (default: gunicorn.conf.py's, one per core)")
    parser.add_argument("--threads", type=int, help="threads per worker (default: gunicorn.conf.py's)")
    parser.add_argument("--worker-class", help="gunicorn worker class (default: gthread; sync: no keep-alive)")
    parser.add_argument("--batch", type=int, default=1000)
    args = parser.parse_args()

    from store.db import start_embedded, stop_embedded
    from store.migrate import upgrade

    scratch = Path(tempfile.mkdtemp(prefix="predstore-bench-"))
    pgdata = scratch / "pgdata"
    try:
        url = start_embedded(pgdata)
        upgrade(url)
        started = time.perf_counter()
        seed(url, rows=args.rows, partitions=args.partitions)
        took = time.perf_counter() - started
        overrides = "".join(f" --{k.replace('_', '-')} {v}" for k, v in
                            (("workers", args.workers), ("threads", args.threads), ("worker_class", args.worker_class))
                            if v is not None)
        print(f"published {args.rows:,} predictions in {args.partitions} runs in {took:.1f} s; "
              f"{os.cpu_count()} cores; gunicorn.conf.py{overrides}; "
              f"{args.connections} connections, {args.seconds:g} s per measure", flush=True)
        load = Load(port=0, connections=args.connections, seconds=args.seconds, warmup=args.warmup, rows=args.rows,
                    batch=0)
        figures = {}
        for label, app in (("naive", "bench_lookup:naive_app()"), ("api", "lookup_api:create_app()")):
            port = free_port()
            server = gunicorn(app, url=url, port=port, workers=args.workers, threads=args.threads, scratch=scratch,
                              worker_class=args.worker_class)
            try:
                figures[label] = drive(Load(**{**load.__dict__, "port": port}))
                f = figures[label]
                print(f"{label:>6} single key: {f['rps']:8.0f} requests/s  p50 {f['p50_ms']:6.2f} ms  "
                      f"p99 {f['p99_ms']:6.2f} ms  max {f['max_ms']:7.2f} ms  non-200 {f['non_200']}  "
                      f"[load generator {f['generator_cores']:.2f} cores, machine idle {f['idle']:.0%}]", flush=True)
                if label == "api":
                    batch = drive(Load(**{**load.__dict__, "port": port, "batch": args.batch}))
                    print(f"{label:>6} batch of {args.batch}: {batch['rps'] * args.batch:8.0f} ids/s "
                          f"({batch['rps']:.0f} requests/s)  p50 {batch['p50_ms']:6.2f} ms  "
                          f"p99 {batch['p99_ms']:6.2f} ms  non-200 {batch['non_200']}  "
                          f"[load generator {batch['generator_cores']:.2f} cores, machine idle {batch['idle']:.0%}]",
                          flush=True)
            finally:
                stop(server)
        ratio = figures["api"]["rps"] / figures["naive"]["rps"]
        print(f"ratio api/naive: {ratio:.2f}x (target >= 2x, api p99 target <= 10 ms; batch target >= 100k ids/s)")
    finally:
        stop_embedded(pgdata)
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
