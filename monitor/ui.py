"""`predstore ui`: serve the console (`monitor.console`), read-only, on loopback by default.

Light on purpose: the console's libraries load when the command runs, not when `predstore --help` lists it.
"""

from __future__ import annotations

import logging

import click

from store import logs, ports
from store.settings import Settings


@click.command("ui")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Interface to listen on; beyond loopback every request needs an API key with --scope ui.")
@click.option("--port", default=8050, show_default=True, type=click.IntRange(0, 65535), help="Port to listen on.")
@click.pass_obj
def ui(settings: Settings, host: str, port: int) -> None:
    """Serve the console: models, versions, runs, drift and performance, read-only, in a browser.

    It reads through PREDSTORE_UI_DATABASE_URL (the console role of `predstore db grant`) when set,
    else the store's own URL with read-only transactions. Ctrl-C stops it.
    """
    from werkzeug.serving import make_server

    from monitor.console import close_app, create_app, is_loopback

    ports.check_port(host, port)
    require_key = not is_loopback(host)
    app = create_app(settings, require_key=require_key)
    server = make_server(host, port, app, threaded=True)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    where = f"http://{host if ':' not in host else f'[{host}]'}:{server.server_port}/"
    logs.say(f"console on {where}" + (" (every request needs an API key with the ui scope)" if require_key else
                                      " (loopback: no key needed)"), name="monitor")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        close_app(app)

