"""Soak of the lookup API: not a test, a script.

    python benchmarks/soak_lookup.py [--rate 300] [--seconds 60] [--quiet 20] [--rows 200000]
                                     [--publishes 1] [--every 0] [--promote-seconds 20]
                                     [--promote-every 2]

It starts a throwaway embedded PostgreSQL, registers a small model twice (version 1 current,
version 2 its challenger, a LogisticRegression fitted with another C and seed), scores and
publishes one partition of ``--rows`` entities (both versions score every entity: a current and a
challenger run), creates an API key, and serves it all with gunicorn (the production settings of
lookup_api/gunicorn.conf.py, and the product's defaults: PREDSTORE_API_REQUIRE_KEY is left unset,
so keys are required). A load generator in its own process then asks for random entities of that
model at a fixed rate, each request with ``Authorization: Bearer <key>`` (open loop: each request
has a scheduled time and its latency is counted from it, so a stall is not hidden by requests
that were never sent):

0. a 5 s warm-up (caches and pools): if any of its answers is not a 200 (401/403 for a key that
   is refused, 404, 5xx, no answer), the script says how many and which statuses and exits with
   status 1 before measuring anything, since the figures would be those of refusals;
1. ``--quiet`` seconds with nothing else running: the quiet p99;
2. ``--seconds`` seconds while `predstore score --force` re-scores and publishes the partition:
   once by default (a lookup load "while a new run publishes"), or ``--publishes N``
   times (0: until the phase ends), back to back or a run starting every ``--every`` seconds
   (each publish supersedes the last, drops the lookup caches by NOTIFY, and retention detaches
   and drops old runs' tables);
3. ``--promote-seconds`` seconds while promotions switch the current version back and forth,
   version 2 then version 1 (a rollback) then 2 ..., one starting every ``--promote-every``
   seconds (2 by default; promoting an explicit version, the challenger alias stays on version 2).
   Each is `models.promotion.promote_model`, what `predstore models promote soak 2` runs, called in
   this process and timed: the command's own start-up (a Python interpreter and its imports, a
   fraction of a second of CPU on cores the API shares) is not the cost of a promotion, and
   starting one every second or two would measure that start-up rather than the alias switch
   (`benchmarks/bench_cli.py` measures start-up).

It prints, for each phase, requests, errors (anything but a 200) and the count of each status,
p50/p99/max latency, and the gunicorn processes' memory (RSS) sampled every second; the p99 of
the requests due in the half second after each publish commit (what publishing itself costs
lookups, apart from the scoring job's CPU before it) and after each promotion commit; and checks
the targets: zero errors in every phase, p99 while a run publishes <= 2 x quiet p99, p99 while
promotions switch <= 2 x quiet p99, memory flat (the last sample of the last phase within 10% of
the quiet phase's first after the warm-up). A publish or promotion command that fails also makes
the script exit with status 1, after the figures; so does a promotion that raises.
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
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_lookup import HOST, free_port  # noqa: E402

if TYPE_CHECKING:
    from store.settings import Settings

REPO = Path(__file__).resolve().parents[1]
MODEL = "soak"
THREADS = 32
#: Seconds after each publish or promotion commit whose requests show what it costs lookups
#: (the NOTIFY and cache drop, re-planning after ATTACH, retention's DETACH and DROP).
AROUND_PUBLISH = 0.5
#: Seconds between the starts of two promotions in the promotion phase (``--promote-every``).
PROMOTE_EVERY = 2.0
#: Targets: p99 of a phase with publishes or promotions over the quiet p99, and memory growth.
MAX_P99_RATIO = 2.0
MAX_RSS_GROWTH = 1.10
#: The status recorded for a request that got no answer (connection refused or reset, timeout).
NO_ANSWER = -1


@dataclass
class Phase:
    """What one phase measured."""

    #: requests, rate, errors, p50_ms, p99_ms, max_ms, rss_first_mb, rss_last_mb, rss_max_mb.
    figures: dict[str, float]
    #: How many requests got each status (NO_ANSWER: none).
    statuses: Counter[int]
    #: Each request's due time (epoch seconds) and latency (seconds).
    timeline: list[tuple[float, float]]


@dataclass(frozen=True)
class Load:
    """The load every phase sends: where, with which key, how fast, over how many entities."""

    port: int
    key: str
    rate: float
    rows: int
    #: The gunicorn arbiter, whose processes' memory is sampled.
    server: psutil.Process


def prepare(scratch: Path, url: str, rows: int) -> tuple[Path, str]:
    """Register MODEL twice (version 2 as its challenger), publish its partition once (both
    versions' runs) and create an API key; returns the partition's file and the key."""
    import joblib
    import numpy as np
    import pandas as pd
    from sklearn.linear_model import LogisticRegression

    from batch.runner import ScoreRequest, score_partition
    from models.promotion import promote_model
    from models.register import register_model
    from store.apikeys import create_key
    from store.db import connect
    from store.settings import Settings

    rng = np.random.default_rng(0)
    settings = Settings(home=scratch / "home", database_url=url)
    for version, (seed, c) in enumerate(((0, 1.0), (1, 0.5)), start=1):
        fit_rng = np.random.default_rng(seed)
        train = pd.DataFrame(fit_rng.normal(size=(2000, 3)), columns=["f0", "f1", "f2"])
        model = LogisticRegression(C=c).fit(train, (train.f0 + train.f1 > 0).astype(int))
        artifact = scratch / ("model.joblib" if version == 1 else f"model{version}.joblib")
        joblib.dump(model, artifact)
        registered = register_model(settings, artifact, name=MODEL)
        assert registered.version == version, (registered.version, version)
    promote_model(settings, MODEL, 2, alias="challenger")
    data = pd.DataFrame(rng.normal(size=(rows, 3)), columns=["f0", "f1", "f2"])
    data.insert(0, "entity_id", [f"e{i}" for i in range(rows)])
    path = scratch / "part.parquet"
    data.to_parquet(path, index=False, row_group_size=50_000)
    result = score_partition(settings, ScoreRequest(path=path, model_name=MODEL))
    if result.challenger is None:
        raise SystemExit("scoring published no challenger run: the promotion phase would not switch between two "
                         "published versions")
    with connect(url) as conn:
        _, key = create_key(conn, "soak")
        conn.commit()
    return path, key


def _worker(port: int, key: str, rate: float, seconds: float, rows: int, start: float, index: int,
            out: list[tuple[float, int, float]]) -> None:
    """Send requests index, index + THREADS, ... at their scheduled times on one keep-alive connection."""
    rng = random.Random(index)
    headers = {"Authorization": f"Bearer {key}"}
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
            conn.request("GET", f"/v1/models/{MODEL}/predictions/e{rng.randrange(rows)}", headers=headers)
            response = conn.getresponse()
            response.read()
            status = response.status
        except (OSError, http.client.HTTPException):
            status = NO_ANSWER
            conn.close()
            conn = http.client.HTTPConnection(HOST, port, timeout=10)
        out.append((time.perf_counter() - due, status, time.time() - (time.perf_counter() - due)))
        k += THREADS
    conn.close()


def _generate(port: int, key: str, rate: float, seconds: float, rows: int,
              results: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    start = time.perf_counter() + 0.5
    outs: list[list[tuple[float, int, float]]] = [[] for _ in range(THREADS)]
    threads = [threading.Thread(target=_worker, args=(port, key, rate, seconds, rows, start, i, outs[i]))
               for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    results.put([item for out in outs for item in out])


def phase(load: Load, *, seconds: float, then: Callable[[], None] | None = None) -> Phase:
    """Drive the API for ``seconds``, calling ``then`` once the load runs: latency percentiles,
    errors, statuses and memory samples, and each request's (due time as epoch seconds, latency)."""
    results: multiprocessing.Queue = multiprocessing.Queue()  # type: ignore[type-arg]
    process = multiprocessing.Process(target=_generate, args=(load.port, load.key, load.rate, seconds, load.rows,
                                                              results))
    # Forked before any publish starts: a fork while a publish runs would hold its output pipes open.
    process.start()
    if then is not None:
        then()
    memory: list[float] = []
    deadline = time.monotonic() + seconds + 0.5
    while time.monotonic() < deadline:
        memory.append(_rss(load.server) / 2**20)
        time.sleep(1.0)
    answers = results.get(timeout=seconds + 120)
    process.join(timeout=30)
    latencies = [latency for latency, _, _ in answers]
    statuses = Counter(status for _, status, _ in answers)
    return Phase({"requests": len(latencies), "rate": len(latencies) / seconds,
                  "errors": sum(n for status, n in statuses.items() if status != 200),
                  "p50_ms": percentile(latencies, 0.5), "p99_ms": percentile(latencies, 0.99),
                  "max_ms": max(latencies, default=float("nan")) * 1000,
                  "rss_first_mb": memory[min(2, len(memory) - 1)], "rss_last_mb": memory[-1],
                  "rss_max_mb": max(memory)},
                 statuses, [(due, latency) for latency, _, due in answers])


def percentile(latencies: list[float], q: float) -> float:
    """The ``q`` quantile of ``latencies`` (seconds), in milliseconds."""
    ordered = sorted(latencies)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else float("nan")


def describe(statuses: Counter[int]) -> str:
    """``statuses`` as '200: 5990, 401: 10', most frequent first."""
    return ", ".join(f"{'no answer' if status == NO_ANSWER else status}: {n}"
                     for status, n in statuses.most_common()) or "none"


def published_at(url: str) -> list[float]:
    """When each run of MODEL was published (epoch seconds of its publish transaction)."""
    import psycopg

    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT extract(epoch FROM published_at)::float8 FROM runs "
                            "WHERE model_name = %s AND published_at IS NOT NULL", [MODEL]).fetchall()
    return [row[0] for row in rows]


