"""Benchmark of the lookup API on a store as it looks after a year: not a test, a script.

    python benchmarks/bench_lookup.py [--rows 160000] [--partitions 365] [--seconds 8]

It starts a throwaway embedded PostgreSQL and publishes the same ``--rows`` predictions twice: as
one partition of model ``flat`` and as ``--partitions`` daily partitions of model ``daily``, beside
two other models of 30 partitions each. Then, in the same run and with a load generator in its own
process (a selector loop, HTTP/1.1 keep-alive, loopback only, ``--connections`` connections, a
fixed duration), it drives single-key lookups of known ids and of unknown ids (404) against:

(a) the naive view a competent user would write first: Flask, one psycopg connection per worker,
    ``SELECT * FROM current_predictions WHERE model_name = %s AND entity_id = %s``, under
    ``gunicorn -w 2``;
(b) the lookup API (``lookup_api:create_app()``) with its cache off and on, under gunicorn with the
    repository's gunicorn.conf.py and under granian (WSGI, 2 workers), the same Flask app.

Known ids are drawn at random from all ``--rows`` ids with the cache off, and from a hot set of
``--hot`` ids with it on (repeated ids are what a cache is for). It prints requests/s and latency
percentiles, the ratios ``daily``/``flat`` (the store's age must not cost throughput) and
API/naive, and ids/s for the batch endpoint.
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
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import psutil

from store.features import FeatureSchema

REPO = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"  # loopback only


def naive_app():  # type: ignore[no-untyped-def]
    """The baseline: Flask, one psycopg connection per worker process, one query per request."""
    import psycopg
    from flask import Flask, abort

    url = os.environ["PREDSTORE_DATABASE_URL"]
    app = Flask("naive")
    held: list[psycopg.Connection] = []

    @app.get("/v1/models/<name>/predictions/<entity_id>")
    def prediction(name: str, entity_id: str) -> dict[str, object]:
        if not held:
            held.append(psycopg.connect(url, autocommit=True))
        row = held[0].cursor(row_factory=psycopg.rows.dict_row).execute(
            "SELECT * FROM current_predictions WHERE model_name = %s AND entity_id = %s", [name, entity_id]).fetchone()
        if row is None:
            abort(404)
        return {"entity_id": row["entity_id"], "model": row["model_name"], "model_version": row["model_version"],
                "run_id": row["run_id"], "partition": row["partition_key"], "scored_at": row["scored_at"].isoformat(),
                "prediction": row["prediction"], "label": row["label"], "scores": row["scores"]}

    return app


@contextmanager
def throwaway_store() -> Iterator[tuple[str, Path]]:
    """A migrated embedded PostgreSQL in a scratch folder, removed on exit: (its URL, the folder)."""
    from store.db import start_embedded, stop_embedded
    from store.migrate import upgrade

    scratch = Path(tempfile.mkdtemp(prefix="predstore-bench-"))
    try:
        url = start_embedded(scratch / "pgdata")
        upgrade(url)
        yield url, scratch
    finally:
        stop_embedded(scratch / "pgdata")
        shutil.rmtree(scratch, ignore_errors=True)


# --- data -----------------------------------------------------------------------------------------

def seed(url: str, *, rows: int, partitions: int, others: int = 30) -> None:
    """Publish entities e0..e<rows-1> as one partition of ``flat`` and as ``partitions`` daily
    partitions of ``daily`` (entity i in day i % partitions), and two other models of ``others``
    partitions each."""
    import numpy as np
    import psycopg

    from store import registry

    layout = {"flat": [np.arange(rows)], "daily": [np.arange(day, rows, partitions) for day in range(partitions)],
              **{f"other{k}": [np.arange(day, rows // 4, others) for day in range(others)] for k in (1, 2)}}
    rng = np.random.default_rng(0)
    with psycopg.connect(url) as conn:
        for model, days in layout.items():
            registry.insert_model(conn, name=model, version=1, artifact_uri="bench", sha256="0" * 64,
                                  format="joblib", task="classification",
                                  feature_schema=FeatureSchema(()), classes=["no", "yes"],
                                  training_metrics=None)
            registry.set_alias(conn, model, "current", 1)
            conn.commit()
            for day, ids in enumerate(days):
                publish(conn, model, f"2026-{day:03d}", ids, rng.random(len(ids)))
        conn.autocommit = True
        conn.execute("VACUUM ANALYZE")


def publish(conn: Any, model: str, partition: str, ids: Any, p: Any) -> None:
    """One published run of ``model`` over ``partition``, written as the scoring job writes it."""
    import numpy as np
    import pyarrow as pa

    from store import ledger, predictions

    columns = ["entity_id", "row_number", "prediction", "label", "scores"]
    batch = pa.record_batch(
        [pa.array([f"e{i}" for i in ids]), pa.array(np.arange(len(ids))), pa.array(p),
         pa.array(np.where(p >= 0.5, "yes", "no")),
         pa.ListArray.from_arrays(pa.array(np.arange(0, 2 * len(ids) + 1, 2, dtype=np.int32)),
                                  pa.array(np.column_stack([1 - p, p]).ravel()))],
        schema=predictions.arrow_schema(columns))
    run_id = ledger.start_run(conn, model_name=model, model_version=1, model_sha256="0" * 64,
                              partition_key=partition, input_uri="bench://", code_version="bench",
                              host=socket.gethostname(), pid=os.getpid())
    conn.commit()
    predictions.create_run_table(conn, run_id)
    with predictions.copy_predictions(conn, run_id, columns) as write:
        write(batch)
    predictions.index_run_table(conn, run_id)
    predictions.publish(conn, run_id, model_name=model, partition_key=partition)
    ledger.finish_run(conn, run_id, was="published", rows_in=len(ids), rows_scored=len(ids))
    conn.commit()
    ledger.release_run(conn, run_id)
    conn.commit()


# --- load generator (its own process) ---------------------------------------------------------------

@dataclass(frozen=True)
class Load:
    port: int
    connections: int
    seconds: float
    warmup: float
    rows: int
    model: str = "daily"
    batch: int = 0  # 0: single-key GETs; n: POST n ids per request
    prefix: str = "e"  # "e": known ids; "u": ids that were never scored
    hot: int = 0  # draw ids from the first ``hot`` only (0: from all ``rows``)
    raw: bytes = b""  # if set, this request every time (benchmarks/bench_live.py's live scoring)
    key: str = ""  # an API key, sent as a bearer token (a service that requires one)


def _request(load: Load, rng: random.Random) -> bytes:
    if load.raw:
        return load.raw
    span = load.hot or load.rows
    auth = f"Authorization: Bearer {load.key}\r\n" if load.key else ""
    if not load.batch:
        path = f"/v1/models/{load.model}/predictions/{load.prefix}{rng.randrange(span)}"
        return f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\n{auth}\r\n".encode()
    body = json.dumps({"entity_ids": [f"{load.prefix}{rng.randrange(span)}" for _ in range(load.batch)]}).encode()
    head = (f"POST /v1/models/{load.model}/predictions:batch HTTP/1.1\r\nHost: {HOST}\r\n{auth}"
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

def serve(server: str, app: str, *, url: str, port: int, scratch: Path, cache: bool = True,
          env_extra: dict[str, str] | None = None, probe: str = "/v1/models/flat/predictions/e1"
          ) -> subprocess.Popen[bytes]:
    """Serve ``app`` on ``port``: 'gunicorn' with the repository's gunicorn.conf.py, 'gunicorn-w2'
    as plain ``gunicorn -w 2``, or 'granian' (WSGI, 2 workers)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREDSTORE_")}
    env.update(PREDSTORE_DATABASE_URL=url, PREDSTORE_HOME=str(scratch / "home"), PREDSTORE_API_REQUIRE_KEY="false",
               PREDSTORE_API_CACHE_SIZE="100000" if cache else "0",
               PROMETHEUS_MULTIPROC_DIR=str(scratch / f"metrics-{port}"),
               PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "benchmarks")]))
    env.update(env_extra or {})
    (scratch / f"metrics-{port}").mkdir(parents=True, exist_ok=True)
    command = {
        "gunicorn": [sys.executable, "-m", "gunicorn", app, "-c", str(REPO / "lookup_api" / "gunicorn.conf.py"),
                     "--bind", f"{HOST}:{port}"],
        "gunicorn-w2": [sys.executable, "-m", "gunicorn", app, "-w", "2", "--bind", f"{HOST}:{port}"],
        "granian": [sys.executable, "-m", "granian", "--interface", "wsgi", "--workers", "2", "--factory",
                    "--blocking-threads", "2", "--host", HOST, "--port", str(port), "--no-log",
                    "lookup_api.server:app" if app == "lookup_api:create_app()" else app.removesuffix("()")],
    }[server]
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(300):
        try:
            with urllib.request.urlopen(f"http://{HOST}:{port}{probe}", timeout=2):
                return process
        except urllib.error.HTTPError:  # it answers
            return process
        except OSError:
            assert process.poll() is None, f"{server} for {app} exited with {process.returncode}"
            time.sleep(0.1)
    raise RuntimeError(f"{server} for {app} did not answer")


