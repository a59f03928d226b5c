"""API keys for the lookup API: created once, shown once, stored as a sha256 hash, revocable.

A key reads ``psk_<key_id>_<secret>``. The key id is public (it names the key in lists and logs)
and carries 64 random bits, so ids never collide in practice; the secret is 256 random bits, so
a plain sha256 of the key cannot be brute-forced and checking it costs microseconds. Keys change
rarely: changes are announced on `APIKEYS_CHANNEL` at commit so that running services reload them.
"""

from __future__ import annotations

import difflib
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg.rows import class_row

from store import notices
from store.errors import InputError, NotFound

#: NOTIFY channel told whenever a key is created or revoked.
APIKEYS_CHANNEL = "predstore_apikeys"

PREFIX = "psk"
#: Random bytes in a key id (64 bits).
KEY_ID_BYTES = 8

#: What a key may be allowed beyond lookups: ``score``, live scoring (`predstore serve --live-scoring`);
#: ``ui``, the console (`predstore ui`) where it listens beyond loopback.
SCOPES = ("score", "ui")
_COLUMNS = "key_id, name, created_at, revoked_at, models, scopes"


@dataclass(frozen=True)
class ApiKey:
    """A key as listed: never its secret."""

    key_id: str
    name: str
    created_at: datetime
    revoked_at: datetime | None
    #: The models the key may read; None: every model.
    models: list[str] | None = None
    #: What the key may do beyond lookups (`SCOPES`); None: lookups only.
    scopes: list[str] | None = None


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()


def key_id_of(key: str) -> str | None:
    """The key id inside ``key``, or None when ``key`` is not shaped like a predstore key."""
    prefix, _, rest = key.partition("_")
    key_id, _, secret = rest.partition("_")
    if prefix != PREFIX or not key_id or not secret:
        return None
    return key_id


def matches(key: str, key_hash: str) -> bool:
    """Whether ``key`` hashes to ``key_hash``, compared in constant time."""
    return hmac.compare_digest(hash_key(key), key_hash)


def create_key(conn: psycopg.Connection, name: str, *, models: list[str] | None = None,
               scopes: list[str] | None = None) -> tuple[ApiKey, str]:
    """Record a new key named ``name``, scoped to ``models`` (None: every model) and allowed
    ``scopes`` beyond lookups (None: lookups only); returns it and the key itself, which is shown only once."""
    if not name.strip():
        raise InputError("an API key needs a name saying who uses it")
    unknown = sorted(set(scopes or ()) - set(SCOPES))
    if unknown:
        raise InputError(f"unknown API key scope(s) {', '.join(map(repr, unknown))}; the scopes are "
                         f"{', '.join(map(repr, SCOPES))}")
    if models is not None:
        _check_models(conn, models)
    key_id = secrets.token_hex(KEY_ID_BYTES)
    key = f"{PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"
    row = conn.cursor(row_factory=class_row(ApiKey)).execute(
        f"""INSERT INTO api_keys (key_id, name, key_hash, models, scopes) VALUES (%s, %s, %s, %s, %s)
           RETURNING {_COLUMNS}""",
        [key_id, name.strip(), hash_key(key), sorted(set(models)) if models is not None else None,
         sorted(set(scopes)) if scopes else None],
    ).fetchone()
    assert row is not None
    notices.notify(conn, APIKEYS_CHANNEL, key_id)
    return row, key


def _check_models(conn: psycopg.Connection, models: list[str]) -> None:
    """`NotFound` naming the first of ``models`` not registered, and the models there are."""
    registered = [r[0] for r in conn.execute("SELECT DISTINCT name FROM models ORDER BY name")]
    unknown = [m for m in models if m not in registered]
    if not unknown:
        return
    nearest = difflib.get_close_matches(unknown[0], registered, n=1)
    hint = f"; did you mean {nearest[0]!r}?" if nearest else ""
    there = f"registered: {', '.join(map(repr, registered[:20]))}{'...' if len(registered) > 20 else ''}" \
        if registered else "no model is registered yet"
    raise NotFound(f"no model named {unknown[0]!r} is registered, so a key cannot be scoped to it{hint} ({there})")


def list_keys(conn: psycopg.Connection) -> list[ApiKey]:
    """Every key, revoked ones included, oldest first."""
    cur = conn.cursor(row_factory=class_row(ApiKey))
    return cur.execute(f"SELECT {_COLUMNS} FROM api_keys ORDER BY created_at, key_id").fetchall()


def revoke_key(conn: psycopg.Connection, key_id: str) -> ApiKey:
    """Revoke a key at once (a revoked key is kept, so the API stays closed when none is left)."""
    row = conn.cursor(row_factory=class_row(ApiKey)).execute(
        f"""UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE key_id = %s
           RETURNING {_COLUMNS}""",
        [key_id],
    ).fetchone()
    if row is None:
        raise NotFound(f"there is no API key {key_id!r}; see `predstore apikeys list`")
    notices.notify(conn, APIKEYS_CHANNEL, key_id)
    return row


def active_key_hashes(conn: psycopg.Connection
                      ) -> tuple[bool, dict[str, tuple[str, frozenset[str] | None, frozenset[str]]]]:
    """Whether any key was ever created, and by key id the hash of each unrevoked key, the models
    it may read (None: every model) and its scopes beyond lookups."""
    rows = conn.execute("SELECT key_id, key_hash, models, scopes, revoked_at IS NULL FROM api_keys").fetchall()
    return bool(rows), {key_id: (key_hash, frozenset(models) if models is not None else None, frozenset(scopes or ()))
                        for key_id, key_hash, models, scopes, active in rows if active}
