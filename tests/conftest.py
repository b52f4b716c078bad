"""Shared fixtures: the development photos beside the project and one loaded recognition core."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from edge.analyze import FaceAnalyser
from edge.config import RecognitionSettings

# Property tests must not depend on how busy the machine is: no per-example deadline, no "input generation is
# slow" health check (both failed on a loaded 2-core runner), and the same examples on every run.
settings.register_profile("edge", deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
settings.load_profile("edge")

ROOT = Path(__file__).resolve().parent.parent
# The db_url fixture (SQLite and PostgreSQL) for central-store tests.
pytest_plugins = ["tests.central_db"]
FACES = Path(os.environ.get("EDGE_DEV_DATA", ROOT.parent / "shared" / "data" / "faces"))


def rows(manifest: str) -> list[dict[str, str]]:
    with (FACES / manifest).open(encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="session")
def faces_dir() -> Path:
    if not (FACES / "faces.csv").is_file():
        pytest.fail(f"development photos not found at {FACES} (set EDGE_DEV_DATA)")
    return FACES


@pytest.fixture(scope="session")
def analyser() -> FaceAnalyser:
    return FaceAnalyser.from_settings(RecognitionSettings(accelerator="cpu"))
