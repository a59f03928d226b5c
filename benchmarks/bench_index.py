"""Benchmark of a run's index build: the publish step that grows with the run. A script.

    python benchmarks/bench_index.py [--rows 2000000] [--repeat 3]

It starts a throwaway embedded PostgreSQL, COPYs ``--rows`` predictions with text entity ids
(``cust-<n>``, in random order) into a run's table as the scoring job does, and times, best of
``--repeat``, in the same run:

- ``index_run_table``: the unique index on ``entity_id`` (``C`` collation) that each run gets;
- the baseline: a primary key on (run_id, entity_id), the key a partition of a table keyed by
  both would need, with the same settings;
- the bound: sorting the ids alone, which every B-tree build does first.

and what publishing the run then costs (attach, and its rows written into the serving directory),
for new entities and for the same entities re-scored, against the run's binary COPY.

Target: the run's index of 2M rows in <= 0.5 s.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import psycopg
import pyarrow as pa

from store import ledger, predictions, registry
from store.features import FeatureSchema
from store.schema import run_table

sys.path.insert(0, str(Path(__file__).parent))
from bench_lookup import throwaway_store  # noqa: E402


def best(repeat: int, prepare: Callable[[], None], work: Callable[[], None]) -> float:
    times = []
    for _ in range(repeat):
        prepare()
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with throwaway_store() as (url, _):
        rng = np.random.default_rng(0)
        ids = pa.array([f"cust-{i}" for i in rng.permutation(args.rows)])
        columns = ["entity_id", "row_number", "prediction"]
        batch = pa.record_batch([ids, pa.array(np.arange(args.rows)), pa.array(rng.random(args.rows))],
                                schema=predictions.arrow_schema(columns))
        with psycopg.connect(url) as conn:
            registry.insert_model(conn, name="bench", version=1, artifact_uri="bench", sha256="0" * 64,
                                  format="skops", task="regression", feature_schema=FeatureSchema(()), classes=None,
                                  training_metrics=None)

            def new_run(partition: str) -> int:
                """A run of ``partition`` whose table holds the batch, COPYed as the scoring job does."""
                with conn.transaction():
                    run_id = ledger.start_run(conn, model_name="bench", model_version=1, model_sha256="0" * 64,
                                              partition_key=partition, input_uri="bench://", code_version="bench",
                                              host=socket.gethostname(), pid=os.getpid())
                    predictions.create_run_table(conn, run_id)
                    with predictions.copy_predictions(conn, run_id, columns, sole_writer=True) as write:
                        write(batch)
                return run_id

            run_id = new_run("p")
            table = run_table(run_id).as_string(conn)

            def drop() -> None:
                conn.execute(f"DROP INDEX IF EXISTS predstore_partitions.uq_run_{run_id}")
                conn.execute(f"ALTER TABLE {table} DROP CONSTRAINT IF EXISTS pk_{run_id}")
                conn.commit()

            def ours() -> None:
                with conn.transaction():
                    predictions.index_run_table(conn, run_id)

            def both_columns() -> None:
                with conn.transaction():
                    conn.execute("SET LOCAL maintenance_work_mem = '256MB'")
                    conn.execute(f"ALTER TABLE {table} ADD CONSTRAINT pk_{run_id} PRIMARY KEY (run_id, entity_id)")

            def sort_alone() -> None:
                with conn.transaction():
                    conn.execute("SET LOCAL maintenance_work_mem = '256MB'")
                    conn.execute("SET LOCAL work_mem = '256MB'")
                    conn.execute(f"SELECT count(*) FROM (SELECT entity_id FROM {table} ORDER BY entity_id OFFSET 0) s")

            baseline = best(args.repeat, drop, both_columns)
            entity = best(args.repeat, drop, ours)
            floor = best(args.repeat, drop, sort_alone)
            publishing = []
            drop()
            for attempt in range(2):  # new entities, then the same ones again (a re-scored partition)
                if attempt:
                    run_id = new_run("p")
                with conn.transaction():
                    predictions.index_run_table(conn, run_id)
                    copied = time.perf_counter()
                    predictions.publish(conn, run_id, model_name="bench", partition_key="p")
                    publishing.append(time.perf_counter() - copied)
            started = time.perf_counter()
            new_run("q")
            copy = time.perf_counter() - started
        print(f"{args.rows:,} rows, {os.cpu_count()} cores; best of {args.repeat}")
        print(f"primary key (run_id, entity_id): {baseline:.3f} s")
        print(f"unique index (entity_id):        {entity:.3f} s  ({baseline / entity:.2f}x faster; target <= 0.5 s)")
        print(f"the bound, sorting the ids alone (one backend, no index written): {floor:.3f} s")
        print(f"publish (attach + serving directory): {publishing[0]:.3f} s for new entities, {publishing[1]:.3f} s "
              f"for the same entities re-scored; the run's COPY took {copy:.3f} s "
              f"({publishing[0] / copy:.2f}x and {publishing[1] / copy:.2f}x of it; "
              f"{publishing[1] / args.rows * 1e6:.2f} us a row)")


if __name__ == "__main__":
    main()
