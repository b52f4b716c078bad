"""``edge eval --details``: per probe, whether its face was found, its own score, the top-1 and why it was missed."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from edge.cli import main
from tests.conftest import rows

IDENTITIES = ("Angelina", "Elon", "Jennifer", "Mark", "Scarlett", "id01")  # sorted(): Mark (index 3) is not enrolled


def test_details_list_every_probe_and_explain_each_miss(faces_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    picked = [r for r in rows("faces.csv") if r["identity"] in IDENTITIES]
    nonface = next(iter(rows("nonfaces.csv")))["path"]
    manifest = tmp_path / "faces.csv"
    with manifest.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "identity"])
        for r in picked:
            w.writerow([faces_dir / r["path"], r["identity"]])
        w.writerow([faces_dir / nonface, "Scarlett"])  # a genuine probe with no face in it
    details = tmp_path / "details.csv"
    report = tmp_path / "report.json"
    assert main(["eval", "--manifest", str(manifest), "--details", str(details), "--json", str(report)]) == 0
    assert "per-probe details" in capsys.readouterr().out
    with details.open(newline="") as f:
        probes = list(csv.DictReader(f))
    figures = json.loads(report.read_text())
    c = figures["counts"]
    assert len(probes) == c["genuine_probes"] + c["impostor_probes"]
    genuine = [p for p in probes if p["role"] == "genuine"]
    misses = [p for p in genuine if p["outcome"] == "miss"]
    assert len(misses) == round(figures["fnir"] * c["genuine_probes"]), "the same misses as the FNIR"
    assert all(p["reason"] for p in misses) and all(p["own_score"] for p in genuine if p["face_found"] == "True")
    no_face = next(p for p in probes if p["path"].endswith(Path(nonface).name))
    assert (no_face["face_found"], no_face["outcome"], no_face["reason"]) == ("False", "miss", "no face found")
    assert {p["role"] for p in probes if p["identity"] == "Mark"} == {"impostor"}
    for p in genuine:
        if p["outcome"] == "hit":
            assert p["top1"] == p["identity"] and float(p["own_score"]) >= float(p["threshold"])
