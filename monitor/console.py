"""`predstore ui`: a read-only console over the store, rendered on the server.

Each page is HTML from ``monitor/templates/console`` with the report's SVG charts and no script, so
it works with JavaScript off, and each has a URL that can be shared (filters are query parameters).
Pages read the registry, the ledger and the monitor's aggregate tables (`store.console`,
`store.monitoring`), never a prediction or a label, through a small pool of read-only sessions: the
console role of `predstore db grant` (``PREDSTORE_UI_DATABASE_URL``), else the store's own URL with
every transaction read-only. On loopback it answers anyone on the machine; on another interface only
requests with an API key of scope ``ui``: HTTP Basic (any user name, the key as password: a browser
asks for it) or ``Authorization: Bearer``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlencode

import flask
import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout
from werkzeug.datastructures import WWWAuthenticate
from werkzeug.exceptions import HTTPException

from monitor import compare, report, runner
from store import apikeys, challengers, monitoring, policies, profiles, registry
from store import console as queries
from store.errors import InputError, NotFound, PredstoreError, StoreUnavailable, first_line
from store.migrate import prepare
from store.schema import RUN_STATUSES
from store.settings import Settings

#: Session settings of the console's connections: read-only, UTC, no page waits for long.
SESSION_OPTIONS = "-c default_transaction_read_only=on -c TimeZone=UTC -c statement_timeout=30s"
#: Runs listed per page.
RUNS_PER_PAGE = 100
#: Checks the drift page shows over time (the report shows 200).
HISTORY = 100
#: Windows whose confusion and reliability the performance page draws (the report: 6).
WINDOWS = 4
#: Histograms drawn on a run's page.
MAX_RUN_CHARTS = 40
#: The key scope the console asks for off loopback.
SCOPE = "ui"
#: The page's only allowed sources: its own inline styles and forms; no script at all.
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'"


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback interface (only this machine can connect)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def create_app(settings: Settings, *, require_key: bool, url: str | None = None) -> flask.Flask:
    """The console's WSGI app; ``require_key``: answer only requests with a key of scope ``ui``."""
    app = flask.Flask(__name__)
    url = url or settings.ui_database_url or prepare(settings)
    pool = ConnectionPool(url, min_size=1, max_size=4, open=False, name="predstore-ui", reconnect_timeout=5.0,
                          kwargs={"autocommit": True, "application_name": "predstore-ui", "connect_timeout": 3,
                                  "options": SESSION_OPTIONS})
    pool.open(wait=False)
    app.extensions["predstore_pool"] = pool

    @contextmanager
    def store() -> Iterator[psycopg.Connection]:
        try:
            with pool.connection(timeout=5.0) as conn:
                yield conn
        except PoolTimeout as exc:
            raise StoreUnavailable("no connection to the store within 5 s: is PostgreSQL up?") from exc
        except psycopg.OperationalError as exc:
            raise StoreUnavailable(f"lost the connection to the store: {first_line(exc)}") from exc

    @app.before_request
    def authorize() -> None:
        flask.g.models = None
        if require_key and flask.request.endpoint != "healthz":
            with store() as conn:
                flask.g.models = _check_key(conn, flask.request.authorization)

    @app.after_request
    def headers(response: flask.Response) -> flask.Response:
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "same-origin"
        response.headers["Cache-Control"] = "no-store"
        return response

    @app.errorhandler(PredstoreError)
    def store_error(exc: PredstoreError) -> tuple[str, int]:
        status = 404 if isinstance(exc, NotFound) else 400 if isinstance(exc, InputError) else \
            503 if isinstance(exc, StoreUnavailable) else 500
        return _page("console/error.html", title=f"{status}", message=str(exc)), status

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> flask.Response:
        response = flask.make_response(_page("console/error.html", title=f"{exc.code}", message=exc.description or
                                             exc.name), exc.code or 500)
        if exc.code == 401:
            response.www_authenticate = WWWAuthenticate("basic", {"realm": "predstore ui"})
        return response

    @app.get("/healthz")
    def healthz() -> str:
        return "ok\n"

    @app.get("/")
    def models_page() -> str:
        with store() as conn:
            rows = queries.overview(conn, flask.g.models)
        return _page("console/models.html", title="Models", models=rows)

    @app.get("/models/<name>")
    def model_page(name: str) -> str:
        _allowed(name)
        with store() as conn:
            versions = registry.list_models(conn, name)
            if not versions:
                registry.get_model(conn, name)  # NotFound, saying what exists
            sources = profiles.output_baseline_sources(conn, name)
            return _page("console/model.html", title=name, model=name, versions=versions, sources=sources,
                         policy=policies.get_policy(conn, name), audit=queries.model_audit(conn, name),
                         runs=queries.runs(conn, model=name, limit=10))

    @app.get("/models/<name>/drift")
    def drift_page(name: str) -> str:
        _allowed(name)
        with store() as conn:
            data = runner.gather_report(conn, name, sample=None, parts=("drift",), history=HISTORY)
        return _page("console/drift.html", title=f"{name}: drift", model=name, **report.sections(data))

    @app.get("/models/<name>/performance")
    def performance_page(name: str) -> str:
        _allowed(name)
        with store() as conn:
            data = runner.gather_report(conn, name, sample=None, parts=("performance",), max_windows=WINDOWS)
            pair = _pair(conn, name)
        return _page("console/performance.html", title=f"{name}: performance", model=name, pair=pair,
                     **report.sections(data))

    @app.get("/runs")
    def runs_page() -> str:
        args = flask.request.args
        model = args.get("model") or None
        status = args.get("status") or None
        if status is not None and status not in RUN_STATUSES:
            raise InputError(f"unknown status {status[:40]!r}; the statuses are {', '.join(RUN_STATUSES)}")
        since, until = _day(args.get("since"), "since"), _day(args.get("until"), "until")
        before = _int(args.get("before"), "before")
        if model is not None:
            _allowed(model)
        with store() as conn:
            rows = queries.runs(conn, model=model, status=status, since=since,
                                until=until + timedelta(days=1) if until else None, before=before,
                                models=flask.g.models, limit=RUNS_PER_PAGE)
            names = queries.model_names(conn, flask.g.models)
        filters = {k: v for k, v in (("model", model), ("status", status), ("since", args.get("since")),
                                     ("until", args.get("until"))) if v}
        older = (f"/runs?{urlencode({**filters, 'before': rows[-1]['run_id']})}"
                 if len(rows) == RUNS_PER_PAGE else None)
        return _page("console/runs.html", title="Runs", runs=rows, names=names, statuses=RUN_STATUSES,
                     filters=filters, older=older)

    @app.get("/runs/<int:run_id>")
    def run_page(run_id: int) -> str:
        with store() as conn:
            run = queries.run(conn, run_id)
            if run is None:
                raise NotFound(f"there is no run {run_id}")
            _allowed(run["model_name"])
            base = profiles.get_baseline(conn, run["model_name"], run["model_version"])
            profile = profiles.get_run_profiles(conn, [run_id])
            rows = monitoring.check_drift(conn, run["check_id"]) if run["check_id"] is not None else []
        bars = runner.histograms(base, profile, rows, MAX_RUN_CHARTS, every=True)
        return _page("console/run.html", title=f"Run {run_id}", model=run["model_name"], run=run, rows=rows,
                     charts=[report.histogram_chart(h) for h in bars], profiled=bool(profile),
                     baseline=bool(base), table_metrics=report.TABLE_METRICS)

    return app


