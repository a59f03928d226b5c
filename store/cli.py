"""The `predstore` command: the root group, which imports each subcommand from its component on
first use, and the `predstore db` commands. Errors become one line on stderr and an exit code."""

from __future__ import annotations

import importlib
import json
import logging
from typing import Any

import click
import psycopg

from store import db as dbmod
from store import ledger, logs, migrate
from store.errors import (
    ConfigError,
    ConnectionLost,
    InputError,
    JobsFailed,
    ModelError,
    NotFound,
    PredstoreError,
    RunFailed,
    RunNotRunning,
    SchemaOutdated,
    StoreUnavailable,
    UnsupportedModel,
    first_line,
    mask_secrets,
)
from store.settings import Settings

#: The exit status of each error (its nearest class here); 2 is for what the user must fix before
#: trying again, 1 for a job that ran and failed (run it again once the cause is gone), 4 for a
#: model of a kind predstore cannot score (an MLflow flavour other than scikit-learn's).
EXIT_CODES: dict[type[PredstoreError], int] = {
    ConfigError: 2,
    ConnectionLost: 1,
    StoreUnavailable: 2,
    SchemaOutdated: 2,
    NotFound: 2,
    ModelError: 1,
    UnsupportedModel: 4,
    InputError: 1,
    RunFailed: 1,
    RunNotRunning: 1,
    JobsFailed: 1,
    PredstoreError: 1,
}

#: Every subcommand but `db`, as ``module:attribute``: `predstore score` is ``batch.cli:score``.
#: They are imported when a command line names them (or --help lists them), so `predstore db url`
#: never imports scikit-learn, and `store` never imports the packages above it at import time.
SUBCOMMANDS = {
    "apikeys": "lookup_api.cli:apikeys",
    "demo": "demo.cli:demo",
    "forget": "batch.forget:forget",
    "jobs": "scheduler.cli:jobs",
    "labels": "monitor.cli:labels",
    "models": "batch.cli:models",
    "monitor": "monitor.cli:monitor",
    "runs": "batch.cli:runs",
    "schedule": "scheduler.cli:schedule",
    "score": "batch.cli:score",
    "serve": "lookup_api.cli:serve",
}


