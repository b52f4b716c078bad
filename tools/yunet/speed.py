"""Detection time of the YuNet models side by side: the same frames, the detectors called in turn.

On a shared machine the load changes from second to second; alternating the models call by call
lets both see the same load, so their ratio means more than either time.
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

import cv2
import numpy as np

from edge.analyze import FaceAnalyser
from edge.config import RecognitionSettings
from edge.sources import load_image

FACES = Path(os.environ.get("EDGE_DEV_DATA", "/work/shared/data/faces"))
DISTANT = Path(os.environ.get("EDGE_DISTANT_DIR", "build/distant"))
OBAMA = "face_recognition/face_recognition__examples__obama_jpg.jpg"


def frames() -> dict[str, np.ndarray]:
    """A 1920x1080 distant scene (one 30-60 px face) and a 640x480 frame with one face."""
    scene = load_image(sorted(DISTANT.glob("scenes/**/*.jpg"))[0])
    face = load_image(FACES / OBAMA)
    canvas = np.full((480, 640, 3), 90, np.uint8)
    small = cv2.resize(face, (240, int(240 * face.shape[0] / face.shape[1])), interpolation=cv2.INTER_AREA)[:400]
    canvas[40 : 40 + small.shape[0], 200 : 200 + small.shape[1]] = small
    return {"1920x1080": scene, "640x480": canvas}


def speed(models: list[str], repeats: int = 15) -> int:
    detectors = {
        m: FaceAnalyser.from_settings(RecognitionSettings(accelerator="cpu", detector={"model": m})).detector  # type: ignore[arg-type]
        for m in models
    }
    print(f"load average {os.getloadavg()[0]:.1f} {os.getloadavg()[1]:.1f} {os.getloadavg()[2]:.1f}")
    for name, frame in frames().items():
        times: dict[str, list[float]] = {m: [] for m in models}
        found = {m: len(d.detect(frame)) for m, d in detectors.items()}  # warm-up (interpreters for this size)
        for _ in range(repeats):
            for m, det in detectors.items():
                start = time.perf_counter()
                det.detect(frame)
                times[m].append(1000 * (time.perf_counter() - start))
        cells = ", ".join(f"{m} {statistics.median(t):.1f} ms ({found[m]} faces)" for m, t in times.items())
        print(f"{name}: detect median of {repeats}: {cells}")
    # The network alone at the fine pass's input for 1080p (1024x576), without resizing, decoding or BlazeFace.
    nets = {m: d.model.with_input_size(576, 1024) for m, d in detectors.items()}  # type: ignore[attr-defined]
    net_times: dict[str, list[float]] = {m: [] for m in models}
    for _ in range(repeats):
        for m, net in nets.items():
            tensor = np.zeros(tuple(int(x) for x in net.input_shape), net.interpreter.get_input_details()[0]["dtype"])
            start = time.perf_counter()
            net.run(tensor)
            net_times[m].append(1000 * (time.perf_counter() - start))
    print("1024x576 network only, median: " + ", ".join(f"{m} {statistics.median(t):.1f} ms" for m, t in net_times.items()))
    print(f"load average {os.getloadavg()[0]:.1f} {os.getloadavg()[1]:.1f} {os.getloadavg()[2]:.1f}")
    return 0
