"""`predstore models`: register, list, show, retire, retain, configure and sync model versions; thin commands
over models.register and the registry. (`models compare` and `models promote`, which weighs the
evidence with --if-better, are the monitor's: the root command adds them from monitor.cli.)"""

from __future__ import annotations

import getpass
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from store import profiles, registry
from store.db import connect
from store.migrate import prepare
from store.settings import Settings


@click.group()
def models() -> None:
    """Register, list, inspect and promote model versions."""


@models.command("register")
@click.argument("artifact")
@click.option("--name", required=True, help="Model name; each registration adds a version.")
@click.option("--train-data", type=click.Path(path_type=Path), help="Training data (Parquet or CSV): dtypes, "
              "categories and, with --target, training metrics.")
@click.option("--target", help="Target column of --train-data (and --validation-data).")
@click.option("--validation-data", type=click.Path(path_type=Path),
              help="Held-out labeled data (Parquet or CSV) to measure the model on and to profile its output "
              "baseline on; default: --train-data.")
@click.option("--baseline-cv", type=int, metavar="K", help="Without --validation-data: profile the output baseline "
              "on out-of-fold predictions of K clones of the model fitted on --train-data.")
@click.option("--entity-col", help="Default entity id column for `predstore score` with this model.")
@click.option("--current", is_flag=True, help="Make this version current (the first version always is).")
@click.option("--trust-joblib", is_flag=True, help="Load a .joblib/.pkl artifact (or an MLflow model saved with "
              "pickle), which runs any code it holds: only for files you built yourself. Artifacts from elsewhere "
              "should be .skops.")
@click.option("--trust-type", "trusted_types", multiple=True,
              help="A type in a .skops file that skops does not trust by default, reviewed and trusted (repeat it).")
@click.pass_obj
def models_register(settings: Settings, artifact: str, name: str, train_data: Path | None, target: str | None,
                    validation_data: Path | None, baseline_cv: int | None, entity_col: str | None, current: bool,
                    trust_joblib: bool, trusted_types: tuple[str, ...]) -> None:
    """Register a fitted scikit-learn estimator or Pipeline: ARTIFACT is a .skops file (with
    --trust-joblib a .joblib), or an MLflow model URI (models:/NAME@ALIAS, models:/NAME/VERSION,
    runs:/RUN_ID/PATH; needs predstore[mlflow]), whose signature gives the feature types.

    Exit status: 0 registered, 2 usage or configuration error, 4 a model predstore cannot score
    (an MLflow flavour other than scikit-learn's).
    """
    from models.register import register_model

    options: dict[str, Any] = dict(name=name, train_data=train_data, target=target, validation_data=validation_data,
                                   baseline_cv=baseline_cv, entity_col=entity_col, current=current,
                                   trust_joblib=trust_joblib, trusted_types=trusted_types, actor=getpass.getuser())
    if artifact.startswith(("models:/", "runs:/")):
        from models.mlflow_source import register_from_mlflow

        model = register_from_mlflow(settings, artifact, **options)
    else:
        model = register_model(settings, Path(artifact), **options)
    state = " (current)" if "current" in model.aliases else ""
    source = f", from {model.mlflow_uri}" if model.mlflow_uri else ""
    click.echo(f"registered {model.name} version {model.version}{state}: {model.task}, "
               f"{len(model.feature_schema.columns)} features, sha256 {model.sha256[:12]}{source}")
    if assumed := model.feature_schema.assumed_numeric:
        click.echo(f"feature types from the {model.feature_schema.kinds_from}; assumed numeric, as "
                   f"nothing said otherwise (a partition's text in them goes to the model as text): "
                   f"{', '.join(assumed)}; pass --train-data to record them")
    if train_data:
        click.echo("output baseline: " + ("validation data" if validation_data else
                                          f"out-of-fold predictions ({baseline_cv} folds)" if baseline_cv else
                                          "IN-SAMPLE (the training rows, where the model is more confident than on "
                                          "new data): output drift is only a warning; pass --validation-data or "
                                          "--baseline-cv K"))


@models.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the versions as JSON: name, version, task, "
              "created_at, aliases.")
