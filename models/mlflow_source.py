"""Models from MLflow: fetch a logged scikit-learn model by its URI, register it, follow its aliases.

MLflow is optional (``pip install 'predstore[mlflow]'``) and imported inside these functions
only, so the commands that do not use it start as fast as before. It reads its own settings
(``MLFLOW_TRACKING_URI``, ``MLFLOW_REGISTRY_URI``) from the environment.

A fetched model is registered as any other (`models.register.register_model`): its bytes are
hashed, its skops types reviewed, and it is stored as a ``.skops`` artifact. A model MLflow saved
with skops (its default for scikit-learn) is stored as MLflow wrote it; one saved with pickle or
cloudpickle runs any code it holds when loaded, so it is loaded only with ``trust_joblib`` and
then stored with skops. Only the scikit-learn flavour can be scored: predstore validates and
scores the estimator itself, so a custom ``python_function`` model (whose own ``predict`` may
do anything) is refused, as is any other flavour (`UnsupportedModel`).
"""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.register import MlflowOrigin, register_model
from store import audit, registry
from store.db import connect
from store.errors import ConfigError, NotFound, UnsupportedModel, first_line
from store.migrate import prepare
from store.settings import Settings

#: URI schemes MLflow resolves to a model: the registry's and a run's artifacts.
SCHEMES = ("models:/", "runs:/")
#: predstore's alias that follows each MLflow alias in `sync_from_mlflow`.
ALIASES = {"current": "champion", "challenger": "challenger"}
#: MLflow signature column types, as predstore's column kinds.
KINDS = {"boolean": "numeric", "integer": "numeric", "long": "numeric", "float": "numeric", "double": "numeric",
         "string": "categorical"}


def is_mlflow_uri(text: str) -> bool:
    """True for ``models:/...`` and ``runs:/...``."""
    return text.startswith(SCHEMES)


@dataclass(frozen=True)
class Fetched:
    """A model fetched from MLflow, as a skops file in a folder that lives as long as the caller's."""

    artifact: Path
    origin: MlflowOrigin
    #: Types a model converted here from pickle holds that skops does not trust by default:
    #: reviewed, since the user trusted the pickle (which could run anything) to load it.
    trusted_types: tuple[str, ...] = ()


@dataclass(frozen=True)
class Move:
    """What `sync_from_mlflow` did to one of predstore's aliases."""

    alias: str  # predstore's: current or challenger
    mlflow_alias: str  # the MLflow alias it follows: champion or challenger
    before: int | None
    after: int | None  # None: no challenger any more
    mlflow_uri: str | None = None  # None: MLflow's alias names no version to follow
    registered: bool = False  # the version was registered for it

    def describe(self, name: str) -> str:
        """One line: what changed and why."""
        before = f"v{self.before}" if self.before else "none"
        after = f"v{self.after}" if self.after else "none"
        change = f"stays {after}" if self.before == self.after else f"{before} -> {after}"
        if self.mlflow_uri is None:
            besides = " apart from its champion" if self.alias == "challenger" else ""
            return f"{name}: {self.alias} {change} (MLflow has no {self.mlflow_alias}{besides})"
        registered = "registered, " if self.registered else ""
        return f"{name}: {self.alias} {change} ({registered}MLflow {self.mlflow_alias} {self.mlflow_uri})"


def register_from_mlflow(settings: Settings, uri: str, *, name: str, trust_joblib: bool = False,
                         trusted_types: tuple[str, ...] = (), **options: Any) -> registry.ModelVersion:
    """Register the model at the MLflow ``uri`` (models:/NAME@ALIAS, models:/NAME/VERSION,
    runs:/RUN_ID/PATH) as the next version of ``name``; ``options`` are `register_model`'s
    (training and validation data, target, entity column, current, actor)."""
    with tempfile.TemporaryDirectory(prefix="predstore-mlflow-") as tmp:  # 0700: ours alone
        fetched = fetch(uri, Path(tmp), trust_joblib=trust_joblib)
        return register_model(settings, fetched.artifact, name=name, trust_joblib=False,
                              trusted_types=(*trusted_types, *fetched.trusted_types), origin=fetched.origin,
                              **options)


