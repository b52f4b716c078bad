#!/usr/bin/env python3
"""Write tools/data/distant_reference.csv: a face box per development photo that no detector under test chose.

    python tools/distant_reference.py [--faces ../shared/data/faces]   # needs dlib (build-models extra)

The camera-like distant set (tools/build_distant_set.py --variant camera) sizes each face from
this box, so a detector under test neither sets the face size nor drops the photos it misses.
The box is dlib's HOG frontal-face detector's (the detector face_recognition uses; upsampled once
when the photo's own size finds nothing): a square around eyebrows to chin, about the width
BlazeFace and YuNet report. Photos dlib misses get an empty row; the builder then assumes a face
0.35 of the photo's shorter side wide, centred at 40% of its height (a head-and-shoulders press photo).
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tools" / "data" / "distant_reference.csv"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--faces", type=Path, default=ROOT.parent / "shared" / "data" / "faces", help="development data folder")
    args = ap.parse_args(argv)
    try:
        import dlib  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        print("needs dlib: pip install dlib-bin (the build-models extra)", file=sys.stderr)
        return 1
    detector = dlib.get_frontal_face_detector()
    with (args.faces / "faces.csv").open(encoding="utf-8") as fh:
        paths = [row["path"] for row in csv.DictReader(fh)]
    rows: list[list[object]] = []
    missed = 0
    for rel in paths:
        bgr = cv2.imread(str(args.faces / rel), cv2.IMREAD_COLOR)
        if bgr is None:
            print(f"unreadable {rel}", file=sys.stderr)
            return 1
        rgb = np.ascontiguousarray(bgr[:, :, ::-1])
        boxes = list(detector(rgb, 0)) or list(detector(rgb, 1))
        if not boxes:
            rows.append([rel, "", "", "", ""])
            missed += 1
            continue
        b = max(boxes, key=lambda r: r.width() * r.height())
        rows.append([rel, b.left(), b.top(), b.width(), b.height()])
    with OUT.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "x", "y", "w", "h"])
        w.writerows(rows)
    print(f"wrote {OUT} ({len(rows)} photos, {missed} without a dlib face)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
