"""Where partitions and artifacts live: a local path, or a URI on an object store.

``s3://``, ``gs://``, ``abfs://`` and ``file://`` go through pyarrow's filesystems, any other
scheme through fsspec (when it is installed). Credentials and endpoints come from each provider's
own environment and files (``AWS_ACCESS_KEY_ID``, ``AWS_ENDPOINT_URL_S3``, ``~/.aws/...``), read
by the provider's SDK; predstore never sees them and never prints them. The store's errors are
translated here, once, into one line that says what is wrong.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pyarrow as pa
from pyarrow import fs as pafs

from store.errors import ConfigError, InputError, PredstoreError, first_line, mask_secrets

_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")
#: What a store's error says, and the line a user is shown for it.
_PROBLEMS = (
    (re.compile(r"NO_SUCH_BUCKET|NoSuchBucket|bucket does not exist", re.I),
     "the bucket does not exist; check the URI"),
    (re.compile(r"ACCESS_DENIED|AccessDenied|Forbidden|HTTP status 403|InvalidAccessKeyId|SignatureDoesNotMatch",
                re.I),
     "access denied; check the credentials in the provider's environment or files (e.g. AWS_PROFILE)"),
    (re.compile(r"NETWORK_CONNECTION|Couldn't connect|Could not connect|Connection refused|Unable to connect",
                re.I),
     "the object store cannot be reached; check the endpoint (e.g. AWS_ENDPOINT_URL_S3) and the network"),
    (re.compile(r"NO_SUCH_KEY|NoSuchKey|does not exist|not found", re.I), "no such object or prefix"),
)
_HASH_CHUNK = 1 << 20
#: What a boto3 client depends on, beyond the files it reads.
_CLIENT_ENV = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_REGION",
               "AWS_DEFAULT_REGION", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE")
_CLIENT_SECONDS = 300
_client_lock = threading.Lock()


def is_remote(target: str | Path) -> bool:
    """True for a URI other than ``file://``."""
    match = _SCHEME.match(str(target)) if isinstance(target, str) else None
    return bool(match) and match.group(1).lower() != "file"  # type: ignore[union-attr]


def target(text: str) -> str | Path:
    """A location as given on a command line: an object-store URI as text, anything else a path."""
    if is_remote(text):
        return text
    if text.lower().startswith("file://"):
        return Path(unquote(urlsplit(text).path))
    return Path(text)


def basename(where: str | Path) -> str:
    """The last component of a path or URI (a trailing slash ignored)."""
    return Path(where).name if isinstance(where, Path) else where.rstrip("/").rsplit("/", 1)[-1]


def filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """The filesystem of an object-store URI and the path inside it."""
    if "@" in (netloc := urlsplit(uri).netloc) and ":" in netloc.split("@", 1)[0]:
        # pyarrow would take them, and the URI is shown in messages and recorded in the ledger.
        raise ConfigError(f"{mask_secrets(uri)}: credentials in a URI are refused; put them in the provider's "
                          "environment or files (e.g. AWS_ACCESS_KEY_ID, ~/.aws/credentials)")
    try:
        fs, path = pafs.FileSystem.from_uri(uri)
    except pa.ArrowInvalid as exc:
        if "Unrecognized filesystem type" not in str(exc):
            raise ConfigError(f"{uri}: not a valid location ({first_line(exc)}); write it as "
                              "scheme://bucket/prefix") from exc
        fs, path = _fsspec(uri)
    except (OSError, pa.ArrowException) as exc:
        raise translate(exc, uri) from exc
    if not path.strip("/"):
        raise ConfigError(f"{uri}: the URI names no bucket; write it as scheme://bucket/prefix")
    return fs, path.rstrip("/")


def _fsspec(uri: str) -> tuple[pafs.FileSystem, str]:
    try:
        import fsspec
    except ImportError:
        raise ConfigError(f"{uri}: unknown scheme; use s3://, gs://, abfs:// or file://, or install fsspec and "
                          "its driver for this scheme") from None
    try:
        fs, path = fsspec.core.url_to_fs(uri)
    except (ImportError, ValueError) as exc:
        raise ConfigError(f"{uri}: unknown scheme ({first_line(exc)}); install fsspec's driver for it") from exc
    return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), path


def uri_of(fs: pafs.FileSystem, path: str) -> str:
    """A URI for ``path`` on ``fs``, to be shown to a user."""
    scheme = {"s3": "s3", "gcs": "gs", "abfs": "abfs", "local": "file"}.get(fs.type_name, fs.type_name)
    return f"{scheme}://{path}"


