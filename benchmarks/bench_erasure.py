"""Benchmark of the erasure list's cost to validation. A script.

    python benchmarks/bench_erasure.py [--rows 1000000] [--erased 10000] [--repeat 3]

Validates ``--rows`` rows (text ids, three numeric features and a category, as `models.validate`
sees a partition) best of ``--repeat``, in the same run:

- the baseline: validation with an empty erasure list (no HMAC computed);
- with ``--erased`` entities on the list: one HMAC-SHA256 per row, and a set lookup.

and prints the times and their ratio, with the HMAC alone as the bound.
"""

from __future__ import annotations

import argparse
import hmac
import secrets
import time
from collections.abc import Callable

import numpy as np
import pyarrow as pa

from models.validate import Erasures, validate
from store.erasure import entity_hmac
from store.features import FeatureSchema


def best(repeat: int, work: Callable[[], object]) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--erased", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    ids = [f"cust-{i:09d}" for i in rng.permutation(args.rows)]
    batch = pa.RecordBatch.from_pydict({
        "entity_id": ids, **{f"f{j}": rng.normal(size=args.rows) for j in range(3)},
        "color": rng.choice(["red", "green", "blue"], size=args.rows)})
    schema = FeatureSchema.from_json({"columns": [
        *({"name": f"f{j}", "kind": "numeric"} for j in range(3)),
        {"name": "color", "kind": "categorical", "categories": ["red", "green", "blue"]}]})
    key = secrets.token_bytes(32)
    listed = Erasures(key, frozenset(entity_hmac(key, f"cust-{i:09d}") for i in range(args.erased)))
    empty = Erasures(key)
    baseline = best(args.repeat, lambda: validate(batch, schema, entity_col="entity_id", first_row=1,
                                                   erasures=empty))
    with_list = best(args.repeat, lambda: validate(batch, schema, entity_col="entity_id", first_row=1,
                                                    erasures=listed))
    bound = best(args.repeat, lambda: [hmac.digest(key, i.encode(), "sha256") for i in ids])
    checked = validate(batch, schema, entity_col="entity_id", first_row=1, erasures=listed)
    assert len(checked.rejects) == min(args.erased, args.rows)
    print(f"validate {args.rows:,} rows: empty list {baseline:.3f} s; {args.erased:,} erased {with_list:.3f} s "
          f"({with_list / baseline:.2f}x the empty list); the HMACs alone {bound:.3f} s "
          f"({bound / baseline:.2f}x)")


if __name__ == "__main__":
    main()
