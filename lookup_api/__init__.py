"""The lookup API: a thin Flask service over published predictions.

``create_app()`` builds one application with its own pool, cache and listener; gunicorn calls it
once per worker (``gunicorn 'lookup_api:create_app()' -c lookup_api/gunicorn.conf.py``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from store.settings import Settings

if TYPE_CHECKING:  # Flask and the service load when an app is made, not when `predstore` lists its commands
    from flask import Flask, Response

    from lookup_api.service import Service

__all__ = ["create_app", "close_app"]


def create_app(settings: Settings | None = None, *, clock: Callable[[], float] = time.time) -> Flask:
    """The lookup API for ``settings`` (default: from the environment)."""
    from flask import Flask

    from lookup_api import errors, ops, parse, views
    from lookup_api.service import make_service

    settings = settings or Settings.from_env()
    app = Flask(__name__)
    app.json.sort_keys = False  # type: ignore[attr-defined]
    # The largest sensible batch body; a bigger one is a 413 before it is read.
    app.config["MAX_CONTENT_LENGTH"] = 1024 + settings.api_max_batch * (parse.MAX_ID_LENGTH * 6 + 4)
    app.extensions["predstore"] = make_service(settings, clock=clock)
    errors.init_app(app)
    app.register_blueprint(views.bp)
    app.register_blueprint(ops.bp)
    app.before_request(_start_timer)
    app.after_request(_record)
    return app


def close_app(app: Flask) -> None:
    """Stop the app's listener and close its pool."""
    service: Service = app.extensions["predstore"]
    service.close()


def _start_timer() -> None:
    from flask import g

    g.started = time.perf_counter()


def _record(response: Response) -> Response:
    from flask import g, request

    from lookup_api import views

    route = request.url_rule.rule if request.url_rule is not None else "unmatched"
    started = g.get("started")
    views.service().metrics.count_request(route, request.method, response.status_code,
                                          None if started is None else time.perf_counter() - started)
    return response
