"""The full-integer MobileFaceNet: embeds like the float model, in the same space, so float watchlists serve it."""

from __future__ import annotations

import subprocess
import sys
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge.analyze import FaceAnalyser
from edge.config import RecognitionSettings
from edge.match import Matcher
from edge.models import load_manifest
from edge.sources import load_image
from edge.watchlist.bundle import Bundle, build_unsigned, sign_manifest, verify_bundle
from edge.watchlist.chunks import Entry
from edge.watchlist.keys import key_id
from tests.conftest import ROOT, rows

FLOAT, INT8 = "mobilefacenet", "mobilefacenet-int8"
# Worst cosine between the two models' embeddings of one face: 0.937 over the 141 development faces
# (median 0.983, 5th percentile 0.962; tools/build_mobilefacenet.py --verify).
MIN_COSINE = 0.93


def _analyser(embedder: str) -> FaceAnalyser:
    return FaceAnalyser.from_settings(RecognitionSettings(embedder=embedder, accelerator="cpu", threads=1))


@pytest.fixture(scope="module")
def analysers() -> dict[str, FaceAnalyser]:
    return {name: _analyser(name) for name in (FLOAT, INT8)}


def _crop(analyser: FaceAnalyser, path: Path) -> np.ndarray:
    return analyser.analyse(load_image(path), largest_only=True, apply_gate=False)[0].crop


def test_the_int8_embeddings_agree_with_the_float_ones(analysers: dict[str, FaceAnalyser], faces_dir: Path) -> None:
    crops = [_crop(analysers[FLOAT], faces_dir / r["path"]) for r in rows("faces.csv")[::10]]
    cosine = (analysers[FLOAT].embedder.embed(crops) * analysers[INT8].embedder.embed(crops)).sum(axis=1)
    assert len(crops) == 10 and cosine.min() >= MIN_COSINE and np.median(cosine) > 0.97, cosine


def test_a_watchlist_built_from_float_embeddings_serves_the_int8_embedder(
    analysers: dict[str, FaceAnalyser], faces_dir: Path
) -> None:
    photos: dict[str, list[str]] = defaultdict(list)
    for row in rows("faces.csv"):
        photos[row["identity"]].append(row["path"])
    people = ["obama", "Angelina", "Scarlett", "personA", "Jennifer", "Mark"]
    enrolled = [
        Entry(entry_id=p, embeddings=analysers[FLOAT].embedder.embed([_crop(analysers[FLOAT], faces_dir / photos[p][0])]))
        for p in people
    ]
    key = Ed25519PrivateKey.generate()
    manifest, chunks = build_unsigned(
        enrolled,
        name="city",
        version=1,
        embedding_space=analysers[FLOAT].embedder.embedding_space,
        expires_at=datetime.now(UTC) + timedelta(days=1),
    )
    data, sig = sign_manifest(manifest, key)
    int8 = analysers[INT8].embedder
    # The device running the int8 model takes the float-built bundle: one embedding space.
    _, entries = verify_bundle(
        Bundle(data, sig, dict(enumerate(chunks))),
        {key_id(key.public_key()): key.public_key()},
        embedding_space=int8.embedding_space,
        current_version=None,
    )
    matcher = Matcher.build(
        [[(e.entry_id, None, None, None, e.embeddings) for e in entries]], name="city", version=1, sha256="x", dimension=192
    )
    probes = [_crop(analysers[INT8], faces_dir / photos[p][1]) for p in people]
    threshold = load_manifest().get(INT8, "embedder").extra["threshold"]["base"]
    found = matcher.search(int8.embed(probes))
    assert [m.entry_id if m else None for m in found] == people
    assert sum(m.score >= threshold for m in found if m) >= len(people) - 1


def test_the_int8_entry_shares_the_float_models_space_provenance_and_licence() -> None:
    manifest = load_manifest()
    float_spec, int8_spec = manifest.get(FLOAT, "embedder"), manifest.get(INT8, "embedder")
    assert int8_spec.variant_of == FLOAT and int8_spec.extra["input"]["dtype"] == "int8"
    # The space is the npm package file's (the shipped float file is that file with its PReLUs fused).
    package = float_spec.extra["source"]["sha256"]
    assert int8_spec.extra["embedding_space"] == float_spec.extra["embedding_space"] == package
    assert int8_spec.extra["licence"] == float_spec.extra["licence"]
    source = int8_spec.extra["source"]
    assert source["package"] == float_spec.extra["source"]["package"] and package in source["built_from"]
    assert "transform" not in source
    assert source["built_by"] == "tools/build_mobilefacenet.py"
    out = subprocess.run(
        [sys.executable, str(ROOT / "tools/build_mobilefacenet.py"), "--check"], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"ok       {INT8}: " in out.stdout
