"""`predstore serve` and `predstore apikeys create|list|revoke`."""

from __future__ import annotations

import getpass
import json
import logging
import os
from dataclasses import replace

import click

from store import apikeys as keys
from store import audit, logs, migrate
from store.db import connect
from store.settings import Settings


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535), help="Port to listen on.")
@click.option("--workers", type=click.IntRange(min=1), help="Worker processes (default: the CPUs this process may "
              "use, its cgroup's CPU quota included).")
@click.option("--threads", type=click.IntRange(min=1), default=2, show_default=True,
              help="Threads per worker running requests.")
@click.option("--dev", is_flag=True, help="Run Flask's development server instead (one process, debug-friendly).")
@click.option("--live-scoring", is_flag=True,
              help="Also score rows live: POST /v1/models/NAME/score, and a batch lookup's misses with "
                   "\"on_miss\": \"score\" (the same as PREDSTORE_API_LIVE_SCORING=true). Needs keys with "
                   "--scope score.")
@click.option("--no-key-required", is_flag=True,
              help="Answer /v1 without an API key until the first key is created (local development only; "
                   "the same as PREDSTORE_API_REQUIRE_KEY=false).")
@click.pass_obj
def serve(settings: Settings, host: str, port: int, workers: int | None, threads: int, dev: bool,
          live_scoring: bool, no_key_required: bool) -> None:
    """Run the lookup API under granian (a WSGI server written in Rust), one worker per CPU.

    It refuses to start when the workers need more database connections (workers x (pool size + 1))
    than the server has free. gunicorn runs the same app:
    gunicorn 'lookup_api:create_app()' -c python:lookup_api.gunicorn_conf
    """
    from lookup_api import capacity, server

    if live_scoring:
        settings = replace(settings, api_live_scoring=True)
        os.environ["PREDSTORE_API_LIVE_SCORING"] = "true"  # the workers read their settings from the environment
    if no_key_required:
        settings = replace(settings, api_require_key=False)
        os.environ["PREDSTORE_API_REQUIRE_KEY"] = "false"  # the workers read their settings from the environment
    if os.environ.get("PREDSTORE_API_REUSE_PORT", "0") == "0":  # granian would share the port, silently
        server.check_port(host, port)
    say_how_keys_are_checked(settings)
    if not settings.api_reader_url:
        migrate.prepare(settings)  # the embedded store starts and migrates on first use
    if dev:
        from lookup_api import close_app, create_app

        app = create_app(settings)
        try:
            app.run(host=host, port=port, threaded=True)
        finally:
            close_app(app)
        return
    workers = workers or capacity.available_cpus()
    capacity.check_connections(settings, workers=workers)
    logs.say(f"serving on http://{host}:{port} with {workers} worker(s) x {threads} thread(s)", name="lookup_api")
    server.run(settings, host=host, port=port, workers=workers, threads=threads)


def say_how_keys_are_checked(settings: Settings) -> None:
    """Print, before serving, whether /v1 requests need a key."""
    if settings.api_require_key:
        logs.say("every /v1 request needs an API key (`predstore apikeys create NAME` makes one)", name="lookup_api")
    else:
        logs.say("/v1 answers without an API key until the first key is created (PREDSTORE_API_REQUIRE_KEY=false); "
                 "for local development only", level=logging.WARNING, name="lookup_api")


@click.group()
def apikeys() -> None:
    """API keys of the lookup API: every /v1 request needs a valid one."""


@apikeys.command("create")
@click.argument("name")
@click.option("--model", "models", multiple=True, help="A model the key may read (repeat it); default: every model.")
@click.option("--scope", "scopes", multiple=True, type=click.Choice(keys.SCOPES),
              help="What the key may do beyond lookups (repeat it): score, live scoring; ui, the console "
                   "(`predstore ui`) off loopback.")
@click.pass_obj
def create(settings: Settings, name: str, models: tuple[str, ...], scopes: tuple[str, ...]) -> None:
    """Create a key for NAME (who uses it) and print it: it is shown only this once."""
    with connect(migrate.prepare(settings)) as conn, conn.transaction():
        key, secret = keys.create_key(conn, name, models=list(models) if models else None,
                                      scopes=list(scopes) if scopes else None)
        audit.record(conn, "apikey.create", target=key.key_id, actor=getpass.getuser(),
                     details={"name": key.name, "models": key.models, "scopes": key.scopes})
    click.echo(secret)
    click.echo(f"created API key {key.key_id} for {key.name!r}; store it now, it cannot be shown again", err=True)


@apikeys.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the keys as JSON.")
@click.pass_obj
def list_(settings: Settings, as_json: bool) -> None:
    """List the keys (ids, names, dates, state: active or revoked; never the secrets)."""
    with connect(migrate.prepare(settings)) as conn:
        listed = keys.list_keys(conn)
    if as_json:
        click.echo(json.dumps([{"key_id": k.key_id, "name": k.name, "created_at": k.created_at.isoformat(),
                                "revoked_at": k.revoked_at.isoformat() if k.revoked_at else None,
                                "state": "revoked" if k.revoked_at else "active",
                                "models": k.models, "scopes": k.scopes or []}
                               for k in listed], indent=2))
        return
    for k in listed:
        state = f"revoked {k.revoked_at:%Y-%m-%d %H:%M}" if k.revoked_at else "active"
        scope = f"  (models: {', '.join(k.models)})" if k.models is not None else ""
        scope += f"  (may: {', '.join(k.scopes)})" if k.scopes else ""
        click.echo(f"{k.key_id}  {k.created_at:%Y-%m-%d %H:%M}  {state:<24} {k.name}{scope}")


@apikeys.command("revoke")
@click.argument("key_id")
@click.pass_obj
def revoke(settings: Settings, key_id: str) -> None:
    """Revoke the key KEY_ID; running services stop accepting it at once."""
    with connect(migrate.prepare(settings)) as conn, conn.transaction():
        key = keys.revoke_key(conn, key_id)
        audit.record(conn, "apikey.revoke", target=key.key_id, actor=getpass.getuser(), details={"name": key.name})
    click.echo(f"revoked API key {key.key_id} ({key.name})")