def close_app(app: flask.Flask) -> None:
    """Close the app's connections."""
    app.extensions["predstore_pool"].close()


# --- what the pages need ---------------------------------------------------------------------------


def _check_key(conn: psycopg.Connection, auth: Any) -> frozenset[str] | None:
    """The models a request's key may see; 401 without a key, 403 for one that is not valid for ``ui``."""
    key = (auth.password if auth.type == "basic" else auth.token) if auth is not None else None
    if not key:
        flask.abort(401, "this console needs an API key with the ui scope: make one with "
                         "`predstore apikeys create NAME --scope ui`, and give it as the password")
    _, keys = apikeys.active_key_hashes(conn)
    found = keys.get(apikeys.key_id_of(key) or "")
    if found is None or not apikeys.matches(key, found[0]):
        flask.abort(401, "the API key is not valid (unknown or revoked)")
    if SCOPE not in found[2]:
        flask.abort(403, "this API key may not open the console: create one with "
                         "`predstore apikeys create NAME --scope ui`")
    return found[1]


def _allowed(model: str) -> None:
    if flask.g.models is not None and model not in flask.g.models:
        flask.abort(403, f"this API key may not read model {model[:128]!r}")


def _pair(conn: psycopg.Connection, name: str) -> dict[str, Any] | None:
    """The current and challenger versions, and their newest comparison (None without a challenger)."""
    by_alias = {a: v for v in registry.list_models(conn, name) for a in v.aliases}
    if "challenger" not in by_alias or "current" not in by_alias:
        return None
    current, challenger = by_alias["current"], by_alias["challenger"]
    found = challengers.latest_comparison(conn, name, current.version, challenger.version)
    out: dict[str, Any] = {"current": current.version, "challenger": challenger.version, "at": None}
    if found is not None:
        out.update(compare.sections(compare.Comparison.from_dict(found["result"], current.task)),
                   at=found["computed_at"])
    return out


def _day(raw: str | None, name: str) -> datetime | None:
    if not raw:
        return None
    try:
        return datetime.strptime(raw, "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        raise InputError(f"{name} must be a date as YYYY-MM-DD, not {raw[:40]!r}") from None


def _int(raw: str | None, name: str) -> int | None:
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        raise InputError(f"{name} must be a run id (a number), not {raw[:40]!r}") from None


def _page(template: str, **context: Any) -> str:
    return report.page(template, now=datetime.now(UTC), q=_quote, ago=_ago, **context)


def _quote(value: Any) -> str:
    """A value as one path segment of a URL."""
    return quote(str(value), safe="")


def _ago(moment: datetime | None, now: datetime | None = None) -> str:
    """How long ago ``moment`` was, in the largest unit that fits ('3 h ago')."""
    if moment is None:
        return "never"
    seconds = ((now or datetime.now(UTC)) - moment).total_seconds()
    for unit, size in (("d", 86_400), ("h", 3_600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size:.0f} {unit} ago"
    return "just now"
