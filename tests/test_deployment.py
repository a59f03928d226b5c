"""The compose stack and the image, checked statically (no Docker engine runs here): the files
parse, services, volumes and dependencies agree, and every predstore command they run exists."""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from store.cli import main

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]


def commands() -> list[tuple[str, list[str]]]:
    return [(name, service["command"]) for name, service in SERVICES.items() if "command" in service]


def test_services_volumes_and_dependencies_agree() -> None:
    declared = set(COMPOSE["volumes"])
    for name, service in SERVICES.items():
        assert "image" in service or "build" in service, name
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            assert source in declared or source.startswith((".", "/")), (name, source)
        depends = service.get("depends_on", {})
        for other in depends:
            assert other in SERVICES, (name, other)
            if isinstance(depends, dict):
                assert depends[other]["condition"] in {"service_healthy", "service_completed_successfully",
                                                       "service_started"}
                if depends[other]["condition"] == "service_healthy":
                    assert "healthcheck" in SERVICES[other], other
    assert SERVICES["lookup-api"]["healthcheck"]["test"][-1].count("/readyz") == 1
    assert SERVICES["postgres"]["image"] == "postgres:16"


@pytest.mark.parametrize(("service", "command"), commands(), ids=[name for name, _ in commands()])
def test_every_command_the_stack_runs_exists(service: str, command: list[str]) -> None:
    program, *args = command
    if program == "predstore":
        options = [a for a in args if not a.startswith("/")]  # paths exist only inside the image
        result = CliRunner().invoke(main, [*options[: _words(options)], "--help"])
        assert result.exit_code == 0, (service, result.output)
        for path in (a for a in args if a.startswith("/app/")):
            assert (ROOT / path.removeprefix("/app/")).exists(), path
    elif program == "gunicorn":
        app, config = args[0], args[args.index("-c") + 1]
        module, factory = re.fullmatch(r"(\w+):(\w+)\(\)", app).groups()  # type: ignore[union-attr]
        assert callable(getattr(__import__(module), factory))
        assert (ROOT / config.removeprefix("/app/")).exists()
    else:
        assert program == "dask", f"{service} runs {program}, which nothing here checks"
        assert args[0] in {"scheduler", "worker"}


def test_the_image_installs_the_pinned_project() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    for line in dockerfile.splitlines():
        if line.startswith("COPY "):
            for source in shlex.split(line)[1:-1]:
                assert (ROOT / source).exists(), source
    assert "USER predstore" in dockerfile and "-c constraints.txt" in dockerfile
    pinned = {re.split(r"==", line)[0] for line in (ROOT / "constraints.txt").read_text().splitlines()
              if line and not line.startswith("#")}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for requirement in project["dependencies"]:
        name = re.split(r"[<>=\[; ]", requirement)[0].lower().replace("_", "-")
        assert name in pinned, f"{name} is not pinned in constraints.txt"


def test_secrets_come_from_an_env_file_that_is_not_committed() -> None:
    example = (ROOT / ".env.example").read_text()
    variables = set(re.findall(r"\$\{?\$?\{?(\w+)\}?", (ROOT / "docker-compose.yml").read_text()))
    for variable in variables:
        assert f"{variable}=" in example, variable
    assert ".env" in (ROOT / ".gitignore").read_text().splitlines()
    assert not (ROOT / ".env").exists() or ".env" in (ROOT / ".gitignore").read_text()


def _words(args: list[str]) -> int:
    """How many leading arguments name the command (the rest are its options)."""
    for i, arg in enumerate(args):
        if arg.startswith("-"):
            return i
    return len(args)


def test_the_grafana_dashboard_queries_what_exists(conn: object) -> None:
    import json

    import psycopg

    assert isinstance(conn, psycopg.Connection)
    dashboard = json.loads((ROOT / "docs" / "grafana-dashboard.json").read_text())
    exported = (ROOT / "lookup_api" / "metrics.py").read_text() + (ROOT / "batch" / "runner.py").read_text()
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            if "rawSql" in target:
                conn.execute(target["rawSql"]).fetchall()  # the views and columns exist
            else:
                for metric in re.findall(r"predstore_(\w+?)(?:_bucket|_total)?\b", target["expr"]):
                    stem = metric.removeprefix("api_").removeprefix("score_")
                    assert stem in exported, f"{target['expr']}: nothing exports {metric}"
