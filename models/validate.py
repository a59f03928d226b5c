"""Validating a batch of input rows against a model's feature schema, vectorized.

Pure: an Arrow record batch in; the valid rows' features, entity ids and row numbers out, and
the rejected rows with their reason. Nothing here touches the store.

Rows of entities on the erasure list (`predstore forget`) are rejected as ``erased``, and their
rejected row keeps neither the id nor the values.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from store import faults
from store.erasure import entity_hmac
from store.errors import InputError
from store.features import FeatureColumn, FeatureSchema
from store.schema import MAX_ENTITY_ID_LENGTH

#: Longest text kept of a rejected row's value (a 1 MB id is not kept whole in rejected_rows).
MAX_RAW_TEXT = 1024
#: Rows up to which a batch is framed column by column (`_frame`).
SMALL = 64
#: The reason of a row whose entity was erased.
ERASED = "erased"


@dataclass(frozen=True)
class Erasures:
    """The erasure list scoring applies: the store's HMAC key and the HMACs of the erased ids."""

    key: bytes = field(repr=False)
    digests: frozenset[bytes] = frozenset()

    def mask(self, ids: pa.Array) -> np.ndarray:
        """True where an id is on the list: one HMAC per row, none while the list is empty."""
        if not self.digests:
            return np.zeros(len(ids), dtype=bool)
        return np.fromiter((v is not None and entity_hmac(self.key, v) in self.digests for v in ids.to_pylist()),
                           dtype=bool, count=len(ids))


@dataclass(frozen=True)
class Validated:
    """The outcome of validating one batch."""

    features: pd.DataFrame
    entity_ids: pa.Array
    row_numbers: np.ndarray
    #: (row_number, entity_id or None, reason, the raw row as a JSON-able dict)
    rejects: list[tuple[int, str | None, str, dict[str, Any]]]


def missing_reason(name: str) -> str:
    """The reason of a row whose value of column ``name`` is missing (not the column: a CSV reads
    an empty field and markers such as NA or n/a as no value)."""
    return f"column {name!r} has no value (empty, null, NA or n/a)"


def required_columns(schema: FeatureSchema, entity_col: str) -> list[str]:
    return [entity_col, *(name for name in schema.names if name != entity_col)]


def check_columns(schema: FeatureSchema, entity_col: str, available: list[str]) -> None:
    """Fail before anything is written when a required column is absent, naming all of them."""
    required = required_columns(schema, entity_col)
    twice = [c for c in required if available.count(c) > 1]
    if twice:
        raise InputError(f"column(s) {', '.join(map(repr, twice))} of the partition appears more than once; "
                         "give each column one name")
    missing = [c for c in required if c not in available and c != entity_col]
    lacks = f"lacks required column(s) {', '.join(map(repr, missing))}"
    no_entity = _entity_problem(entity_col, available)
    if no_entity:
        raise InputError(no_entity + (f"; it also {lacks}" if missing else ""))
    if missing:
        raise InputError(f"the partition {lacks} ({_has(available)}); add them to the input")


def check_entity_column(entity_col: str, available: list[str]) -> None:
    """`InputError` when the partition has no column ``entity_col``, suggesting the nearest name."""
    problem = _entity_problem(entity_col, available)
    if problem:
        raise InputError(problem)


def _entity_problem(entity_col: str, available: list[str]) -> str | None:
    if entity_col in available:
        return None
    nearest = difflib.get_close_matches(entity_col, available, n=1)
    if nearest:
        return (f"the partition has no column {entity_col!r} to take the entity ids from; did you mean "
                f"{nearest[0]!r}? ({_has(available)})")
    return (f"the partition has no column {entity_col!r} to take the entity ids from ({_has(available)}); "
            "pass --entity-col with the column that holds them")


def _has(available: list[str]) -> str:
    """What a message says the partition has: its first columns."""
    return f"it has {', '.join(map(repr, available[:20]))}{'...' if len(available) > 20 else ''}"


