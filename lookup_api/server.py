"""Serving the lookup API in production: granian's WSGI server, one process per available CPU.

granian parses HTTP and keeps connections alive in Rust, and hands each request to one of a few
Python threads per worker: at 16 keep-alive connections on 2 cores it answers 1.6-2x the
requests per second of gunicorn's gthread workers running the same Flask app (measured by
benchmarks/bench_lookup.py). gunicorn stays supported: ``gunicorn 'lookup_api:create_app()' -c
python:lookup_api.gunicorn_conf``.

Each worker builds its own app (`app`): a pool and a listener thread do not survive a fork.

granian binds its one socket with ``SO_REUSEPORT``, so a second server started on a port in use
would share it with the first instead of failing; `check_port` refuses such a port first.
"""

from __future__ import annotations

import gc
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from store import ports

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


def check_port(host: str, port: int) -> None:
    """`store.ports.check_port`, saying what else may listen there and how to share the port."""
    ports.check_port(host, port, hint=" (another `predstore serve`?): stop what listens there or pick another --port; "
                                      "PREDSTORE_API_REUSE_PORT=1 shares the port with it instead")


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
