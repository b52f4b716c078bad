#!/usr/bin/env python3
"""Fault injection: scripted runs of the real components under hostile conditions, each with its figure.

python tools/faults.py --scenario all --json faults.json            # full runs (100 broker restarts, 100 SIGKILLs)
python tools/faults.py --scenario sigkill --iterations 10 --json f.json
python tools/faults.py --quick --json faults.json                   # a few iterations each

Scenarios: broker-restart (Mosquitto restarted during load), sigkill (the daemon killed at random
points and restarted), disk-full (SQLITE_FULL through a page cap on the outbox database), corrupt-db
(bit rot, truncation, garbage: detected, moved aside, rebuilt from the retained bundle), clock (the
wall clock jumping both ways during load), frames (corrupt and wrongly sized frames in a recording).
Every run counts unique event_ids at a real ``edge alerts`` console against what was generated.
Exit 1 when a scenario fails. Loopback only; everything is made and removed in a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tools.fault_kit import Console, broker, daemon_config, daemon_kit, devices, start_daemon, tally  # noqa: E402


def broker_restart(work: Path, iterations: int) -> dict[str, Any]:
    """Four devices send 40 hits/s between them while the broker is restarted ``iterations`` times."""
    b = broker(work)
    console = Console(work, b.port).start()
    devs = devices(work, b.port, 4)
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            for d in devs:
                d.send_hit()
            time.sleep(0.1)

    t = threading.Thread(target=load)
    t.start()
    t0 = time.monotonic()
    try:
        for _ in range(iterations):
            time.sleep(random.uniform(0.2, 1.0))
            b.restart()
        stop.set()
        t.join()
        drained = all(d.publisher.wait_drained(120) for d in devs)
        expected = {e for d in devs for e in d.sent}
        console.wait_for(expected, 60)
        return tally(expected, console, {"iterations": iterations, "broker_starts": b.starts, "outboxes_drained": drained,
                                         "seconds": round(time.monotonic() - t0, 1), "ok": drained})  # fmt: skip
    finally:
        stop.set()
        for d in devs:
            d.stop()
        console.stop()
        b.stop()


def stored_hits(db: Path) -> set[str]:
    import sqlite3

    with sqlite3.connect(db) as c:
        return {json.loads(r[0])["event_id"] for r in c.execute("SELECT detail FROM audit WHERE kind = 'hit'")}


def sigkill(work: Path, iterations: int) -> dict[str, Any]:
    """Per iteration a new recording: the daemon is SIGKILLed at a random moment, then restarted to finish it."""
    b = broker(work)
    console = Console(work, b.port).start()
    kit = daemon_kit(work)
    run = work / "sigkill"
    exits: list[int] = []
    killed_after: list[float] = []
    t0 = time.monotonic()
    try:
        for i in range(iterations):
            clip = run / "clips" / f"c{i:03d}.avi"
            clip.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(kit / "clip.avi", clip)
            cfg = daemon_config(kit, run, b.port, [str(clip)])
            proc = start_daemon(cfg, run / f"daemon-{i:03d}-killed.log")
            delay = random.uniform(0.3, 6.0)  # start-up, model load, frames, commits, publishes: anywhere
            time.sleep(delay)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            killed_after.append(round(delay, 2))
            proc = start_daemon(cfg, run / f"daemon-{i:03d}-rerun.log")
            exits.append(proc.wait(timeout=180))
        expected = stored_hits(run / "data" / "edge.db")
        console.wait_for(expected, 30)
        damaged = sum("is damaged" in p.read_text() for p in run.glob("daemon-*.log"))
        ok = all(e == 0 for e in exits) and len(expected) == iterations and damaged == 0
        return tally(expected, console, {"iterations": iterations, "recordings": iterations, "rerun_exit_codes_nonzero":
                                         sum(e != 0 for e in exits), "databases_found_damaged": damaged,
                                         "kill_after_s": {"min": min(killed_after), "max": max(killed_after)},
                                         "seconds": round(time.monotonic() - t0, 1), "ok": ok})  # fmt: skip
    finally:
        console.stop()
        b.stop()


def _daemon_in_process(work: Path, port: int) -> Any:
    from edge.config import load_settings
    from edge.daemon import Daemon

    kit = daemon_kit(work)
    cfg = daemon_config(kit, work / "diskfull", port, [str(work / "no-camera.avi")], stop_at_end=False)
    return Daemon(load_settings(cfg))


def disk_full(work: Path, iterations: int) -> dict[str, Any]:
    """The broker is away, hits pile up until the disk is full, more are held in memory; then it all drains."""
    from edge.daemon import iso
    from edge.publish import hits_topic
    from tools.synthetic import hit_payload

    b = broker(work)
    console = Console(work, b.port).start()
    d = _daemon_in_process(work, b.port)
    b.stop()
    d.publisher.start()
    expected: set[str] = set()
    statuses: list[dict[str, Any]] = []
    try:
        pages = d.outbox.conn.execute("PRAGMA page_count").fetchone()[0]
        d.outbox.conn.execute(f"PRAGMA max_page_count = {pages + 10}")  # a real SQLite limit: SQLITE_FULL like a full disk
        n = 300 * iterations
        for i in range(n):
            payload = hit_payload("pole-1", first_seen=iso(time.time()))
            d._store(str(payload["event_id"]), hits_topic("pole-1"), json.dumps(payload).encode(), {"kind": "hit"})
            expected.add(str(payload["event_id"]))
            if i == n - 1:
                statuses.append(d.status())
        stored = d.outbox.stats().depth
        held = len(d.unstored)
        b.start()
        # Delivery frees outbox rows, but stored event ids and audit records stay: the disk stays nearly full
        # until space is really freed (an operator, log rotation), modelled by lifting the cap after a while.
        deadline = time.monotonic() + 5
        while d.unstored and time.monotonic() < deadline:
            d.retry_unstored()
            time.sleep(0.2)
        held_while_broker_back = len(d.unstored)
        d.outbox.conn.execute("PRAGMA max_page_count = 1000000000")
        deadline = time.monotonic() + 120
        while (d.unstored or d.outbox.stats().depth) and time.monotonic() < deadline:
            d.retry_unstored()
            time.sleep(0.2)
        console.wait_for(expected, 60)
        full = statuses[0]
        ok = held > 0 and full["storage"]["state"] == "full" and full["state"] == "degraded" and not d.unstored
        return tally(expected, console, {"iterations": iterations, "committed_before_full": stored, "held_in_memory": held,
                                         "held_after_5s_of_delivery": held_while_broker_back,
                                         "status_while_full": {k: full[k] for k in ("state", "storage", "last_error")},
                                         "status_after": d.status()["storage"], "ok": ok})  # fmt: skip
    finally:
        d.publisher.stop()
        console.stop()
        b.stop()


def corrupt_db(work: Path, iterations: int) -> dict[str, Any]:
    """Each damage in turn: the daemon detects it at start, moves the file aside, salvages and rebuilds."""
    from edge.cli import main
    from edge.daemon import iso
    from edge.outbox import Outbox
    from edge.publish import hits_topic
    from tools.synthetic import hit_payload

    b = broker(work)
    console = Console(work, b.port).start()
    kit = daemon_kit(work)
    pub = ["--public-key", str(kit / "keys" / "watchlist.pub")]
    assert main(["watchlist", "publish", str(kit / "v1"), "--broker", f"127.0.0.1:{b.port}", *pub]) == 0
    modes = ["bitrot", "truncate", "garbage"] * max(1, iterations // 3 if iterations >= 3 else 1)
    results: list[dict[str, Any]] = []
    expected: set[str] = set()
    try:
        for i, mode in enumerate(modes):
            run = work / f"corrupt-{i}-{mode}"
            dev = f"pole-{i}"  # one device per run: each status in the console is that run's own
            cfg = daemon_config(kit, run, b.port, [str(run / "no-camera.avi")], stop_at_end=False, device_id=dev)
            db = run / "data" / "edge.db"
            ob = Outbox(db, max_rows=1000, max_age_s=86400)
            ids = []
            for _ in range(20):
                p = hit_payload(dev, first_seen=iso(time.time()))
                ob.add(str(p["event_id"]), hits_topic(dev), json.dumps(p).encode(), kind="hit")
                ids.append(str(p["event_id"]))
            ob.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            ob.close()
            damage(db, mode)
            proc = start_daemon(cfg, run / "daemon.log")
            status = wait_status(console, lambda s: s.get("watchlist", {}).get("version") == 1 and "database" in s, 60, dev)
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
            rep = (status or {}).get("database", {})
            salvaged = set(ids) if rep.get("outbox_salvaged") == 20 else set()
            expected |= salvaged
            results.append({"mode": mode, "detected": rep.get("ok") is False, "problem": rep.get("problem"),
                            "moved_aside_to": rep.get("moved_aside_to"), "outbox_salvaged": rep.get("outbox_salvaged"),
                            "outbox_unreadable": rep.get("outbox_unreadable"), "scan_complete": rep.get("outbox_scan_complete"),
                            "rebuilt_from_bundle_version": (status or {}).get("watchlist", {}).get("version")})  # fmt: skip
        console.wait_for(expected, 30)
        ok = all(r["detected"] and r["rebuilt_from_bundle_version"] == 1 for r in results)
        return tally(expected, console, {"iterations": len(modes), "runs": results, "ok": ok})
    finally:
        console.stop()
        b.stop()


def damage(db: Path, mode: str) -> None:
    import sqlite3

    if mode == "bitrot":  # invisible to integrity_check: only the content hashes see it
        with sqlite3.connect(db) as c:
            blob = bytearray(c.execute("SELECT embeddings FROM entries LIMIT 1").fetchone()[0])
            blob[3] ^= 0x10
            c.execute("UPDATE entries SET embeddings = ? WHERE id = (SELECT MIN(id) FROM entries)", (bytes(blob),))
    elif mode == "truncate":
        with db.open("r+b") as f:
            f.truncate(db.stat().st_size * 2 // 3)
    else:
        with db.open("r+b") as f:
            f.write(b"\x00not a database any more" * 8)


def wait_status(
    console: Console, cond: Callable[[dict[str, Any]], bool], timeout: float, device: str = "pole-1"
) -> dict[str, Any] | None:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        rows = console.query(f"SELECT payload FROM device_status WHERE device_id = '{device}'") if console.db.exists() else []
        if rows:
            last = dict(json.loads(rows[0][0]))
            if cond(last):
                return last
        time.sleep(0.3)
    return last


Scenario = Callable[[Path, int], dict[str, Any]]
SCENARIOS: dict[str, Scenario] = {
    "broker-restart": broker_restart,
    "sigkill": sigkill,
    "disk-full": disk_full,
    "corrupt-db": corrupt_db,
}
FULL = {"broker-restart": 100, "sigkill": 100, "disk-full": 5, "corrupt-db": 3, "clock": 20, "frames": 1}
QUICK = {"broker-restart": 5, "sigkill": 2, "disk-full": 1, "corrupt-db": 3, "clock": 4, "frames": 1}


def main(argv: list[str] | None = None) -> int:
    from tools.fault_more import clock_jumps, frames

    SCENARIOS.update({"clock": clock_jumps, "frames": frames})
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenario", choices=[*SCENARIOS, "all"], default="all")
    ap.add_argument("--iterations", type=int, help="override the scenario's iteration count")
    ap.add_argument("--quick", action="store_true", help="a few iterations each (release checks, tests)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    random.seed(args.seed)
    names = list(SCENARIOS) if args.scenario == "all" else [args.scenario]
    out: dict[str, Any] = {}
    for name in names:
        n = args.iterations or (QUICK if args.quick else FULL)[name]
        work = Path(tempfile.mkdtemp(prefix=f"faults-{name}-"))
        t0 = time.monotonic()
        try:
            out[name] = SCENARIOS[name](work, n)
        except Exception as exc:  # a scenario that breaks is a failed scenario, reported with the others
            out[name] = {"iterations": n, "passed": False, "error": f"{type(exc).__name__}: {exc}"}
        finally:
            shutil.rmtree(work, ignore_errors=True)
        out[name]["seconds"] = round(time.monotonic() - t0, 1)
        print(f"{name}: {'passed' if out[name]['passed'] else 'FAILED'} {json.dumps(out[name])}", flush=True)
    out["passed"] = all(v["passed"] for v in out.values() if isinstance(v, dict))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0 if out["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
