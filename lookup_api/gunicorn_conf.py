"""Gunicorn settings for the lookup API, loaded from the installed package:

    gunicorn 'lookup_api:create_app()' -c python:lookup_api.gunicorn_conf

Every worker builds its own app (no preload: a pool and a listener thread do not survive a fork).
One worker per CPU the process may use (`lookup_api.capacity`). Override with the usual
GUNICORN_CMD_ARGS or flags, e.g. ``--bind 0.0.0.0:8000 --workers 4``. The server refuses to start
when its workers need more database connections than the database has free, and logs as
PREDSTORE_LOG_LEVEL and PREDSTORE_LOG_FORMAT say (`store.logs`), gunicorn's own lines included.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Any, NoReturn

from lookup_api.capacity import available_cpus, check_connections
from store.errors import PredstoreError, mask_secrets
from store.logs import dict_config
from store.settings import Settings


def _fail(exc: PredstoreError) -> NoReturn:
    """Stop before serving, with one line, as the CLI would."""
    print(f"predstore: error: {mask_secrets(str(exc))}", file=sys.stderr)
    sys.exit(2)


try:
    _settings = Settings.from_env()
except PredstoreError as exc:
    _fail(exc)

bind = os.environ.get("PREDSTORE_API_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("PREDSTORE_API_WORKERS") or available_cpus())
logconfig_dict = dict_config(_settings, servers=True)
loglevel = _settings.log_level
# Threads keep connections alive and overlap a request's database wait with another's Python. Two
# per worker is enough for that; more only queue for the worker's GIL and lengthen the tail
# (measured by benchmarks/bench_lookup.py: p99 8.4-12.5 ms with 2, 11-16 ms with 4).
worker_class = "gthread"
threads = int(os.environ.get("PREDSTORE_API_THREADS", "2"))
keepalive = 30
preload_app = False
# Each worker listens on its own SO_REUSEPORT socket, so the kernel spreads connections over the
# workers; on one shared socket the last worker to wait takes nearly all keep-alive connections.
# PREDSTORE_API_REUSE_PORT=0 turns it off (then a second server on the port fails to start).
reuse_port = os.environ.get("PREDSTORE_API_REUSE_PORT", "1") != "0"
timeout = 30
graceful_timeout = 10
accesslog = None

# Workers share their Prometheus numbers through files in this folder; /metrics sums them.
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="predstore-metrics-")


def on_starting(server: Any) -> None:
    """Check that the workers' connections fit in the database (`lookup_api.capacity`); start
    the metrics from zero: drop the numbers a previous run left behind."""
    try:
        check_connections(_settings, workers=server.cfg.workers)
    except PredstoreError as exc:
        _fail(exc)
    folder = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    folder.mkdir(parents=True, exist_ok=True)
    for leftover in folder.glob("*.db"):
        leftover.unlink()


def child_exit(server: Any, worker: Any) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def post_worker_init(worker: Any) -> None:
    """Move everything the worker loaded (the app, its libraries) out of the garbage collector's
    sight: a full collection then scans only what requests made, and its pauses, which showed as
    75-105 ms latency spikes under load, fall to 20-60 ms."""
    import gc

    gc.collect()
    gc.freeze()
