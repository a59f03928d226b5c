"""Registration reads an artifact once: the bytes whose types were checked are the bytes loaded,
measured, hashed and stored, whatever happens to the file meanwhile."""

from __future__ import annotations

import errno
import hashlib
import os
import threading
import time
from pathlib import Path

import joblib
import psycopg
import skops.io as sio

from models.register import register_model
from store.reader import path_of
from store.settings import Settings
from tests import factories


def test_a_file_swapped_during_registration_changes_nothing(settings: Settings, conn: psycopg.Connection,
                                                            tmp_path: Path) -> None:
    first, train = factories.logistic(tmp_path / "a", seed=0)
    second, _ = factories.logistic(tmp_path / "b", seed=5)
    reviewed, swapped = tmp_path / "a.skops", tmp_path / "b.skops"
    sio.dump(joblib.load(first), reviewed)
    sio.dump(joblib.load(second), swapped)
    # A FIFO gives each open of the "file" other bytes: the reviewed model first, then another.
    artifact = tmp_path / "model.skops"
    os.mkfifo(artifact)
    opened: list[str] = []

    def serve() -> None:
        for payload in (reviewed, swapped, swapped):
            try:
                with open(artifact, "wb") as out:  # waits for a reader
                    opened.append(payload.name)
                    out.write(payload.read_bytes())
                while True:  # the next payload is for the next open: wait until this reader is gone
                    try:
                        os.close(os.open(artifact, os.O_WRONLY | os.O_NONBLOCK))
                    except OSError as exc:
                        if exc.errno == errno.ENXIO:
                            break
                        raise
                    time.sleep(0.01)
            except OSError:
                return

    writer = threading.Thread(target=serve, daemon=True)
    writer.start()
    try:
        version = register_model(settings, artifact, name="churn", train_data=train, target="y")
    finally:
        unblock = os.open(artifact, os.O_RDONLY | os.O_NONBLOCK)  # release a writer still waiting
        os.close(unblock)
        writer.join(timeout=5)
    assert opened[0] == "a.skops" and version.sha256 == hashlib.sha256(reviewed.read_bytes()).hexdigest()
    assert path_of(version.artifact_uri).read_bytes() == reviewed.read_bytes()
    assert conn.execute("SELECT trusted_types FROM models").fetchone() == ([],)  # nothing beyond skops' defaults
