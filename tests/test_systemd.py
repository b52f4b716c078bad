"""The systemd unit is valid and hardened (checked where systemd-analyze exists)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parent.parent / "systemd" / "edge.service"
analyze = shutil.which("systemd-analyze")
pytestmark = pytest.mark.skipif(analyze is None, reason="systemd-analyze is not installed here")


@pytest.fixture
def unit(tmp_path: Path) -> Path:
    # verify needs ExecStart's binary to exist: point it at this environment's edge (or python).
    exe = shutil.which("edge") or sys.executable
    dest = tmp_path / "edge.service"
    dest.write_text(UNIT.read_text().replace("/usr/local/bin/edge", exe))
    return dest


def test_systemd_analyze_verify_prints_nothing(unit: Path) -> None:
    proc = subprocess.run([str(analyze), "verify", str(unit)], capture_output=True, text=True, cwd=unit.parent, check=False)
    # It exits 0 even for unknown keys and bad values, so any output at all is a failure.
    assert proc.returncode == 0 and proc.stdout.strip() == "" and proc.stderr.strip() == "", proc.stdout + proc.stderr


def test_the_unit_is_hardened_to_an_exposure_of_at_most_2_5(unit: Path) -> None:
    proc = subprocess.run(
        [str(analyze), "security", "--offline=true", str(unit)], capture_output=True, text=True, cwd=unit.parent, check=False
    )
    m = re.search(r"Overall exposure level for edge\.service: ([0-9.]+)", proc.stdout + proc.stderr)
    assert m, proc.stdout + proc.stderr
    assert float(m.group(1)) <= 2.5


def test_the_unit_runs_the_daemon_as_a_notify_service_with_a_watchdog() -> None:
    text = UNIT.read_text()
    for line in ("Type=notify", "WatchdogSec=", "ExecStart=/usr/local/bin/edge run --config /etc/edge/edge.toml", "User=edge"):
        assert line in text


INGEST = UNIT.parent / "edge-ingest@.service"


def test_the_ingest_worker_template_verifies_and_is_hardened(tmp_path: Path) -> None:
    exe = shutil.which("edge") or sys.executable
    (tmp_path / INGEST.name).write_text(INGEST.read_text().replace("/usr/local/bin/edge", exe))
    instance = tmp_path / "edge-ingest@1.service"
    instance.symlink_to(tmp_path / INGEST.name)
    proc = subprocess.run([str(analyze), "verify", str(instance)], capture_output=True, text=True, cwd=tmp_path, check=False)
    assert proc.returncode == 0 and proc.stdout.strip() == "" and proc.stderr.strip() == "", proc.stdout + proc.stderr
    proc = subprocess.run(
        [str(analyze), "security", "--offline=true", str(instance)], capture_output=True, text=True, cwd=tmp_path, check=False
    )
    m = re.search(r"Overall exposure level for edge-ingest@1\.service: ([0-9.]+)", proc.stdout + proc.stderr)
    assert m and float(m.group(1)) <= 2.5, proc.stdout + proc.stderr
    text = INGEST.read_text()
    for needed in ("--headless", "--client-id edge-ingest-%H-%i", "--group edge-ingest", "--db ${EDGE_DB}"):
        assert needed in text
