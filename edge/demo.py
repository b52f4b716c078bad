"""``edge demo``: the whole device loop on sample data shipped with the package, no camera needed.

1. Recognition: one person (the astronaut) is enrolled from her photo; altered copies of her
   photo and of another person's (the photographer) come in as a camera would see them. Each
   probe shows its face quality, its score, the threshold applied and the decision.
2. The loop: a signing key and a signed watchlist are made from the shipped photo, applied to a
   fresh device store, and the daemon runs on a generated clip in which she and someone else walk
   by. Hits go through a local broker when one answers on 127.0.0.1:1883 (and are printed as a
   central subscriber receives them), otherwise to the console.
"""

from __future__ import annotations

import shutil
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge.analyze import FaceAnalyser
from edge.measure.bench import sample_image


def variants(image: np.ndarray) -> Iterator[tuple[str, np.ndarray]]:
    h, w = image.shape[:2]
    yield "as photographed", image
    yield "mirrored", image[:, ::-1].copy()
    yield "half size", cv2.resize(image, (w // 2, h // 2), interpolation=cv2.INTER_AREA)
    rot = cv2.getRotationMatrix2D((w / 2, h / 2), 12, 1.0)
    yield "tilted 12°", cv2.warpAffine(image, rot, (w, h), borderMode=cv2.BORDER_REFLECT)
    yield "dim light", cv2.convertScaleAbs(image, alpha=0.45, beta=0)
    yield "motion blur", cv2.filter2D(image, -1, np.full((1, 7), 1 / 7.0))
    ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 25])
    decoded = cv2.imdecode(jpeg, cv2.IMREAD_UNCHANGED) if ok else None
    if decoded is not None:
        yield "JPEG quality 25", np.asarray(decoded, dtype=np.uint8)
    yield "grey", cv2.cvtColor(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)


