"""Fit the 150 px dlib-chip template for BlazeFace's keypoints (the constant ``DLIB_CHIP_150`` in edge/align.py).

dlib's chip (``get_face_chip_details(shape, 150, 0.25)``) is a similarity fitted to its
5-point shape predictor (eye corners, nose base). BlazeFace gives other points (eye
centres, nose tip, mouth centre), so their place on the chip is measured: for each dev
face, dlib's exact image→chip mapping (``get_mapping_to_chip``) carries BlazeFace's
keypoints into chip pixels, and the template is their mean.

    python -m tools.dlib_resnet.template [--faces faces.csv]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from tools.dlib_resnet.build import DEFAULT_FACES
from tools.dlib_resnet.reference import CHIP_SIZE, DlibReference


def fit(faces: Path) -> tuple[np.ndarray, np.ndarray, int]:
    """(template 4×2, per-point RMS spread in chip pixels, faces used) for right eye, left eye, nose tip, mouth."""
    from edge.align import alignment_points
    from edge.analyze import FaceAnalyser
    from edge.config import RecognitionSettings

    reference = DlibReference()
    # The template is BlazeFace's (its mouth point is the lip centre); YuNet's corners' midpoint sits within it.
    detector = FaceAnalyser.from_settings(RecognitionSettings(detector={"model": "blazeface-full-range"})).detector  # type: ignore[arg-type]
    points = []
    for face in reference.faces(faces):
        found = detector.detect(face.image)
        if not found:
            continue
        det = max(found, key=lambda d: d.area)
        m = face.to_chip
        kp = alignment_points(det.keypoints)
        points.append(kp @ m[:, :2].T + m[:, 2])
    arr = np.array(points)
    template = arr.mean(axis=0)
    spread = np.sqrt(((arr - template) ** 2).sum(axis=2).mean(axis=0))
    return template, spread, len(points)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--faces", type=Path, default=DEFAULT_FACES)
    args = parser.parse_args(argv)
    template, spread, n = fit(args.faces)
    print(f"template from {n} faces (right eye, left eye, nose tip, mouth centre), chip pixels of {CHIP_SIZE}:")
    print(np.array2string(template, precision=3, separator=", "))
    print("RMS spread per point (px):", np.array2string(spread, precision=2, separator=", "))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
