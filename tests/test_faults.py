"""The quick variants of tools/faults.py: real Mosquitto, real daemon, real edge alerts console; zero hits lost."""

from __future__ import annotations

from pathlib import Path

import pytest

from tools import fault_more, faults


@pytest.mark.parametrize(
    ("scenario", "iterations"),
    [
        (faults.broker_restart, 5),
        (faults.sigkill, 1),
        (faults.disk_full, 1),
        (faults.corrupt_db, 3),
        (fault_more.clock_jumps, 4),
        (fault_more.frames, 1),
    ],
    ids=["broker-restart", "sigkill", "disk-full", "corrupt-db", "clock", "frames"],
)
def test_under_the_fault_every_hit_arrives_once_and_the_device_says_what_happened(
    scenario: faults.Scenario, iterations: int, tmp_path: Path
) -> None:
    result = scenario(tmp_path, iterations)
    assert result["hits_lost"] == 0 and result["duplicates_after_dedup"] == 0, result
    assert result["hits_expected"] > 0, result
    assert result["passed"], result
