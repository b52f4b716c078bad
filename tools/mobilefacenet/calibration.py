"""The fixed calibration faces of the int8 MobileFaceNet: development photos listed with hashes.

``calibration.csv`` (beside this file) lists every photo and its sha256; the build refuses a photo
whose bytes differ, so the same list gives the same model. Each face that edge's own default
detector (YuNet) finds in a photo, aligned by edge's aligner to the arcface-112 crop, becomes one
input as the embedder presents it: the crop and its mirror image, a batch of 2, normalised.
"""

from __future__ import annotations

import csv
import hashlib
import os
from pathlib import Path

import numpy as np

LISTING = Path(__file__).with_name("calibration.csv")
FACES = Path(os.environ.get("EDGE_DEV_DATA", "/work/shared/data/faces"))
SOURCES = ("faces.csv", "group_photos.csv")


def select() -> list[str]:
    """Paths of the calibration photos as the listing was made: every development face photo and group photo."""
    chosen = []
    for name in SOURCES:
        with (FACES / name).open(encoding="utf-8") as fh:
            chosen += [r["path"] for r in csv.DictReader(fh)]
    return chosen


def write_listing() -> None:
    """(Re)write calibration.csv from the development data (a deliberate change of the calibration set)."""
    with LISTING.open("w", encoding="utf-8", newline="") as fh:
        out = csv.writer(fh, lineterminator="\n")
        out.writerow(["path", "sha256"])
        for path in select():
            out.writerow([path, hashlib.sha256((FACES / path).read_bytes()).hexdigest()])


def photos() -> list[Path]:
    """The listed photos in listing order; refuses a missing or changed photo."""
    with LISTING.open(encoding="utf-8") as fh:
        listing = list(csv.DictReader(fh))
    out = []
    for row in listing:
        path = FACES / row["path"]
        if not path.is_file():
            raise SystemExit(f"calibration photo {path} is missing")
        if hashlib.sha256(path.read_bytes()).hexdigest() != row["sha256"]:
            raise SystemExit(f"calibration photo {path} differs from {LISTING.name}: another model would result")
        out.append(path)
    return out


def crops(paths: list[Path]) -> list[np.ndarray]:
    """Every face edge finds in ``paths`` (default detector, no quality gate), aligned for MobileFaceNet, in order."""
    from edge.analyze import FaceAnalyser
    from edge.config import RecognitionSettings
    from edge.sources import load_image

    analyser = FaceAnalyser.from_settings(RecognitionSettings(embedder="mobilefacenet", accelerator="cpu", threads=1))
    return [face.crop for path in paths for face in analyser.analyse(load_image(path), apply_gate=False)]


def inputs(faces: list[np.ndarray]) -> list[np.ndarray]:
    """Each crop and its mirror as one [2, 112, 112, 3] float32 input, normalised (x - 127.5) / 128."""
    return [((np.stack([c, c[:, ::-1]]).astype(np.float32) - 127.5) / 128).astype(np.float32) for c in faces]
