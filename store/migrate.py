"""Migrations: bring a database to head, report its revision, and refuse an outdated one."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg

import migrations
from store.db import connect, database_url
from store.errors import SchemaOutdated
from store.settings import Settings

if TYPE_CHECKING:  # Alembic and SQLAlchemy load only when a command migrates, so the CLI starts fast.
    from alembic.config import Config

#: Advisory lock key held while migrating, so two processes never migrate at once.
MIGRATION_LOCK = 727_001


def alembic_config(url: str | None = None) -> Config:
    """An Alembic config pointing at the packaged ``migrations`` directory."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(migrations.__file__).parent))
    if url:
        cfg.set_main_option("sqlalchemy.url", sqlalchemy_url(url).replace("%", "%%"))
    return cfg


def sqlalchemy_url(url: str) -> str:
    """The SQLAlchemy spelling of a libpq URL (psycopg 3 driver)."""
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def head_revision() -> str:
    """The newest migration, from the ``revision`` and ``down_revision`` each file assigns.

    Read with `ast` rather than Alembic's ScriptDirectory, which imports SQLAlchemy and every
    revision: every command checks the head, and that would cost each one about a second.
    The tests check that both agree.
    """
    revisions: dict[str, tuple[str, ...]] = {}
    for path in (Path(migrations.__file__).parent / "versions").glob("*.py"):
        values = _assignments(path)
        if "revision" in values:
            down = values.get("down_revision")
            revisions[values["revision"]] = (down,) if isinstance(down, str) else tuple(down or ())
    heads = set(revisions) - {down for downs in revisions.values() for down in downs}
    assert len(heads) == 1, f"migrations have several heads: {sorted(heads)}"
    return heads.pop()


def _assignments(path: Path) -> dict[str, Any]:
    """The names a module assigns literal values to at its top level (``revision: str = '0011'``)."""
    values = {}
    for node in ast.parse(path.read_bytes()).body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            values[node.target.id] = node.value
        elif isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            values[node.targets[0].id] = node.value
    return {name: ast.literal_eval(value) for name, value in values.items() if name.endswith("revision")}


def current_revision(conn: psycopg.Connection) -> str | None:
    """The revision recorded in the database, or None when it was never migrated."""
    exists = conn.execute("SELECT to_regclass('public.alembic_version') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        return None
    row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    return row[0] if row else None


def upgrade(url: str, revision: str = "head") -> None:
    """Migrate the database at ``url`` to ``revision``, holding an advisory lock while doing so."""
    from alembic import command
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    engine = create_engine(sqlalchemy_url(url), poolclass=NullPool)
    try:
        with engine.begin() as connection:
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
            cfg = alembic_config()
            cfg.attributes["connection"] = connection
            command.upgrade(cfg, revision)
    finally:
        engine.dispose()


def check_current(conn: psycopg.Connection) -> None:
    """Raise `SchemaOutdated` unless the database is at the head revision."""
    current, head = current_revision(conn), head_revision()
    if current == head:
        return
    if current is None:
        raise SchemaOutdated("the database has no predstore tables yet; run `predstore db upgrade`")
    raise SchemaOutdated(
        f"the database is at migration {current} but this predstore expects {head}; run `predstore db upgrade`"
    )


def prepare(settings: Settings) -> str:
    """The URL of a store ready for use: the embedded one is started and migrated on demand;
    an external one must already be at head (`predstore db upgrade` migrates it)."""
    url = database_url(settings)
    with connect(url) as conn:
        current = current_revision(conn)
    if current != head_revision():
        if settings.database_url:
            with connect(url) as conn:
                check_current(conn)
        upgrade(url)
    return url