def fetch(uri: str, folder: Path, *, trust_joblib: bool = False) -> Fetched:
    """Download the model at ``uri`` into ``folder``; refuse what predstore cannot score."""
    mlflow = _mlflow()
    with _quiet():
        from mlflow.models import Model

        resolved, version = _resolve(mlflow, uri)
        try:
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=resolved, dst_path=str(folder)))
            logged = Model.load(str(local / "MLmodel"))
        except Exception as exc:  # MlflowException, OSError, yaml errors: one line, whatever the cause
            raise _translate(exc, uri) from exc
    file, serialization = _sklearn_file(logged.flavors, local, uri)
    origin = MlflowOrigin(uri=resolved, version=version, declared=_declared(logged))
    if serialization == "skops":
        return Fetched(artifact=file, origin=origin)
    if not trust_joblib:
        raise ConfigError(f"{uri} was saved with {serialization}, which runs any code it holds when loaded; "
                          "log it with serialization_format='skops', or pass --trust-joblib for a model you trust")
    import skops.io as sio

    with _quiet():
        try:
            model = mlflow.sklearn.load_model(str(local))
        except Exception as exc:  # unpickling can raise anything
            raise _translate(exc, uri) from exc
    artifact = folder / "model.skops"
    sio.dump(model, artifact)
    return Fetched(artifact=artifact, origin=origin, trusted_types=tuple(sio.get_untrusted_types(file=artifact)))


def sync_from_mlflow(settings: Settings, name: str, *, mlflow_name: str | None = None, trust_joblib: bool = False,
                     trusted_types: tuple[str, ...] = (), actor: str | None = None) -> list[Move]:
    """Point ``name``'s current and challenger at the versions MLflow's ``champion`` and
    ``challenger`` aliases name (of the registered model ``mlflow_name``: by default the one
    ``name``'s newest MLflow version came from, else ``name``), registering those not registered
    yet. MLflow without a challenger retires predstore's; without a champion, current stays."""
    mlflow = _mlflow()
    url = prepare(settings)
    with connect(url, autocommit=True) as conn:
        known = registry.list_models(conn, name)
    source = mlflow_name or next((n for n in (_model_name(m.mlflow_uri) for m in known) if n), None) or name
    client = mlflow.MlflowClient()
    wanted: dict[str, tuple[int, str, bool]] = {}  # alias -> (version, MLflow URI, registered now)
    for alias, mlflow_alias in ALIASES.items():
        with _quiet():
            version = _by_alias(client, source, mlflow_alias)
        if version is None:
            continue
        uri = f"models:/{source}/{version}"
        with connect(url, autocommit=True) as conn:
            found = registry.find_by_mlflow_uri(conn, name, uri)
        registered = found is None
        if found is None:
            found = register_from_mlflow(settings, uri, name=name, trust_joblib=trust_joblib,
                                         trusted_types=trusted_types, actor=actor)
        wanted[alias] = (found.version, uri, registered)
    if not wanted:
        raise NotFound(f"the MLflow model {source!r} has neither a champion nor a challenger alias; set one "
                       "(MlflowClient().set_registered_model_alias), or name another with --mlflow-name")
    was = {alias: m.version for m in known for alias in m.aliases}  # before any registration here
    moves = []
    with connect(url) as conn, conn.transaction():
        for alias, mlflow_alias in ALIASES.items():
            target = wanted.get(alias)
            current = registry.get_model(conn, name).version
            if target is None or (alias == "challenger" and target[0] == current):
                if alias == "challenger" and registry.remove_alias(conn, name, alias) is not None:
                    audit.record(conn, "model.promote", target=f"{name} v{was.get(alias)}", actor=actor,
                                 details={"alias": alias, "retired": True, "from": "mlflow"})
                moves.append(Move(alias, mlflow_alias, was.get(alias), None if alias == "challenger" else current))
                continue
            version, uri, registered = target
            if registry.set_alias(conn, name, alias, version) != version:
                audit.record(conn, "model.promote", target=f"{name} v{version}", actor=actor,
                             details={"alias": alias, "before": was.get(alias), "from": "mlflow", "mlflow_uri": uri})
            moves.append(Move(alias, mlflow_alias, was.get(alias), version, uri, registered))
    return moves


