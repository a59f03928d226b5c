"""Benchmark: drift of a 1M-row batch against a training baseline, predstore against Evidently.

    python benchmarks/bench_monitor.py [--rows 1000000] [--evidently-python PATH] [--skip-evidently]

Data: 20 features (15 numeric, 5 categorical with 8 categories each); the reference (training)
sample and the batch both have ``--rows`` rows, from the same distributions except 5 numeric
features shifted by 0.2 of their standard deviation in the batch.

predstore: the baseline is frozen once from the reference (registration, in a process of its own,
timed apart); then a fresh process holding only the baseline and the batch times the drift: count
the batch into the baseline's bins with `models.profile` (in 131,072-row slices, as the scoring job
does) and compute every metric with `monitor.stats`. Evidently 0.7: ``Report([DataDriftPreset()])``
on the same reference and batch, in its own process. Each peak RSS (VmHWM) is its process's
own; every process generates the same data from the same seeds. Evidently may need an interpreter
of its own (``--evidently-python``): 0.7 does not import under pandas 3.

Targets: drift of the whole batch <= 2 s, >= 50x faster than Evidently, peak RSS <= 500 MB, the
5 shifted features flagged and none of the other 15.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from store.features import FeatureSchema

NUMERIC = [f"num_{i}" for i in range(15)]
CATEGORICAL = [f"cat_{i}" for i in range(5)]
SHIFTED = NUMERIC[:5]
SHIFT_STD = 0.2
SLICE = 131_072
TARGETS = {"seconds": 2.0, "speedup": 50.0, "rss_mb": 500.0}


def make_frame(rows: int, *, seed: int, shift: bool) -> pd.DataFrame:
    """``rows`` rows of the benchmark's 20 features; ``shift`` moves the first 5 numeric ones."""
    rng = np.random.default_rng(seed)
    numbers = np.empty((rows, len(NUMERIC)), order="F")  # one block, no copy when the frame is made
    for i, name in enumerate(NUMERIC):
        mean, std = 10.0 * i, 1.0 + i / 3
        numbers[:, i] = rng.normal(mean, std, size=rows) if i % 3 else rng.gamma(2.0 + i / 5, std, size=rows)
        true_std = std if i % 3 else np.sqrt(2.0 + i / 5) * std
        if shift and name in SHIFTED:
            numbers[:, i] += SHIFT_STD * true_std
    frame = pd.DataFrame(numbers, columns=NUMERIC, copy=False)
    for i, name in enumerate(CATEGORICAL):
        weights = np.arange(1, 9, dtype=float) ** (1 + i / 4)
        labels = pa.array([f"{name}_v{k}" for k in range(8)])
        # Built in Arrow: pandas 3 keeps it as its Arrow-backed str dtype, with no Python object per row.
        frame[name] = labels.take(pa.array(rng.choice(8, size=rows, p=weights / weights.sum()))).to_pandas()
    return frame


def peak_rss_mb() -> float:
    """This process's own peak (VmHWM): ru_maxrss would keep the parent's, Linux carries it over exec.
    Not store.prometheus.peak_rss_bytes: the Evidently child runs in an interpreter without predstore."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def freeze_baseline(rows: int, path: Path) -> dict[str, Any]:
    """Registration: the reference's baseline (and known categories), saved for the drift process."""
    from models import profile
    from models.predict import Scores

    schema = FeatureSchema.from_json({"columns": [{"name": n, "kind": "numeric"} for n in NUMERIC]
                                     + [{"name": n, "kind": "categorical"} for n in CATEGORICAL]})
    reference = make_frame(rows, seed=1, shift=False)
    started = time.perf_counter()
    base = profile.baseline(reference, schema, Scores(prediction=np.zeros(len(reference))))
    known = {n: sorted(reference[n].unique().tolist()) for n in CATEGORICAL}
    seconds = time.perf_counter() - started
    path.write_text(json.dumps({"baseline": base, "known": known}))
    return {"tool": "predstore baseline", "seconds": seconds, "rss_mb": peak_rss_mb()}


def run_predstore(rows: int, path: Path) -> dict[str, Any]:
    """Time the drift of the batch against the frozen baseline: profile into bins + metrics."""
    from models import profile
    from monitor import stats

    frozen = json.loads(path.read_text())
    base, known = frozen["baseline"], frozen["known"]
    batch = make_frame(rows, seed=2, shift=True)
    rss_before = peak_rss_mb()

    cpu, started = time.process_time(), time.perf_counter()
    total: dict[str, dict[str, Any]] = {}
    for start in range(0, len(batch), SLICE):
        total = profile.add(total, profile.profile_features(batch.iloc[start:start + SLICE], base, known))
    profiled = time.perf_counter()
    checked = stats.check(base, total, stats.DriftConfig())
    finished = time.perf_counter()
    return {"tool": "predstore", "rows": rows, "profile_s": profiled - started,
            "metrics_s": finished - profiled, "seconds": finished - started, "cpu_s": time.process_time() - cpu,
            "rss_mb": peak_rss_mb(),
            "rss_data_mb": rss_before, "drifted": sorted(checked.drifted)}


