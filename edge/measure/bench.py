"""``edge bench``: per-stage latency, end-to-end frames/s and matcher latency on this machine.

Frames are built from the sample photos shipped in the package (no camera, no data set
needed), so the same command runs on a developer's machine and on a device.
"""

from __future__ import annotations

import logging
import os
import platform
import resource
import statistics
import time
from collections.abc import Iterator
from importlib import resources
from typing import Any

import cv2
import numpy as np

from edge.analyze import FaceAnalyser
from edge.match import Matcher
from edge.runtime import runtime_name
from edge.sources import decode_image

log = logging.getLogger(__name__)

RESOLUTIONS = {"640x480": (640, 480), "1280x720": (1280, 720), "1920x1080": (1920, 1080)}
FACE_COUNTS = (0, 1, 5)
# Full-HD frames stand for a pole camera: its faces are distant, 45 px wide (the 30-60 px case).
DISTANT_FACE_PX = {"1920x1080": 45.0}
PATCH_FACE_PX = 109.0  # the detector's box width of the face in _face_patch()


def sample_image(name: str) -> np.ndarray:
    data = resources.files("edge.samples").joinpath(name).read_bytes()
    return decode_image(data, name=name)


def _face_patch() -> np.ndarray:
    """The astronaut's head and shoulders, the face roughly in the middle."""
    img = sample_image("astronaut.png")
    return img[20:260, 110:350]


def synthetic_frame(width: int, height: int, faces: int, seed: int = 0, face_px: float | None = None) -> np.ndarray:
    """A street-like frame (blurred texture) with ``faces`` copies of a real face, evenly spaced.

    Faces fill most of their cell unless ``face_px`` asks for a face of that width (a distant face).
    """
    rng = np.random.default_rng(seed)
    base = cv2.resize(sample_image("camera.png")[300:, :], (width, height))
    noise = rng.integers(0, 40, size=(height, width, 3), dtype=np.uint8)
    frame = cv2.add(cv2.cvtColor(cv2.cvtColor(base, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB), noise)
    if faces:
        # Up to three faces a row, two rows, so each face stays big enough for a full-frame pass.
        patch = _face_patch()
        cols = min(faces, 3)
        rows = (faces + cols - 1) // cols
        cell_w, cell_h = width // cols, height // rows
        size = int(min(cell_w, cell_h) * 0.9) if face_px is None else round(patch.shape[0] * face_px / PATCH_FACE_PX)
        p = cv2.resize(patch, (size, size), interpolation=cv2.INTER_AREA)
        for i in range(faces):
            r, c = divmod(i, cols)
            x = c * cell_w + (cell_w - size) // 2
            y = r * cell_h + (cell_h - size) // 2
            frame[y : y + size, x : x + size] = p
    return frame


def _stats(values: list[float]) -> dict[str, float]:
    if not values:
        return {"median": 0.0, "p90": 0.0}
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]
    return {"median": round(statistics.median(ordered), 3), "p90": round(p90, 3)}


def synthetic_matcher(entries: int, dim: int, seed: int = 0) -> Matcher:
    """A watchlist of ``entries`` random unit vectors, built in batches as from the store."""
    rng = np.random.default_rng(seed)

    def batches() -> Iterator[list[tuple[str, str | None, str | None, float | None, np.ndarray]]]:
        step = 50_000
        for start in range(0, entries, step):
            m = rng.standard_normal((min(step, entries - start), dim), dtype=np.float32)
            m /= np.linalg.norm(m, axis=1, keepdims=True)
            yield [(f"e{start + i}", None, None, None, m[i : i + 1]) for i in range(len(m))]

    return Matcher.build(batches(), name="bench", version=1, sha256="", dimension=dim, total_embeddings=entries)


def bench_matcher(sizes: list[int], dim: int, reps: int) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    out = {}
    memory = {}
    rng = np.random.default_rng(1)
    for n in sizes:
        matcher = synthetic_matcher(n, dim)
        times = []
        for _ in range(reps + 2):
            q = rng.standard_normal(dim).astype(np.float32)
            q /= np.linalg.norm(q)
            t = time.perf_counter()
            matcher.search(q[None])
            times.append((time.perf_counter() - t) * 1000.0)
        out[str(n)] = _stats(times[2:])
        memory[str(n)] = round(matcher.memory_bytes / 2**20, 1)
        del matcher
    return out, memory


def machine_description() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith(("model name", "Model")):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "arch": platform.machine(),
        "python": platform.python_version(),
        "runtime": runtime_name(),
        "numpy": np.__version__,
        "opencv": cv2.__version__,
    }


def run_bench(analyser: FaceAnalyser, *, quick: bool) -> dict[str, Any]:
    """Stage latency and matcher figures; the end-to-end ``fps`` and stream rows come from edge.measure.stream."""
    reps = 20 if quick else 100
    # Per-stage latency on a 640x480 frame with one face, the frame JPEG-encoded as an IP camera sends it.
    frame = synthetic_frame(640, 480, 1)
    ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    assert ok
    data = jpeg.tobytes()
    decode = []
    analyser.timings.clear()
    for _ in range(reps + 3):
        t = time.perf_counter()
        img = decode_image(data)
        decode.append((time.perf_counter() - t) * 1000.0)
        analyser.analyse(img)
    # Drop warm-up runs.
    stages = {"decode": _stats(decode[3:])}
    for stage in ("detect", "align", "embed"):
        stages[stage] = _stats(analyser.timings.get(stage, [])[3:])

    matcher_sizes = [1000, 10_000, 100_000] if quick else [1000, 10_000, 100_000, 1_000_000]
    dim = analyser.embedder.dimension
    match_1k = synthetic_matcher(1000, dim)
    match_times = []
    for n in FACE_COUNTS:
        img = synthetic_frame(640, 480, n)
        for _ in range(3 if quick else 10):
            faces = [f.embedding for f in analyser.analyse(img) if f.passed_gate]
            if faces:
                t = time.perf_counter()
                match_1k.search(np.stack(faces))
                match_times.append((time.perf_counter() - t) * 1000.0)
    stages["match"] = _stats(match_times)
    matcher, matcher_mb = bench_matcher(matcher_sizes, dim, reps=20 if quick else 50)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return {
        "stages_ms": stages,
        "matcher_ms": matcher,
        "matcher_memory_mb": matcher_mb,
        "matcher_kind": "faiss exact inner product, float16 scalar quantiser",
        "peak_rss_mb": round(peak, 1),
        "machine": machine_description(),
        "embedder": analyser.embedder.name,
        "detector": analyser.detector.name,
        "quick": quick,
    }
