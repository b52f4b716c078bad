"""Central-side load and fault run: many devices' hits through N ingest workers into PostgreSQL or SQLite.

Driven by ``tools/fleet_sim.py --central`` (see there for the command lines). The devices are
load publishers: each process carries its share of the fleet's topics over a few MQTT v5
connections and keeps every hit until the broker acknowledged it *to a subscriber* (a PUBACK
with "No matching subscribers" is retried, as the device Publisher does), which is the device
outbox's guarantee without one SQLite file per simulated device. The ingest workers are real
``edge alerts --headless`` processes sharing ``$share/edge-ingest/...``. Mid-stream one worker is
SIGKILLed and restarted, and the broker is restarted once. Every hit sent must be stored exactly once.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from tools.mosquitto import Broker

ROOT = Path(__file__).resolve().parent.parent
NO_MATCHING_SUBSCRIBERS = 0x10
RESEND_AFTER_S = 15.0
BROKER_CONF = "max_queued_messages 1000000\nmax_inflight_messages 1000\nmessage_size_limit 2097152\n"


class LoadPublisher:
    """One MQTT connection publishing hits for many device topics; keeps each until a subscriber took it."""

    def __init__(self, port: int, client_id: str) -> None:
        self.pending: dict[str, tuple[str, bytes, float]] = {}  # event_id -> (topic, payload, last sent)
        self.by_mid: dict[int, str] = {}
        self.lock = threading.Lock()
        self.client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        self.client.max_inflight_messages_set(200)
        self.client.max_queued_messages_set(0)
        self.client.reconnect_delay_set(1, 2)
        self.client.on_publish = self._on_publish
        self.client.connect("127.0.0.1", port, keepalive=30)
        self.client.loop_start()

    def _on_publish(self, _c: Any, _u: Any, mid: int, reason: Any, _p: Any) -> None:
        with self.lock:
            eid = self.by_mid.pop(mid, None)
            if eid is None or eid not in self.pending:
                return
            if reason.is_failure or reason.value == NO_MATCHING_SUBSCRIBERS:
                topic, payload, _ = self.pending[eid]
                self.pending[eid] = (topic, payload, time.monotonic() - RESEND_AFTER_S + 2.0)  # again in 2 s
            else:
                del self.pending[eid]

    def send(self, event_id: str, topic: str, payload: bytes) -> None:
        with self.lock:
            self.pending[event_id] = (topic, payload, time.monotonic())
        info = self.client.publish(topic, payload, qos=1)
        with self.lock:
            self.by_mid[info.mid] = event_id

    def resend_stale(self) -> int:
        """Publish again what was not acknowledged in time (lost in a broker restart, or no subscriber then)."""
        now = time.monotonic()
        with self.lock:
            stale = [(eid, t, p) for eid, (t, p, sent) in self.pending.items() if now - sent > RESEND_AFTER_S]
        for eid, topic, payload in stale:
            self.send(eid, topic, payload)
        return len(stale)


def publisher_process(index: int, devices: list[str], cfg: dict[str, Any], go: Any, done: Any, results: Any) -> None:
    from tools.synthetic import hit_payload

    conns = [LoadPublisher(cfg["port"], f"load-{index}-{k}") for k in range(cfg["connections"])]
    go.wait()
    rate, per_device = float(cfg["rate"]), int(cfg["hits_per_device"])
    t0 = time.monotonic()
    schedule = sorted(
        (t0 + (i / max(1, len(devices))) / rate + k / rate, i) for i in range(len(devices)) for k in range(per_device)
    )
    sent: list[str] = []
    publish_wall: dict[str, float] = {}
    last_check = time.monotonic()
    for due, i in schedule:
        wait = due - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        device = devices[i]
        eid = str(uuid.uuid4())
        now = time.time()
        first_seen = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{int(now * 1000) % 1000:03d}Z"
        payload = json.dumps(hit_payload(device, event_id=eid, first_seen=first_seen), separators=(",", ":")).encode()
        conns[i % len(conns)].send(eid, f"edge/v1/{device}/hits", payload)
        sent.append(eid)
        publish_wall[eid] = now
        if time.monotonic() - last_check > 1.0:
            last_check = time.monotonic()
            for c in conns:
                c.resend_stale()
    generated_s = time.monotonic() - t0
    deadline = time.monotonic() + cfg["drain_timeout_s"]
    # Until everything was acknowledged, or the central side already holds every hit (``done``).
    while time.monotonic() < deadline and any(c.pending for c in conns) and not done.is_set():
        time.sleep(1.0)
        for c in conns:
            c.resend_stale()
    undelivered = sum(len(c.pending) for c in conns)
    for c in conns:
        c.client.disconnect()
        c.client.loop_stop()
    results.put((index, sent, generated_s, undelivered))


def start_worker(k: int, db: str, port: int, work: Path) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "edge.cli", "alerts", "--db", db, "--broker", f"127.0.0.1:{port}", "--headless",
           "--client-id", f"ingest-{k}", "--group", "edge-ingest"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    log = (work / f"ingest-{k}.log").open("ab")
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, env=env)


def stored_ids(store: Any) -> tuple[int, int]:
    from sqlalchemy import func, select

    from edge.central.store import schema as t

    with store.engine.connect() as c:
        total, distinct = c.execute(select(func.count(), func.count(t.hits.c.event_id.distinct()))).one()
    return int(total), int(distinct)


def run(args: argparse.Namespace, work: Path, db: str) -> dict[str, Any]:
    from edge.central.store import Store
    from edge.central.store import schema as t

    load_before = os.getloadavg()
    broker = Broker(work, extra_conf=BROKER_CONF)
    broker.start()
    store = Store(db)  # creates the schema before the workers race to
    workers = [start_worker(k, db, broker.port, work) for k in range(args.ingest_workers)]
    ctx = mp.get_context("spawn")
    go, done, results = ctx.Event(), ctx.Event(), ctx.Queue()
    ids = [f"sim-{i:04d}" for i in range(args.devices)]
    shares = [ids[w :: args.workers] for w in range(args.workers)]
    cfg = {"port": broker.port, "rate": args.rate, "hits_per_device": args.hits_per_device, "connections": args.connections,
           "drain_timeout_s": args.timeout}  # fmt: skip
    procs = [
        ctx.Process(target=publisher_process, args=(w, share, cfg, go, done, results), daemon=True)
        for w, share in enumerate(shares)
    ]
    events: list[str] = []
    try:
        for p in procs:
            p.start()
        _wait_workers(store, broker.port, args.ingest_workers, timeout=120)
        expected = args.devices * args.hits_per_device
        t0 = time.monotonic()
        go.set()
        kill_at, restart_broker_at = expected // 3, (2 * expected) // 3
        killed = broker_restarted = False
        while time.monotonic() - t0 < args.timeout * 2:
            _total, n = stored_ids(store)
            if not killed and args.kill_worker and n >= kill_at:
                workers[0].send_signal(signal.SIGKILL)
                workers[0].wait()
                events.append(f"{time.monotonic() - t0:.1f}s: SIGKILLed ingest-0 at {n} stored")
                time.sleep(2.0)
                workers[0] = start_worker(0, db, broker.port, work)
                events.append(f"{time.monotonic() - t0:.1f}s: restarted ingest-0")
                killed = True
            if not broker_restarted and args.restart_broker and n >= restart_broker_at:
                broker.stop()
                events.append(f"{time.monotonic() - t0:.1f}s: broker stopped at {n} stored")
                time.sleep(1.0)
                broker.start()
                events.append(f"{time.monotonic() - t0:.1f}s: broker restarted")
                broker_restarted = True
            for k, w in enumerate(workers):
                if w.poll() is not None:  # as systemd's Restart= would (a worker started while the broker was down exits)
                    events.append(f"{time.monotonic() - t0:.1f}s: ingest-{k} exited ({w.returncode}), started again")
                    workers[k] = start_worker(k, db, broker.port, work)
            if n >= expected:
                done.set()
            if n >= expected and all(not p.is_alive() for p in procs):
                break
            time.sleep(0.5)
        sent: list[str] = []
        undelivered = 0
        gen_s: list[float] = []
        for _ in procs:
            _i, s, g, u = results.get(timeout=60)
            sent += s
            gen_s.append(g)
            undelivered += u
        # Everything the publishers saw acknowledged is committed by now, or it is lost: give the workers a moment.
        deadline = time.monotonic() + 60
        while stored_ids(store)[1] < len(sent) and time.monotonic() < deadline:
            time.sleep(0.5)
    finally:
        for w in workers:
            w.send_signal(signal.SIGTERM)
        for w in workers:
            try:
                w.wait(timeout=30)
            except subprocess.TimeoutExpired:
                w.kill()
        for p in procs:
            p.join(timeout=5)
            if p.is_alive():
                p.terminate()
        broker.stop()
    from sqlalchemy import select

    with store.engine.connect() as c:
        rows = c.execute(
            select(t.hits.c.event_id, t.hits.c.first_seen, t.hits.c.stored_at).where(t.hits.c.device_id != "probe")
        ).all()
    total, distinct = stored_ids(store)
    got = {r[0] for r in rows}
    sent_set = set(sent)
    lat = sorted((r[2] - r[1]).total_seconds() * 1000 for r in rows if r[0] in sent_set)
    stored = sorted(r[2] for r in rows)
    span = (stored[-1] - stored[0]).total_seconds() if len(stored) > 1 else 0.0
    store.close()
    return {
        "backend": "postgresql" if db.startswith("postgresql") else "sqlite",
        "devices": args.devices, "ingest_workers": args.ingest_workers, "hits_sent": len(sent_set),
        "hits_stored_unique": len(got & sent_set), "hits_lost": len(sent_set - got), "duplicates_stored": total - distinct,
        "unexpected": len(got - sent_set - {""}), "publisher_unacknowledged": undelivered,
        "offered_hits_per_s": round(args.devices * args.rate, 1), "generation_s": round(max(gen_s), 1) if gen_s else None,
        "ingest_hits_per_s": round(len(rows) / span, 1) if span else None,
        "first_seen_to_stored_ms": _percentiles(lat), "events": events,
        "load_average_before": [round(x, 2) for x in load_before], "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "cpus": os.cpu_count(),
    }  # fmt: skip


def _wait_workers(store: Any, port: int, n: int, timeout: float) -> None:
    """Every worker is subscribed once probes sent now are all stored (the shared group spreads them)."""
    from edge.central.store import schema as t

    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="load-probe", protocol=mqtt.MQTTv5)
    client.connect("127.0.0.1", port)
    client.loop_start()
    deadline = time.monotonic() + timeout
    from sqlalchemy import func, select

    while time.monotonic() < deadline:
        for k in range(4 * n):
            doc = {"schema": "edge.status/1", "device_id": f"probe-{k}", "state": "online"}
            client.publish(f"edge/v1/probe-{k}/status", json.dumps(doc), qos=1).wait_for_publish(5)
        time.sleep(1.0)
        with store.engine.connect() as c:
            seen = c.execute(
                select(func.count()).select_from(t.device_status).where(t.device_status.c.device_id.like("probe-%"))
            ).scalar()
        if seen == 4 * n:
            break
    client.disconnect()
    client.loop_stop()
    time.sleep(2.0)  # the workers' retained-status snapshot subscription is over by now


def _percentiles(values: list[float]) -> dict[str, float | None]:
    out: dict[str, float | None] = {"p50": None, "p90": None, "p99": None, "max": None}
    for q, f in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("max", 1.0)):
        if values:
            out[q] = round(values[min(len(values) - 1, int(f * len(values)))], 1)
    return out


def add_arguments(ap: argparse.ArgumentParser) -> None:
    g = ap.add_argument_group("central side (--central)")
    g.add_argument("--central", action="store_true", help="the central-side run: ingest workers into a store, with faults")
    g.add_argument("--backend", choices=["postgresql", "sqlite"], default="postgresql", help="store for --central")
    g.add_argument("--pg-admin", default="host=127.0.0.1 port=5432 user=postgres dbname=postgres",
                   help="where --central creates (and then drops) its PostgreSQL database")  # fmt: skip
    g.add_argument("--ingest-workers", type=int, default=4, help="edge alerts --headless processes sharing the topics")
    g.add_argument("--connections", type=int, default=5, help="MQTT connections per publisher process")
    g.add_argument("--no-faults", action="store_true", help="no worker SIGKILL and no broker restart")


def main_central(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    if args.quick:
        args.devices, args.hits_per_device, args.rate, args.ingest_workers, args.workers, args.timeout = 100, 6, 2.0, 2, 2, 120
    args.kill_worker = args.restart_broker = not args.no_faults
    if args.backend == "sqlite":
        return run(args, work, str(work / "central.db"))
    import psycopg

    name = f"edge_load_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(args.pg_admin, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        return run(args, work, f"postgresql://postgres@127.0.0.1:5432/{name}")
    finally:
        with psycopg.connect(args.pg_admin, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
