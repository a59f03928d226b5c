"""Benchmark of partitions on object storage, against moto's S3-compatible server on this machine.

    python benchmarks/bench_object_storage.py [--partitions 20 --rows 200000]

1. A restarted scheduler's scan of a prefix (empty cache): `scheduler.scan`, which fingerprints
   from ETags read by listing, against the baseline a user would write with boto3: list the
   prefix, GET each object and hash its bytes (what the scan does on a store without ETags). Figures: seconds, bytes
   downloaded (counted by the server's request log), and the ratio.
2. Reading one partition's batches (`store.reader.batches`, all columns): from the S3 server
   against the same file on the local disk. The server is local, so this measures predstore's
   read path over HTTP, not a network.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent.parent))
from scheduler.scan import scan  # noqa: E402
from store import reader  # noqa: E402


class Downloads(logging.Handler):
    """Counts object GETs in the server's request log (listings are not downloads)."""

    def __init__(self, bucket: str) -> None:
        super().__init__()
        self.bucket, self.count = bucket, 0

    def emit(self, record: logging.LogRecord) -> None:
        if f"GET /{self.bucket}/" in record.getMessage():
            self.count += 1


def frame(rows: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    data = pd.DataFrame(rng.normal(size=(rows, 8)), columns=[f"f{i}" for i in range(8)])
    data.insert(0, "entity_id", [f"e{i}" for i in range(rows)])
    return data


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--partitions", type=int, default=20)
    parser.add_argument("--rows", type=int, default=200_000)
    args = parser.parse_args()

    from moto.server import ThreadedMotoServer

    bucket = "bench"
    counter = Downloads(bucket)
    werkzeug = logging.getLogger("werkzeug")  # the server's request log, counted instead of printed
    werkzeug.setLevel(logging.INFO)
    werkzeug.propagate = False
    werkzeug.addHandler(counter)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_REGION="us-east-1",
                      AWS_ENDPOINT_URL_S3=f"http://{host}:{port}", AWS_EC2_METADATA_DISABLED="true")
    import boto3

    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=bucket)
    buffer = io.BytesIO()
    frame(args.rows, 0).to_parquet(buffer, index=False, row_group_size=50_000)
    body = buffer.getvalue()
    for i in range(args.partitions):
        s3.put_object(Bucket=bucket, Key=f"in/dt={i:04}/part-0.parquet", Body=body)
    total_mb = args.partitions * len(body) / 1e6
    print(f"{args.partitions} partitions of {len(body) / 1e6:.1f} MB ({total_mb:.0f} MB) on a local S3 server")

    started = time.perf_counter()
    found = scan(f"s3://{bucket}/in/dt=*", {})
    etag_s, etag_gets = time.perf_counter() - started, counter.count
    assert len(found) == args.partitions

    counter.count = 0
    started = time.perf_counter()
    hashes = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="in/"):
        for obj in page["Contents"]:
            stream = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"]
            hashes[obj["Key"]] = hashlib.sha256(stream.read()).hexdigest()
    content_s, content_gets = time.perf_counter() - started, counter.count
    print(f"restart scan: ETags from listings {etag_s:.2f} s, {etag_gets} GET requests for objects; "
          f"baseline list + hash the bytes {content_s:.2f} s, {content_gets} GET requests ({total_mb:.0f} MB) "
          f"downloaded; ratio baseline / predstore {content_s / etag_s:.1f}x")

    columns = list(frame(1, 0).columns)
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / "part-0.parquet"
        local.write_bytes(body)
        timings = {}
        for name, where in (("s3", f"s3://{bucket}/in/dt=0000"), ("local", local)):
            best = float("inf")
            for _ in range(3):
                started = time.perf_counter()
                rows = sum(b.num_rows for b in reader.batches(reader.open_partition(where), columns))
                best = min(best, time.perf_counter() - started)
            assert rows == args.rows
            timings[name] = best
    print(f"read one partition ({args.rows:,} rows, best of 3): S3 {timings['s3']:.3f} s, local disk "
          f"{timings['local']:.3f} s; ratio S3 / local {timings['s3'] / timings['local']:.2f}")
    server.stop()


if __name__ == "__main__":
    main()