@click.pass_obj
def models_list(settings: Settings, as_json: bool) -> None:
    """List every model version."""
    with _conn(settings) as conn:
        rows = registry.list_models(conn)
    if as_json:
        click.echo(json.dumps([{"name": m.name, "version": m.version, "task": m.task,
                                "created_at": m.created_at.isoformat(), "aliases": list(m.aliases)} for m in rows],
                              indent=2))
        return
    if not rows:
        click.echo("no models registered; see `predstore models register --help`")
    for m in rows:
        aliases = f" [{', '.join(m.aliases)}]" if m.aliases else ""
        click.echo(f"{m.name:<24} v{m.version:<4} {m.task:<15} {m.created_at:%Y-%m-%d %H:%M}{aliases}")


@models.command("show")
@click.argument("name")
@click.option("--version", type=int, help="A version (default: every version).")
@click.option("--json", "as_json", is_flag=True, help="The output is JSON either way "
              "(accepted like every command's --json).")
@click.pass_obj
def models_show(settings: Settings, name: str, version: int | None, as_json: bool) -> None:
    """Show a model's versions: artifact, task, features, training metrics (JSON)."""
    with _conn(settings) as conn:
        rows = [registry.get_model(conn, name, version=version)] if version else registry.list_models(conn, name)
        if not rows:
            registry.get_model(conn, name)  # raises NotFound with the right message
        sources = profiles.output_baseline_sources(conn, name)
    click.echo(json.dumps([{**_jsonable(vars(m)), "output_baseline": sources.get(m.version)} for m in rows],
                          indent=2, default=str))


@models.command("retire")
@click.argument("name")
@click.option("--challenger", is_flag=True, required=True, help="Stop scoring with the challenger.")
@click.pass_obj
def models_retire(settings: Settings, name: str, challenger: bool) -> None:
    """Retire NAME's challenger: runs go back to scoring with the current version alone."""
    with _conn(settings) as conn, conn.transaction():
        registry.get_model(conn, name)  # NotFound if no such model
        version = registry.remove_alias(conn, name, "challenger")
    click.echo(f"{name}: challenger v{version} retired" if version else f"{name} had no challenger")


@models.command("retain")
@click.argument("name")
@click.option("--keep-days", type=click.IntRange(min=1), help="Days a published run is served before it expires.")
@click.option("--forever", is_flag=True, help="Remove the model's policy (PREDSTORE_KEEP_DAYS applies, if set).")
@click.pass_obj
def models_retain(settings: Settings, name: str, keep_days: int | None, forever: bool) -> None:
    """Set how long NAME's published runs are kept; `runs prune` and the scheduler apply it daily."""
    if (keep_days is None) == (not forever):
        raise click.UsageError("give either --keep-days N or --forever")
    from store import retention

    with _conn(settings) as conn, conn.transaction():
        registry.get_model(conn, name)  # NotFound names the models there are
        retention.set_keep_days(conn, name, keep_days)
    click.echo(f"{name}: published runs are kept {keep_days} day(s)" if keep_days else
               f"{name}: no policy of its own; " + (f"PREDSTORE_KEEP_DAYS={settings.keep_days} applies"
                                                     if settings.keep_days else "runs are kept for ever"))


@models.command("configure")
@click.argument("name")
@click.option("--gate/--no-gate", default=None,
              help="Whether NAME's runs pass the publish gate before they are served (`score --gate`).")
@click.option("--max-row-change", type=click.FloatRange(min=0, min_open=True), metavar="SHARE",
              help="The gate holds a run whose row count moved by this share or more from the partition's "
                   "previous run (default 0.5).")
@click.option("--keep-days", type=click.IntRange(min=1), help="Days a published run is served before it expires "
              "(as `models retain`).")
@click.option("--on-miss", type=click.Choice(["404", "score"]),
              help="What a batch lookup that sends rows does for an entity with no prediction: answer it "
                   "missing (404, the default) or score it live (needs `predstore serve --live-scoring`).")
