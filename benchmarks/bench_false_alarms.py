"""Benchmark: the monitor's false alarms on data that did not drift, its power, and its CUSUM.

    python benchmarks/bench_false_alarms.py [--replays 1000] [--sizes 100,1000,10000,100000]
        [--alpha 0.01] [--workers 2] [--cusum-runs 8000] [--evidently-python PATH]
        [--nannyml-python PATH] [--tool-replays 200]

Data: 20 features: 8 normal, 4 heavy-tailed (lognormal, Student t with 3 degrees of freedom,
Pareto, a Poisson count), 3 normal with 5% missing values, 5 categorical with rare levels (12
levels down to 0.2%, one with 3% missing). Each replay draws a fresh 20,000-row baseline (what
registration profiles) and a batch from the same distributions, counts the batch into the
baseline's bins with `models.profile` and checks it with `monitor.stats.check`, as a monitor run
does. A replay *alarms* when any feature drifts.

Reported, per batch size: predstore's share of alarming replays (target <= alpha + 3 standard
errors); the same replays judged the way a user would without the correction (each feature's own
tests at alpha, any one alarms) as the in-run baseline, and as a ratio; with interpreters given,
Evidently 0.7's DataDriftPreset (dataset drift, and any column drifted) and NannyML's univariate
drift (any alert) on their own replays of the same generator. Power: one normal feature shifted
by 0.2 standard deviations in 10,000-row batches (target: found in >= 90% of replays). CUSUM:
served runs of 1,000 rows, quiet (average run length between false alarms, target >= 365, from
runs / alarms over ``--cusum-runs`` runs with a 95% lower bound) and with one feature shifted by
0.05 standard deviations from the first run (median detection delay, target <= 30 runs).
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from store.features import FeatureSchema

NORMAL = [f"num_{i}" for i in range(8)]
HEAVY = ["lognormal", "student_t", "pareto", "count"]
NULLABLE = [f"nullable_{i}" for i in range(3)]
CATEGORICAL = [f"cat_{i}" for i in range(5)]
NUMERIC = NORMAL + HEAVY + NULLABLE
BASELINE_ROWS = 20_000
LEVELS = 12
SHIFTED = NORMAL[0]
TARGETS = {"power": 0.9, "arl": 365.0, "delay": 30.0}


def level_shares(i: int) -> np.ndarray:
    """A category's level shares: Zipf-like, the rarest about 0.2%."""
    weights = 1.0 / np.arange(1, LEVELS + 1) ** (1.6 + i / 10)
    return weights / weights.sum()


def make_frame(rows: int, rng: np.random.Generator, *, shift: float = 0.0) -> pd.DataFrame:
    """``rows`` rows of the 20 features; ``shift`` moves `SHIFTED` by that many standard deviations."""
    data: dict[str, Any] = {}
    for i, name in enumerate(NORMAL):
        data[name] = rng.normal(10.0 * i, 1.0 + i / 4, size=rows)
    data[SHIFTED] = data[SHIFTED] + shift * 1.0
    data["lognormal"] = rng.lognormal(0.0, 1.0, size=rows)
    data["student_t"] = rng.standard_t(3, size=rows)
    data["pareto"] = rng.pareto(2.5, size=rows)
    data["count"] = rng.poisson(3.0, size=rows).astype(np.float64)
    for name in NULLABLE:
        values = rng.normal(size=rows)
        values[rng.random(rows) < 0.05] = np.nan
        data[name] = values
    for i, name in enumerate(CATEGORICAL):
        codes = rng.choice(LEVELS, size=rows, p=level_shares(i))
        values = np.asarray([f"v{k}" for k in range(LEVELS)], dtype=object)[codes]
        if i == 0:
            values[rng.random(rows) < 0.03] = None
        data[name] = values
    return pd.DataFrame(data)


SCHEMA = FeatureSchema.from_json({"columns": [{"name": n, "kind": "numeric"} for n in NUMERIC]
                                  + [{"name": n, "kind": "categorical"} for n in CATEGORICAL]})
KNOWN: dict[str, list[str] | None] = {n: [f"v{k}" for k in range(LEVELS)] for n in CATEGORICAL}


def freeze(rng: np.random.Generator) -> list[dict[str, Any]]:
    from models import profile
    from models.predict import Scores

    reference = make_frame(BASELINE_ROWS, rng)
    return profile.baseline(reference, SCHEMA, Scores(prediction=np.zeros(BASELINE_ROWS)), source="validation")


def replays(task: tuple[int, int, float, float, int]) -> list[dict[str, Any]]:
    """``count`` replays sharing one fresh baseline: one batch each, the check; which features
    each judge flags."""
    from models import profile
    from monitor import stats

    seed, rows, alpha, shift, count = task
    rng = np.random.default_rng(seed)
    base = freeze(rng)
    out = []
    for i in range(count):
        counted = profile.profile_features(make_frame(rows, rng, shift=shift), base, KNOWN)
        checked = stats.check(base, counted, stats.DriftConfig(alpha=alpha, seed=seed * 1000 + i))
        naive = sorted({r.column_name for r in checked.results
                        if r.metric in ("ks_p_value", "chi2_p_value", "null_p_value") and r.value is not None
                        and r.value < alpha})
        out.append({"drifted": checked.drifted, "warned": checked.warnings, "naive": naive})
    return out


