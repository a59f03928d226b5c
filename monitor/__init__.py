"""The monitor: data drift, prediction drift and realized performance against training baselines.

`monitor.stats` is pure functions over histograms (the metrics of a model's outputs, shared with
registration, are `models.performance` and `models.calibration`);
`run_monitor` is the job (what the scheduler and `predstore monitor` call), `ingest_labels` loads
delayed labels, `profile_file` compares any data file with a baseline, and `write_report` writes
the self-contained HTML report.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from monitor.config import MonitorConfig
    from monitor.files import profile_file
    from monitor.labels import ingest_labels
    from monitor.runner import MonitorResult, run_monitor, write_report
    from monitor.stats import DriftConfig

__all__ = ["DriftConfig", "MonitorConfig", "MonitorResult", "ingest_labels", "profile_file", "run_monitor",
           "write_report"]

#: Where each public name lives; imported on first use, so `predstore --help` does not load SciPy.
_HOMES = {"DriftConfig": "monitor.stats", "MonitorConfig": "monitor.config", "MonitorResult": "monitor.runner",
          "ingest_labels": "monitor.labels", "profile_file": "monitor.files", "run_monitor": "monitor.runner",
          "write_report": "monitor.runner"}


def __getattr__(name: str) -> object:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)
