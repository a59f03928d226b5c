"""The `predstore` root: every subcommand reached by an import from the root, and commands that
load only what they use (how fast they start is measured by benchmarks/bench_cli.py)."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import pytest
from alembic.script import ScriptDirectory
from click.testing import CliRunner

from batch.cli import RUN_KEYS
from predstore.cli import SUBCOMMANDS, main
from store.migrate import alembic_config, head_revision

ROOT = Path(__file__).resolve().parent.parent
#: Libraries a command that does not score, monitor, schedule or serve must not import.
HEAVY = ("sklearn", "skops", "pandas", "pyarrow", "scipy", "apscheduler", "flask", "sqlalchemy", "alembic")

PROBE = """
import sys
from predstore.cli import main
try:
    main(sys.argv[1:], prog_name="predstore")
except SystemExit as exc:
    code = exc.code
print(sorted({name.split(".")[0] for name in sys.modules} & set(sys.argv[0].split(","))))
print(code)
"""


def loaded(args: list[str], env: dict[str, str] | None = None) -> tuple[list[str], str]:
    """The heavy libraries a fresh `predstore ARGS` process imported, and its exit code."""
    done = subprocess.run([sys.executable, "-c", PROBE.replace("sys.argv[0]", repr(",".join(HEAVY))), *args],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    *_, modules, code = done.stdout.strip().splitlines()
    return ast.literal_eval(modules), code


#: Where each subcommand lives: the root imports it from there.
HOMES = {"apikeys": "lookup_api.cli:apikeys", "db": "store.cli:db", "demo": "demo.cli:demo",
         "forget": "store.forget:forget", "jobs": "scheduler.cli:jobs", "labels": "monitor.cli:labels",
         "models": "models.cli:models", "monitor": "monitor.cli:monitor", "runs": "batch.cli:runs",
         "schedule": "scheduler.cli:schedule", "score": "batch.cli:score", "serve": "lookup_api.cli:serve",
         "training-set": "models.cli:training_set_command", "ui": "monitor.ui:ui"}


def test_the_root_imports_every_subcommand_from_its_component() -> None:
    ctx = click.Context(main)
    assert main.list_commands(ctx) == sorted(SUBCOMMANDS) == sorted(HOMES)
    for name, target in HOMES.items():
        module, _, attribute = target.partition(":")
        command = main.get_command(ctx, name)
        assert command is getattr(importlib.import_module(module), attribute)
        assert command.name == name
    assert main.get_command(ctx, "nonesuch") is None
    models = main.get_command(ctx, "models")
    assert isinstance(models, click.Group)
    assert models.get_command(ctx, "compare") is importlib.import_module("monitor.cli").models_compare


@pytest.mark.parametrize("args", [["--help"], ["score", "--help"], ["runs", "list", "--help"],
                                  ["monitor", "--help"], ["schedule", "--help"], ["serve", "--help"], ["ui", "--help"]])
def test_help_loads_no_heavy_library(args: list[str]) -> None:
    assert loaded(args) == ([], "0")


def test_runs_list_loads_no_heavy_library(cli_env: dict[str, str]) -> None:
    assert loaded(["runs", "list"], env=cli_env) == ([], "0")


def test_score_loads_what_it_needs_only_when_it_runs(cli_env: dict[str, str], tmp_path: Path) -> None:
    modules, code = loaded(["score", str(tmp_path / "missing.parquet"), "--model", "none"], env=cli_env)
    assert code == "2" and "sklearn" in modules  # the probe sees what a command imports


def test_head_revision_read_from_the_files_is_alembics() -> None:
    assert [head_revision()] == ScriptDirectory.from_config(alembic_config()).get_heads()


#: Every command that prints a result, as its words on the command line.
RESULTS = [["models", "list"], ["models", "show"], ["models", "promote"], ["models", "compare"], ["score"],
           ["runs", "list"], ["runs", "show"], ["runs", "verify"], ["runs", "prune"], ["jobs"], ["apikeys", "list"],
           ["db", "status"], ["monitor"], ["labels", "ingest"]]


@pytest.mark.parametrize("words", RESULTS, ids=" ".join)
def test_every_command_that_prints_a_result_takes_json(words: list[str]) -> None:
    ctx = click.Context(main)
    command: click.Command | None = main
    for word in words:
        assert isinstance(command, click.Group)
        command = command.get_command(ctx, word)
    assert command is not None and "--json" in [opt for p in command.params for opt in p.opts]


def test_json_has_the_keys_of_the_tables(cli_env: dict[str, str], tmp_path: Path) -> None:
    import json

    from tests import factories

    def run(*args: str) -> Any:
        result = CliRunner().invoke(main, [*args, "--json"], env=cli_env)
        assert result.exit_code == 0, result.output
        return json.loads(result.output)

    for seed in (0, 1):
        artifact, _ = factories.logistic(tmp_path / f"m{seed}", seed=seed)
        registered = CliRunner().invoke(main, ["models", "register", str(artifact), "--name", "churn",
                                               "--trust-joblib"], env=cli_env)
        assert registered.exit_code == 0, registered.output
    path = factories.write_parquet(tmp_path / "day1.parquet", factories.frame(50))
    assert CliRunner().invoke(main, ["score", str(path), "--model", "churn"], env=cli_env).exit_code == 0
    models = run("models", "list")
    assert [(m["name"], m["version"], m["task"], m["aliases"]) for m in models] == [
        ("churn", 2, "classification", []), ("churn", 1, "classification", ["current"])]
    (listed,) = run("runs", "list")
    assert list(listed) == list(RUN_KEYS) and listed["status"] == "published" and listed["rows_in"] == 50
    assert run("runs", "verify", str(listed["run_id"])) == {**run("runs", "verify", str(listed["run_id"])),
                                                            "run_id": listed["run_id"], "match": True, "rows_in": 50}
    assert run("runs", "show", str(listed["run_id"]))["run_id"] == listed["run_id"]
    assert run("models", "promote", "churn", "2") == {"name": "churn", "alias": "current", "before": 1, "version": 2,
                                                      "promoted": True}
