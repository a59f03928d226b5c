"""The packages import one way (docs/import_graph.py): store at the bottom, then models, the batch
job and the monitor beside each other above it, the scheduler above both; the lookup API on the
store, and models for live scoring."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_import_graph_points_one_way() -> None:
    done = subprocess.run([sys.executable, str(ROOT / "docs" / "import_graph.py")], capture_output=True, text=True,
                          timeout=60)
    lines = done.stdout.splitlines()
    assert not [line for line in lines if line.startswith("UPWARD")], done.stdout
    assert lines[0] == "store       -> (nothing)"
    assert "models      -> store" in lines and "lookup_api  -> models, store" in lines
    assert "batch       -> models, store" in lines and "monitor     -> models, store" in lines
    assert "one way: yes" in lines and done.returncode == 0, done.stdout + done.stderr
