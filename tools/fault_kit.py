"""Shared pieces of the fault-injection runs: a central console, a device kit, the real daemon as a process."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tools.fleet_device import SimDevice
from tools.mosquitto import Broker

ROOT = Path(__file__).resolve().parent.parent
BROKER_CONF = "max_queued_messages 1000000\n"


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


class Console:
    """``edge alerts --headless`` as a process with a persistent session: what reaches the central store."""

    def __init__(self, work: Path, port: int) -> None:
        self.db = work / "alerts.db"
        self.log = work / "alerts.log"
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Console:
        cmd = [
            sys.executable,
            "-m",
            "edge.cli",
            "alerts",
            "--db",
            str(self.db),
            "--broker",
            f"127.0.0.1:{self.port}",
            "--headless",
        ]
        self.proc = subprocess.Popen(cmd, stdout=self.log.open("ab"), stderr=subprocess.STDOUT, env=env())
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not self.db.exists():
            time.sleep(0.1)
        time.sleep(1.0)  # subscribed shortly after the store exists; messages before that wait in the session anyway
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        with sqlite3.connect(self.db, timeout=30) as c:
            return c.execute(sql).fetchall()

    def hit_ids(self) -> set[str]:
        return {r[0] for r in self.query("SELECT event_id FROM hits")} if self.db.exists() else set()

    def duplicates(self) -> int:
        rows = self.query("SELECT value FROM counters WHERE name = 'duplicates'")
        return int(rows[0][0]) if rows else 0

    def wait_for(self, ids: set[str], timeout: float) -> set[str]:
        deadline = time.monotonic() + timeout
        got = self.hit_ids()
        while not ids <= got and time.monotonic() < deadline:
            time.sleep(0.3)
            got = self.hit_ids()
        return got


def tally(expected: set[str], console: Console, extra: dict[str, Any]) -> dict[str, Any]:
    got = console.hit_ids()
    total, distinct = console.query("SELECT COUNT(*), COUNT(DISTINCT event_id) FROM hits")[0]
    out = {
        "hits_expected": len(expected),
        "hits_delivered_unique": len(got & expected),
        "hits_lost": len(expected - got),
        "duplicates_received": console.duplicates(),
        "duplicates_after_dedup": total - distinct,
        **extra,
    }
    out["passed"] = bool(out["hits_lost"] == 0 and out["duplicates_after_dedup"] == 0 and extra.get("ok", True))
    return out


def devices(work: Path, port: int, n: int) -> list[SimDevice]:
    devs = [SimDevice(f"dev-{i}", work / "devices", port, {}, "none") for i in range(n)]
    for d in devs:
        d.start()
    return devs


def daemon_kit(work: Path) -> Path:
    """Keys, a signed watchlist v1 with the astronaut as case-0001, and a clip where she walks by."""
    from edge.cli import main
    from edge.demo import make_clip

    kit = work / "kit"
    if (kit / "clip.avi").exists():
        return kit
    (kit / "photos" / "case-0001").mkdir(parents=True)
    shutil.copy(ROOT / "edge" / "samples" / "astronaut.png", kit / "photos" / "case-0001" / "enrol.png")
    assert main(["watchlist", "keygen", "--out", str(kit / "keys")]) == 0
    assert main(["watchlist", "build", "--photos", str(kit / "photos"), "--name", "city", "--version", "1",
                 "--key", str(kit / "keys" / "watchlist.key"), "--out", str(kit / "v1"), "--quiet"]) == 0  # fmt: skip
    make_clip(kit / "clip.avi", seconds=4.0)
    return kit


def daemon_config(
    kit: Path, run: Path, port: int, urls: list[str], *, stop_at_end: bool = True, apply: bool = True, device_id: str = "pole-1"
) -> Path:
    from edge.cli import main

    run.mkdir(parents=True, exist_ok=True)
    sources = "".join(
        f'[[sources]]\ncamera = "cam{i}"\nurl = "{u}"\nstop_at_end = {str(stop_at_end).lower()}\nfps_cap = 10\n'
        for i, u in enumerate(urls)
    )
    cfg = run / "edge.toml"
    cfg.write_text(
        f'device_id = "{device_id}"\ndata_dir = "{run / "data"}"\n{sources}'
        f'[mqtt]\nhost = "127.0.0.1"\nport = {port}\nstatus_interval_s = 1\n'
        f'[watchlist]\nname = "city"\npublic_keys = ["{kit / "keys" / "watchlist.pub"}"]\n'
        "[daemon]\nwatchlist_wait_s = 20\ndrain_timeout_s = 60\n"
    )
    if apply and not (run / "data" / "edge.db").exists():
        assert main(["watchlist", "apply", str(kit / "v1"), "--config", str(cfg)]) == 0
    return cfg


def start_daemon(cfg: Path, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "edge.cli", "run", "--config", str(cfg)],
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        env=env(),
    )


def broker(work: Path) -> Broker:
    b = Broker(work, extra_conf=BROKER_CONF)
    b.start()
    return b