def stop(server: subprocess.Popen[bytes]) -> None:
    server.send_signal(signal.SIGTERM)
    server.wait(timeout=30)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=160_000)
    parser.add_argument("--partitions", type=int, default=365)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--hot", type=int, default=10_000, help="ids drawn with the cache on")
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--servers", default="gunicorn,granian", help="WSGI servers to run the API under")
    args = parser.parse_args()

    with throwaway_store() as (url, scratch):
        started = time.perf_counter()
        seed(url, rows=args.rows, partitions=args.partitions)
        print(f"published {args.rows:,} predictions as 1 partition (flat) and as {args.partitions} (daily), beside "
              f"2 models of 30 partitions, in {time.perf_counter() - started:.1f} s; {os.cpu_count()} cores; "
              f"{args.connections} connections, {args.seconds:g} s per measure", flush=True)
        base = Load(port=0, connections=args.connections, seconds=args.seconds, warmup=args.warmup, rows=args.rows)
        figures: dict[tuple[str, ...], dict[str, float]] = {}

        def measure(label: tuple[str, ...], load: Load) -> dict[str, float]:
            figures[label] = f = drive(load)
            print(f"{' '.join(label):<40} {f['rps']:7.0f} requests/s  p50 {f['p50_ms']:6.2f} ms  "
                  f"p99 {f['p99_ms']:6.2f} ms  max {f['max_ms']:7.2f} ms  non-200 {f['non_200']:6.0f}  "
                  f"[generator {f['generator_cores']:.2f} cores, idle {f['idle']:.0%}]", flush=True)
            return f

        runs = [("naive", "gunicorn-w2", "bench_lookup:naive_app()", False)]
        for server in args.servers.split(","):
            runs += [("api", server, "lookup_api:create_app()", cache) for cache in (False, True)]
        for kind, server, app, cache in runs:
            port = free_port()
            process = serve(server, app, url=url, port=port, scratch=scratch, cache=cache)
            state = "cache-on" if cache else "cache-off"
            try:
                for model in ("flat", "daily"):
                    for ids, prefix in (("known", "e"), ("unknown", "u")):
                        load = replace(base, port=port, model=model, prefix=prefix, hot=args.hot if cache else 0)
                        measure((kind, server, state, model, ids), load)
                if kind == "api" and server == "gunicorn" and not cache:
                    f = drive(replace(base, port=port, batch=args.batch))
                    print(f"api gunicorn batch of {args.batch} (daily): {f['rps'] * args.batch:8.0f} ids/s "
                          f"p99 {f['p99_ms']:6.2f} ms non-200 {f['non_200']:.0f}", flush=True)
            finally:
                stop(process)

        print("\nratios (targets: daily/flat >= 0.9; api/naive >= 1.5 with the cache off, >= 2 on; p99 <= 10 ms)")
        for key, f in figures.items():
            if key[3] == "daily":
                flat = figures[(*key[:3], "flat", key[4])]
                print(f"  {' '.join((*key[:3], key[4])):<32} daily/flat {f['rps'] / flat['rps']:.2f}")
        for key, f in figures.items():
            if key[0] == "api" and key[3] == "daily" and key[4] == "known":
                naive = figures[("naive", "gunicorn-w2", "cache-off", "daily", "known")]
                print(f"  {' '.join(key[1:3]):<32} api/naive {f['rps'] / naive['rps']:.2f} (daily, known ids)")


if __name__ == "__main__":
    main()