def promoted_at(url: str) -> list[float]:
    """When the current version of MODEL was promoted (epoch seconds of each promotion's transaction)."""
    import psycopg

    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT extract(epoch FROM at)::float8 FROM audit WHERE action = 'model.promote' "
                            "AND target LIKE %s AND details->>'alias' = 'current'", [f"{MODEL} v%"]).fetchall()
    return [row[0] for row in rows]


def _rss(server: psutil.Process) -> int:
    try:
        return sum(p.memory_info().rss for p in [server, *server.children(recursive=True)])
    except psutil.NoSuchProcess:
        return 0


def publish_loop(path: Path, env: dict[str, str], stop: threading.Event, published: list[float],
                 every: float, count: int, failures: list[str]) -> None:
    """Score and publish the partition again, a run starting every ``every`` seconds (0: back to
    back), ``count`` times (0: any number) or until told to stop; a failure ends the loop."""
    next_start = time.perf_counter()
    while (not count or len(published) < count) and not stop.wait(max(0.0, next_start - time.perf_counter())):
        started = time.perf_counter()
        next_start = started + every
        done = subprocess.run([sys.executable, "-m", "store", "score", str(path), "--model", MODEL, "--force",
                               "--json"], env=env, capture_output=True, text=True)
        if done.returncode != 0:
            failures.append(f"a publish failed (exit status {done.returncode}): "
                            f"{done.stderr.strip().splitlines()[-1:]}")
            print(f"  {failures[-1]}", flush=True)
            return
        published.append(time.perf_counter() - started)
        result = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"  published run {result['run_id']} in {published[-1]:.1f} s (scoring {result['duration_s']:.1f} s, "
              f"stages {result['stages']})", flush=True)