def _mlflow() -> Any:
    try:
        with _quiet():
            import mlflow
    except ImportError:
        raise ConfigError("models from MLflow need MLflow installed: pip install 'predstore[mlflow]'") from None
    return mlflow


@contextmanager
def _quiet() -> Iterator[None]:
    """MLflow's own warnings (deprecations inside it, advice to MLflow's users) stay out of predstore's output."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module="mlflow")
        yield


def _resolve(mlflow: Any, uri: str) -> tuple[str, int | None]:
    """``uri`` fixed to what it names now (an alias moves), and its MLflow registry version."""
    if not uri.startswith("models:/"):
        return uri.rstrip("/"), None
    path = uri.removeprefix("models:/").strip("/")
    client = mlflow.MlflowClient()
    try:
        if "@" in path:
            model, alias = path.split("@", 1)
            version = int(client.get_model_version_by_alias(model, alias).version)
        elif "/" in path:
            model, number = path.split("/", 1)
            if not number.isdigit():
                raise ConfigError(f"{uri}: give a version number or an alias (models:/{model}/3, "
                                  f"models:/{model}@champion); stages are not followed")
            version = int(client.get_model_version(model, number).version)
        else:  # a logged model's id (models:/m-...), not a registry version
            return uri, None
    except ConfigError:
        raise
    except Exception as exc:  # MlflowException and the HTTP client's errors
        raise _translate(exc, uri) from exc
    return f"models:/{model}/{version}", version


def _by_alias(client: Any, model: str, alias: str) -> int | None:
    """The version ``alias`` of the MLflow model names, or None when it names none."""
    from mlflow.exceptions import MlflowException

    try:
        return int(client.get_model_version_by_alias(model, alias).version)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            if alias == "champion":  # the model itself may be missing: say so rather than "no alias"
                try:
                    client.get_registered_model(model)
                except MlflowException as missing:
                    raise _translate(missing, f"models:/{model}") from missing
            return None
        raise _translate(exc, f"models:/{model}@{alias}") from exc


def _sklearn_file(flavors: dict[str, Any], local: Path, uri: str) -> tuple[Path, str]:
    """The file holding the scikit-learn model, and how MLflow serialized it."""
    sklearn = flavors.get("sklearn")
    if sklearn is not None:
        return local / sklearn["pickled_model"], str(sklearn.get("serialization_format") or "cloudpickle")
    pyfunc = flavors.get("python_function") or {}
    if pyfunc.get("loader_module") == "mlflow.sklearn" and pyfunc.get("model_path"):
        file = local / pyfunc["model_path"]
        return file, "skops" if file.suffix == ".skops" else "pickle"
    kinds = ", ".join(sorted(flavors)) or "no"
    raise UnsupportedModel(f"{uri} is a model of flavour {kinds}; predstore scores scikit-learn models only "
                           "(logged with mlflow.sklearn.log_model)")


def _declared(logged: Any) -> dict[str, str] | None:
    """The column kinds the model's signature declares, when it names its columns."""
    inputs = getattr(logged.signature, "inputs", None)
    if inputs is None or not inputs.has_input_names():
        return None
    return {str(spec.name): KINDS.get(getattr(spec.type, "name", ""), "") for spec in inputs.inputs}


def _model_name(uri: str | None) -> str | None:
    """The registered model a models:/NAME/VERSION URI names."""
    if not uri or not uri.startswith("models:/"):
        return None
    path = uri.removeprefix("models:/")
    return path.split("/", 1)[0] if "/" in path else None


def _translate(exc: Exception, uri: str) -> Exception:
    """A one-line predstore error for what MLflow raised fetching ``uri``."""
    code = getattr(exc, "error_code", None)
    if code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND") or (code == "INVALID_PARAMETER_VALUE"
                                                            and "not found" in str(exc)):
        return NotFound(f"MLflow has no {uri}: {first_line(exc)}")
    return ConfigError(f"cannot fetch {uri} from MLflow ({type(exc).__name__}: {first_line(exc)}); "
                       "check MLFLOW_TRACKING_URI and the URI")
