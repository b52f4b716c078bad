"""``edge alerts`` as an operator runs it: bad arguments, pipes, the terminal console, retained statuses."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from rich.console import Console

from edge.central.console import KEY_HELP, render
from edge.central.ingest import ingest
from edge.central.store import Message, Store
from edge.cli import main
from tests.broker import Broker, free_port
from tests.central_msgs import encode, hit, status
from tests.test_alerts import publish_all


def run(argv: list[str]) -> int:
    """``edge`` in-process: any exception other than argparse's exit is a traceback an operator would see."""
    try:
        return main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)


def test_every_bad_argument_exits_non_zero_with_a_message_and_no_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "central.db"
    h = hit()
    ingest(Store(db), "edge/v1/pole-1/hits", encode(h))
    port = free_port()
    cases = {
        "no --db": ["alerts", "--export", "csv"],
        "folder missing": ["alerts", "--db", str(tmp_path / "nowhere" / "c.db"), "--broker", f"127.0.0.1:{port}"],
        "misspelled --db, export": ["alerts", "--db", str(tmp_path / "centrl.db"), "--export", "json"],
        "misspelled --db, review": [
            "alerts",
            "--db",
            str(tmp_path / "centrl.db"),
            "--review",
            h["event_id"],
            "--confirm",
            "--by",
            "x",
        ],
        "--db is a folder": ["alerts", "--db", str(tmp_path), "--export", "csv"],
        "unsupported URL": ["alerts", "--db", "mysql://u@h/db", "--export", "csv"],
        "PostgreSQL not there": ["alerts", "--db", f"postgresql://postgres@127.0.0.1:{port}/x", "--export", "csv"],
        "no broker, no action": ["alerts", "--db", str(db)],
        "bad broker address": ["alerts", "--db", str(db), "--broker", "host:port"],
        "broker down": ["alerts", "--db", str(db), "--broker", f"127.0.0.1:{port}", "--headless", "--duration", "1"],
        "missing CA file": ["alerts", "--db", str(db), "--broker", f"127.0.0.1:{port}", "--ca", str(tmp_path / "ca.pem")],
        "missing password file": ["alerts", "--db", str(db), "--broker", "h:1", "--password-file", str(tmp_path / "pw")],
        "negative duration": ["alerts", "--db", str(db), "--broker", "h:1", "--duration", "-3"],
        "unknown export format": ["alerts", "--db", str(db), "--export", "xml"],
        "export into a missing folder": ["alerts", "--db", str(db), "--export", "csv", "--out", str(tmp_path / "no" / "x.csv")],
        "review and export at once": ["alerts", "--db", str(db), "--export", "csv", "--review", h["event_id"][:8]],
        "review without a decision": ["alerts", "--db", str(db), "--review", h["event_id"], "--by", "x"],
        "review with two decisions": ["alerts", "--db", str(db), "--review", h["event_id"], "--confirm", "--reject", "--by", "x"],
        "review without --by": ["alerts", "--db", str(db), "--review", h["event_id"], "--confirm"],
        "review of an unknown id": ["alerts", "--db", str(db), "--review", "ffffffff", "--confirm", "--by", "x"],
        "review with a non-id": ["alerts", "--db", str(db), "--review", "%", "--confirm", "--by", "x"],
    }
    for name, argv in cases.items():
        assert run(argv) != 0, name
        err = capsys.readouterr().err
        assert err.strip() and "Traceback" not in err, (name, err)
    assert not (tmp_path / "centrl.db").exists()  # a misspelled name never becomes an empty database


def test_export_into_a_pipe_that_closes_early_is_not_an_error(tmp_path: Path) -> None:
    db = tmp_path / "central.db"
    store = Store(db)
    for _ in range(300):
        ingest(store, "edge/v1/pole-1/hits", encode(hit()))
    cmd = f"{sys.executable} -m edge.cli alerts --db {db} --export json | head -c 100 >/dev/null"
    proc = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], capture_output=True, text=True, check=False)
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr, proc.stderr
    assert proc.returncode == 0


def test_the_console_shows_device_text_as_text_newest_received_first_in_80_columns(tmp_path: Path) -> None:
    store = Store(tmp_path / "central.db")
    now = datetime.now(UTC)
    # Written straight to the store (older databases may hold such ids): Rich markup must stay text.
    odd = hit(entry="[/]")
    odd["camera"] = "[b]c"
    store.write([Message("hit", "pole-1", odd, now)])
    store.write([Message("hit", "pole-[/]", hit(device="pole-[/]", first_seen="9999-12-31T23:59:59.999Z"), now)])
    real = hit(entry="case-7", first_seen=now.strftime("%Y-%m-%dT%H:%M:%S.000Z"))
    ingest(store, "edge/v1/pole-1/hits", encode(real))
    ingest(store, "edge/v1/pole-1/status", encode(status(state="online")))
    console = Console(width=80, record=True, color_system=None)
    console.print(render(store))
    out = console.export_text()
    assert "[/]" in out and "[b]c" in out
    lines = out.splitlines()
    first_row = next(i for i, line in enumerate(lines) if real["event_id"][:8] in line)
    assert "case-7" in lines[first_row] and now.astimezone(UTC).strftime("%H:%M") in lines[first_row]
    assert first_row < next(i for i, line in enumerate(lines) if odd["event_id"][:8] in line)
    assert all(len(line) <= 80 for line in lines)
    assert KEY_HELP in out


def test_the_console_quits_on_q_and_a_retained_status_is_not_heard_now(tmp_path: Path) -> None:
    db = tmp_path / "central.db"
    with Broker(tmp_path) as broker:
        retained = subprocess.run(
            ["mosquitto_pub", "-p", str(broker.port), "-t", "edge/v1/pole-9/status", "-r", "-q", "1", "-m",
             json.dumps(status("pole-9"))], check=True,
        )  # fmt: skip
        assert retained.returncode == 0
        master, slave = pty.openpty()
        proc = subprocess.Popen(
            [sys.executable, "-m", "edge.cli", "alerts", "--db", str(db), "--broker", f"127.0.0.1:{broker.port}",
             "--duration", "120"],
            stdin=slave, stdout=slave, stderr=slave, env={**os.environ, "COLUMNS": "80", "TERM": "xterm"},
        )  # fmt: skip
        os.close(slave)
        seen = b""
        deadline = time.monotonic() + 60
        while b"pole-9" not in seen or KEY_HELP[:6].encode() not in seen:
            assert time.monotonic() < deadline, seen[-2000:]
            if select.select([master], [], [], 0.5)[0]:
                seen += os.read(master, 65536)
        os.write(master, b"q")
        assert proc.wait(timeout=30) == 0
        os.close(master)
        publish_all(broker.port, [("edge/v1/pole-9/status", encode(status("pole-9", version=4)))])
    fleet = {d.device_id: d for d in Store(db).devices()}
    assert fleet["pole-9"].state == "online" and fleet["pole-9"].heard_at is None and not fleet["pole-9"].online
