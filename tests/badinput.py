"""The bad-input corpus: small files a user could hand `predstore score`, each with what must happen.

Every case builds its input under a folder and says its outcome: a one-line error with an exit
code (the run publishes nothing), or a published run with some rows quarantined. The model is
`tests.factories.logistic` ("churn": numeric f0, f1, f2, no missing values) unless the case names
"pipe" (`factories.pipeline_classifier`: also a ``color`` category, unseen colors refused).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from tests import factories

ROWS = 20


@dataclass(frozen=True)
class Case:
    """One bad input and its expected outcome."""

    id: str
    build: Callable[[Path], Path]
    #: "error": the run fails with ``message`` and exit ``code``; "published": ``scored`` rows
    #: published, ``rejected`` quarantined.
    outcome: str
    message: str = ""
    code: int = 1
    scored: int = ROWS
    rejected: int = 0
    model: str = "churn"
    args: tuple[str, ...] = ()
    #: The partition key the run writes (default: the case's own, passed with --partition).
    partition: str | None = None
    extra: dict[str, object] = field(default_factory=dict)


def base(n: int = ROWS) -> pd.DataFrame:
    return factories.frame(n, seed=3).drop(columns=["y", "amount"])


def parquet(name: str, data: pd.DataFrame | pa.Table) -> Callable[[Path], Path]:
    def build(folder: Path) -> Path:
        path = folder / name
        table = data if isinstance(data, pa.Table) else pa.Table.from_pandas(data, preserve_index=False)
        pq.write_table(table, path)
        return path
    return build


def raw(name: str, content: bytes | Callable[[], bytes]) -> Callable[[Path], Path]:
    def build(folder: Path) -> Path:
        path = folder / name
        path.write_bytes(content() if callable(content) else content)
        return path
    return build


def csv_text(data: pd.DataFrame, *, sep: str = ",") -> str:
    return str(data.to_csv(index=False, sep=sep))


def valid_parquet_bytes() -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pandas(base(2000), preserve_index=False), sink, row_group_size=500)
    return bytes(sink.getvalue().to_pybytes())


def truncated_parquet() -> bytes:
    data = valid_parquet_bytes()
    return data[: len(data) // 2]


def damaged_pages() -> bytes:
    """A Parquet file whose footer is intact but whose first column chunk is overwritten."""
    data = bytearray(valid_parquet_bytes())
    data[8:600] = bytes(592)  # after the "PAR1" magic: the first pages
    return bytes(data)


def with_column(column: str, values: pa.Array) -> pa.Table:
    table = pa.Table.from_pandas(base(), preserve_index=False)
    return table.set_column(table.schema.get_field_index(column), column, values)


def some(frame: pd.DataFrame, column: str, values: dict[int, object]) -> pd.DataFrame:
    copy = frame.astype({column: object})
    for row, value in values.items():
        copy.loc[row, column] = value
    return copy


def as_text(frame: pd.DataFrame, column: str, values: dict[int, str]) -> pd.DataFrame:
    copy = frame.astype({column: str})
    for row, value in values.items():
        copy.loc[row, column] = value
    return copy


def wide(n_columns: int) -> pd.DataFrame:
    data = base()
    extra = pd.DataFrame(np.zeros((ROWS, n_columns)), columns=[f"x{i}" for i in range(n_columns)])
    return pd.concat([data, extra], axis=1)


def directory(files: dict[str, pd.DataFrame | bytes]) -> Callable[[Path], Path]:
    def build(folder: Path) -> Path:
        root = folder / "dir"
        root.mkdir()
        for name, content in files.items():
            if isinstance(content, bytes):
                (root / name).write_bytes(content)
            else:
                content.to_parquet(root / name, index=False)
        return root
    return build


def _ids(values: list[object]) -> pd.DataFrame:
    data = base(len(values))
    data["entity_id"] = values
    return data


INJECTION = ["'; DROP TABLE runs; --", "Robert'); DROP TABLE predictions;--", "1 OR 1=1", "\\x00",
             "$$; SELECT pg_sleep(10); $$", "../../etc/passwd", "%s%s%s", "{entity_id}", "<script>x</script>",
             "e\u00e9\u4e2d\U0001f600"] + [f"ok{i}" for i in range(ROWS - 10)]

CASES: list[Case] = [
    # -- files that cannot be read at all: one line, exit 1 (2 for what is a usage mistake)
    Case("empty-csv", raw("empty.csv", b""), "error", "is empty"),
    Case("empty-parquet", raw("empty.parquet", b""), "error", "cannot be read as parquet"),
    Case("header-only-csv", raw("header.csv", b"entity_id,f0,f1,f2\n"), "error", "the partition has no rows"),
    Case("zero-rows-parquet", parquet("zero.parquet", base(0)), "error", "the partition has no rows"),
    Case("random-bytes-parquet", raw("junk.parquet", bytes(range(256)) * 40), "error", "cannot be read as parquet"),
    Case("truncated-parquet", raw("cut.parquet", truncated_parquet), "error", "cannot be read as parquet"),
    Case("damaged-pages-parquet", raw("damaged.parquet", damaged_pages), "error", "could not be read"),
    Case("truncated-csv", raw("cut.csv", lambda: csv_text(base())[:-25].encode()), "error",
         "fields where the header has 5"),
    Case("ragged-csv", raw("ragged.csv", lambda: (csv_text(base()) + "e99,1,2,3,red,extra\n").encode()), "error",
         "a line has 6 fields where the header has 5"),
    Case("semicolon-csv", raw("semi.csv", lambda: csv_text(base(), sep=";").encode()), "error",
         "delimited by ';'"),
    Case("tab-csv", raw("tabs.csv", lambda: csv_text(base(), sep="\t").encode()), "error", "delimited by tabs"),
    Case("latin1-csv", raw("latin1.csv", lambda: csv_text(some(base(), "entity_id", {3: "caf\u00e9"})).encode(
        "latin-1")), "published", scored=ROWS - 1, rejected=1),
    Case("latin1-number-csv", raw("latin1n.csv", lambda: csv_text(some(base(), "f1", {3: "1\u00b0"})).encode(
        "latin-1")), "published", scored=ROWS - 1, rejected=1),
    Case("utf16-csv", raw("utf16.csv", lambda: csv_text(base()).encode("utf-16")), "error", "not UTF-8"),
    Case("utf8-bom-csv", raw("bom.csv", lambda: b"\xef\xbb\xbf" + csv_text(base()).encode()), "published"),
    Case("unknown-suffix", raw("data.txt", b"entity_id,f0\n"), "error", "unknown file type '.txt'", code=2),
    Case("missing-path", lambda folder: folder / "nowhere.parquet", "error", "no such file or directory", code=2),
    Case("empty-directory", directory({"notes.txt": b"x"}), "error", "holds no .parquet files"),
    Case("directory-with-zero-byte-file", directory({"a.parquet": base(), "b.parquet": b""}), "error",
         "cannot be read as parquet"),
    Case("directory-file-lacks-column", directory({"a.parquet": base(), "b.parquet": base().drop(columns=["f1"])}),
         "error", "lacks required column(s) 'f1'"),
    # -- columns
    Case("missing-column", parquet("missing.parquet", base().drop(columns=["f2"])), "error",
         "lacks required column(s) 'f2'"),
    Case("missing-entity-column", parquet("noid.parquet", base().drop(columns=["entity_id"])), "error",
         "pass --entity-col"),
    Case("extra-columns", parquet("extra.parquet", base().assign(spare=1.0, notes="x")), "published"),
    Case("ten-thousand-columns-parquet", parquet("wide.parquet", wide(10_000)), "published"),
    Case("ten-thousand-columns-csv", raw("wide.csv", lambda: csv_text(wide(10_000)).encode()), "published"),
    Case("duplicate-column-names-csv", raw("dupcol.csv", lambda: csv_text(base()).replace(
        "entity_id,f0,f1,f2,color", "entity_id,f0,f1,f0,f2", 1).encode()), "error", "appears more than once"),
    # -- types and values
    Case("numbers-as-text", parquet("text.parquet", as_text(base(), "f0", {1: "1.5", 2: " 2 ", 3: "abc", 4: "1,5"})),
         "published", scored=ROWS - 2, rejected=2),
    Case("timestamp-feature", parquet("ts.parquet", base().assign(f0=pd.Timestamp("2026-01-01"))), "error",
         "holds timestamp[us] values, not numbers"),
    Case("list-feature", parquet("list.parquet", with_column("f0", pa.array([[1.0]] * ROWS))), "error",
         "not numbers"),
    Case("list-entity-ids", parquet("listid.parquet", with_column("entity_id", pa.array([["a"]] * ROWS))), "error",
         "entity ids must be text or whole numbers"),
    Case("all-null-column", parquet("nulls.parquet", with_column("f1", pa.nulls(ROWS))), "error",
         "rows read were rejected"),
    Case("nan-and-inf", parquet("naninf.parquet", some(base(), "f2", {0: np.nan, 1: np.inf, 2: -np.inf})),
         "published", scored=ROWS - 3, rejected=3),
    Case("dictionary-encoded-numbers", parquet("dict.parquet", with_column(
        "f0", pa.array(base()["f0"]).dictionary_encode())), "published"),
    Case("boolean-and-integer-features", parquet("ints.parquet", base().assign(f0=1, f1=True)), "published"),
    Case("integer-entity-ids", parquet("intid.parquet", base().assign(entity_id=range(ROWS))), "published"),
    Case("decimal-feature", parquet("dec.parquet", with_column(
        "f2", pa.array([Decimal("1.25")] * ROWS, pa.decimal128(10, 2)))), "published"),
    # -- entity ids
    Case("one-megabyte-entity-id", parquet("bigid.parquet", some(base(), "entity_id", {5: "x" * (1 << 20)})),
         "published", scored=ROWS - 1, rejected=1),
    Case("blank-and-null-ids", parquet("blank.parquet", some(base(), "entity_id", {0: "", 1: "   ", 2: None})),
         "published", scored=ROWS - 3, rejected=3),
    Case("nul-in-entity-id", parquet("nul.parquet", some(base(), "entity_id", {4: "a\x00b"})), "published",
         scored=ROWS - 1, rejected=1),
    Case("non-utf8-entity-ids", parquet("binid.parquet", with_column("entity_id", pa.array(
        [b"\xff\xfe" if i in (2, 3) else f"b{i}".encode() for i in range(ROWS)], pa.binary()))),
         "published", scored=ROWS - 2, rejected=2),
    Case("sql-injection-ids", parquet("inject.parquet", _ids(INJECTION)), "published",
         extra={"ids": INJECTION}),
    Case("duplicate-ids", parquet("dups.parquet", _ids(["same"] * 5 + [f"u{i}" for i in range(ROWS - 5)])),
         "published", extra={"duplicates": 4}),
    Case("quoted-newlines-csv", raw("nl.csv", lambda: csv_text(_ids(["line\nbreak", "comma,id"]
                                                                    + [f"q{i}" for i in range(ROWS - 2)])).encode()),
         "published"),
    Case("too-many-rejects", parquet("mostlybad.parquet", as_text(base(), "f0", {i: "bad" for i in range(5)})),
         "error", "rows read were rejected"),
    # -- partition names: any text is a key; control characters and huge names are refused
    Case("path-traversal-partition", parquet("pt.parquet", base()), "published", partition="../../x",
         args=("--partition", "../../x")),
    Case("sql-injection-partition", parquet("si.parquet", base()), "published", partition="; DROP TABLE runs; --",
         args=("--partition", "; DROP TABLE runs; --")),
    Case("control-character-partition", parquet("cc.parquet", base()), "error", "control character", code=2,
         args=("--partition", "a\nb")),
    Case("huge-partition-name", parquet("hp.parquet", base()), "error", "longer than", code=2,
         args=("--partition", "p" * 5000)),
    # -- categories (the pipeline model refuses colors it never saw)
    Case("unseen-category", parquet("unseen.parquet", some(base(), "color", {0: "purple", 1: "RED"})), "published",
         model="pipe", scored=ROWS - 2, rejected=2),
    Case("null-category", parquet("nullcat.parquet", some(base(), "color", {0: None})), "published", model="pipe",
         scored=ROWS - 1, rejected=1),
]
