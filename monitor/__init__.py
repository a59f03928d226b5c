"""The monitor: data drift, prediction drift and realized performance against training baselines.

`monitor.stats` and `monitor.performance` are pure functions over histograms and arrays;
`run_monitor` is the job (what the scheduler and `predstore monitor` call), `ingest_labels` loads
delayed labels, `profile_file` compares any data file with a baseline, and `write_report` writes
the self-contained HTML report.
"""

from monitor.config import MonitorConfig
from monitor.files import profile_file
from monitor.labels import ingest_labels
from monitor.runner import MonitorResult, run_monitor, write_report
from monitor.stats import DriftConfig

__all__ = ["DriftConfig", "MonitorConfig", "MonitorResult", "ingest_labels", "profile_file", "run_monitor",
           "write_report"]
