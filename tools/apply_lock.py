#!/usr/bin/env python3
"""How long a large watchlist apply blocks hit storage: apply a signed N-entry bundle while hits are stored.

python tools/apply_lock.py [--entries 1000000] [--batch N] [--json out.json] [--dir DIR]
python tools/apply_lock.py --quick                 # 100,000 entries

One thread applies the bundle through the device's store (its own connection, as the sync
thread does); the main thread stores a hit in the outbox every 20 ms meanwhile (its own
connection, as the daemon does) and times each. Reports the longest write transaction of the
apply, the hits' storage latency (median, p99, max) and how many were refused (held in memory
by the daemon). ``--batch`` sets the entries per staging transaction (the store's default;
``--batch 100000000`` writes everything in one transaction, as before the staged apply).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402

from edge.db import connect  # noqa: E402
from edge.outbox import Outbox, StorageError  # noqa: E402
from edge.watchlist import store as store_module  # noqa: E402
from edge.watchlist.keys import key_id  # noqa: E402
from edge.watchlist.store import WatchlistStore  # noqa: E402
from tools.synthetic import SPACE, random_entries, signed_bundle  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--entries", type=int, default=1_000_000)
    p.add_argument("--quick", action="store_true", help="100,000 entries")
    p.add_argument("--batch", type=int, default=store_module.STAGE_BATCH, help="entries per staging transaction")
    p.add_argument("--dir", type=Path, help="folder for the database (default: a temporary folder on disk)")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    n = 100_000 if args.quick else args.entries
    store_module.STAGE_BATCH = args.batch
    key = Ed25519PrivateKey.generate()
    t0 = time.monotonic()
    bundle = signed_bundle(random_entries(n), key)
    print(f"built a signed {n}-entry bundle in {time.monotonic() - t0:.0f} s", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="apply-lock-", dir=args.dir or "/var/tmp") as tmp:
        db = Path(tmp) / "edge.db"
        store = WatchlistStore(connect(db))
        outbox = Outbox(db, max_rows=1_000_000, max_age_s=86400)
        txn: list[float] = []
        began: list[float] = []

        def trace(sql: str) -> None:
            if sql.startswith("BEGIN IMMEDIATE"):
                began.append(time.perf_counter())
            elif sql.startswith(("COMMIT", "ROLLBACK")) and began:
                txn.append(time.perf_counter() - began.pop())

        store.conn.set_trace_callback(trace)
        result: dict[str, object] = {}
        trusted = {key_id(key.public_key()): key.public_key()}
        worker = threading.Thread(target=lambda: result.update(r=store.apply(bundle, trusted, embedding_space=SPACE)))
        latencies: list[float] = []
        refused = 0
        t0 = time.monotonic()
        worker.start()
        while worker.is_alive():
            s = time.perf_counter()
            try:
                outbox.add(str(uuid.uuid4()), "edge/v1/pole-1/hits", b'{"hit": true}', kind="hit")
            except StorageError:
                refused += 1
            latencies.append(time.perf_counter() - s)
            time.sleep(0.02)
        worker.join()
        apply_s = time.monotonic() - t0
        applied = result["r"]
        assert getattr(applied, "ok", False), applied
        lat = sorted(latencies)
        out = {
            "entries": n,
            "batch": args.batch,
            "apply_s": round(apply_s, 1),
            "write_transactions": len(txn),
            "longest_write_transaction_ms": round(max(txn) * 1000, 1),
            "hits_stored": len(lat) - refused,
            "hits_refused_busy": refused,
            "hit_store_ms": {
                "median": round(statistics.median(lat) * 1000, 1),
                "p99": round(lat[int(0.99 * (len(lat) - 1))] * 1000, 1),
                "max": round(lat[-1] * 1000, 1),
            },
            "database_mb": round(db.stat().st_size / 1e6, 1),
            "machine": f"{os.uname().machine}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}",
        }
    print(json.dumps(out, indent=2))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
