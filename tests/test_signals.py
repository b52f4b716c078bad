"""Ctrl-C and ``systemctl stop`` end ``edge run`` within 5 s in every state; an unreachable broker is an error.

Real daemon processes, a real Mosquitto where one is needed. The only time bound is the one
the technician is promised: the daemon has exited 5 s after the signal.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from tests.broker import Broker, free_port
from tests.mqtt_helpers import wait_for_text
from tests.test_daemon import kit, outbox_depth, start_daemon, write_config  # noqa: F401  (kit is a fixture)

STOP_WITHIN_S = 5.0


def stop(proc: subprocess.Popen[bytes], sig: signal.Signals) -> int:
    proc.send_signal(sig)
    try:
        return proc.wait(timeout=STOP_WITHIN_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail(f"edge run still running {STOP_WITHIN_S:.0f}s after {sig.name}")


def started(log: Path, text: str) -> None:
    assert wait_for_text(log, text, timeout=120), log.read_text()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_while_waiting_to_deliver_stops_at_once_and_the_outbox_keeps_the_hits(
    kit: Path,  # noqa: F811
    tmp_path: Path,
    sig: signal.Signals,
) -> None:
    cfg = write_config(kit, tmp_path, free_port())  # nothing listens there: the hits cannot be delivered
    log = tmp_path / "daemon.log"
    proc = start_daemon(cfg, log)
    started(log, "waiting up to 600s for the broker")
    assert outbox_depth(tmp_path) >= 1
    assert stop(proc, sig) == 0
    text = log.read_text()
    assert "stay in the outbox" in text and "Traceback" not in text
    assert outbox_depth(tmp_path) >= 1, "undelivered hits are kept for the next start"


def test_a_signal_while_models_load_while_processing_and_while_idle_stops_within_seconds(
    kit: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    broker = Broker(tmp_path)
    broker.start()
    try:
        for n, (stop_at_end, wait_for) in enumerate(
            [
                (True, "runs on the CPU"),  # loading models, before the daemon's own handlers
                (True, "running: device"),  # processing the recording
                (False, "recording ended after"),  # a recording that ended, daemon kept running (idle)
            ]
        ):
            run_dir = tmp_path / str(n)
            run_dir.mkdir()
            cfg = write_config(kit, run_dir, broker.port, stop_at_end=stop_at_end)
            log = run_dir / "daemon.log"
            proc = start_daemon(cfg, log)
            started(log, wait_for)
            assert stop(proc, signal.SIGINT) in (0, 130), log.read_text()
            assert "Traceback" not in log.read_text()
    finally:
        broker.stop()


def test_a_signal_while_waiting_for_a_watchlist_stops_within_seconds(kit: Path, tmp_path: Path) -> None:  # noqa: F811
    broker = Broker(tmp_path)
    broker.start()
    try:
        cfg = write_config(kit, tmp_path, broker.port)
        shutil.rmtree(tmp_path / "data")  # no watchlist applied: the recording waits for one
        log = tmp_path / "daemon.log"
        proc = start_daemon(cfg, log)
        started(log, "no watchlist applied yet")
        assert stop(proc, signal.SIGTERM) == 0
    finally:
        broker.stop()


def test_a_recording_run_with_an_unreachable_broker_fails_and_says_why(kit: Path, tmp_path: Path) -> None:  # noqa: F811
    port = free_port()
    cfg = write_config(kit, tmp_path, port, extra="[daemon]\nwatchlist_wait_s = 0\n")
    shutil.rmtree(tmp_path / "data")  # no watchlist either: nothing to deliver, and still an error
    log = tmp_path / "daemon.log"
    proc = start_daemon(cfg, log)
    assert proc.wait(timeout=120) == 1
    text = log.read_text()
    assert f"MQTT broker 127.0.0.1:{port} was not reachable" in text, text
    assert "every hit delivered" not in text