def validate(batch: pa.RecordBatch, schema: FeatureSchema, *, entity_col: str, first_row: int,
             erasures: Erasures | None = None) -> Validated:
    """Split ``batch`` into rows the model can score and rows to reject, with a reason each."""
    faults.point("validate")
    n = batch.num_rows
    reasons = np.full(n, None, dtype=object)
    bad = np.zeros(n, dtype=bool)

    def reject(mask: np.ndarray, reason: str) -> None:
        new = mask & ~bad
        if new.any():
            reasons[new] = reason
            bad[new] = True

    ids, not_utf8 = _text(batch.column(entity_col), entity_col, "entity ids must be text or whole numbers")
    reject(not_utf8, "entity id is not valid UTF-8")
    blank = pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(ids)), 0)
    reject(_mask(pc.or_kleene(pc.is_null(ids), blank)), "entity id is missing")
    reject(_mask(pc.greater(pc.utf8_length(ids), MAX_ENTITY_ID_LENGTH)),
           f"entity id is longer than {MAX_ENTITY_ID_LENGTH} characters")
    reject(_mask(pc.match_substring(ids, "\x00")), "entity id contains a NUL character")
    if erasures is not None:
        reject(erasures.mask(ids) & ~bad, ERASED)

    features: dict[str, Any] = {}
    for column in schema.columns:
        name = column.name
        if _kind_in(column, batch.column(name)) == "numeric":
            values, not_number = _numeric(batch.column(name), name)
            reject(not_number, f"column {name!r} is not a number")
            reject(np.isinf(values), f"column {name!r} is infinite")
            if not column.nulls_ok:
                reject(np.isnan(values), missing_reason(name))
            features[name] = values
        else:
            text, not_utf8 = _text(batch.column(name), name, "categories must be text or numbers")
            reject(not_utf8, f"column {name!r} is not valid UTF-8")
            if not column.nulls_ok:
                reject(_mask(pc.is_null(text)), missing_reason(name))
            if column.categories is not None and column.unseen_ok is False:
                unseen = pc.invert(pc.is_in(text, value_set=pa.array(column.categories, pa.string())))
                reject(_mask(pc.and_kleene(unseen, pc.is_valid(text))),
                       f"column {name!r} has a category not seen in training")
            features[name] = text.to_numpy(zero_copy_only=False)

    row_numbers = np.arange(first_row, first_row + n, dtype=np.int64)
    if not bad.any():
        return Validated(features=_frame(features), entity_ids=ids, row_numbers=row_numbers, rejects=[])
    good = ~bad
    raw = batch.filter(pa.array(bad)).to_pylist()
    rejects = [(row_number, None, reason, {}) if reason == ERASED
               else (row_number, _id_of(record.get(entity_col)), reason, _json(record))
               for row_number, reason, record in zip(row_numbers[bad].tolist(), reasons[bad].tolist(), raw,
                                                     strict=True)]
    return Validated(
        features=_frame({k: v[good] for k, v in features.items()}),
        entity_ids=ids.filter(pa.array(good)),
        row_numbers=row_numbers[good],
        rejects=rejects,
    )


def _frame(columns: dict[str, np.ndarray]) -> pd.DataFrame:
    """A frame whose numeric columns share one float64 block, so the model reads it without a copy
    (a few rows, as live scoring sends, are framed as they come: the block would cost more than it saves)."""
    if len(next(iter(columns.values()), ())) <= SMALL:
        return pd.DataFrame(columns, copy=False)
    numeric = [k for k, v in columns.items() if v.dtype == np.float64]
    frame = pd.DataFrame(np.column_stack([columns[k] for k in numeric]) if numeric else None,
                         columns=numeric, copy=False)
    others = {k: v for k, v in columns.items() if k not in numeric}
    if others:
        frame = frame.assign(**others) if numeric else pd.DataFrame(others)
    return frame[list(columns)] if list(frame.columns) != list(columns) else frame


def _kind_in(column: FeatureColumn, array: pa.Array | pa.ChunkedArray) -> str:
    """The kind to read a column as in this batch: the schema's, except for a column ``assumed``
    numeric (nothing at registration said what it holds) that arrives as text mostly not numbers,
    which is passed to the model as text: the model, not a guess, then says whether it takes it."""
    if not column.assumed:
        return column.kind
    kind = array.type.value_type if pa.types.is_dictionary(array.type) else array.type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        return "numeric"
    values, not_number = _numeric(array, column.name)
    return "categorical" if not_number.sum() > (~np.isnan(values)).sum() else "numeric"