class LazyGroup(click.Group):
    """A group whose subcommands are import strings, loaded on first use (click's lazy group)."""

    def __init__(self, *args: Any, lazy_subcommands: dict[str, str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy_subcommands = lazy_subcommands or {}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy_subcommands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.lazy_subcommands:
            return super().get_command(ctx, cmd_name)
        module, _, attribute = self.lazy_subcommands[cmd_name].partition(":")
        command = getattr(importlib.import_module(module), attribute)
        assert isinstance(command, click.Command), self.lazy_subcommands[cmd_name]
        return command

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except PredstoreError as exc:
            logs.say(mask_secrets(str(exc)), level=logging.ERROR)
            ctx.exit(exit_code(exc))
        except KeyboardInterrupt:
            click.echo("predstore: interrupted", err=True)
            ctx.exit(130)


def exit_code(exc: PredstoreError) -> int:
    """The exit status for ``exc``: `EXIT_CODES`' entry for its nearest class."""
    return next(EXIT_CODES[cls] for cls in type(exc).__mro__ if cls in EXIT_CODES)


@click.group(cls=LazyGroup, lazy_subcommands=SUBCOMMANDS)
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


@main.group()
def db() -> None:
    """The prediction store: its URL, migrations and status."""


@db.command("url")
@click.pass_obj
def db_url(settings: Settings) -> None:
    """Print the connection URL (starting the embedded server if needed): psql "$(predstore db url)"."""
    click.echo(migrate.prepare(settings))


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True, help="Alembic revision to migrate to.")
@click.pass_obj
def db_upgrade(settings: Settings, revision: str) -> None:
    """Migrate the database to the latest schema (or --revision)."""
    url = dbmod.database_url(settings)
    with dbmod.connect(url) as conn:
        before = migrate.current_revision(conn)
    migrate.upgrade(url, revision)
    with dbmod.connect(url) as conn:
        after = migrate.current_revision(conn)
    if before == after:
        click.echo(f"already at {after}")
    else:
        click.echo(f"migrated {before or 'empty database'} -> {after}")


@db.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
@click.pass_obj
def db_status(settings: Settings, as_json: bool) -> None:
    """Report the store's folder, the server, the schema revision and what the tables hold.

    ``home`` is the absolute PREDSTORE_HOME (a relative one is relative to where the command runs:
    a notebook started in another folder would make a second store); ``pgdata`` is the embedded
    server's data folder in it, null with PREDSTORE_DATABASE_URL.
    """
    url = migrate.prepare(settings)
    with dbmod.connect(url) as conn:
        status = {
            "home": str(settings.home.resolve()),
            "pgdata": None if settings.database_url else str(settings.pgdata.resolve()),
            "server": "embedded" if not settings.database_url else "external",
            "target": dbmod.describe_target(url),
            "version": conn.execute("SHOW server_version").fetchone()[0],  # type: ignore[index]
            "revision": migrate.current_revision(conn),
            "head": migrate.head_revision(),
            **ledger.table_counts(conn),
        }
    if as_json:
        click.echo(json.dumps(status, indent=2))
        return
    for key, value in status.items():
        click.echo(f"{key:<22} {'-' if value is None else value}")


@db.command("stop")
@click.pass_obj
def db_stop(settings: Settings) -> None:
    """Stop the embedded server (it starts again on the next command)."""
    if settings.database_url:
        raise click.UsageError("PREDSTORE_DATABASE_URL is set: the server is not predstore's to stop")
    stopped = dbmod.stop_embedded(settings.pgdata)
    message = f"stopped the embedded server in {settings.pgdata}" if stopped else "the embedded server was not running"
    click.echo(message)


@db.command("check")
@click.pass_obj
def db_check(settings: Settings) -> None:
    """Fail (exit 1) if the schema in the code and the migrations disagree (`alembic check`)."""
    from alembic import command
    from alembic.util import AutogenerateDiffsDetected

    url = migrate.prepare(settings)
    try:
        command.check(migrate.alembic_config(url))
    except AutogenerateDiffsDetected as exc:
        raise PredstoreError(f"store/schema.py and migrations/ disagree: {exc}") from exc
    click.echo("the migrations match store/schema.py")


@db.command("grant")
@click.option("--role", "--reader-role", "role", default="predstore_reader", show_default=True,
              help="Name of the read-only role the lookup API connects as.")
@click.option("--password", envvar="PREDSTORE_READER_PASSWORD", default=None,
              help="Its password (or PREDSTORE_READER_PASSWORD); none for socket/trust setups.")
@click.option("--analyst-role",
              help="Also create this read-only role for analysts (every table but api_keys and erasure_key).")
@click.option("--analyst-password", envvar="PREDSTORE_ANALYST_PASSWORD", default=None,
              help="Its password (or PREDSTORE_ANALYST_PASSWORD).")
@click.option("--writer-role", help="Also create this role and make it the owner of the store, for jobs and "
              "migrations.")
@click.option("--writer-password", envvar="PREDSTORE_WRITER_PASSWORD", default=None,
              help="Its password (or PREDSTORE_WRITER_PASSWORD).")
@click.pass_obj
def db_grant(settings: Settings, role: str, password: str | None, analyst_role: str | None,
             analyst_password: str | None, writer_role: str | None, writer_password: str | None) -> None:
    """Create the database roles: the read-only role the lookup API connects as
    (PREDSTORE_API_DATABASE_URL), and with --analyst-role / --writer-role the analysts' and the
    jobs' roles (see docs/security.md, "Database roles").

    The reader may SELECT the published views, the registry and the API key hashes, and nothing
    else: no unpublished or superseded run, no write. Run again after `db upgrade` to refresh the grants.
    """
    url = migrate.prepare(settings)
    try:
        done = _grant(url, role, password, analyst_role, analyst_password, writer_role, writer_password)
    except psycopg.Error as exc:
        raise ConfigError(f"could not create the roles ({first_line(exc)}); run `predstore db grant` as a role "
                          "that may create roles and owns the store, or as a superuser") from exc
    for name, created, rights in done:
        click.echo(f"{'created' if created else 'updated'} role {name}: {rights}")
    click.echo(f"point the lookup API at it: PREDSTORE_API_DATABASE_URL=postgresql://{role}:PASSWORD@HOST:PORT/DATABASE")


def _grant(url: str, role: str, password: str | None, analyst_role: str | None, analyst_password: str | None,
           writer_role: str | None, writer_password: str | None) -> list[tuple[str, bool, str]]:
    from store import roles

    with dbmod.connect(url) as conn, conn.transaction():
        done = [(role, roles.grant_reader(conn, role, password=password),
                 f"SELECT on {', '.join(roles.READER_GRANTS)}")]
        if analyst_role:
            done.append((analyst_role, roles.grant_analyst(conn, analyst_role, password=analyst_password),
                         f"SELECT on every table and view but {', '.join(roles.ANALYST_DENIED)}"))
        if writer_role:
            done.append((writer_role, roles.grant_writer(conn, writer_role, password=writer_password),
                         "owner of the store's tables and views"))
    return done
