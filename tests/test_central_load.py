"""The central side under load and faults, reduced (``tools/fleet_sim.py --central --quick``): 100 devices,
two ingest workers sharing the topics on PostgreSQL, one SIGKILLed and restarted, the broker restarted."""

from __future__ import annotations

from pathlib import Path

from tools.fleet_sim import main


def test_every_hit_is_stored_once_through_a_worker_kill_and_a_broker_restart(tmp_path: Path) -> None:
    out = tmp_path / "central.json"
    assert main(["--central", "--quick", "--json", str(out)]) == 0, out.read_text() if out.exists() else ""