def _replayed(pool: ProcessPoolExecutor, first_seed: int, rows: int, alpha: float, shift: float, total: int,
              per_baseline: int) -> list[dict[str, Any]]:
    groups = [(first_seed + g, rows, alpha, shift, min(per_baseline, total - g * per_baseline))
              for g in range(math.ceil(total / per_baseline))]
    return [o for group in pool.map(replays, groups) for o in group]


def cusum_runs(task: tuple[int, int, float, int]) -> list[int]:
    """Served runs of ``rows`` rows through `models.profile` and the monitor's CUSUM (`score` and
    `step`, as `monitor.sequential.advance` does); the run numbers that alarmed."""
    from models import profile
    from monitor import sequential

    seed, rows, shift, runs = task
    rng = np.random.default_rng(seed)
    base = freeze(rng)
    config = sequential.CusumConfig()
    state: dict[str, tuple[float, float]] = {}
    alarms = []
    for run in range(1, runs + 1):
        counted = profile.profile_features(make_frame(rows, rng, shift=shift), base, KNOWN)
        scores = {b["column_name"]: s for b in base
                  if (s := sequential.score(b, counted.get(b["column_name"]))) is not None}
        state, fired, _ = sequential.step(state, scores, config)
        if fired:
            alarms.append(run)
            if shift:
                break
    return alarms if not shift or alarms else [runs + 1]


def tool_replays(tool: str, sizes: list[int], replays: int, first_seed: int) -> dict[str, Any]:
    """Evidently's or NannyML's verdicts on the same replays (same seeds, same data), in their
    own interpreter: per size, the share of replays with dataset drift and with any column drifted."""
    out: dict[str, Any] = {}
    for rows in sizes:
        dataset = anything = done = 0
        started = time.perf_counter()
        for seed in range(first_seed, first_seed + replays):
            rng = np.random.default_rng(seed)
            reference, batch = make_frame(BASELINE_ROWS, rng), make_frame(rows, rng)
            whole, any_column = _evidently(reference, batch) if tool == "evidently" else _nannyml(reference, batch)
            dataset += whole
            anything += any_column
            done += 1
        out[str(rows)] = {"replays": done, "dataset": dataset / done, "any": anything / done,
                          "seconds_per_replay": (time.perf_counter() - started) / done}
    import importlib

    out["version"] = importlib.import_module(tool).__version__
    return out


def _evidently(reference: pd.DataFrame, batch: pd.DataFrame) -> tuple[bool, bool]:
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    definition = DataDefinition(numerical_columns=NUMERIC, categorical_columns=CATEGORICAL)
    snapshot = Report([DataDriftPreset()]).run(Dataset.from_pandas(batch, data_definition=definition),
                                               Dataset.from_pandas(reference, data_definition=definition))
    drifted, share = 0, None
    for metric in snapshot.dict()["metrics"]:
        config, value = metric["config"], metric["value"]
        if "column" in config:
            p_value = "p_value" in config["method"]
            drifted += (float(value) < config["threshold"]) if p_value else (float(value) >= config["threshold"])
        elif isinstance(value, dict) and "share" in value:
            share = float(value["share"])
    threshold = 0.5  # DataDriftPreset's drift_share
    return (share if share is not None else drifted / 20) >= threshold, drifted > 0


def _nannyml(reference: pd.DataFrame, batch: pd.DataFrame) -> tuple[bool, bool]:
    import nannyml

    columns = NUMERIC + CATEGORICAL
    calculator = nannyml.UnivariateDriftCalculator(column_names=columns, chunk_size=len(batch))
    calculator.fit(reference)
    frame = calculator.calculate(batch).filter(period="analysis").to_df()
    alerts = frame[[c for c in frame.columns if c[-1] == "alert"]].to_numpy(dtype=bool)
    flagged = int(alerts.any(axis=0).sum())
    return flagged >= len(columns) / 2, flagged > 0


def _bound(share: float, replays: int, alpha: float) -> float:
    return alpha + 3 * math.sqrt(alpha * (1 - alpha) / replays)


