"""The packages import one way (docs/import_graph.py): store at the bottom, then batch, the monitor
above it, the scheduler above both; the lookup API on the store alone."""

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
    assert "lookup_api  -> store" in lines and "batch       -> store" in lines
    assert "one way: yes" in lines and done.returncode == 0, done.stdout + done.stderr
