"""Benchmark of the lookup API reading from a hot standby against reading from the primary. A script.

    python benchmarks/bench_standby.py [--rows 200000] [--seconds 8] [--rounds 2] [--publishes 3]

It starts a primary and a real streaming standby of it (`tests.replica.replicated`: the embedded
PostgreSQL switched to ``wal_level = replica``, copied with ``pg_basebackup -R``), registers a model
and publishes ``--rows`` predictions on the primary as the scoring job writes them (ids
``e0``..``e<rows-1>``, one partition), creates an API key, and waits until the standby has replayed
it all. Then, in the same run, it serves the lookup API twice under gunicorn with the repository's
lookup_api/gunicorn.conf.py and 2 workers, keys required (the product's default), the same
settings but one:

- "primary": ``PREDSTORE_API_DATABASE_URL`` = the primary;
- "standby": ``PREDSTORE_API_DATABASE_URL`` = the standby;

(``PREDSTORE_DATABASE_URL`` = the primary for both, ``PREDSTORE_HOME`` a scratch folder), checks that
each answers a lookup with 200 (anything else, e.g. a key the standby does not know: exit 1), and
drives the same load at each, with bench_lookup's load generator in its own process (a selector
loop, HTTP/1.1 keep-alive, loopback, ``--connections`` connections, a fixed duration), every
request with ``Authorization: Bearer <key>``:

- single-key lookups of known ids drawn at random from all ``--rows`` (the cache is on, at its
  default size, so some are answered from it, as in production);
- the batch endpoint, ``--batch`` known ids a request.

Measures alternate between the servers over ``--rounds`` rounds (primary first in odd rounds,
standby first in even ones). It prints requests/s, p50 and p99 of each, and the ratio
standby/primary of the requests/s over all rounds. Target: within noise, >= 0.9.

Then "publish to visible", ``--publishes`` times: with the watched id's answer in the standby API's
cache, it publishes a new run of the partition on the primary (every id re-scored, the watched one
to a value it never had) and, from that publish's commit, polls the standby (every 20 ms) until it
has replayed the new prediction, and the API on the standby (every 10 ms) until it answers it. It
prints the time to replay and the time to visible, both from the commit, and visible - replayed.
Target: visible <= 1 s after the standby replayed it (its listener polls the notice counters every
0.25 s on a standby, where LISTEN is refused).

Any answer that is not a 200 during the measures makes it exit 1 after printing.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import psycopg

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(REPO))
import bench_lookup  # noqa: E402
from bench_lookup import HOST, Load, drive, free_port, publish, stop  # noqa: E402

from store.features import FeatureSchema  # noqa: E402
from tests.replica import replayed, replicated  # noqa: E402

MODEL = "bench"
PARTITION = "p"
SERVERS = ("primary", "standby")


# --- requests with a key: bench_lookup's generator sends none (its servers run with keys off) ------

@dataclass(frozen=True)
class KeyedLoad(Load):
    key: str = ""


_unkeyed_request = bench_lookup._request


def _keyed_request(load: Load, rng: Any) -> bytes:
    """bench_lookup's request, with ``Authorization: Bearer <key>`` after its request line."""
    raw = _unkeyed_request(load, rng)
    key = getattr(load, "key", "")
    if not key:
        return raw
    line_end = raw.index(b"\r\n") + 2
    return raw[:line_end] + f"Authorization: Bearer {key}\r\n".encode() + raw[line_end:]


# The generator's connections call the module's ``_request``: replaced here, before it forks (or,
# under spawn, when its process imports this module again as __mp_main__).
bench_lookup._request = _keyed_request


# --- the store ------------------------------------------------------------------------------------

def seed(primary_url: str, rows: int) -> str:
    """Model ``bench`` version 1 current, ``rows`` predictions published on the primary; an API key."""
    from store import apikeys, registry

    with psycopg.connect(primary_url) as conn:
        registry.insert_model(conn, name=MODEL, version=1, artifact_uri="bench", sha256="0" * 64, format="joblib",
                              task="classification", feature_schema=FeatureSchema(()), classes=["no", "yes"],
                              training_metrics=None)
        registry.set_alias(conn, MODEL, "current", 1)
        conn.commit()
        publish(conn, MODEL, PARTITION, np.arange(rows), np.random.default_rng(0).random(rows))
        _, key = apikeys.create_key(conn, "bench-standby")
        conn.commit()
        conn.autocommit = True
        conn.execute("VACUUM ANALYZE")
    return key