def _child(python: str, tool: str, sizes: list[int], replays: int, first_seed: int) -> dict[str, Any]:
    done = subprocess.run([python, __file__, "--child", tool, "--sizes", ",".join(map(str, sizes)),
                           "--replays", str(replays), "--first-seed", str(first_seed)],
                          capture_output=True, text=True,
                          env={"DO_NOT_TRACK": "1", "NML_DISABLE_USAGE_LOGGING": "1", "PATH": "/usr/bin:/bin"})
    if done.returncode != 0:
        raise RuntimeError(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replays", type=int, default=1000)
    parser.add_argument("--sizes", default="100,1000,10000,100000")
    parser.add_argument("--alpha", type=float, default=0.01)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--per-baseline", type=int, default=10, help="Replays sharing one baseline.")
    parser.add_argument("--power-replays", type=int, default=200)
    parser.add_argument("--cusum-runs", type=int, default=8_000, help="Quiet served runs, in all, for the ARL.")
    parser.add_argument("--delay-replays", type=int, default=50)
    parser.add_argument("--evidently-python", help="An interpreter with evidently 0.7 (pandas < 3).")
    parser.add_argument("--nannyml-python", help="An interpreter with nannyml.")
    parser.add_argument("--tool-replays", type=int, default=200)
    parser.add_argument("--tool-sizes", default="100,1000,10000")
    parser.add_argument("--child", choices=("evidently", "nannyml"), help=argparse.SUPPRESS)
    parser.add_argument("--first-seed", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.child:
        print(json.dumps(tool_replays(args.child, sizes, args.replays, args.first_seed)))
        return 0
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    ok = True
    rates: dict[int, dict[str, float]] = {}
    with ProcessPoolExecutor(args.workers) as pool:
        for rows in sizes:
            started = time.perf_counter()
            outcomes = _replayed(pool, 0, rows, args.alpha, 0.0, args.replays, args.per_baseline)
            ours = sum(bool(o["drifted"]) for o in outcomes) / len(outcomes)
            warned = sum(bool(o["drifted"] or o["warned"]) for o in outcomes) / len(outcomes)
            naive = sum(bool(o["naive"]) for o in outcomes) / len(outcomes)
            bound = _bound(ours, len(outcomes), args.alpha)
            rates[rows] = {"predstore": ours, "naive": naive}
            ok = ok and ours <= bound
            print(f"{rows:>7,} rows x {len(outcomes)} quiet replays: predstore alarms {ours:.2%} "
                  f"(target <= {bound:.2%}: {'met' if ours <= bound else 'NOT met'}), warnings {warned:.1%} "
                  f"(level 10%); per-feature tests at alpha, uncorrected {naive:.1%} "
                  f"(predstore's rate is {ours / naive if naive else float('nan'):.2f}x that) "
                  f"[{time.perf_counter() - started:.0f} s]")
        power = _replayed(pool, 10**6, 10_000, args.alpha, 0.2, args.power_replays, args.per_baseline)
        found = sum(SHIFTED in o["drifted"] for o in power) / len(power)
        others = sum(bool(set(o["drifted"]) - {SHIFTED}) for o in power) / len(power)
        ok = ok and found >= TARGETS["power"]
        print(f"power: {SHIFTED} shifted by 0.2 sd, 10,000 rows: found in {found:.1%} of {len(power)} replays "
              f"(target >= {TARGETS['power']:.0%}: {'met' if found >= TARGETS['power'] else 'NOT met'}); "
              f"another feature flagged in {others:.1%}")
        chains = max(args.workers, 1) * 4
        quiet = list(pool.map(cusum_runs, [(2 * 10**6 + c, 1000, 0.0, args.cusum_runs // chains)
                                           for c in range(chains)]))
        runs, alarms = chains * (args.cusum_runs // chains), sum(len(a) for a in quiet)
        from scipy import stats as sps

        arl = runs / alarms if alarms else float("inf")
        lower = 2 * runs / sps.chi2.ppf(0.975, 2 * alarms + 2)
        ok = ok and lower >= TARGETS["arl"]
        print(f"CUSUM, quiet, 1,000-row runs: {alarms} false alarm(s) in {runs:,} runs: average run length "
              f"{arl:,.0f} (95% lower bound {lower:,.0f}; target >= {TARGETS['arl']:.0f}: "
              f"{'met' if lower >= TARGETS['arl'] else 'NOT met'})")
        delays = list(pool.map(cusum_runs, [(3 * 10**6 + r, 1000, 0.05, 400) for r in range(args.delay_replays)]))
        median = float(np.median([d[0] for d in delays]))
        ok = ok and median <= TARGETS["delay"]
        met = "met" if median <= TARGETS["delay"] else "NOT met"
        print(f"CUSUM, {SHIFTED} shifted by 0.05 sd from the first 1,000-row run: detected after a median of "
              f"{median:.0f} runs (target <= {TARGETS['delay']:.0f}: {met})")
    tool_sizes = [int(s) for s in args.tool_sizes.split(",")]
    for tool, python in (("evidently", args.evidently_python), ("nannyml", args.nannyml_python)):
        if not python:
            print(f"{tool}: not run (pass --{tool}-python)")
            continue
        try:
            theirs = _child(python, tool, tool_sizes, args.tool_replays, 0)
        except RuntimeError as exc:
            print(f"{tool}: could not run ({exc})")
            continue
        for rows in tool_sizes:
            r = theirs[str(rows)]
            ours = rates.get(rows, {}).get("predstore", float("nan"))
            print(f"{tool} {theirs['version']}, {rows:,} rows x {r['replays']} quiet replays of the same generator: "
                  f"dataset drift {r['dataset']:.1%}, any column drifted {r['any']:.1%} (predstore, any feature: "
                  f"{ours:.2%}) [{r['seconds_per_replay']:.2f} s a replay]")
    print(f"targets: {'met' if ok else 'NOT met'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
