"""Where the fine pass looks: fixed-size windows over changed boxes, within the camera's configured regions.

Frame geometry only (boxes are x, y, w, h in frame pixels); the pipeline decides when to look.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edge.detectors.base import Region
from edge.motion import Box, clip_box

WHOLE_FRAME_SHARE = 1.0  # windows covering more than this share of the frame: look at the whole frame instead


def inside(box: np.ndarray, width: int, height: int, margin: float = 2.0) -> bool:
    """Whether a face box lies wholly inside the frame (not cut by its edge)."""
    x, y, w, h = (float(v) for v in box)
    return x >= margin and y >= margin and x + w <= width - margin and y + h <= height - margin


def intersect(a: Box, b: Region) -> Box | None:
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[0] + a[2], b[0] + b[2]), min(a[1] + a[3], b[1] + b[3])
    return (x0, y0, x1 - x0, y1 - y0) if x1 - x0 >= 8 and y1 - y0 >= 8 else None


def windows(box: Box, side: int, width: int, height: int, overlap: int) -> list[Region]:
    """Fixed-size windows (``side`` square, shifted inside the frame) covering ``box``, overlapping by ``overlap``.

    One window size means one detector input size: a new size would build a new interpreter.
    """
    out: list[Region] = []
    sx, sy = min(side, width), min(side, height)
    x, y, bw, bh = box
    nx = max(1, -(-(bw - overlap) // max(1, sx - overlap)))
    ny = max(1, -(-(bh - overlap) // max(1, sy - overlap)))
    for j in range(ny):
        for i in range(nx):
            # Spread the windows evenly over the box (centred when one is enough).
            cx = x + bw / 2 if nx == 1 else x + sx / 2 + i * (bw - sx) / (nx - 1)
            cy = y + bh / 2 if ny == 1 else y + sy / 2 + j * (bh - sy) / (ny - 1)
            x0 = int(min(max(0, round(cx - sx / 2)), width - sx))
            y0 = int(min(max(0, round(cy - sy / 2)), height - sy))
            out.append((x0, y0, sx, sy))
    return out


def fine_regions(changed: Sequence[Box], configured: Sequence[Region], width: int, height: int, side: int) -> list[Region] | None:
    """Where the fine pass looks on a changed frame: windows over the changed boxes within the configured regions.

    None: the whole frame (or all configured regions); []: nowhere.
    """
    boxes = [b for b in (clip_box(b, width, height) for b in changed) if b is not None]
    if configured:
        boxes = [r for b in boxes for r in (intersect(b, c) for c in configured) if r is not None]
    found: list[Region] = []
    for b in boxes:
        for win in windows(b, side, width, height, overlap=side // 4):
            # A window mostly inside one already chosen adds little.
            if not any(intersect(win, f) is not None and inside_share(win, f) > 0.8 for f in found):
                found.append(win)
    if len(found) * side * side > WHOLE_FRAME_SHARE * width * height:
        return None
    return found


def inside_share(a: Region, b: Region) -> float:
    c = intersect(a, b)
    return 0.0 if c is None else c[2] * c[3] / max(1, a[2] * a[3])