def drop_retired(primary_url: str) -> None:
    """Drop the segment tables the last publish replaced, as the scoring job does after its commit."""
    from store import serving

    with psycopg.connect(primary_url, autocommit=True) as conn:
        serving.drop_retired(conn, settle=serving.SETTLE)


# --- the API servers --------------------------------------------------------------------------------

def serve(label: str, *, primary_url: str, reader_url: str, port: int, scratch: Path) -> subprocess.Popen[bytes]:
    """The lookup API under gunicorn (lookup_api/gunicorn.conf.py, 2 workers) reading from ``reader_url``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREDSTORE_")}
    env.update(PREDSTORE_DATABASE_URL=primary_url, PREDSTORE_API_DATABASE_URL=reader_url,
               PREDSTORE_HOME=str(scratch / f"home-{label}"), PREDSTORE_API_WORKERS="2",
               PROMETHEUS_MULTIPROC_DIR=str(scratch / f"metrics-{label}"))
    log = scratch / f"gunicorn-{label}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "lookup_api:create_app()", "-c",
             str(REPO / "lookup_api" / "gunicorn.conf.py"), "--workers", "2", "--bind", f"{HOST}:{port}"],
            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if get(port, "/readyz")[0] == 200:
                return process
        except OSError:
            pass
        if process.poll() is not None:
            break
        time.sleep(0.1)
    stop_quietly(process)
    fail(f"the API reading from the {label} never got ready", log)


def stop_quietly(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        stop(process)


def fail(message: str, log: Path | None = None) -> NoReturn:
    print(f"FAILED: {message}", file=sys.stderr)
    if log is not None and log.exists():
        print(f"--- the end of {log}:\n{log.read_text(errors='replace')[-3000:]}", file=sys.stderr)
    sys.exit(1)


def get(port: int, path: str, key: str | None = None, conn: http.client.HTTPConnection | None = None
        ) -> tuple[int, Any]:
    """(status, JSON body or None) of ``GET path``, on ``conn`` if given (kept alive)."""
    own = conn is None
    conn = conn or http.client.HTTPConnection(HOST, port, timeout=10)
    try:
        conn.request("GET", path, headers={"Authorization": f"Bearer {key}"} if key else {})
        answer = conn.getresponse()
        body = answer.read()
    finally:
        if own:
            conn.close()
    try:
        return answer.status, json.loads(body)
    except ValueError:
        return answer.status, None


# --- publish to visible -----------------------------------------------------------------------------

def publish_to_visible(primary_url: str, standby_url: str, *, port: int, key: str, rows: int, watched: int,
                       value: float, seed: int) -> tuple[float, float, float]:
    """Publish a re-score of every id (``e<watched>`` to ``value``) on the primary; (seconds to
    publish, from its commit to the standby's replay, from its commit to the standby API's answer)."""
    path = f"/v1/models/{MODEL}/predictions/e{watched}"
    status, body = get(port, path, key)  # in the cache of the worker that answers; and once more for the other
    status2, _ = get(port, path, key)
    if status != 200 or status2 != 200 or body["prediction"] == value:
        fail(f"before the publish the standby's API answered {status} {body}")
    p = np.random.default_rng(seed).random(rows)
    p[watched] = value
    with psycopg.connect(primary_url) as conn:
        started = time.monotonic()
        publish(conn, MODEL, PARTITION, np.arange(rows), p)
        committed = time.monotonic()
    seen: dict[str, float] = {}

    def wait_replay() -> None:
        seen["replayed"] = replayed(standby_url, "SELECT prediction FROM current_predictions WHERE model_name = %s "
                                    "AND entity_id = %s", [MODEL, f"e{watched}"], (value,))

    poller = threading.Thread(target=wait_replay, daemon=True)
    poller.start()
    deadline = committed + 30
    keep_alive = http.client.HTTPConnection(HOST, port, timeout=10)
    try:
        while True:
            status, body = get(port, path, key, keep_alive)
            if status == 200 and body["prediction"] == value:
                visible = time.monotonic()
                break
            if status != 200 or time.monotonic() > deadline:
                fail(f"the standby's API answered {status} {body}, not the new prediction {value}")
            time.sleep(0.01)
    finally:
        keep_alive.close()
    poller.join(timeout=35)
    if "replayed" not in seen:
        fail("the standby never replayed the publish")
    drop_retired(primary_url)
    return committed - started, seen["replayed"] - committed, visible - committed


# --- main -------------------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--publishes", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="predstore-bench-standby-") as folder:
        scratch = Path(folder)
        started = time.monotonic()
        with replicated(scratch / "pg") as (primary_url, standby_url):
            print(f"primary and streaming standby up in {time.monotonic() - started:.1f} s", flush=True)
            started = time.monotonic()
            key = seed(primary_url, args.rows)
            published = time.monotonic()
            replayed(standby_url, "SELECT count(*) FROM api_keys", [], (1,), timeout=120)
            print(f"published {args.rows:,} predictions in {published - started:.1f} s on the primary, replayed by "
                  f"the standby {time.monotonic() - published:.2f} s later; {os.cpu_count()} cores; "
                  f"{args.connections} connections, {args.seconds:g} s per measure, {args.rounds} round(s)", flush=True)

            ports = {label: free_port() for label in SERVERS}
            servers: dict[str, subprocess.Popen[bytes]] = {}
            try:
                for label, reader in zip(SERVERS, (primary_url, standby_url), strict=True):
                    servers[label] = serve(label, primary_url=primary_url, reader_url=reader, port=ports[label],
                                           scratch=scratch)
                    status, body = get(ports[label], f"/v1/models/{MODEL}/predictions/e1", key)
                    if status != 200:
                        fail(f"warm-up: the API reading from the {label} answered {status} {body}",
                             scratch / f"gunicorn-{label}.log")
                run(args, ports, key, primary_url, standby_url)
            finally:
                for process in servers.values():
                    stop_quietly(process)


def run(args: argparse.Namespace, ports: dict[str, int], key: str, primary_url: str, standby_url: str) -> None:
    base = KeyedLoad(port=0, connections=args.connections, seconds=args.seconds, warmup=args.warmup, rows=args.rows,
                     model=MODEL, key=key)
    measures = {"single": base, f"batch of {args.batch}": replace(base, batch=args.batch)}
    figures: dict[tuple[str, str], list[dict[str, float]]] = {}
    for round_ in range(args.rounds):
        order = SERVERS if round_ % 2 == 0 else SERVERS[::-1]
        for measure, load in measures.items():
            for label in order:
                f = drive(replace(load, port=ports[label]))
                figures.setdefault((measure, label), []).append(f)
                ids = f["rps"] * (load.batch or 1)
                print(f"round {round_ + 1} {measure:<14} {label:<8} {f['rps']:7.0f} requests/s ({ids:8.0f} ids/s)  "
                      f"p50 {f['p50_ms']:6.2f} ms  p99 {f['p99_ms']:6.2f} ms  max {f['max_ms']:7.2f} ms  "
                      f"non-200 {f['non_200']:4.0f}  [generator {f['generator_cores']:.2f} cores, "
                      f"idle {f['idle']:.0%}]", flush=True)

    print("\nall rounds (target: standby/primary requests/s within noise, >= 0.9)")
    ratios = []
    for measure in measures:
        rps = {}
        for label in SERVERS:
            runs = figures[(measure, label)]
            rps[label] = sum(f["requests"] for f in runs) / (args.seconds * len(runs))
            p50 = float(np.median([f["p50_ms"] for f in runs]))
            p99 = float(np.median([f["p99_ms"] for f in runs]))
            print(f"  {measure:<14} {label:<8} {rps[label]:7.0f} requests/s  p50 {p50:6.2f} ms  p99 {p99:6.2f} ms "
                  f"(medians over rounds)")
        ratios.append(rps["standby"] / rps["primary"])
        print(f"  {measure:<14} standby/primary {ratios[-1]:.2f} "
              f"({'met' if ratios[-1] >= 0.9 else 'MISSED'})", flush=True)

    print(f"\npublish to visible: a re-score of all {args.rows:,} ids published on the primary; from its commit "
          f"(target: visible <= 1 s after the standby replayed it)")
    worst = 0.0
    for n in range(args.publishes):
        took, replay, visible = publish_to_visible(primary_url, standby_url, port=ports["standby"], key=key,
                                                   rows=args.rows, watched=7 + n, value=0.001 + n, seed=100 + n)
        worst = max(worst, visible - replay)
        print(f"  publish {n + 1}: publish {took:.2f} s; replayed by the standby after {replay:.3f} s; answered by "
              f"the standby's API after {visible:.3f} s ({visible - replay:+.3f} s after the replay)", flush=True)
    if args.publishes:
        print(f"  worst visible - replayed {worst:.3f} s ({'met' if worst <= 1.0 else 'MISSED'})")

    refused = sum(f["non_200"] for runs in figures.values() for f in runs)
    if refused:
        fail(f"{refused:.0f} answers were not 200: the figures are not those of lookups")


if __name__ == "__main__":
    main()
