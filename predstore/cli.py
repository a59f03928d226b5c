"""The `predstore` command: the root group, where each subcommand is imported from the component
that owns it. Errors become one line on stderr and an exit code (`store.cli.EXIT_CODES`).

A subcommand is imported when a command line names it (or --help lists them), so that
`predstore db url` never imports scikit-learn; `load` says where each one lives.
"""

from __future__ import annotations

import logging
from typing import Any

import click

from store import logs
from store.cli import exit_code
from store.errors import PredstoreError, mask_secrets
from store.settings import Settings

#: The subcommands of `predstore`, each loaded by `load`.
SUBCOMMANDS = ("apikeys", "db", "demo", "forget", "jobs", "labels", "models", "monitor", "runs", "schedule",
               "score", "serve", "training-set", "ui")


def load(name: str) -> click.Command | None:
    """The subcommand ``name``, imported from its component (None if there is none)."""
    if name == "apikeys":
        from lookup_api.cli import apikeys
        return apikeys
    if name == "db":
        from store.cli import db
        return db
    if name == "demo":
        from demo.cli import demo
        return demo
    if name == "forget":
        from store.forget import forget
        return forget
    if name in ("jobs", "schedule"):
        from scheduler import cli as scheduler_cli
        return scheduler_cli.jobs if name == "jobs" else scheduler_cli.schedule
    if name in ("labels", "monitor"):
        from monitor import cli as monitor_cli
        return monitor_cli.labels if name == "labels" else monitor_cli.monitor
    if name == "models":
        from models.cli import models
        from monitor.cli import models_compare, models_promote

        # weighing a model's versions on the labels is the monitor's work
        models.add_command(models_compare)
        models.add_command(models_promote)
        return models
    if name in ("runs", "score"):
        from batch import cli as batch_cli
        return batch_cli.runs if name == "runs" else batch_cli.score
    if name == "serve":
        from lookup_api.cli import serve
        return serve
    if name == "training-set":
        from models.cli import training_set_command
        return training_set_command
    if name == "ui":
        from monitor.ui import ui
        return ui
    return None


class Root(click.Group):
    """The root group: its subcommands come from `load`, and its errors become one line."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(SUBCOMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return load(cmd_name)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except PredstoreError as exc:
            logs.say(mask_secrets(str(exc)), level=logging.ERROR)
            ctx.exit(exit_code(exc))
        except KeyboardInterrupt:
            click.echo("predstore: interrupted", err=True)
            ctx.exit(130)


@click.group(cls=Root)
@click.option("-v", "--verbose", is_flag=True, help="Log debug detail to stderr.")
@click.version_option(package_name="predstore")
@click.pass_context
def main(ctx: click.Context, verbose: bool) -> None:
    """predstore: score data partitions with scikit-learn models into PostgreSQL, and serve them.

    With PREDSTORE_DATABASE_URL unset, every command uses an embedded PostgreSQL kept under
    PREDSTORE_HOME (default ./.predstore), started on first use.
    """
    settings = Settings.from_env()
    logs.configure(settings, verbose=verbose)
    ctx.obj = settings
