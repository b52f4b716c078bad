"""Central-side load and fault run: many devices' hits through N ingest workers into PostgreSQL or SQLite.

Driven by ``tools/fleet_sim.py --central`` (see there for the command lines). The devices are
load publishers: each process carries its share of the fleet's topics over a few MQTT v5
connections and keeps every hit until the broker acknowledged it *to a subscriber* (a PUBACK
with "No matching subscribers" is retried, as the device Publisher does), which is the device
outbox's guarantee without one SQLite file per simulated device. The ingest workers are real
``edge alerts --headless`` processes sharing ``$share/edge-ingest/...``. Mid-stream one worker is
SIGKILLed and restarted, and the broker is restarted once. Every hit sent must be stored exactly once.
``--backlog`` measures capacity instead: the workers are paused while every hit queues at the broker,
then drain it (no faults). The report gives the CPU each role used (see docs/central.md, Figures).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from tools.mosquitto import Broker

ROOT = Path(__file__).resolve().parent.parent
NO_MATCHING_SUBSCRIBERS = 0x10
RESEND_AFTER_S = 15.0
STALL_S = 60.0  # once every hit is acknowledged to a subscriber, this long without a new row ends the run
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


class PublisherDiedError(RuntimeError):
    """A load publisher process ended without reporting what it sent (killed, out of memory, crashed)."""


def _templates(devices: list[str], per_device: int) -> list[tuple[str, str, bytes, bytes, bytes]]:
    """Every hit of this share, built before the clock starts: (event_id, topic, head, middle, tail).
    Only the two timestamps are filled in at publish time (head + ts + middle + ts + tail), so the
    simulator spends its CPU on MQTT, not on building JSON, and leaves the cores to the central side."""
    from tools.synthetic import hit_payload

    marker = "1970-01-01T00:00:00.000Z"
    out = []
    for k in range(per_device):
        for device in devices:
            eid = str(uuid.uuid4())
            text = json.dumps(hit_payload(device, event_id=eid, first_seen=marker), separators=(",", ":")).encode()
            head, middle, tail = text.split(marker.encode())
            out.append((eid, f"edge/v1/{device}/hits", head, middle, tail))
        del k
    return out


def _timestamp(now: float) -> bytes:
    return (time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}Z").encode()


def publisher_process(index: int, devices: list[str], cfg: dict[str, Any], go: Any, done: Any, results: Any) -> None:
    """One process's share of the fleet: every device sends a hit each 1/rate s (devices staggered over
    the period, as real cameras are), all hits pre-built; then resend until acknowledged or ``done``."""
    hits = _templates(devices, int(cfg["hits_per_device"]))
    conns = [LoadPublisher(cfg["port"], f"load-{index}-{k}") for k in range(cfg["connections"])]
    results.put(("ready", index))
    go.wait()
    rate = float(cfg["rate"])
    interval = 1.0 / (rate * max(1, len(devices)))  # one hit of this share every ``interval`` seconds
    t0 = time.monotonic()
    last_check = t0
    for n, (eid, topic, head, middle, tail) in enumerate(hits):
        wait = t0 + n * interval - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        ts = _timestamp(time.time())
        conns[n % len(conns)].send(eid, topic, head + ts + middle + ts + tail)
        if time.monotonic() - last_check > 1.0:
            last_check = time.monotonic()
            for c in conns:
                c.resend_stale()
    generated_s = time.monotonic() - t0
    results.put(("generated", index, generated_s))
    deadline = time.monotonic() + cfg["drain_timeout_s"]
    # Until everything was acknowledged, or the central side already holds every hit (``done``).
    while time.monotonic() < deadline and any(c.pending for c in conns) and not done.is_set():
        time.sleep(0.5)
        for c in conns:
            c.resend_stale()
    undelivered = sum(len(c.pending) for c in conns)
    for c in conns:
        c.client.disconnect()
        c.client.loop_stop()
    results.put(("sent", index, [h[0] for h in hits], generated_s, undelivered))


def start_worker(k: int, db: str, port: int, work: Path) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "edge.cli", "alerts", "--db", db, "--broker", f"127.0.0.1:{port}", "--headless",
           "--client-id", f"ingest-{k}", "--group", "edge-ingest"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    log = (work / f"ingest-{k}.log").open("ab")
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, env=env)


class _Publishers:
    """The load publisher processes and what they reported. Their queue is read while they run: a
    process that has put a large list on a multiprocessing queue cannot exit until it is read (the
    old loop waited for them to exit first, hung until its timeout and was killed with no report)."""

    def __init__(self, ctx: Any, shares: list[list[str]], cfg: dict[str, Any], target: Callable[..., None] | None = None) -> None:
        self.go, self.done, self.results = ctx.Event(), ctx.Event(), ctx.Queue()
        self.procs = [ctx.Process(target=target or publisher_process, args=(w, share, cfg, self.go, self.done, self.results),
                                  daemon=True) for w, share in enumerate(shares)]  # fmt: skip
        self.ready: set[int] = set()
        self.generated: dict[int, float] = {}
        self.sent: dict[int, tuple[list[str], float, int]] = {}

    def start(self) -> None:
        for p in self.procs:
            p.start()

    def poll(self, wait: float = 0.0) -> None:
        """Read what the publishers reported; raise :class:`PublisherDiedError` for one that is gone without reporting."""
        deadline = time.monotonic() + wait
        while True:
            try:
                msg = self.results.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            self._handle(msg)
            if time.monotonic() >= deadline:
                break
        for k, p in enumerate(self.procs):
            if k not in self.sent and p.exitcode is not None:
                self._last_words(k, p)

    def _handle(self, msg: tuple[Any, ...]) -> None:
        if msg[0] == "ready":
            self.ready.add(msg[1])
        elif msg[0] == "generated":
            self.generated[msg[1]] = msg[2]
        elif msg[0] == "sent":
            self.sent[msg[1]] = (msg[2], msg[3], msg[4])

    def _last_words(self, k: int, p: Any) -> None:
        """Publisher ``k`` has exited: its report may still be in the pipe; if not, it died."""
        try:
            while k not in self.sent:
                self._handle(self.results.get(timeout=1.0))
            return
        except queue.Empty:
            pass
        how = f"was killed by signal {-p.exitcode}" if p.exitcode < 0 else f"exited with code {p.exitcode}"
        raise PublisherDiedError(f"load publisher {k} {how} before reporting what it sent (out of memory? see dmesg)")

    @property
    def all_sent(self) -> bool:
        return len(self.sent) == len(self.procs)

    def stop(self) -> None:
        self.done.set()
        for p in self.procs:
            p.join(timeout=5)
            if p.is_alive():
                p.terminate()
                p.join(timeout=5)


def _count(store: Any) -> int:
    from sqlalchemy import func, select

    from edge.central.store import schema as t

    with store.engine.connect() as c:
        return int(c.execute(select(func.count()).select_from(t.hits)).scalar_one())


class CpuMeter:
    """CPU seconds each role spends during the hit phase, from /proc/PID/stat (Linux): where the 2 cores go.
    Sampled every half second and just before a process is stopped or killed; PostgreSQL counts the
    backends serving the run's database (not the server's WAL writer or checkpointer)."""

    def __init__(self) -> None:
        self.role: dict[int, str] = {}
        self.base: dict[int, float] = {}
        self.last: dict[int, float] = {}

    @staticmethod
    def cpu_s(pid: int) -> float | None:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime

    def watch(self, role: str, pid: int, *, from_now: bool = True) -> None:
        """Count ``pid`` as ``role``; ``from_now``: only what it spends from here (not its start-up)."""
        if pid in self.role:
            return
        self.role[pid] = role
        self.base[pid] = (self.cpu_s(pid) or 0.0) if from_now else 0.0
        self.last[pid] = self.base[pid]

    def sample(self, pid: int | None = None) -> None:
        for p in [pid] if pid is not None else list(self.role):
            v = self.cpu_s(p)
            if v is not None:
                self.last[p] = v

    def totals(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for pid, role in self.role.items():
            out[role] = out.get(role, 0.0) + self.last[pid] - self.base[pid]
        return {k: round(v, 1) for k, v in sorted(out.items())}


def _pg_backends(store: Any) -> list[int]:
    from sqlalchemy import text

    with store.engine.connect() as c:
        return list(c.execute(text("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")).scalars())


def run(args: argparse.Namespace, work: Path, db: str) -> dict[str, Any]:
    from edge.central.store import Store

    load_before = os.getloadavg()
    broker = Broker(work, extra_conf=BROKER_CONF)
    broker.start()
    store = Store(db)  # creates the schema before the workers race to
    workers = [start_worker(k, db, broker.port, work) for k in range(args.ingest_workers)]
    ids = [f"sim-{i:04d}" for i in range(args.devices)]
    cfg = {"port": broker.port, "rate": args.rate, "hits_per_device": args.hits_per_device, "connections": args.connections,
           "drain_timeout_s": args.timeout}  # fmt: skip
    pubs = _Publishers(mp.get_context("spawn"), [ids[w :: args.workers] for w in range(args.workers)], cfg)
    events: list[str] = []
    expected = args.devices * args.hits_per_device
    drain_from: float | None = None
    cpu = CpuMeter()
    cpu.watch("orchestrator (this process)", os.getpid())
    try:
        pubs.start()
        _wait_workers(store, broker.port, args.ingest_workers, timeout=120)
        while len(pubs.ready) < len(pubs.procs):
            pubs.poll(wait=1.0)
        if args.backlog:  # the workers stay connected (their sessions subscribed) but take nothing until SIGCONT
            for w in workers:
                w.send_signal(signal.SIGSTOP)
        for w in workers:
            cpu.watch("ingest workers", w.pid)
        for p in pubs.procs:
            cpu.watch("simulated devices (publishers)", p.pid)
        cpu.watch("broker (mosquitto)", broker.pid)
        t0 = time.monotonic()
        pubs.go.set()
        kill_at, restart_broker_at = expected // 3, (2 * expected) // 3
        killed = broker_restarted = False
        progress = (0, time.monotonic())  # (stored, when that count was first seen)
        while not pubs.all_sent or _count(store) < expected:
            if pubs.all_sent and time.monotonic() - progress[1] > STALL_S:
                # Every hit was acknowledged to a subscriber and nothing more arrives: what is missing is lost.
                events.append(f"{time.monotonic() - t0:.1f}s: nothing stored for {STALL_S:.0f} s, {progress[0]} of {expected}")
                break
            if time.monotonic() - t0 > args.timeout * 2:
                events.append(f"{time.monotonic() - t0:.1f}s: run timed out with {_count(store)} of {expected} stored")
                pubs.done.set()
                pubs.poll(wait=30.0)
                if not pubs.all_sent:
                    raise PublisherDiedError(f"publishers {sorted(set(range(len(pubs.procs))) - set(pubs.sent))} "
                                        "did not report within 30 s of the timeout")  # fmt: skip
                break
            pubs.poll(wait=0.5)
            n = _count(store)
            if n > progress[0]:
                progress = (n, time.monotonic())
            if store.backend == "postgresql":
                for pid in _pg_backends(store):
                    cpu.watch("postgresql backends", pid, from_now=False)
            cpu.sample()
            if args.backlog and drain_from is None and pubs.all_sent:
                drain_from = time.time()
                events.append(f"{time.monotonic() - t0:.1f}s: {expected} hits queued at the broker; workers resumed (SIGCONT)")
                for w in workers:
                    w.send_signal(signal.SIGCONT)
                progress = (n, time.monotonic())
            if not killed and args.kill_worker and n >= kill_at:
                cpu.sample(workers[0].pid)
                workers[0].send_signal(signal.SIGKILL)
                workers[0].wait()
                events.append(f"{time.monotonic() - t0:.1f}s: SIGKILLed ingest-0 at {n} stored")
                time.sleep(2.0)
                workers[0] = start_worker(0, db, broker.port, work)
                cpu.watch("ingest workers", workers[0].pid, from_now=False)  # its start-up is part of the fault's cost
                events.append(f"{time.monotonic() - t0:.1f}s: restarted ingest-0")
                killed = True
            if not broker_restarted and args.restart_broker and n >= restart_broker_at:
                cpu.sample(broker.pid)
                broker.stop()
                events.append(f"{time.monotonic() - t0:.1f}s: broker stopped at {n} stored")
                time.sleep(1.0)
                broker.start()
                cpu.watch("broker (mosquitto)", broker.pid, from_now=False)
                events.append(f"{time.monotonic() - t0:.1f}s: broker restarted")
                broker_restarted = True
            for k, w in enumerate(workers):
                if w.poll() is not None:  # as systemd's Restart= would (a worker started while the broker was down exits)
                    events.append(f"{time.monotonic() - t0:.1f}s: ingest-{k} exited ({w.returncode}), started again")
                    workers[k] = start_worker(k, db, broker.port, work)
                    cpu.watch("ingest workers", workers[k].pid, from_now=False)
            if n >= expected:
                pubs.done.set()  # stop re-sending: the central side holds every hit
        pubs.done.set()
        hit_phase_s = time.monotonic() - t0
        cpu.sample()
    finally:
        for w in workers:
            w.send_signal(signal.SIGCONT)
            w.send_signal(signal.SIGTERM)
        for w in workers:
            try:
                w.wait(timeout=30)
            except subprocess.TimeoutExpired:
                w.kill()
        pubs.stop()
        broker.stop()
    out = _report(args, store, pubs, drain_from)
    totals = cpu.totals()
    out["cpu_seconds"] = {"hit_phase_wall_s": round(hit_phase_s, 1), **totals, "all": round(sum(totals.values()), 1),
                          "available (wall x cores)": round(hit_phase_s * (os.cpu_count() or 1), 1)}  # fmt: skip
    store.close()
    out.update(events=events, load_average_before=[round(x, 2) for x in load_before],
               load_average_after=[round(x, 2) for x in os.getloadavg()], cpus=os.cpu_count())  # fmt: skip
    return out


def _report(args: argparse.Namespace, store: Any, pubs: _Publishers, drain_from: float | None) -> dict[str, Any]:
    from sqlalchemy import select

    from edge.central.store import schema as t

    sent = [eid for lst, _g, _u in pubs.sent.values() for eid in lst]
    with store.engine.connect() as c:
        rows = c.execute(
            select(t.hits.c.event_id, t.hits.c.first_seen, t.hits.c.stored_at).where(t.hits.c.device_id != "probe")
        ).all()
    got = {r[0] for r in rows}
    sent_set = set(sent)
    lat = sorted((r[2] - r[1]).total_seconds() * 1000 for r in rows if r[0] in sent_set)
    stored = sorted(r[2].timestamp() for r in rows)
    span = stored[-1] - stored[0] if len(stored) > 1 else 0.0
    per_second: dict[int, int] = {}
    for s in stored:
        per_second[int(s)] = per_second.get(int(s), 0) + 1
    # Whole seconds only (the first and the last are partial).
    full = sorted(list(per_second.values())[1:-1])
    out: dict[str, Any] = {
        "mode": "backlog drain" if args.backlog else "live",
        "backend": store.backend,
        "devices": args.devices, "ingest_workers": args.ingest_workers, "publisher_processes": args.workers,
        "hits_sent": len(sent_set), "hits_stored_unique": len(got & sent_set), "hits_lost": len(sent_set - got),
        "duplicates_stored": len(rows) - len(got), "unexpected": len(got - sent_set),
        "publisher_unacknowledged": sum(u for _l, _g, u in pubs.sent.values()),
        "offered_hits_per_s": round(args.devices * args.rate, 1),
        "generation_s": round(max(g for _l, g, _u in pubs.sent.values()), 1) if pubs.sent else None,
        "ingest_hits_per_s": round(len(rows) / span, 1) if span else None,
        "stored_per_second": {"min": full[0], "p10": full[len(full) // 10], "p50": full[len(full) // 2], "max": full[-1]}
        if full else None,
        "publish_to_commit_ms": _percentiles(lat),
    }  # fmt: skip
    if drain_from is not None and stored:
        out["drain_s"] = round(stored[-1] - drain_from, 2)
        out["drain_hits_per_s"] = round(len(rows) / (stored[-1] - drain_from), 1)
    return out


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
    g.add_argument("--connections", type=int, default=2, help="MQTT connections per publisher process")
    g.add_argument("--no-faults", action="store_true", help="no worker SIGKILL and no broker restart")
    g.add_argument("--backlog", action="store_true",
                   help="capacity, not a live figure: the workers are paused (SIGSTOP, still subscribed) while every hit "
                        "is published and queued at the broker, then resumed; reports the drain rate (no faults)")  # fmt: skip


def main_central(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    if args.quick:
        args.devices, args.hits_per_device, args.rate, args.ingest_workers, args.workers, args.timeout = 100, 6, 2.0, 2, 2, 120
    args.kill_worker = args.restart_broker = not (args.no_faults or args.backlog)
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