def info(fs: pafs.FileSystem, path: str, *, shown: str) -> pafs.FileInfo:
    """What ``path`` is (a file, a folder, or not found); a store error as a `PredstoreError`."""
    try:
        return fs.get_file_info(path)
    except (OSError, pa.ArrowException) as exc:
        raise translate(exc, shown) from exc


def listing(fs: pafs.FileSystem, path: str, *, shown: str) -> list[pafs.FileInfo]:
    """Every file and folder under ``path`` (none if there is nothing there), from listing alone."""
    try:
        return fs.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True))
    except (OSError, pa.ArrowException) as exc:
        raise translate(exc, shown) from exc


def missing(fs: pafs.FileSystem, path: str, *, shown: str) -> ConfigError:
    """The error for a location that is not there: its bucket missing, or nothing at the prefix."""
    bucket = path.split("/", 1)[0]
    if fs.type_name in ("s3", "gcs") and info(fs, bucket, shown=shown).type == pafs.FileType.NotFound:
        return ConfigError(f"{shown}: the bucket {bucket!r} does not exist (or is not visible with these "
                           "credentials); check the URI")
    return ConfigError(f"{shown}: no such object or prefix; give a Parquet file, a folder of Parquet, or a CSV")


def translate(exc: BaseException, shown: str) -> PredstoreError:
    """A store's error as one line about ``shown``, never quoting a credential."""
    text = first_line(exc)
    for pattern, said in _PROBLEMS:
        if pattern.search(text):
            return ConfigError(f"{shown}: {said}")
    return InputError(f"{shown}: cannot be read ({_without_ids(text)})")


def read_bytes(uri: str) -> bytes:
    """The whole object at ``uri``."""
    fs, path = filesystem(uri)
    try:
        with fs.open_input_stream(path) as stream:
            return bytes(stream.read())
    except FileNotFoundError as exc:
        raise missing(fs, path, shown=uri) from exc
    except (OSError, pa.ArrowException) as exc:
        raise translate(exc, uri) from exc


def write_bytes(uri: str, data: bytes) -> None:
    """Write ``data`` as the object at ``uri`` (object stores publish an object whole, or not at all)."""
    fs, path = filesystem(uri)
    try:
        with fs.open_output_stream(path) as out:
            out.write(data)
    except (OSError, pa.ArrowException) as exc:
        raise translate(exc, uri) from exc


def digest(fs: pafs.FileSystem | None, path: str) -> bytes:
    """sha256 of a file's bytes, read in chunks (memory stays flat)."""
    h = hashlib.sha256()
    with open(path, "rb") if fs is None else fs.open_input_stream(path) as fh:
        while chunk := fh.read(_HASH_CHUNK):
            h.update(chunk)
    return h.digest()


def etags(fs: pafs.FileSystem, files: Sequence[str]) -> dict[str, str] | None:
    """The S3 ETag of each file, by one listing of their common prefix; None where the store or the
    installed clients give none (boto3 reads them; pyarrow's listing does not carry them)."""
    if fs.type_name != "s3" or not files:
        return None
    try:
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError:
        return None
    bucket = files[0].split("/", 1)[0]
    keys = {f.split("/", 1)[1]: f for f in files}
    prefix = _common_prefix(list(keys))
    found: dict[str, str] = {}
    try:
        pages = _s3_client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        for page in pages:
            for obj in page.get("Contents", []):
                if obj["Key"] in keys:
                    found[keys[obj["Key"]]] = obj["ETag"].strip('"')
    except (BotoCoreError, ClientError) as exc:
        raise translate(exc, f"s3://{bucket}/{prefix}") from exc
    if len(found) != len(files):
        gone = sorted(set(files) - set(found))[0]
        raise InputError(f"s3://{gone}: the object disappeared while the partition was read; score it again")
    return found


def _s3_client() -> Any:
    """A boto3 S3 client, made afresh when the AWS environment changes and at least every
    ``_CLIENT_SECONDS`` (credential files may be rotated under a long-running scheduler)."""
    env = tuple(os.environ.get(name) for name in _CLIENT_ENV)
    with _client_lock:  # creating clients is not thread-safe in boto3
        return _client(env, int(time.monotonic() // _CLIENT_SECONDS))


@functools.lru_cache(maxsize=2)
def _client(env: tuple[str | None, ...], period: int) -> Any:
    import boto3

    return boto3.session.Session().client("s3")


def _common_prefix(keys: list[str]) -> str:
    if len(keys) == 1:
        return keys[0]
    first, last = min(keys), max(keys)
    n = 0
    while n < min(len(first), len(last)) and first[n] == last[n]:
        n += 1
    return first[:n]


def _without_ids(text: str) -> str:
    return re.sub(r"\s*\(Request ID: [^)]*\)", "", text)