def run_evidently(rows: int) -> dict[str, Any]:
    """Evidently 0.7's DataDriftPreset on the same reference and batch."""
    import evidently
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    definition = DataDefinition(numerical_columns=NUMERIC, categorical_columns=CATEGORICAL)
    reference = make_frame(rows, seed=1, shift=False)
    batch = make_frame(rows, seed=2, shift=True)
    rss_before = peak_rss_mb()
    cpu, started = time.process_time(), time.perf_counter()
    snapshot = Report([DataDriftPreset()]).run(Dataset.from_pandas(batch, data_definition=definition),
                                               Dataset.from_pandas(reference, data_definition=definition))
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    drifted = []
    for metric in snapshot.dict()["metrics"]:
        config = metric["config"]
        if "column" not in config:
            continue
        p_value = "p_value" in config["method"]
        value = float(metric["value"])
        if (value < config["threshold"]) if p_value else (value >= config["threshold"]):
            drifted.append(config["column"])
    return {"tool": f"evidently {evidently.__version__}", "rows": rows, "seconds": seconds, "cpu_s": cpu,
            "rss_mb": peak_rss_mb(),
            "rss_data_mb": rss_before, "drifted": sorted(drifted)}


def _child(python: str, mode: str, rows: int, baseline: Path) -> dict[str, Any]:
    env = {**os.environ, "DO_NOT_TRACK": "1"}  # no telemetry calls from Evidently inside the timing
    done = subprocess.run([python, __file__, "--child", mode, "--rows", str(rows), "--baseline", str(baseline)],
                          capture_output=True, text=True, cwd=Path(__file__).resolve().parent.parent, env=env)
    if done.returncode != 0:
        raise RuntimeError(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--evidently-python", default=sys.executable,
                        help="Interpreter that has evidently 0.7 installed (default: this one).")
    parser.add_argument("--skip-evidently", action="store_true")
    parser.add_argument("--child", choices=("baseline", "predstore", "evidently"), help=argparse.SUPPRESS)
    parser.add_argument("--baseline", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
        runs = {"baseline": lambda: freeze_baseline(args.rows, args.baseline),
                "predstore": lambda: run_predstore(args.rows, args.baseline),
                "evidently": lambda: run_evidently(args.rows)}
        print(json.dumps(runs[args.child]()))
        return 0

    with tempfile.TemporaryDirectory() as tmp:
        frozen = Path(tmp) / "baseline.json"
        registered = _child(sys.executable, "baseline", args.rows, frozen)
        ours = _child(sys.executable, "predstore", args.rows, frozen)
    print(f"baseline (registration, once, own process): {registered['seconds']:.2f} s, "
          f"peak RSS {registered['rss_mb']:.0f} MB")
    print(f"predstore: {ours['rows']:,} rows x 20 features: drift in {ours['seconds']:.3f} s "
          f"(profile {ours['profile_s']:.3f} s + metrics {ours['metrics_s']:.3f} s; {ours['cpu_s']:.2f} s CPU), "
          f"peak RSS {ours['rss_mb']:.0f} MB "
          f"({ours['rss_data_mb']:.0f} MB once the batch was generated, before the timed part)")
    flagged_ok = ours["drifted"] == sorted(SHIFTED)
    print(f"  flagged: {', '.join(ours['drifted']) or 'none'} -> "
          f"{'the 5 shifted and none of the other 15' if flagged_ok else 'WRONG: expected ' + ', '.join(SHIFTED)}")
    ok = flagged_ok and ours["seconds"] <= TARGETS["seconds"] and ours["rss_mb"] <= TARGETS["rss_mb"]
    if not args.skip_evidently:
        try:
            theirs = _child(args.evidently_python, "evidently", args.rows, Path("-"))
        except RuntimeError as exc:
            print(f"evidently: could not run ({exc}); predstore's figures stand alone")
        else:
            speedup = theirs["seconds"] / ours["seconds"]
            print(f"{theirs['tool']}: DataDriftPreset in {theirs['seconds']:.1f} s "
                  f"({theirs['cpu_s']:.1f} s CPU), peak RSS {theirs['rss_mb']:.0f} MB "
                  f"({theirs['rss_data_mb']:.0f} MB with the data generated)")
            print(f"  flagged: {', '.join(theirs['drifted']) or 'none'}")
            print(f"speedup: {speedup:.0f}x (target >= {TARGETS['speedup']:.0f}x)")
            ok = ok and speedup >= TARGETS["speedup"]
    print(f"targets: <= {TARGETS['seconds']:.0f} s, >= {TARGETS['speedup']:.0f}x, <= {TARGETS['rss_mb']:.0f} MB, "
          f"exact flags: {'met' if ok else 'NOT met'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
