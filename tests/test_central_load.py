"""The central side under load and faults, reduced (``tools/fleet_sim.py --central --quick``): 100 devices,
two ingest workers sharing the topics on PostgreSQL, one SIGKILLed and restarted, the broker restarted."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from tools.central_load import PublisherDiedError, _Publishers
from tools.fleet_sim import main


def test_every_hit_is_stored_once_through_a_worker_kill_and_a_broker_restart(tmp_path: Path) -> None:
    out = tmp_path / "central.json"
    assert main(["--central", "--quick", "--json", str(out)]) == 0, out.read_text() if out.exists() else ""


def _reports_then_dies(index: int, devices: list[str], cfg: dict[str, object], go: object, done: object, results: Any) -> None:
    """A publisher that is ready, then is killed (as by the OOM killer) before it reports what it sent."""
    results.put(("ready", index))
    os.kill(os.getpid(), signal.SIGKILL)


def test_a_publisher_that_dies_is_named_in_an_error_not_waited_for() -> None:
    pubs = _Publishers(mp.get_context("spawn"), [["sim-0000"]], {}, target=_reports_then_dies)
    pubs.start()
    deadline = time.monotonic() + 30
    with pytest.raises(PublisherDiedError, match="load publisher 0 was killed by signal 9 before reporting"):
        while time.monotonic() < deadline:
            pubs.poll(wait=0.5)
    pubs.stop()