def promote_loop(settings: Settings, stop: threading.Event, promoted: list[float], failures: list[str],
                 every: float = PROMOTE_EVERY) -> None:
    """Make version 2 of MODEL current, then 1 (a rollback), then 2, ...: a promotion starting
    every ``every`` seconds (back to back if one takes longer) until told to stop; a failure ends
    the loop. Each promotion is `models.promotion.promote_model` in this process, with ``settings``
    (the store's); ``promoted`` gets each call's wall time."""
    from models.promotion import promote_model

    next_start = time.perf_counter()
    while not stop.wait(max(0.0, next_start - time.perf_counter())):
        started = time.perf_counter()
        next_start = started + every
        version = 2 if len(promoted) % 2 == 0 else 1
        try:
            promote_model(settings, MODEL, version)
        except Exception as exc:  # noqa: BLE001 - reported with the figures, and the script fails
            failures.append(f"promoting version {version} failed: {type(exc).__name__}: {exc}")
            print(f"  {failures[-1]}", flush=True)
            return
        promoted.append(time.perf_counter() - started)


def around(timeline: list[tuple[float, float]], commits: list[float]) -> list[float]:
    """The latencies of the requests due within AROUND_PUBLISH seconds after any of ``commits``."""
    return [latency for due, latency in timeline if any(0 <= due - commit < AROUND_PUBLISH for commit in commits)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=300.0, help="requests per second (fixed)")
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the soak, while runs publish")
    parser.add_argument("--quiet", type=float, default=20.0, help="length of the quiet phase measured first")
    parser.add_argument("--promote-seconds", type=float, default=20.0,
                        help="length of the last phase, while promotions switch the current version")
    parser.add_argument("--promote-every", type=float, default=PROMOTE_EVERY,
                        help="seconds between the starts of two promotions in the last phase")
    parser.add_argument("--rows", type=int, default=200_000, help="entities in the partition re-published")
    parser.add_argument("--publishes", type=int, default=1, help="runs published during the soak (0: until it ends)")
    parser.add_argument("--every", type=float, default=0.0,
                        help="seconds between the starts of two publishes (0: back to back)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--cache-size", type=int, help="PREDSTORE_API_CACHE_SIZE of the API (0: no cache)")
    args = parser.parse_args()
    if args.publishes < 0 or args.every < 0:
        parser.error("--publishes and --every take 0 or more")
    if args.quiet <= 0 or args.seconds <= 0 or args.promote_seconds <= 0 or args.promote_every <= 0:
        parser.error("--quiet, --seconds, --promote-seconds and --promote-every take more than 0")

    from store.db import start_embedded, stop_embedded
    from store.migrate import upgrade
    from store.settings import Settings

    scratch = Path(tempfile.mkdtemp(prefix="predstore-soak-"))
    pgdata = scratch / "pgdata"
    server = None
    try:
        url = start_embedded(pgdata)
        upgrade(url)
        path, key = prepare(scratch, url, args.rows)
        # The product's defaults: no PREDSTORE_* but where the store is (keys are required).
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
              f"{args.rate:g} requests/s fixed rate; API key required (the default)", flush=True)
        load = Load(port, key, args.rate, args.rows, gunicorn)
        warm = phase(load, seconds=5)  # warm the caches and pools
        if warm.figures["errors"]:
            print(f"the warm-up's requests were refused or failed: {warm.figures['errors']:.0f} of "
                  f"{warm.figures['requests']:.0f} answered other than 200 ({describe(warm.statuses)}); "
                  f"nothing measured", file=sys.stderr, flush=True)
            raise SystemExit(1)
        quiet = phase(load, seconds=args.quiet)
        failures: list[str] = []
        stop, published = threading.Event(), list[float]()
        publisher = threading.Thread(target=publish_loop, args=(path, env, stop, published, args.every,
                                                                    args.publishes, failures))
        try:
            soak = phase(load, seconds=args.seconds, then=publisher.start)
        finally:
            stop.set()
            if publisher.ident is not None:
                publisher.join()
        stop, promoted = threading.Event(), list[float]()
        settings = Settings(home=scratch / "home", database_url=url)
        promoter = threading.Thread(target=promote_loop, args=(settings, stop, promoted, failures,
                                                               args.promote_every))
        try:
            switch = phase(load, seconds=args.promote_seconds, then=promoter.start)
        finally:
            stop.set()
            if promoter.ident is not None:
                promoter.join()
        phases = (("quiet", quiet), ("soak", soak), ("promote", switch))
        for name, p in phases:
            f = p.figures
            print(f"{name:>7}: {f['requests']:6.0f} requests ({f['rate']:.0f}/s)  errors {f['errors']:.0f}  "
                  f"p50 {f['p50_ms']:6.2f} ms  p99 {f['p99_ms']:6.2f} ms  max {f['max_ms']:7.2f} ms  "
                  f"RSS {f['rss_first_mb']:.0f} -> {f['rss_last_mb']:.0f} MB (max {f['rss_max_mb']:.0f})  "
                  f"statuses {describe(p.statuses)}")
        print(f"publishes during the soak: {len(published)} (each {min(published, default=0):.1f}-"
              f"{max(published, default=0):.1f} s)")
        near_publish = around(soak.timeline, published_at(url))
        after_publish = percentile(near_publish, 0.99)
        print(f"requests due within {AROUND_PUBLISH} s after a publish commit: {len(near_publish)}, "
              f"p99 {after_publish:.2f} ms "
              f"(ratio to the quiet p99 {after_publish / quiet.figures['p99_ms']:.2f})")
        print(f"promotions during the promote phase: {len(promoted)}, one every {args.promote_every:g} s, "
              f"in-process (each {min(promoted, default=0) * 1000:.1f}-{max(promoted, default=0) * 1000:.1f} ms, "
              f"median {percentile(promoted, 0.5):.1f} ms)")
        near_promotion = around(switch.timeline, promoted_at(url))
        after_promote = percentile(near_promotion, 0.99)
        print(f"requests due within {AROUND_PUBLISH} s after a promotion commit: {len(near_promotion)}, "
              f"p99 {after_promote:.2f} ms (ratio to the quiet p99 {after_promote / quiet.figures['p99_ms']:.2f})")
        errors = {name: p.figures["errors"] for name, p in phases}
        publish_ratio = soak.figures["p99_ms"] / quiet.figures["p99_ms"]
        promote_ratio = switch.figures["p99_ms"] / quiet.figures["p99_ms"]
        flat = switch.figures["rss_last_mb"] <= MAX_RSS_GROWTH * quiet.figures["rss_first_mb"]
        print(f"targets: zero errors {'ok' if not any(errors.values()) else 'MISSED'} "
              f"({', '.join(f'{name} {n:.0f}' for name, n in errors.items())}); "
              f"publish p99 ratio {publish_ratio:.2f} (<= {MAX_P99_RATIO:g}: "
              f"{'ok' if publish_ratio <= MAX_P99_RATIO else 'MISSED'}); "
              f"promote p99 ratio {promote_ratio:.2f} (<= {MAX_P99_RATIO:g}: "
              f"{'ok' if promote_ratio <= MAX_P99_RATIO else 'MISSED'}); memory flat {'ok' if flat else 'MISSED'}")
        if failures:
            print(f"the soak's own commands failed: {'; '.join(failures)}", file=sys.stderr, flush=True)
            raise SystemExit(1)
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
        stop_embedded(pgdata)
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
