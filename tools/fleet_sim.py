#!/usr/bin/env python3
"""Fleet simulation: N devices (the daemon's real publishing half) against one Mosquitto on loopback.

python tools/fleet_sim.py --devices 200 --hits-per-device 50 --rate 2 --watchlist-entries 100000 --json out.json
python tools/fleet_sim.py --quick --json out.json        # reduced scale, well under a minute
python tools/fleet_sim.py --central --devices 2000 --hits-per-device 30 --rate 0.6 --ingest-workers 4 --backend postgresql
python tools/fleet_sim.py --central --devices 2000 --hits-per-device 10 --rate 5 --workers 2 --backlog  # drain capacity
python tools/fleet_sim.py --central --quick               # the central side: see tools/central_load.py

1. Fan-out: a signed watchlist of random unit embeddings is published (``edge watchlist publish``,
   retained); every device assembles, verifies, applies it to its own SQLite store, builds its
   matcher and acks through its outbox; ``edge alerts --headless`` records the acks.
2. Hits: every device commits hits to its outbox at ``--rate`` per second and its Publisher sends
   them (QoS 1); some hits are sent again (a device replaying after a crash) and some forged or
   malformed messages are published, which the console must refuse.
3. Report: hits/s ingested, latency first_seen → stored centrally, fan-out time and memory, lost
   and duplicate counts. Exit 1 when a hit is lost, stored twice, a forged message accepted or an ack failed.
Loopback only; every process, file and the broker are the tool's own and go when it ends.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402

from edge.watchlist.bundle import write_bundle  # noqa: E402
from edge.watchlist.keys import generate_keypair, load_private_key  # noqa: E402
from tools import central_load  # noqa: E402
from tools.fleet_device import run_worker  # noqa: E402
from tools.mosquitto import Broker  # noqa: E402
from tools.synthetic import random_entries, signed_bundle  # noqa: E402

# A central broker serving a fleet must queue more than Mosquitto's default 1000 messages for a slow
# subscriber, or it drops QoS 1 messages for it: this is the setting the simulation found necessary.
BROKER_CONF = "max_queued_messages 1000000\nmax_inflight_messages 100\nmessage_size_limit 2097152\n"


def percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p90": None, "p99": None, "max": None}
    v = sorted(values)

    def at(q: float) -> float:
        return round(v[min(len(v) - 1, int(q * len(v)))], 1)

    return {"p50": at(0.5), "p90": at(0.9), "p99": at(0.99), "max": round(v[-1], 1)}


def start_console(db: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "edge.cli", "alerts", "--db", str(db), "--broker", f"127.0.0.1:{port}", "--headless"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen(cmd, stdout=log.open("ab"), stderr=subprocess.STDOUT, env=env)


def query(db: Path, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db, timeout=30) as c:
        return c.execute(sql).fetchall()


def wait_console_ready(client: Any, db: Path, timeout: float = 30) -> None:
    """The console is subscribed once a status sent now is stored."""
    probe = {"schema": "edge.status/1", "device_id": "probe", "state": "online"}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        client.publish("edge/v1/probe/status", json.dumps(probe), qos=1).wait_for_publish(5)
        time.sleep(0.3)
        if db.exists():
            try:
                if query(db, "SELECT COUNT(*) FROM devices WHERE device_id = 'probe'")[0][0]:
                    return
            except sqlite3.OperationalError:
                pass
    raise RuntimeError("edge alerts did not come up")


def forged_messages(device: str, other: str) -> list[tuple[str, bytes]]:
    """What a compromised or broken device might publish: every one must be refused, none stored as a hit."""
    from edge.daemon import iso
    from tools.synthetic import hit_payload

    now = iso(time.time())
    impersonated = hit_payload(other, first_seen=now)  # claims another device's id on its own topic
    wrong_schema = {**hit_payload(device, first_seen=now), "schema": "edge.status/1"}
    no_score = hit_payload(device, first_seen=now)
    del no_score["score"]
    bad_type = {**hit_payload(device, first_seen=now), "score": "0.99"}
    return [
        (f"edge/v1/{device}/hits", json.dumps(impersonated).encode()),
        (f"edge/v1/{device}/hits", json.dumps(wrong_schema).encode()),
        (f"edge/v1/{device}/hits", json.dumps(no_score).encode()),
        (f"edge/v1/{device}/hits", json.dumps(bad_type).encode()),
        (f"edge/v1/{device}/hits", b"\xff\xfe not json"),
        (f"edge/v1/{device}/hits", b"[1, 2, 3]"),
    ]


def simulate(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from edge.cli import main as edge_main
    from edge.publish import BrokerOptions, connect_blocking, make_client

    t_start = time.monotonic()
    broker = Broker(work, extra_conf=BROKER_CONF)
    broker.start()
    procs: list[Any] = []
    console = start_console(work / "alerts.db", broker.port, work / "alerts.log")
    try:
        client = make_client(BrokerOptions("127.0.0.1", broker.port, client_id="fleet-sim-injector"))
        connect_blocking(client, BrokerOptions("127.0.0.1", broker.port))
        wait_console_ready(client, work / "alerts.db")
        # The bundle: real signing and chunking code, random unit embeddings.
        generate_keypair(work / "keys")
        key: Ed25519PrivateKey = load_private_key(work / "keys" / "watchlist.key")
        t0 = time.monotonic()
        bundle = signed_bundle(random_entries(args.watchlist_entries, seed=7), key, name="fleet", version=1)
        build_s = time.monotonic() - t0
        write_bundle(work / "bundle", bundle.manifest_bytes, [bundle.chunks[i] for i in sorted(bundle.chunks)], bundle.signature)
        bundle_bytes = sum(len(c) for c in bundle.chunks.values()) + len(bundle.manifest_bytes)
        assert edge_main(["watchlist", "publish", str(work / "bundle"), "--broker", f"127.0.0.1:{broker.port}",
                          "--public-key", str(work / "keys" / "watchlist.pub")]) == 0  # fmt: skip
        published_wall = time.time()
        ctx = mp.get_context("spawn")
        start_hits, stop, results = ctx.Event(), ctx.Event(), ctx.Queue()
        cfg = {
            "workdir": str(work / "devices"), "port": broker.port, "public_key": str(work / "keys" / "watchlist.pub"),
            "watchlist": "fleet", "fanout_concurrency": args.fanout_concurrency, "fanout_timeout_s": args.timeout,
            "rate": args.rate, "hits_per_device": args.hits_per_device, "drain_timeout_s": args.timeout,
        }  # fmt: skip
        ids = [f"sim-{i:04d}" for i in range(args.devices)]
        shares = [ids[w :: args.workers] for w in range(args.workers)]
        t_fan = time.monotonic()
        for w, share in enumerate(shares):
            p = ctx.Process(target=run_worker, args=(w, share, cfg, start_hits, stop, results), daemon=True)
            p.start()
            procs.append(p)
        fan: dict[str, tuple[bool, float | None, str]] = {}
        rss: list[tuple[float, float, int]] = []
        broker_rss = [broker.rss_mb() or 0.0]
        while len(fan) < args.devices or len(rss) < len(procs):
            kind, *rest = results.get(timeout=args.timeout + 60)
            if kind == "fanout":
                fan[rest[0]] = (rest[1], rest[2], rest[3])
            elif kind == "fanout_rss":
                rss.append((rest[1], rest[2], rest[3]))
            broker_rss.append(broker.rss_mb() or 0.0)
        fan_s = time.monotonic() - t_fan
        # Phase 2: hits, replays and forgeries.
        t_hits = time.monotonic()
        start_hits.set()
        sent: dict[str, list[str]] = {}
        gen_s: list[float] = []
        undrained = 0
        forged = forged_messages(ids[0], ids[-1])
        for topic, payload in forged:
            client.publish(topic, payload, qos=1).wait_for_publish(10)
        for _ in procs:
            kind, *rest = results.get(timeout=args.timeout * 2 + 120)
            while kind != "hits":
                kind, *rest = results.get(timeout=args.timeout * 2 + 120)
            sent.update(rest[1])
            gen_s.append(rest[2])
            undrained += rest[3]
            broker_rss.append(broker.rss_mb() or 0.0)
        all_sent = {e for lst in sent.values() for e in lst}
        db = work / "alerts.db"
        # Replays: the same hits again, as a device that crashed after sending but before deleting would.
        replay = query(db, f"SELECT device_id, payload FROM hits ORDER BY RANDOM() LIMIT {args.replays}")
        for device, payload in replay:
            client.publish(f"edge/v1/{device}/hits", payload.encode(), qos=1).wait_for_publish(10)
        deadline = time.monotonic() + args.timeout
        while time.monotonic() < deadline:
            n = query(db, "SELECT COUNT(*) FROM hits WHERE device_id != 'probe'")[0][0]
            dups = (query(db, "SELECT value FROM counters WHERE name = 'duplicates'") or [(0,)])[0][0]
            if n >= len(all_sent) and dups >= len(replay):
                break
            time.sleep(0.5)
        hits_s = time.monotonic() - t_hits
        client.disconnect()
        client.loop_stop()
    finally:
        stop_all(procs, console, broker)
    return report(args, work, fan, rss, broker_rss, all_sent, sent, forged, replay, locals_for_report(
        fan_s=fan_s, hits_s=hits_s, gen_s=gen_s, undrained=undrained, build_s=build_s, bundle_bytes=bundle_bytes,
        published_wall=published_wall, total_s=time.monotonic() - t_start, chunks=len(bundle.chunks)))  # fmt: skip


def locals_for_report(**kw: Any) -> dict[str, Any]:
    return kw


def stop_all(procs: list[Any], console: subprocess.Popen[bytes], broker: Broker) -> None:
    for p in procs:
        p.join(timeout=0.1)
    for p in procs:
        if p.is_alive():
            p.terminate()
            p.join(timeout=10)
    console.send_signal(signal.SIGTERM)
    try:
        console.wait(timeout=15)
    except subprocess.TimeoutExpired:
        console.kill()
    broker.stop()


def report(
    args: argparse.Namespace, work: Path, fan: dict[str, tuple[bool, float | None, str]], rss: list[tuple[float, float, int]],
    broker_rss: list[float], all_sent: set[str], sent: dict[str, list[str]], forged: list[tuple[str, bytes]],
    replay: list[tuple[Any, ...]], m: dict[str, Any],
) -> dict[str, Any]:  # fmt: skip
    db = work / "alerts.db"
    rows = query(db, "SELECT event_id, first_seen, received_at FROM hits WHERE device_id != 'probe'")
    got = {r[0] for r in rows}
    total_rows = query(db, "SELECT COUNT(*), COUNT(DISTINCT event_id) FROM hits")[0]
    dups = (query(db, "SELECT value FROM counters WHERE name = 'duplicates'") or [(0,)])[0][0]
    rejected = query(db, "SELECT COUNT(*) FROM rejected")[0][0]
    acks = query(db, "SELECT outcome, COUNT(*), MAX(received_at) FROM acks GROUP BY outcome")
    acks_ok = sum(n for o, n, _ in acks if o == "applied")
    last_ack = max((t for _, _, t in acks), default=None)
    lat = [(r[2] - datetime.fromisoformat(r[1].replace("Z", "+00:00")).timestamp()) * 1000 for r in rows]
    received = sorted(r[2] for r in rows)
    span = received[-1] - received[0] if len(received) > 1 else 0.0
    apply_s = [s for ok, s, _ in fan.values() if s is not None]
    out = {
        "devices": args.devices,
        "workers": args.workers,
        "hits_sent": len(all_sent),
        "hits_ingested_unique": len(got & all_sent),
        "hits_lost": len(all_sent - got),
        "hits_unexpected": len(got - all_sent),
        "replays_sent": len(replay),
        "duplicates_received": dups,
        "duplicates_after_dedup": total_rows[0] - total_rows[1],
        "forged_sent": len(forged),
        "forged_refused": rejected,
        "ingest_hits_per_s": round(len(got) / span, 1) if span else None,
        "offered_hits_per_s": round(args.devices * args.rate, 1),
        "latency_ms": percentiles(lat),
        "undrained_devices": m["undrained"],
        "fanout": {
            "entries": args.watchlist_entries,
            "bundle_bytes": m["bundle_bytes"],
            "chunks": m["chunks"],
            "build_and_sign_s": round(m["build_s"], 2),
            "concurrency_per_worker": args.fanout_concurrency,
            "seconds_to_all_acked": round(last_ack - m["published_wall"], 1) if last_ack and acks_ok == args.devices else None,
            "device_apply_s": percentiles(apply_s),
            "acks_ok": acks_ok,
            "acks_failed": sum(n for o, n, _ in acks if o != "applied") + sum(1 for ok, _, _ in fan.values() if not ok),
            "failures": sorted({reason for ok, _, reason in fan.values() if not ok}),
            "worker_peak_rss_mb": [round(r[0], 1) for r in rss],
            "device_peak_rss_mb_estimate": round(max((r[0] - r[1]) / min(args.fanout_concurrency, r[2]) for r in rss), 1)
            if rss
            else None,
            "broker_peak_rss_mb": round(max(broker_rss), 1),
        },
        "phase_seconds": {"fanout": round(m["fan_s"], 1), "hits": round(m["hits_s"], 1)},
        "seconds": round(m["total_s"], 1),
    }
    out["passed"] = (
        out["hits_lost"] == 0 and out["duplicates_after_dedup"] == 0 and out["hits_unexpected"] == 0
        and out["forged_refused"] == out["forged_sent"] and out["fanout"]["acks_failed"] == 0 and acks_ok == args.devices
    )  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", type=int, default=200)
    ap.add_argument("--hits-per-device", type=int, default=50)
    ap.add_argument("--rate", type=float, default=2.0, help="hits per second per device")
    ap.add_argument("--watchlist-entries", type=int, default=100_000)
    ap.add_argument("--workers", type=int, default=4, help="processes the devices are spread over")
    ap.add_argument("--fanout-concurrency", type=int, default=10, help="devices per worker applying the bundle at once")
    ap.add_argument("--replays", type=int, default=100, help="hits sent a second time (must be dropped as duplicates)")
    ap.add_argument("--timeout", type=float, default=600, help="bound on each phase (seconds)")
    ap.add_argument("--quick", action="store_true", help="20 devices, 10 hits each, 5k entries: a release check under a minute")
    ap.add_argument("--keep", type=Path, help="keep the work folder (broker log, alerts db) here")
    ap.add_argument("--json", type=Path, help="write the report here")
    central_load.add_arguments(ap)
    args = ap.parse_args(argv)
    if args.central:
        work = Path(tempfile.mkdtemp(prefix="central-load-"))
        try:
            out = central_load.main_central(args, work)
        except Exception as exc:  # whatever went wrong: say so and exit non-zero, never silently
            print(f"fleet_sim --central: the run failed, no report: {exc.__class__.__name__}: {exc} "
                  f"(worker and broker logs: rerun with --keep DIR)", file=sys.stderr)  # fmt: skip
            return 2
        finally:
            if args.keep:
                shutil.copytree(work, args.keep, dirs_exist_ok=True)
            shutil.rmtree(work, ignore_errors=True)
        out["passed"] = (
            out["hits_lost"] == 0 and out["duplicates_stored"] == 0 and out["hits_sent"] == args.devices * args.hits_per_device
        )
        text = json.dumps(out, indent=2)
        print(text)
        if args.json:
            args.json.write_text(text + "\n")
        return 0 if out["passed"] else 1
    if args.quick:
        args.devices, args.hits_per_device, args.rate, args.watchlist_entries = 20, 10, 2.0, 5000
        args.workers, args.fanout_concurrency, args.replays, args.timeout = 2, 10, 20, 120
    args.workers = max(1, min(args.workers, args.devices))
    work = Path(tempfile.mkdtemp(prefix="fleet-sim-"))
    try:
        out = simulate(args, work)
    finally:
        if args.keep:
            shutil.rmtree(work / "devices", ignore_errors=True)  # device databases: large, and not needed after
            shutil.copytree(work, args.keep, dirs_exist_ok=True)
        shutil.rmtree(work, ignore_errors=True)
    text = json.dumps(out, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0 if out["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
