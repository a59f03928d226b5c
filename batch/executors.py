"""Where a run's tasks execute: in this process, in a pool of local processes, or on Dask."""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import TYPE_CHECKING

from store.errors import ConfigError, PredstoreError

if TYPE_CHECKING:  # the scoring task (numpy, pyarrow, the model's libraries) loads when a run starts
    from batch.tasks import TaskContext, TaskResult
    from store.reader import Slice

log = logging.getLogger("predstore.batch.executors")

EXECUTORS = ("local", "dask")


@dataclass(frozen=True)
class ExecutorSpec:
    """``local`` with N worker processes (1: in this process), or ``dask`` at an address
    (``local`` starts a LocalCluster of ``workers`` processes)."""

    kind: str = "local"
    workers: int = 1
    dask_address: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in EXECUTORS:
            raise ConfigError(f"--executor {self.kind!r}: choose one of {', '.join(EXECUTORS)}")
        if self.workers < 1:
            raise ConfigError(f"--workers {self.workers}: give at least 1")
        if self.kind == "dask" and not self.dask_address:
            raise ConfigError("--executor dask needs --dask-address tcp://HOST:PORT (or 'local')")
        if self.kind == "local" and self.dask_address:
            raise ConfigError("--dask-address goes with --executor dask")

    @property
    def pieces(self) -> int:
        """How many slices to cut a partition into: a few per worker, so they balance."""
        return 1 if self.kind == "local" and self.workers == 1 else 3 * self.workers


def run_tasks(slices: list[Slice], ctx: TaskContext, spec: ExecutorSpec,
              progress: Callable[[int], None] | None = None) -> list[TaskResult]:
    """Run every slice's task; results in slice order. The first failure is raised."""
    from batch.tasks import score_task

    if spec.kind == "local" and spec.workers == 1:
        return [score_task(part, ctx, progress) for part in slices]
    if spec.kind == "local":
        return _processes(slices, ctx, spec.workers, progress)
    return _dask(slices, ctx, spec, progress)


def _limit_threads(workers: int) -> None:
    """Give each worker process its share of the cores for the model's own threads."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(max(1, (os.cpu_count() or 1) // workers))


def _processes(slices: list[Slice], ctx: TaskContext, workers: int,
               progress: Callable[[int], None] | None) -> list[TaskResult]:
    from batch.tasks import score_task

    # spawn, not fork: a forked child would share this process's database connections.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_limit_threads, initargs=(workers,)) as pool:
        futures = {pool.submit(score_task, part, ctx): i for i, part in enumerate(slices)}
        results: dict[int, TaskResult] = {}
        try:
            for future in as_completed(futures):
                result = future.result()
                results[futures[future]] = result
                if progress:
                    progress(result.rows_in)
        except BrokenProcessPool as exc:
            raise PredstoreError("a worker process died while scoring (out of memory, or killed?)") from exc
        except BaseException:
            for future in futures:
                future.cancel()
            raise
    return [results[i] for i in range(len(slices))]


def _dask(slices: list[Slice], ctx: TaskContext, spec: ExecutorSpec,
          progress: Callable[[int], None] | None) -> list[TaskResult]:
    try:
        from dask.distributed import Client, LocalCluster
        from dask.distributed import as_completed as dask_completed
    except ImportError:
        raise ConfigError("--executor dask needs dask.distributed: pip install 'predstore[dask]'") from None
    from batch.tasks import score_task

    cluster = None
    try:
        if spec.dask_address == "local":
            cluster = LocalCluster(n_workers=spec.workers, threads_per_worker=1, processes=True,
                                   dashboard_address=None, silence_logs=logging.ERROR)
            client = Client(cluster)
        else:
            client = Client(spec.dask_address, timeout="10s")
    except (OSError, TimeoutError) as exc:
        raise ConfigError(f"cannot reach the Dask scheduler at {spec.dask_address} ({exc})") from exc
    try:
        client.run(_limit_threads, max(1, len(client.scheduler_info()["workers"])))
        # A task lost with its worker is run again elsewhere (its COPY died with its connection).
        futures = client.map(score_task, slices, ctx=ctx, pure=False, retries=2)
        index = {f.key: i for i, f in enumerate(futures)}
        results: dict[int, TaskResult] = {}
        for future in dask_completed(futures):
            try:
                result = future.result()
            except PredstoreError:
                raise
            except Exception as exc:  # a worker's failure, translated once here
                raise PredstoreError(f"a Dask task failed: {type(exc).__name__}: {exc}") from exc
            results[index[future.key]] = result
            if progress:
                progress(result.rows_in)
        return [results[i] for i in range(len(slices))]
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