@click.option("--json", "as_json", is_flag=True, help="Print the model's policies as JSON.")
@click.pass_obj
def models_configure(settings: Settings, name: str, gate: bool | None, max_row_change: float | None,
                     keep_days: int | None, on_miss: str | None, as_json: bool) -> None:
    """Set NAME's policies (what is not given is kept) and print them all."""
    from store import audit, policies, retention

    with _conn(settings) as conn, conn.transaction():
        registry.get_model(conn, name)  # NotFound names the models there are
        policy = policies.set_policy(conn, name, gate=gate, max_row_change=max_row_change, on_miss=on_miss)
        if keep_days is not None:
            retention.set_keep_days(conn, name, keep_days)
        days = retention.policies(conn).get(name)
        changed = {k: v for k, v in {"gate": gate, "max_row_change": max_row_change, "keep_days": keep_days,
                                     "on_miss": on_miss}.items() if v is not None}
        if changed:
            audit.record(conn, "model.configure", target=name, actor=getpass.getuser(), details=changed)
    shown = {"model": name, "gate": policy.gate, "max_row_change": policy.max_row_change or 0.5, "keep_days": days,
             "on_miss": policy.on_miss}
    if as_json:
        click.echo(json.dumps(shown))
        return
    click.echo(f"{name}: publish gate {'on' if policy.gate else 'off'} (row change limit "
               f"{shown['max_row_change']:.0%}); published runs kept "
               + (f"{days} day(s)" if days else "per PREDSTORE_KEEP_DAYS, else for ever")
               + ("; a miss with its row is scored live" if policy.on_miss == "score" else ""))


@models.command("sync")
@click.argument("name")
@click.option("--from-mlflow", is_flag=True, required=True, help="Follow the MLflow registry's aliases "
              "(MLFLOW_TRACKING_URI; needs predstore[mlflow]).")
@click.option("--mlflow-name", help="The MLflow registered model (default: the one NAME's versions came from, "
              "else NAME).")
@click.option("--trust-joblib", is_flag=True, help="Load versions MLflow saved with pickle, which run any code "
              "they hold.")
@click.option("--trust-type", "trusted_types", multiple=True,
              help="A type skops does not trust by default, reviewed and trusted (repeat it).")
@click.pass_obj
def models_sync(settings: Settings, name: str, from_mlflow: bool, mlflow_name: str | None, trust_joblib: bool,
                trusted_types: tuple[str, ...]) -> None:
    """Point NAME's current and challenger at the versions MLflow's `champion` and `challenger`
    aliases name, registering those not registered yet (without training data: the signature
    gives the feature types). MLflow without a challenger retires NAME's.

    Exit status: 0 synced, 2 usage or configuration error, 4 a model predstore cannot score.
    """
    from models.mlflow_source import sync_from_mlflow

    for move in sync_from_mlflow(settings, name, mlflow_name=mlflow_name, trust_joblib=trust_joblib,
                                 trusted_types=trusted_types, actor=getpass.getuser()):
        click.echo(move.describe(name))


@contextmanager
def _conn(settings: Settings) -> Iterator[Any]:
    with connect(prepare(settings), autocommit=True) as conn:
        yield conn


def _jsonable(values: dict[str, Any]) -> dict[str, Any]:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in values.items()}


@click.command("training-set")
@click.argument("name")
@click.option("--since", type=click.DateTime(["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"]),
              help="Only labels with event times from this moment (UTC).")
@click.option("--until", type=click.DateTime(["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"]),
              help="Only labels with event times before this moment (UTC).")
@click.option("--version", type=int, help="Only predictions of this version.")
@click.option("--out", required=True, help="Where to write it: a .parquet file, or an s3:// (gs://, abfs://) URI.")
@click.pass_obj
def training_set_command(settings: Settings, name: str, since: Any, until: Any, version: int | None, out: str) -> None:
    """Write NAME's point-in-time training set: every label matched to a served prediction, with the
    features exactly as that prediction's run read them (read back from its partition), the label,
    its event time, the entity, the run and the version."""
    import io
    from datetime import UTC

    import pyarrow as pa
    import pyarrow.parquet as pq

    from models.training import training_set
    from store import storage
    from store.errors import ConfigError

    since, until = (None if d is None else d.replace(tzinfo=d.tzinfo or UTC) for d in (since, until))
    with connect(prepare(settings), autocommit=True) as conn:
        frame = training_set(conn, name, since=since, until=until, version=version)
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), buffer)
    where = storage.target(out)
    try:
        if isinstance(where, Path):
            where.write_bytes(buffer.getvalue())
        else:
            storage.write_bytes(where, buffer.getvalue())
    except OSError as exc:
        raise ConfigError(f"cannot write the training set to {out} ({exc.strerror or exc})") from exc
    runs = frame["run_id"].nunique() if len(frame) else 0
    click.echo(f"wrote {len(frame):,} labeled predictions of {runs:,} runs of {name} to {out}")
