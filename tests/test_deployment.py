"""The compose stack and the image, checked statically (no Docker engine runs here): the files
parse, services, volumes and dependencies agree, and every predstore command they run exists."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import psycopg
import pytest
import yaml
from click.testing import CliRunner

from lookup_api.capacity import available_cpus
from predstore.cli import main
from store.db import connection_slots, describe_target

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
        if config.startswith("python:"):
            assert importlib.util.find_spec(config.removeprefix("python:")), config
        else:
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
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    copied = {shlex.split(line)[1] for line in dockerfile.splitlines() if line.startswith("COPY ")}
    assert {name.rstrip("*") for name in packages["include"]} <= copied  # every package the wheel holds
    pinned = {re.split(r"==", line)[0] for line in (ROOT / "constraints.txt").read_text().splitlines()
              if line and not line.startswith("#")}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for requirement in project["dependencies"]:
        name = re.split(r"[<>=\[; ]", requirement)[0].lower().replace("_", "-")
        assert name in pinned, f"{name} is not pinned in constraints.txt"


def test_an_edit_to_the_code_rebuilds_only_the_last_layers() -> None:
    """The dependencies install from constraints.txt alone, before any of the code is copied."""
    steps = [line.split(None, 1) for line in (ROOT / "Dockerfile").read_text().splitlines()
             if line and not line.startswith((" ", "#"))]
    install = next(i for i, (op, arg) in enumerate(steps) if op == "RUN" and "-r constraints.txt" in arg)
    assert [arg for op, arg in steps[:install] if op in ("COPY", "ADD")] == ["constraints.txt ./"]
    code = next(i for i, (op, arg) in enumerate(steps) if op == "COPY" and arg.startswith("store "))
    assert install < code


def test_the_context_leaves_out_state_history_caches_and_environments() -> None:
    ignored = {line.strip().rstrip("/") for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    assert {".predstore", ".git", "**/__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache", ".venv", ".env",
            "*.egg-info"} <= ignored


def test_the_image_checks_health_without_curl() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    healthcheck = dockerfile[dockerfile.index("HEALTHCHECK"):].split("\n\n")[0]
    command = json.loads(healthcheck[healthcheck.index("CMD") + 3:].split("\n")[0])
    assert command[:2] == ["python", "-c"] and "curl" not in dockerfile
    assert "urllib.request.urlopen('http://127.0.0.1:8000/healthz'" in command[2]
    compile(command[2], "HEALTHCHECK", "exec")


def test_services_restart_unless_they_are_one_shot() -> None:
    for name, service in SERVICES.items():
        one_shot = any(name in other.get("depends_on", {}) and other["depends_on"][name]["condition"]
                       == "service_completed_successfully" for other in SERVICES.values()
                       if isinstance(other.get("depends_on"), dict))
        assert service.get("restart") == ("no" if one_shot else "unless-stopped"), name
        if name not in ("postgres", "lookup-api"):  # the image's HEALTHCHECK asks the lookup API
            assert service["healthcheck"] == {"disable": True}, name


@pytest.mark.parametrize(("files", "cpus"), [
    ({"cpu.max": "150000 100000\n"}, 2),  # cgroup v2: 1.5 CPUs, a fraction counts as one
    ({"cpu.max": "50000 100000\n"}, 1),
    ({"cpu.max": "max 100000\n"}, None),  # no quota: the affinity
    ({"cpu/cpu.cfs_quota_us": "100000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 1),  # cgroup v1
    ({"cpu,cpuacct/cpu.cfs_quota_us": "-1\n", "cpu,cpuacct/cpu.cfs_period_us": "100000\n"}, None),
    ({}, None),
])
def test_workers_follow_the_cpus_the_container_may_use(files: dict[str, str], cpus: int | None,
                                                       tmp_path: Path) -> None:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    affinity = len(os.sched_getaffinity(0))
    assert available_cpus(cgroup=tmp_path) == min(affinity, cpus or affinity)


def test_gunicorn_loads_its_settings_from_the_installed_package(tmp_path: Path) -> None:
    """``-c python:lookup_api.gunicorn_conf``, run where no source checkout is: the settings,
    gunicorn's own log lines in predstore's format, and a bad setting stopped in one line."""
    probe = ("from gunicorn.app.base import Application\n"
             "class Probe(Application):\n"
             "    def init(self, parser, opts, args): pass\n"
             "    def load(self): pass\n"
             "app = Probe('%(prog)s')\n"
             "app.load_config_from_module_name_or_filename('python:lookup_api.gunicorn_conf')\n"
             "config = app.cfg.logconfig_dict\n"
             "print(app.cfg.workers, app.cfg.worker_class_str, config['formatters']['predstore']['()'])\n")
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("PREDSTORE_", "GUNICORN"))},
           "PREDSTORE_LOG_FORMAT": "json", "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics")}
    done = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(available_cpus()), "gthread", "store.logs.JsonFormatter"]
    bad = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env={**env, "PREDSTORE_LOG_LEVEL": "loud"},
                         capture_output=True, text=True, timeout=60)
    assert (bad.returncode, bad.stderr.splitlines()) == (2, [
        "predstore: error: PREDSTORE_LOG_LEVEL='loud' is not one of info, debug, warning, error, critical"])


def test_workers_that_need_more_connections_than_the_database_has_free_do_not_start(
        cli_env: dict[str, str], conn: psycopg.Connection) -> None:
    slots = connection_slots(conn)
    assert slots.max_connections > slots.reserved + slots.in_use >= 1  # the test's own connection, at least
    workers = slots.max_connections // 5 + 1  # 5 connections each: 4 pooled, 1 listener
    result = CliRunner().invoke(main, ["serve", "--workers", str(workers)],
                                env={**cli_env, "PREDSTORE_API_POOL_SIZE": "4"})
    assert result.exit_code == 2
    *_, said = result.output.splitlines()
    numbers = re.fullmatch(
        rf"predstore: error: the lookup API needs {workers * 5} database connections \({workers} workers x "
        rf"\(4 pooled \+ 1 listener\)\) but {re.escape(describe_target(cli_env['PREDSTORE_DATABASE_URL']))} has "
        r"(\d+) free \(max_connections (\d+) - (\d+) reserved - (\d+) in use\); lower --workers or "
        r"PREDSTORE_API_POOL_SIZE, or raise max_connections", said)
    assert numbers, said
    free, maximum, reserved, in_use = map(int, numbers.groups())
    assert (maximum, reserved) == (slots.max_connections, slots.reserved) and in_use >= 1  # this test's, at least
    assert free == maximum - reserved - in_use < workers * 5


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
    exported = "".join((ROOT / path).read_text() for path in (
        "lookup_api/metrics.py", "store/prometheus.py", "batch/runner.py", "monitor/runner.py", "scheduler/metrics.py"))
    (model,) = [v for v in dashboard["templating"]["list"] if v["name"] == "model"]
    assert conn.execute(model["query"]).fetchall() is not None
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            if "rawSql" in target:
                sql = target["rawSql"]
                assert "$__timeFilter(" in sql and "IN ($model)" in sql, panel["title"]
                # What Grafana puts in their place: a time range, and the chosen models quoted.
                sql = re.sub(r"\$__timeFilter\((\w+)\)", r"\1 BETWEEN now() - interval '7 days' AND now()", sql)
                conn.execute(sql.replace("$model", "'churn', 'bikes'")).fetchall()  # the views and columns exist
            else:
                assert target.get("legendFormat"), f"{panel['title']}: {target['expr']} has no legendFormat"
                for metric in re.findall(r"predstore_(\w+?)(?:_bucket|_total)?\b", target["expr"]):
                    stem = re.sub(r"^(api|score|monitor|scheduler)_", "", metric)
                    assert stem in exported, f"{target['expr']}: nothing exports {metric}"
    latency = next(panel for panel in dashboard["panels"] if "latency" in panel["title"])
    assert all('route!~"/healthz|/readyz|/metrics"' in target["expr"] for target in latency["targets"])
