"""The error tree: declared in one module, mapped to exit codes, HTTP statuses and firing outcomes
by one table each, and quoted by one first-line helper."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from lookup_api.errors import STATUS, Stale
from scheduler.jobs import OUTCOMES, outcome_of
from store import errors
from store.cli import EXIT_CODES, exit_code

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("batch", "models", "store", "monitor", "lookup_api", "scheduler", "predstore", "demo")


def test_the_cli_exit_codes_are_one_table() -> None:
    assert exit_code(errors.ConfigError("x")) == 2
    assert exit_code(errors.StoreUnavailable("x")) == 2
    assert exit_code(errors.ConnectionLost("x")) == 1  # nearer than StoreUnavailable
    assert exit_code(errors.SchemaOutdated("x")) == 2
    assert exit_code(errors.NotFound("x")) == 2
    assert exit_code(Stale("x")) == 2  # a NotFound
    assert exit_code(errors.RunFailed("x")) == 1
    assert exit_code(errors.RunInProgress(1, "m", "p")) == 1
    assert exit_code(errors.JobsFailed("x")) == 1
    assert exit_code(errors.PredstoreError("x")) == 1
    assert all(cls in EXIT_CODES for cls in (errors.PredstoreError, errors.ConfigError, errors.StoreUnavailable))


def test_the_api_and_the_scheduler_map_the_tree_by_a_table_each() -> None:
    assert STATUS[errors.StoreUnavailable] == (503, "store_unavailable")
    assert outcome_of(errors.RunInProgress(7, "m", "p")) == "busy"
    assert outcome_of(errors.RunFailed("x")) == "failed"
    assert outcome_of(errors.JobError("x")) == "failed"
    assert outcome_of(errors.RunHeld("held")) == "held"  # a RunFailed, but not one to retry
    assert set(OUTCOMES.values()) == {"busy", "failed", "held"}


def test_a_failed_run_carries_its_id_and_result_as_fields() -> None:
    result = object()
    failure = errors.RunFailed("run 3 failed", run_id=3, result=result)
    assert (str(failure), failure.run_id, failure.result) == ("run 3 failed", 3, result)
    assert errors.RunFailed("no run").run_id is None


def test_a_table_is_read_by_the_nearest_class() -> None:
    table = {errors.StoreUnavailable: "a", errors.ConnectionLost: "b"}
    assert errors.nearest(table, errors.ConnectionLost("x")) == "b"
    assert errors.nearest(table, errors.StoreUnavailable("x")) == "a"
    assert errors.nearest(table, errors.NotFound("x")) is None


@pytest.mark.parametrize(("message", "line"), [("first\nsecond", "first"), ("  \n", "ValueError"),
                                               ("", "ValueError")])
def test_first_line(message: str, line: str) -> None:
    assert errors.first_line(ValueError(message)) == line


def test_error_classes_are_declared_in_the_tree_alone() -> None:
    """Every predstore error class but the API's own `Stale` is declared in store/errors.py."""
    tree = {name for name, value in vars(errors).items()
            if isinstance(value, type) and issubclass(value, errors.PredstoreError)}
    elsewhere = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if path == ROOT / "store" / "errors.py":
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.ClassDef) and any(
                        isinstance(base, ast.Name) and base.id in tree for base in node.bases):
                    elsewhere.append(f"{path.relative_to(ROOT)}:{node.name}")
    assert elsewhere == ["lookup_api/errors.py:Stale"]
