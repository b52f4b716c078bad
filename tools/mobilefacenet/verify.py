"""The int8 MobileFaceNet against the float one: embedding agreement on the development faces, and speed.

Both embedders are edge's own (``FaceAnalyser`` with one CPU thread each), fed the same aligned
crops (default detector, no quality gate); an embedding is the crop and its mirror as the device
computes it. Times are one face per call, the two models called in turn so both see the same load
of a shared machine.
"""

from __future__ import annotations

import os
import statistics
import time

import numpy as np

from tools.mobilefacenet import calibration

# The int8 embeddings' worst cosine to the float ones must not fall below this (measured 0.937 on the 141
# development faces; see docs/models.md).
MIN_COSINE = 0.93


def verify(float_name: str, int8_name: str, repeats: int = 3) -> int:
    from edge.analyze import FaceAnalyser
    from edge.config import RecognitionSettings

    embedders = {
        name: FaceAnalyser.from_settings(RecognitionSettings(embedder=name, accelerator="cpu", threads=1)).embedder
        for name in (float_name, int8_name)
    }
    if embedders[float_name].embedding_space != embedders[int8_name].embedding_space:
        print(f"BAD      {int8_name}: another embedding space than {float_name}")
        return 1
    faces = calibration.crops(calibration.photos())
    vectors = {name: e.embed(faces) for name, e in embedders.items()}
    cosine = (vectors[float_name] * vectors[int8_name]).sum(axis=1)
    print(
        f"{int8_name} vs {float_name}: cosine median {np.median(cosine):.4f}, 5th percentile "
        f"{np.percentile(cosine, 5):.4f}, min {cosine.min():.4f} ({len(faces)} faces of {calibration.LISTING.name})"
    )
    times: dict[str, list[float]] = {name: [] for name in embedders}
    print(f"load average {os.getloadavg()[0]:.1f}")
    for _ in range(repeats):
        for face in faces:
            for name, embedder in embedders.items():
                start = time.perf_counter()
                embedder.embed([face])
                times[name].append(1000 * (time.perf_counter() - start))
    cells = ", ".join(f"{name} {statistics.median(t):.1f} ms" for name, t in times.items())
    print(f"ms per face (crop + mirror, 1 thread), median of {len(times[float_name])}: {cells}")
    good = cosine.min() >= MIN_COSINE
    print(f"{'ok      ' if good else 'BAD     '} {int8_name}: worst cosine {cosine.min():.4f} (bound {MIN_COSINE})")
    return 0 if good else 1
