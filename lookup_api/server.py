"""Serving the lookup API in production: granian's WSGI server, one process per available CPU.

granian parses HTTP and keeps connections alive in Rust, and hands each request to one of a few
Python threads per worker: at 16 keep-alive connections on 2 cores it answers 1.6-2x the
requests per second of gunicorn's gthread workers running the same Flask app (measured by
benchmarks/bench_lookup.py). gunicorn stays supported: ``gunicorn 'lookup_api:create_app()' -c
python:lookup_api.gunicorn_conf``.

Each worker builds its own app (`app`): a pool and a listener thread do not survive a fork.
"""

from __future__ import annotations

import gc
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flask import Flask

    from store.settings import Settings


def app() -> Flask:
    """The app of one worker, built from the environment (granian calls this factory).

    What it loaded (the app, its libraries) is moved out of the garbage collector's sight: a full
    collection then scans only what requests made, which keeps its pauses out of the latency tail.
    """
    from lookup_api import create_app

    built = create_app()
    gc.collect()
    gc.freeze()
    return built


def run(settings: Settings, *, host: str, port: int, workers: int, threads: int) -> None:
    """Serve the API until SIGINT or SIGTERM; granian's lines and the workers' are logged as
    ``settings`` say (`store.logs`)."""
    from granian import Granian
    from granian.constants import Interfaces
    from granian.log import LogLevels

    from store.logs import dict_config

    # Workers share their Prometheus numbers through files in this folder; /metrics sums them.
    folder = Path(os.environ.get("PROMETHEUS_MULTIPROC_DIR") or tempfile.mkdtemp(prefix="predstore-metrics-"))
    folder.mkdir(parents=True, exist_ok=True)
    for leftover in folder.glob("*.db"):  # start from zero
        leftover.unlink()
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(folder)
    Granian("lookup_api.server:app", factory=True, interface=Interfaces.WSGI, address=host, port=port,
            workers=workers, blocking_threads=threads, respawn_failed_workers=True, workers_kill_timeout=10,
            log_access=False, log_level=LogLevels(settings.log_level),
            log_dictconfig=dict_config(settings, servers=True)).serve()
