"""Fault points: a test seam that kills the process, or raises, at a named point of a scoring run
(or of a monitor run, or a labels ingest).

``PREDSTORE_FAULT_POINT=copy`` makes the first ``point("copy")`` the process reaches send it
SIGKILL, as an operator's ``kill -9`` or the OOM killer would; ``copy@3`` kills at the third time
it is reached. A suffix picks another fault: ``committed:raise`` raises `Fault` (an unexpected
error, such as a lost COMMIT acknowledgement), ``committed:interrupt`` raises KeyboardInterrupt
(Ctrl-C), ``copy@2:pause`` prints ``predstore fault: paused at copy`` to stderr and sleeps
`PAUSE_SECONDS` (time for a test to stop the database at that stage), or until the file
``PREDSTORE_FAULT_RESUME`` names exists (the test made its change: the run goes on at once). Unset (always, outside
tests) a point costs one comparison. The variable is read once per process, the first time any
point is reached; tests run real ``predstore`` processes with it set and check what the store
looks like afterwards (tests/test_faults.py).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from functools import lru_cache

ENV = "PREDSTORE_FAULT_POINT"

#: Every point, in the order a run reaches them, and where it is.
POINTS = {
    "fingerprint": "store/reader.py: hashing the input, in its own thread",
    "read": "store/reader.py: a batch was read",
    "validate": "models/validate.py: a batch is validated",
    "run_started": "batch/runner.py: the run is in the ledger, its table not yet created",
    "table_created": "batch/runner.py: the run's (unattached) table exists, no task has started",
    "copy": "batch/tasks.py: a batch of predictions was written into the COPY",
    # A task commits its rejected rows' connection(s), then its predictions': task_commit@1 dies
    # with the rejects committed and the predictions not.
    "task_commit": "batch/tasks.py: a task committed one of its connections",
    "tasks_done": "batch/runner.py: every task is done, the publish transaction not yet begun",
    "indexed": "batch/runner.py: inside the publish transaction, the index is built",
    "published": "batch/runner.py: inside the publish transaction, every run published, before commit",
    "committed": "batch/runner.py: the publish transaction committed, retention not yet applied",
}
#: The points of the other jobs.
JOB_POINTS = {
    "monitor": "monitor/runner.py: the model's monitor lock is taken, nothing checked yet",
    "labels": "monitor/labels.py: a batch of labels was written into the COPY",
    "matched": "monitor/realized.py: a chunk of labels was matched, its tallies not yet added",
    "promoted": "models/promotion.py: the alias moved and serving switched, the promotion not yet committed",
    "released": "batch/held.py: a held run is published, the release not yet committed",
}

#: What an armed point does: the default first.
ACTIONS = ("kill", "raise", "interrupt", "pause")

#: How long a ``:pause`` point sleeps.
PAUSE_SECONDS = 10.0

_hits: dict[str, int] = {}
_lock = threading.Lock()


class Fault(RuntimeError):
    """The error a point armed with ``:raise`` raises."""


@lru_cache(maxsize=1)
def armed() -> tuple[str, int, str] | None:
    """The (point, hit number, action) of this process, from `ENV`; None when unset."""
    raw = os.environ.get(ENV, "").strip()
    if not raw:
        return None
    where, _, action = raw.partition(":")
    name, _, nth = where.partition("@")
    return name, int(nth) if nth.isdigit() and int(nth) > 0 else 1, action if action in ACTIONS else "kill"


def point(name: str) -> None:
    """Kill this process with SIGKILL (or raise) if it is armed at ``name`` and this is the hit it waits for."""
    target = armed()
    if target is None or target[0] != name:
        return
    with _lock:
        _hits[name] = _hits.get(name, 0) + 1
        if _hits[name] != target[1]:
            return
    if target[2] == "raise":
        raise Fault(f"fault injected at {name}")
    if target[2] == "interrupt":
        raise KeyboardInterrupt
    if target[2] == "pause":
        print(f"predstore fault: paused at {name}", file=sys.stderr, flush=True)
        resume = os.environ.get("PREDSTORE_FAULT_RESUME")
        until = time.monotonic() + PAUSE_SECONDS
        while time.monotonic() < until and not (resume and os.path.exists(resume)):
            time.sleep(0.05)
        return
    os.kill(os.getpid(), signal.SIGKILL)
