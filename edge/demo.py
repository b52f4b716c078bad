"""``edge demo``: recognition on the sample photos shipped with the package, no camera or data set needed.

One person (the astronaut) is enrolled from her photo; then altered copies of her photo
and of another person's photo (the photographer) come in as probes, the way a camera
would see them: smaller, tilted, darker, blurred, JPEG-compressed. Each probe shows its
face quality, its cosine score against the enrolled person, the threshold applied to
that face, and the decision.
"""

from __future__ import annotations

from collections.abc import Iterator

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


def run_demo(analyser: FaceAnalyser) -> int:
    enrol = analyser.analyse(sample_image("astronaut.png"), largest_only=True)
    if not enrol or not enrol[0].passed_gate:
        print("demo: the enrolment photo gave no usable face")
        return 1
    template = enrol[0].embedding
    print(f"enrolled 'astronaut' from astronaut.png ({analyser.embedder.name}, {analyser.embedder.dimension}-d)")
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
            score = float(template @ f.embedding)
            t = analyser.threshold.for_face(q)
            hit = score >= t
            wrong += hit != truth
            decision = "HIT astronaut" if hit else "no match"
            print(f"{name:<34} {q.size_px:>7.0f} {q.sharpness:>6.0f} {q.yaw:>5.0f} {score:>6.3f} {t:>6.3f}  {decision}")
    print(f"\n{'all decisions right' if not wrong else f'{wrong} wrong decisions'}")
    return 0 if not wrong else 1