def _mask(array: pa.Array | pa.ChunkedArray) -> np.ndarray:
    return np.asarray(pc.fill_null(array, False).to_numpy(zero_copy_only=False), dtype=bool)


def entity_text(array: pa.Array | pa.ChunkedArray, name: str) -> tuple[pa.Array, np.ndarray]:
    """Entity ids as a run reads them: text (a whole number as its digits), null where not UTF-8."""
    return _text(array, name, "entity ids must be text or whole numbers")


def _text(array: pa.Array | pa.ChunkedArray, name: str, hint: str) -> tuple[pa.Array, np.ndarray]:
    """``array`` as UTF-8 strings (null where its bytes are not UTF-8) and a mask of those rows."""
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    if pa.types.is_dictionary(array.type):
        array = array.dictionary_decode()
    invalid = np.zeros(len(array), dtype=bool)
    if pa.types.is_binary(array.type) or pa.types.is_large_binary(array.type):
        try:
            return pc.cast(array, pa.string()), invalid
        except pa.ArrowInvalid:  # some values are not UTF-8: those rows are rejected, the rest kept
            decoded = [_utf8(v) for v in array.to_pylist()]
            invalid = np.array([d is _NOT_UTF8 for d in decoded], dtype=bool)
            return pa.array([None if d is _NOT_UTF8 else d for d in decoded], pa.string()), invalid
    try:
        return pc.cast(array, pa.string()), invalid
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        raise InputError(f"column {name!r} holds {array.type} values; {hint}") from None


_NOT_UTF8 = object()


def _utf8(value: bytes | None) -> object:
    try:
        return None if value is None else value.decode("utf-8")
    except UnicodeDecodeError:
        return _NOT_UTF8


def _id_of(value: Any) -> str | None:
    """The entity id recorded with a rejected row: text, cut to a length an index takes."""
    if value is None:
        return None
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    return text.replace("\x00", "\ufffd")[: MAX_RAW_TEXT]


def _numeric(array: pa.Array, name: str) -> tuple[np.ndarray, np.ndarray]:
    """float64 values (NaN for missing) and a mask of values present but not numbers."""
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    if pa.types.is_dictionary(array.type):
        array = array.dictionary_decode()
    if pa.types.is_null(array.type):
        return np.full(len(array), np.nan), np.zeros(len(array), dtype=bool)
    not_utf8 = np.zeros(len(array), dtype=bool)
    if pa.types.is_binary(array.type) or pa.types.is_large_binary(array.type):
        array, not_utf8 = _text(array, name, "")
    if pa.types.is_integer(array.type) or pa.types.is_floating(array.type) or pa.types.is_boolean(array.type) \
            or pa.types.is_decimal(array.type):
        values = pc.cast(array, pa.float64()).to_numpy(zero_copy_only=False)
        return np.asarray(values, dtype=np.float64), np.zeros(len(array), dtype=bool)
    if pa.types.is_string(array.type) or pa.types.is_large_string(array.type):
        text = pd.Series(array.to_numpy(zero_copy_only=False), dtype=object)
        stripped = text.str.strip()
        present = stripped.notna() & (stripped != "")
        values = pd.to_numeric(stripped.where(present), errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        literal_nan = stripped.str.lower().isin(["nan"]).to_numpy()
        return values, (present.to_numpy() & np.isnan(values) & ~literal_nan) | not_utf8
    # Anything else (timestamps, lists, binary...) is not a number the model can take.
    raise InputError(f"column {name!r} holds {array.type} values, not numbers; convert it to a number type")


def _json(record: dict[str, Any]) -> dict[str, Any]:
    def clean(value: Any) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            return str(value)
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        if isinstance(value, str):  # jsonb takes no NUL; a huge value is kept in part
            value = value.replace("\x00", "\ufffd")
            return value if len(value) <= MAX_RAW_TEXT else value[:MAX_RAW_TEXT] + "...(cut)"
        if isinstance(value, (int, float, bool)) or value is None:
            return value
        return str(value)[:MAX_RAW_TEXT]

    return {k: clean(v) for k, v in record.items()}
