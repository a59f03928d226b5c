"""`predstore runs verify`: score a published run's input again, publishing nothing, and compare
the digest of its predictions with the one the ledger recorded.

Entities on the erasure list are left out of the re-scoring, as scoring leaves them out, so a run
scored after an erasure verifies. A run that held an entity when `predstore forget` erased it
cannot: its recorded digest covers the erased rows, and nothing of them is kept to recompute it
from. Its digests differ, and the error says why, with the number of entities erased.
"""

from __future__ import annotations

from typing import Any

from batch.plan import DEFAULT_ENTITY_COL
from batch.stages import task_context
from batch.tasks import digest_task, run_digest
from store import audit, ledger, reader, registry
from store.db import connect
from store.errors import InputError
from store.migrate import prepare
from store.settings import Settings


def verify_run(settings: Settings, run_id: int) -> dict[str, Any]:
    """Re-score a run's recorded input with its recorded model version, without publishing,
    and compare the digest of the predictions with the one recorded. A mismatch of a run that
    `predstore forget` erased entities from is an `InputError` saying so."""
    url = prepare(settings)
    with connect(url, autocommit=True) as conn:
        run = ledger.get_run(conn, run_id)
        model_row = registry.get_model(conn, run.model_name, version=run.model_version)
        if not run.predictions_digest:
            raise InputError(f"run {run_id} has no recorded digest (status {run.status}); "
                             "only published runs verify")
        partition = reader.open_partition(run.input_uri, key=run.partition_key)
        if partition.fingerprint != run.input_fingerprint:
            raise InputError(f"the input {partition.uri} has changed since run {run_id} read it; it cannot be "
                             "replayed")
        entity_col = (run.details or {}).get("entity_col", DEFAULT_ENTITY_COL)
        ctx = task_context(url, entity_col, conn, partition, 1.0, [(run_id, model_row)])
        erased = audit.forgotten_from_run(conn, run_id)
    tasks = [digest_task(part, ctx) for part in reader.plan(partition)]
    recomputed = run_digest([d for task in tasks for d in task.targets[0].digests])
    match = recomputed == run.predictions_digest
    if not match and erased:
        were = "was" if erased == 1 else "were"
        raise InputError(f"run {run_id} does not verify: the digests differ, as they must once {erased} of its "
                         f"entities {were} erased by `predstore forget` after it was scored (the recorded digest "
                         "covers their predictions; the re-scoring leaves erased entities out, as scoring does); "
                         "score the partition again with --force for a run that verifies")
    return {"run_id": run_id, "recorded": run.predictions_digest, "recomputed": recomputed,
            "match": match, "rows_in": sum(t.rows_in for t in tasks)}