def make_clip(
    path: Path,
    *,
    fps: float = 10.0,
    seconds: float = 8.0,
    size: tuple[int, int] = (640, 480),
    stranger: np.ndarray | None = None,
) -> Path:
    """A street-like clip from the shipped photos: the astronaut walks through, then someone else.

    The someone else is the photographer of ``camera.png`` unless ``stranger`` (an RGB head
    shot) is given.

    Augmented copies (scale, light, blur, motion) of two public-domain/CC0 photos; nothing
    derived from them is kept beyond this file.
    """
    w, h = size
    astronaut = sample_image("astronaut.png")[20:260, 110:350]
    photographer = stranger if stranger is not None else sample_image("camera.png")[90:240, 165:315]
    base = cv2.resize(sample_image("camera.png")[300:, :], (w, h))
    base = cv2.cvtColor(cv2.cvtColor(base, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), fps, (w, h))
    if not writer.isOpened():
        raise OSError(f"cannot write {path}")
    n = int(fps * seconds)
    rng = np.random.default_rng(0)
    for i in range(n):
        frame = base.copy()
        phase = i / n
        person, p = (astronaut, phase * 2) if phase < 0.5 else (photographer, (phase - 0.5) * 2)
        size_px = int(160 + 60 * p)
        patch = cv2.resize(person, (size_px, size_px), interpolation=cv2.INTER_AREA)
        patch = cv2.convertScaleAbs(patch, alpha=0.8 + 0.3 * p, beta=0)
        x = int(20 + p * (w - size_px - 40))
        y = (h - size_px) // 2
        frame[y : y + size_px, x : x + size_px] = patch
        noise = np.asarray(rng.integers(0, 12, size=frame.shape, dtype=np.uint8))
        writer.write(cv2.cvtColor(cv2.add(frame, noise), cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def enrolment(analyser: FaceAnalyser) -> np.ndarray | None:
    """The astronaut's embeddings as ``edge watchlist build`` stores them: her photo's face and its distant views."""
    from edge.config import RecognitionSettings
    from edge.distant_views import DistantViews, view_embeddings

    image = sample_image("astronaut.png")
    enrol = analyser.analyse(image, largest_only=True)
    if not enrol or not enrol[0].passed_gate:
        return None
    views = DistantViews.from_settings(RecognitionSettings().enrol_views)  # the demo runs on the default settings
    extra = [] if views is None else view_embeddings(analyser, image, enrol[0].detection.box, views, seed=1)
    return np.stack([enrol[0].embedding, *extra])


def photo_table(analyser: FaceAnalyser) -> int:
    templates = enrolment(analyser)
    if templates is None:
        print("demo: the enrolment photo gave no usable face")
        return 1
    print(
        f"enrolled 'astronaut' from astronaut.png ({analyser.embedder.name}, {analyser.embedder.dimension}-d; "
        f"{len(templates)} embeddings: the photo's face and {len(templates) - 1} distant views of it)"
    )
    print(f"base threshold {analyser.threshold.base:.3f} (calibrated, stored in models/manifest.json)\n")
    print(f"{'probe':<34} {'face px':>7} {'sharp':>6} {'yaw':>5} {'score':>6} {'thresh':>6}  decision")
    wrong = 0
    for person, truth in (("astronaut.png", True), ("camera.png", False)):
        for label, img in variants(sample_image(person)):
            faces = analyser.analyse(img, largest_only=True, apply_gate=False)
            name = f"{person} {label}"
            if not faces:
                print(f"{name:<34} {'-':>7} {'-':>6} {'-':>5} {'-':>6} {'-':>6}  no face found")
                wrong += truth
                continue
            f = faces[0]
            q = f.quality
            score = float(np.max(templates @ f.embedding))
            t = analyser.threshold.for_face(q)
            hit = score >= t
            wrong += hit != truth
            decision = "HIT astronaut" if hit else "no match"
            print(f"{name:<34} {q.size_px:>7.0f} {q.sharpness:>6.0f} {q.yaw:>5.0f} {score:>6.3f} {t:>6.3f}  {decision}")
    print(f"\n{'all decisions right' if not wrong else f'{wrong} wrong decisions'}")
    return 0 if not wrong else 1


def _broker_up(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def run_loop(workdir: Path, *, broker: tuple[str, int] | None) -> int:
    from edge.config import load_settings
    from edge.daemon import Daemon
    from edge.db import connect
    from edge.watchlist.bundle import build_unsigned, read_bundle, sign_manifest, write_bundle
    from edge.watchlist.chunks import Entry
    from edge.watchlist.keys import generate_keypair, load_private_key, trusted_keys
    from edge.watchlist.store import WatchlistStore

    workdir.mkdir(parents=True, exist_ok=True)
    for old in ("keys", "data", "bundle"):
        shutil.rmtree(workdir / old, ignore_errors=True)
    key, pub = generate_keypair(workdir / "keys")
    settings_path = workdir / "edge.toml"
    mqtt = f'host = "{broker[0]}"\nport = {broker[1]}\n' if broker else "enabled = false\n"
    settings_path.write_text(
        f'device_id = "demo-pole"\ndata_dir = "{workdir / "data"}"\n'
        f'[[sources]]\ncamera = "gate"\nurl = "{workdir / "clip.avi"}"\nstop_at_end = true\n'
        f"[mqtt]\n{mqtt}"
        f'[watchlist]\nname = "demo"\npublic_keys = ["{pub}"]\n'
    )
    settings = load_settings(settings_path)
    analyser = FaceAnalyser.from_settings(settings.recognition)
    templates = enrolment(analyser)
    if templates is None:
        print("demo: the enrolment photo gave no usable face")
        return 1
    manifest, chunks = build_unsigned(
        [Entry("case-0001", templates)],
        name="demo",
        version=1,
        embedding_space=analyser.embedder.embedding_space,
        expires_at=datetime.now(UTC) + timedelta(days=1),
    )
    data, sig = sign_manifest(manifest, load_private_key(key))
    write_bundle(workdir / "bundle", data, chunks, sig)
    result = WatchlistStore(connect(settings.database)).apply(
        read_bundle(workdir / "bundle"), trusted_keys([pub]), embedding_space=analyser.embedder.embedding_space
    )
    print(f"\nwatchlist 'demo' v1 signed and applied: {result.entry_count} entry (case-0001 = the astronaut)")
    make_clip(workdir / "clip.avi", stranger=None)
    print(f"clip {workdir / 'clip.avi'}: the astronaut walks by, then the photographer")
    where = f"the broker at {broker[0]}:{broker[1]}" if broker else "the console (no broker on 127.0.0.1:1883)"
    print(f"hits go to {where}\n")
    sub = _subscribe(broker) if broker else None
    code = Daemon(settings, json_hits=True).run()  # each hit's payload on stdout, as a central system gets it
    if sub is not None:
        time.sleep(0.5)
        sub.disconnect()
        sub.loop_stop()
    print(f"\ndaemon finished with exit code {code}; device database: {settings.database}")
    return code


def _subscribe(broker: tuple[str, int]) -> Any:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)

    def on_message(_c: Any, _u: Any, msg: Any) -> None:
        print(f"central subscriber received on {msg.topic}: {msg.payload.decode()}", flush=True)

    c.on_message = on_message
    c.on_connect = lambda cl, *_: cl.subscribe("edge/v1/demo-pole/hits", qos=1)
    c.connect(*broker)
    c.loop_start()
    return c


def run_demo(analyser: FaceAnalyser, workdir: Path, *, use_broker: bool = True) -> int:
    code = photo_table(analyser)
    broker = ("127.0.0.1", 1883) if use_broker and _broker_up("127.0.0.1", 1883) else None
    return code or run_loop(workdir, broker=broker)
