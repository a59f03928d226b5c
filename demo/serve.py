"""The demo's lookup API: a curl that answers, and ``--serve``, which the first Ctrl-C or SIGTERM stops.

The demo serves on 127.0.0.1 without a key while no key exists. Once one does (the README has you
create one), the API answers nothing without a key, whatever the settings say: the demo then makes
a key of its own, for its model only, puts it in the curl it prints, and revokes it when it stops.
"""

from __future__ import annotations

import getpass
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from types import FrameType

from store import apikeys, audit
from store.db import connect
from store.migrate import prepare
from store.settings import Settings

#: The name of the key `--serve` makes when keys exist.
KEY_NAME = "predstore demo --serve"


def keys_exist(settings: Settings) -> bool:
    """Whether any API key was ever created: then every /v1 request needs one."""
    with connect(prepare(settings)) as conn:
        return bool(apikeys.list_keys(conn))


def curl(model: str, entity_id: str | None, *, port: int, key: str | None = None) -> str:
    """A curl of ``entity_id``'s prediction (of the model list, if None), with ``key`` if given."""
    path = f"/v1/models/{model}/predictions/{entity_id}" if entity_id else "/v1/models"
    header = f'-H "Authorization: Bearer {key}" ' if key else ""
    return f"curl {header}http://127.0.0.1:{port}{path}"


def hint(settings: Settings, model: str, entity_id: str | None, *, port: int) -> str:
    """How to serve the lookup API and read a prediction from it, with a key if keys exist."""
    if keys_exist(settings):
        return (f"predstore serve --port {port}   (then)   KEY=$(predstore apikeys create demo --model {model}); "
                + curl(model, entity_id, port=port, key="$KEY"))
    return f"predstore serve --port {port} --no-key-required   (then)   " + curl(model, entity_id, port=port)


def serve(settings: Settings, model: str, entity_id: str | None, *, port: int,
          say: Callable[[str], None] = print) -> None:
    """Serve the lookup API on 127.0.0.1 until Ctrl-C or SIGTERM, after printing a curl that answers."""
    from lookup_api import close_app, create_app
    from lookup_api.cli import say_how_keys_are_checked

    with own_key(settings, model) as key:
        local = replace(settings, api_require_key=key is not None)
        say(f"\nserving the lookup API on http://127.0.0.1:{port} (Ctrl-C stops it); try\n"
            f"  {curl(model, entity_id, port=port, key=key)}")
        if key is not None:
            say(f"  (a key made for the demo, for {model} only; revoked when the demo stops)")
        say_how_keys_are_checked(local)
        app = create_app(local)
        try:
            with sigterm_interrupts():
                app.run(host="127.0.0.1", port=port)
        finally:
            close_app(app)


@contextmanager
def own_key(settings: Settings, model: str) -> Iterator[str | None]:
    """A key for ``model`` while the block runs, if keys exist (else None: none is needed)."""
    with connect(prepare(settings)) as conn, conn.transaction():
        if not apikeys.list_keys(conn):
            made = None
        else:
            made, key = apikeys.create_key(conn, KEY_NAME, models=[model])
            audit.record(conn, "apikey.create", target=made.key_id, actor=getpass.getuser(),
                         details={"name": made.name, "models": made.models})
    if made is None:
        yield None
        return
    try:
        yield key
    finally:
        with connect(prepare(settings)) as conn, conn.transaction():
            apikeys.revoke_key(conn, made.key_id)
            audit.record(conn, "apikey.revoke", target=made.key_id, actor=getpass.getuser(),
                         details={"name": made.name})


@contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """SIGTERM stops the block as Ctrl-C does (werkzeug's server returns on KeyboardInterrupt)."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
