"""`predstore forget ENTITY_ID [--model NAME]`: erase an entity from the store, and audit it.

Its predictions go from every retained run (published, superseded or not yet published), with
its labels and its quarantined rows. Its id's keyed HMAC goes on the erasure list, so scoring
rejects its rows (reason ``erased``) when a partition is scored again, after a promotion say. The
audit trail records that it was done, when and by whom, naming the entity by that HMAC only.
Input files outside the store are not touched.
"""

from __future__ import annotations

import getpass
import json
from dataclasses import asdict
from typing import Any

import click

from store import audit, registry
from store.db import connect
from store.errors import ConfigError
from store.migrate import prepare
from store.settings import Settings


def forget_entity(settings: Settings, entity_id: str, *, model: str | None = None,
                  actor: str | None = None) -> dict[str, Any]:
    """Erase ``entity_id`` (from ``model``'s runs and labels only, if given) and audit it, atomically."""
    if not entity_id or "\x00" in entity_id:
        raise ConfigError("give the entity id to forget (a non-empty text without NUL characters)")
    from store import erasure  # the partitions' schema (SQLAlchemy) loads only when erasing

    with connect(prepare(settings), application_name="predstore-forget") as conn, conn.transaction():
        if model is not None:
            registry.get_model(conn, model)  # NotFound names what exists
        erased = erasure.erase_entity(conn, entity_id, model=model)
        digest = erasure.entity_hmac(erasure.erasure_key(conn), entity_id)
        erasure.add_erasure(conn, digest, model=model)
        audit_id = audit.record(conn, "entity.forget", target=digest.hex(), actor=actor,
                                details={"model": model, **asdict(erased)})
    return {"entity_hmac": digest.hex(), "model": model, "audit_id": audit_id, **asdict(erased)}


@click.command()
@click.argument("entity_id")
@click.option("--model", help="Only this model's predictions and labels (default: every model).")
@click.option("--json", "as_json", is_flag=True, help="Print what was erased as JSON.")
@click.pass_obj
def forget(settings: Settings, entity_id: str, model: str | None, as_json: bool) -> None:
    """Erase ENTITY_ID's predictions (every retained run), labels and rejected rows; record it in the audit table.

    Later runs reject the entity's rows (reason 'erased'). Lookup services drop what they cached
    for the models touched. A run still scoring while this runs may publish the entity again: run
    it again once that run is done.
    """
    done = forget_entity(settings, entity_id, model=model, actor=getpass.getuser())
    if as_json:
        click.echo(json.dumps(done))
        return
    click.echo(f"forgot entity hmac:{done['entity_hmac'][:16]}: {done['predictions']} prediction(s) in "
               f"{len(done['runs'])} run(s), {done['labels']} label(s), {done['rejected_rows']} rejected row(s); "
               f"audit entry {done['audit_id']}")
