"""Benchmark of live scoring in the lookup API: not a test, a script.

    python benchmarks/bench_live.py [--seconds 8] [--connections 8] [--entities 100000]

It starts a throwaway embedded PostgreSQL, registers a HistGradientBoosting pipeline with a
ColumnTransformer (16 numeric features, 4 categories one-hot encoded), publishes ``--entities``
precomputed predictions with a batch run, and serves the lookup API under granian (2 workers) with
live scoring on. In the same run it measures, with the load generator of bench_lookup.py in a
process of its own (closed loop, keep-alive, loopback):

(a) single-row ``POST /score`` at ``--connections`` connections: requests/s and p50/p99 latency,
    against the model's own ``predict_proba`` called per row in a loop in one process (the baseline
    a user would write: no HTTP, no validation, no recording);
(b) 1,000 rows in one request, against ``predict_proba`` on the same 1,000 rows (median of 15);
(c) single-key lookups of precomputed predictions, with live scoring on and then off (a fresh
    server each), the ratio;
(d) each worker's resident memory with live scoring on (the model loaded) and off.

The service runs as in production: keys required, every request with a key that may score; the
script stops with an error if any request is refused, since timing refusals would measure nothing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

from bench_lookup import HOST, Load, drive, free_port, serve, stop, throwaway_store  # noqa: E402

NUMERIC = [f"x{i}" for i in range(16)]
CATEGORIES = [f"c{i}" for i in range(4)]
MODEL = "churn"


def data(n: int, *, seed: int, start: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.normal(size=(n, len(NUMERIC))), columns=NUMERIC)
    for i, name in enumerate(CATEGORIES):
        frame[name] = rng.choice([f"v{k}" for k in range(5 + i)], size=n)
    frame.insert(0, "entity_id", [f"e{i}" for i in range(start, start + n)])
    frame["y"] = ((frame.x0 + frame.x1 * (frame.c0 == "v1") + rng.normal(size=n)) > 0).astype(int)
    return frame


def fit(scratch: Path) -> tuple[object, Path, Path]:
    import joblib
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    train = data(20_000, seed=1)
    columns = ColumnTransformer([("cats", OneHotEncoder(handle_unknown="ignore"), CATEGORIES)],
                                remainder="passthrough")
    model = make_pipeline(columns, HistGradientBoostingClassifier(max_iter=100, random_state=0))
    model.fit(train[[*NUMERIC, *CATEGORIES]], train["y"])
    artifact, train_path = scratch / "hgb.joblib", scratch / "train.parquet"
    joblib.dump(model, artifact)
    train[[*NUMERIC, *CATEGORIES, "y"]].to_parquet(train_path, index=False)
    return model, artifact, train_path


def post(port: int, path: str, body: dict[str, object], key: str) -> tuple[float, dict[str, object]]:
    request = urllib.request.Request(f"http://{HOST}:{port}{path}", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"},
                                     method="POST")
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=60) as response:
        answer = json.load(response)
    return time.perf_counter() - started, answer


def raw_post(path: str, body: dict[str, object], key: str) -> bytes:
    payload = json.dumps(body).encode()
    head = (f"POST {path} HTTP/1.1\r\nHost: {HOST}\r\nAuthorization: Bearer {key}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n")
    return head.encode() + payload


def workers_rss(server: object) -> list[float]:
    """MiB resident of each worker process of a granian server."""
    children = psutil.Process(server.pid).children(recursive=True)  # type: ignore[attr-defined]
    return sorted(c.memory_info().rss / 2**20 for c in children)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--entities", type=int, default=100_000)
    args = parser.parse_args()

    import psycopg

    from batch.runner import ScoreRequest, score_partition
    from models.register import register_model
    from store import apikeys
    from store.settings import Settings

    with throwaway_store() as (url, scratch):
        model, artifact, train_path = fit(scratch)
        settings = Settings(home=scratch / "home", database_url=url)
        register_model(settings, artifact, name=MODEL, train_data=train_path, target="y")
        partition = data(args.entities, seed=2)
        path = scratch / "p.parquet"
        partition.drop(columns=["y"]).to_parquet(path, index=False)
        run = score_partition(settings, ScoreRequest(path=path, model_name=MODEL, partition_key="p"))
        assert run.status == "published", run.message
        with psycopg.connect(url) as conn:
            _, key = apikeys.create_key(conn, "bench", scopes=["score"])
        required = {"PREDSTORE_API_REQUIRE_KEY": "true"}
        new = data(1_000, seed=3, start=10_000_000).drop(columns=["y"])
        rows = new.to_dict("records")
        features = new[[*NUMERIC, *CATEGORIES]]

        # Baselines: the model itself, in this process.
        one = [features.iloc[[i]] for i in range(200)]
        for frame in one[:20]:
            model.predict_proba(frame)  # type: ignore[attr-defined]
        per_row = []
        until = time.perf_counter() + 3.0
        i = 0
        while time.perf_counter() < until:
            started = time.perf_counter()
            model.predict_proba(one[i % len(one)])  # type: ignore[attr-defined]
            per_row.append(time.perf_counter() - started)
            i += 1
        loop_rps = len(per_row) / sum(per_row)
        thousand = []
        for _ in range(15):
            started = time.perf_counter()
            model.predict_proba(features)  # type: ignore[attr-defined]
            thousand.append(time.perf_counter() - started)
        model_1000 = statistics.median(thousand)

        port = free_port()
        live = serve("granian", "lookup_api:create_app()", url=url, port=port, scratch=scratch,
                     env_extra={**required, "PREDSTORE_API_LIVE_SCORING": "true"},
                     probe=f"/v1/models/{MODEL}/predictions/e1")
        try:
            for _ in range(20):  # each worker loads the model
                post(port, f"/v1/models/{MODEL}/score", {"rows": rows[:1]}, key)
            single = drive(Load(port=port, connections=args.connections, seconds=args.seconds, warmup=1.0,
                                rows=1, raw=raw_post(f"/v1/models/{MODEL}/score", {"rows": rows[:1]}, key)))
            batch_times = [post(port, f"/v1/models/{MODEL}/score", {"rows": rows}, key)[0] for _ in range(15)]
            check = post(port, f"/v1/models/{MODEL}/score", {"rows": rows}, key)[1]
            assert len(check["predictions"]) == 1_000 and not check["rejected"], check["rejected"]  # type: ignore[arg-type]
            lookups_on = drive(Load(port=port, connections=args.connections, seconds=args.seconds, warmup=1.0,
                                    rows=args.entities, model=MODEL, key=key))
            rss_on = workers_rss(live)
        finally:
            stop(live)
        port = free_port()
        plain = serve("granian", "lookup_api:create_app()", url=url, port=port, scratch=scratch,
                      env_extra=required, probe=f"/v1/models/{MODEL}/predictions/e1")
        try:
            lookups_off = drive(Load(port=port, connections=args.connections, seconds=args.seconds, warmup=1.0,
                                     rows=args.entities, model=MODEL, key=key))
            rss_off = workers_rss(plain)
        finally:
            stop(plain)

    refused = {name: r["non_200"] for name, r in
               (("single-row scoring", single), ("lookups on", lookups_on), ("lookups off", lookups_off))
               if r["non_200"]}
    if refused:
        raise SystemExit(f"bench_live: requests answered other than 200, the figures measure nothing: {refused}")
    request_1000 = statistics.median(batch_times)
    print(f"model: HistGradientBoosting pipeline, {len(NUMERIC)} numeric + {len(CATEGORIES)} categorical features; "
          f"granian 2 workers; {args.connections} connections; {args.seconds:g} s per measure")
    print(f"(a) single-row live scoring: {single['rps']:.0f} req/s, p50 {single['p50_ms']:.1f} ms, "
          f"p99 {single['p99_ms']:.1f} ms (target p99 <= 25 ms), non-200: {single['non_200']}")
    print(f"    predict_proba per row in a loop, one process: {loop_rps:.0f} rows/s; "
          f"service / loop = {single['rps'] / loop_rps:.2f}x")
    print(f"(b) 1,000 rows in one request: {request_1000 * 1000:.1f} ms; predict_proba on them: "
          f"{model_1000 * 1000:.1f} ms; "
          f"ratio {request_1000 / model_1000:.2f}x (target <= 5x)")
    print(f"(c) precomputed lookups, live scoring on: {lookups_on['rps']:.0f} req/s "
          f"(p99 {lookups_on['p99_ms']:.1f} ms);"
          f" off: {lookups_off['rps']:.0f} req/s (p99 {lookups_off['p99_ms']:.1f} ms); "
          f"on/off = {lookups_on['rps'] / lookups_off['rps']:.2f}")
    print(f"(d) worker RSS, live on (model loaded): {', '.join(f'{m:.0f}' for m in rss_on)} MiB; "
          f"off: {', '.join(f'{m:.0f}' for m in rss_off)} MiB")


if __name__ == "__main__":
    main()
