"""predstore from Python: register a fitted model, score a frame or a file, read predictions,
drift and performance back as DataFrames, and call the lookup API.

    import predstore

    predstore.register(model, name="churn", train=train, target="churned")
    predstore.score(frame, model="churn", entity_col="customer_id", partition="2026-11-26")
    predstore.predictions("churn", ["c1", "c2"])

The module functions use the default store (``PREDSTORE_DATABASE_URL``, else the embedded
PostgreSQL under ``PREDSTORE_HOME``), as ``requests.get`` uses a default session;
``predstore.Store(url=..., home=...)`` holds explicit settings and has the same methods.
Importing predstore loads none of the heavy libraries; each function loads what it uses.
"""

from __future__ import annotations

from predstore.api import Store, drift, labels, model, monitor, performance, predictions, register, score, training_set
from predstore.client import Client

__all__ = ["Client", "Store", "drift", "labels", "model", "monitor", "performance", "predictions", "register", "score",
           "training_set"]
