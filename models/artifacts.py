"""Model artifacts: stored content-addressed by sha256, verified at every load.

The store is a local folder or an object-store prefix (``PREDSTORE_ARTIFACTS=s3://bucket/prefix``):
an artifact's URI, recorded at registration, says where each one is read from.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import joblib
from pyarrow import fs as pafs

from store import storage
from store.errors import ConfigError, ModelError, PredstoreError
from store.reader import path_of

FORMATS = {".joblib": "joblib", ".pkl": "joblib", ".pickle": "joblib", ".skops": "skops"}


def artifact_format(path: Path) -> str:
    """'joblib' or 'skops', from the file's suffix."""
    try:
        return FORMATS[path.suffix.lower()]
    except KeyError:
        raise ConfigError(
            f"{path.name}: unknown artifact type {path.suffix!r}; save the model with joblib (.joblib) "
            "or skops (.skops)"
        ) from None


def store_artifact(source: Path, artifacts_dir: Path | str) -> tuple[str, str, str]:
    """Copy ``source`` into the artifact store (a folder, or an object-store URI); returns (uri, sha256, format)."""
    fmt = artifact_format(source)
    try:
        data = source.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read model artifact {source}: {exc.strerror or exc}") from exc
    digest = hashlib.sha256(data).hexdigest()
    if isinstance(artifacts_dir, str):
        return _store_remote(data, f"{artifacts_dir}/{digest}{source.suffix.lower()}"), digest, fmt
    target = artifacts_dir / f"{digest}{source.suffix.lower()}"
    partial = None
    try:
        artifacts_dir.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            # A name of its own, so two registrations of one file never write the same partial file.
            handle, name = tempfile.mkstemp(dir=artifacts_dir, prefix=f".{digest[:12]}-", suffix=".partial")
            os.close(handle)
            partial = Path(name)
            shutil.copyfile(source, partial)
            partial.replace(target)
            partial = None
    except OSError as exc:
        if partial is not None:
            partial.unlink(missing_ok=True)
        raise ConfigError(
            f"cannot write the artifact store {artifacts_dir} ({exc.strerror or exc}); "
            "check PREDSTORE_HOME is writable"
        ) from exc
    return target.resolve().as_uri(), digest, fmt


def _store_remote(data: bytes, uri: str) -> str:
    """Upload an artifact unless the store has it already (its name is its hash)."""
    fs, path = storage.filesystem(uri)
    if storage.info(fs, path, shown=uri).type != pafs.FileType.File:
        try:
            storage.write_bytes(uri, data)
        except PredstoreError as exc:
            raise ConfigError(f"cannot write the artifact store: {exc}; check PREDSTORE_ARTIFACTS and the "
                              "credentials") from exc
    return uri


def read_model(path: Path) -> Any:
    """Load an artifact a user hands in (before registration)."""
    fmt = artifact_format(path)
    try:
        return _load(path.read_bytes(), fmt)
    except OSError as exc:
        raise ConfigError(f"cannot read model artifact {path}: {exc.strerror or exc}") from exc


def load_model(uri: str, sha256: str, fmt: str, *, trusted: Sequence[str] | None = None) -> Any:
    """Load a registered artifact, refusing it unless its bytes still hash to ``sha256``; a skops
    one trusting exactly the ``trusted`` types reviewed at registration, when they were kept."""
    path: Path | str = uri if storage.is_remote(uri) else path_of(uri)
    try:
        data = storage.read_bytes(uri) if isinstance(path, str) else path.read_bytes()
    except PredstoreError as exc:
        raise ModelError(f"the model artifact cannot be read: {exc}") from exc
    except OSError as exc:
        raise ModelError(f"the model artifact {path} cannot be read ({exc.strerror or exc})") from exc
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha256:
        raise ModelError(
            f"the model artifact {path} has changed since it was registered (sha256 {actual[:12]}..., "
            f"expected {sha256[:12]}...); register the new file as a new version"
        )
    return _load(data, fmt, trusted)


def _load(data: bytes, fmt: str, trusted: Sequence[str] | None = None) -> Any:
    try:
        if fmt == "skops":
            import skops.io as sio

            # The bytes were vetted at registration and their hash checked above; versions
            # registered before the reviewed types were kept trust what those bytes hold.
            return sio.loads(data, trusted=list(trusted) if trusted is not None
                             else sio.get_untrusted_types(data=data))
        return joblib.load(io.BytesIO(data))
    except Exception as exc:  # unpickling can raise anything; say what happened in one line
        raise ModelError(f"the model artifact could not be loaded ({type(exc).__name__}: {exc})") from exc
