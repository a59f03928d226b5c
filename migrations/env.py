"""Alembic environment: runs on a connection injected by `store.migrate`, or builds one from the URL."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine
from sqlalchemy.engine import Connection

from store.schema import PARTITION_SCHEMA, metadata

config = context.config


def include_name(name: str | None, type_: str, parent_names: dict[str, str | None]) -> bool:
    # Run tables live in their own schema and come and go with runs; they are not schema drift.
    if type_ == "schema":
        return name in (None, "public")
    return True


def run_migrations(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        include_name=include_name,
        compare_type=True,
        version_table="alembic_version",
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    injected = config.attributes.get("connection")
    if injected is not None:
        run_migrations(injected)
        return
    engine = create_engine(config.get_main_option("sqlalchemy.url") or "")
    with engine.connect() as connection:
        run_migrations(connection)
    engine.dispose()


assert PARTITION_SCHEMA  # imported so the schema name has one definition
run_online()
