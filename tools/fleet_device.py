"""The device side of the fleet simulation: the daemon's real publishing half, many devices per process.

Each simulated device is what ``edge run`` has after the camera pipeline: its own SQLite
database (watchlist store, audit log, outbox), a :class:`~edge.watchlist.sync.WatchlistSync`
that assembles, verifies and applies signed bundles from retained messages and acks them
through the outbox, and a :class:`~edge.publish.Publisher` that drains the outbox over MQTT v5
QoS 1. Only the hits are synthetic (a load generator stands in for the recogniser).
"""

from __future__ import annotations

import json
import logging
import resource
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edge.daemon import iso
from edge.match import Matcher
from edge.outbox import Outbox
from edge.publish import BrokerOptions, Publisher, ack_topic, hits_topic
from edge.watchlist.keys import key_id, load_public_key
from edge.watchlist.sync import WatchlistSync
from tools.synthetic import SPACE, hit_payload

log = logging.getLogger(__name__)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class SimDevice:
    def __init__(self, device_id: str, workdir: Path, port: int, keys: dict[str, Ed25519PublicKey], name: str) -> None:
        self.device_id = device_id
        db = workdir / device_id / "edge.db"
        self.outbox = Outbox(db, max_rows=200_000, max_age_s=14 * 86400)
        self.applied = threading.Event()
        self.apply_started: float | None = None
        self.apply_seconds: float | None = None
        self.ack: dict[str, Any] | None = None
        self.sync = WatchlistSync(
            db, name=name, keys=keys, embedding_space=SPACE, timeout_s=600, on_applied=self._on_applied, send_ack=self._ack
        )
        opts = BrokerOptions("127.0.0.1", port, username=device_id, client_id=device_id, keepalive=60)
        self.publisher = Publisher(
            opts, device_id=device_id, outbox=self.outbox, subscriptions=self.sync.topics(), on_message=self.sync.handle
        )
        self.sent: list[str] = []

    def _on_applied(self, matcher: Matcher) -> None:
        del matcher  # a real device swaps it in; here it only has to be built, then memory is given back

    def _ack(self, ack: dict[str, Any]) -> None:
        ack["device_id"] = self.device_id
        self.ack = ack
        self.outbox.add(str(uuid.uuid4()), ack_topic(self.device_id), json.dumps(ack).encode(), kind="ack")
        self.publisher.kick()
        self.applied.set()

    def start(self) -> None:
        self.apply_started = time.monotonic()
        self.sync.start()
        self.publisher.start()

    def send_hit(self) -> str:
        event_id = str(uuid.uuid4())
        payload = hit_payload(self.device_id, event_id=event_id, first_seen=iso(time.time()))
        self.outbox.add(event_id, hits_topic(self.device_id), json.dumps(payload, separators=(",", ":")).encode(), kind="hit")
        self.publisher.kick()
        self.sent.append(event_id)
        return event_id

    def stop(self) -> None:
        self.sync.stop()
        self.publisher.stop()
        self.outbox.close()


def run_worker(
    index: int, device_ids: list[str], cfg: dict[str, Any], start_hits: Any, stop: Any, results: Any
) -> None:  # multiprocessing primitives are untyped
    """One process's share of the fleet: fan-out in waves, then hits at the configured rate, then drain."""
    logging.basicConfig(level=logging.WARNING, format=f"worker{index} %(levelname)s %(name)s: %(message)s")
    workdir = Path(cfg["workdir"])
    pub = load_public_key(Path(cfg["public_key"]))
    keys = {key_id(pub): pub}
    devices: list[SimDevice] = []
    base_rss = peak_rss_mb()
    wave = max(1, int(cfg["fanout_concurrency"]))
    for start in range(0, len(device_ids), wave):
        batch = [SimDevice(d, workdir, cfg["port"], keys, cfg["watchlist"]) for d in device_ids[start : start + wave]]
        for dev in batch:
            dev.start()
        deadline = time.monotonic() + cfg["fanout_timeout_s"]
        for dev in batch:
            dev.applied.wait(max(0.0, deadline - time.monotonic()))
            ok = bool(dev.ack and dev.ack.get("outcome") == "applied")
            seconds = time.monotonic() - (dev.apply_started or 0.0) if dev.applied.is_set() else None
            results.put(("fanout", dev.device_id, ok, seconds, dev.ack.get("reason") if dev.ack else "timeout"))
        devices += batch
    results.put(("fanout_rss", index, peak_rss_mb(), base_rss, len(device_ids)))
    start_hits.wait()
    rate, per_device = float(cfg["rate"]), int(cfg["hits_per_device"])
    t0 = time.monotonic()
    # Devices start staggered over one period so the load is spread, as real cameras are.
    schedule = sorted(
        (t0 + (i / max(1, len(devices))) / rate + k / rate, i) for i in range(len(devices)) for k in range(per_device)
    )
    for due, i in schedule:
        wait = due - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        devices[i].send_hit()
    generated_s = time.monotonic() - t0
    deadline = time.monotonic() + cfg["drain_timeout_s"]
    undrained = sum(0 if d.publisher.wait_drained(max(0.1, deadline - time.monotonic())) else 1 for d in devices)
    results.put(("hits", index, {d.device_id: d.sent for d in devices}, generated_s, undrained, peak_rss_mb()))
    stop.wait()
    for d in devices:
        d.stop()
