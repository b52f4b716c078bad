"""Build the distant-face development sets: faces of ../shared/data/faces shrunk to 30-60 px in 1920x1080 scenes.

    python tools/build_distant_set.py --out build/distant [--faces ../shared/data/faces] [--seed 0]
    edge eval --manifest build/distant/faces.csv --nonfaces build/distant/nonfaces.csv

    python tools/build_distant_set.py --variant camera --out build/camera
    edge eval --manifest build/camera/whole/faces.csv --nonfaces build/camera/nonfaces.csv   # also patch/, multi/

The original set (``--variant original``, the default) writes ``faces.csv`` (the eval manifest),
``truth.csv`` (where each face was placed) and ``nonfaces.csv`` (every face-free image upscaled to
a full scene); it sizes faces by the default detector's box and skips photos it misses. The camera
set (``edge/measure/camera_scenes.py``) writes the variants ``whole``, ``patch`` and ``multi`` plus one
face-free set with face-like distractors; faces are sized by tools/data/distant_reference.csv.
Beside each ``faces.csv`` goes ``faces_photo_enrolled.csv``: the same scenes, except that each identity
``edge eval`` enrols is enrolled from the original photo of the scene it would have enrolled (copied
under ``enrol_photos/``, which sorts first), as a watchlist enrols from a good photo.
Deterministic for a seed.
"""

from __future__ import annotations

import argparse
import csv
import logging
import shutil
import sys
from pathlib import Path

from edge.config import RecognitionSettings
from edge.detectors.blazeface import BlazeFaceDetector
from edge.measure import camera_scenes
from edge.measure.protocol import read_manifest, split
from edge.measure.scenes import build_distant_set, build_nonface_scenes, write_csv
from edge.models import load_manifest
from edge.runtime import load_model
from edge.sources import load_image

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "tools" / "data" / "distant_reference.csv"
ORIGINAL_DETECTOR = "blazeface-full-range"
LOOKALIKES = ("mask", "chelsea", "horse")  # face-like objects: masks, a cat's face, a horse's head


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--faces", type=Path, default=ROOT.parent / "shared" / "data" / "faces", help="development data folder")
    ap.add_argument("--out", type=Path, default=ROOT / "build" / "distant", help="output folder")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--min-px", type=float, default=30.0, help="smallest face width placed")
    ap.add_argument("--max-px", type=float, default=60.0, help="largest face width placed")
    ap.add_argument("--variant", choices=["original", "camera"], default="original", help="which set (see above)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    if args.variant == "camera":
        return build_camera(args)
    # The original set is defined by BlazeFace's boxes (kept as it was, for comparison).
    settings = RecognitionSettings()
    det = BlazeFaceDetector(load_model(load_manifest(settings.models_dir), ORIGINAL_DETECTOR, kind="detector"))
    nonfaces = read_manifest(args.faces / "nonfaces.csv")
    # Scene backgrounds: the photographic face-free images (not the mask cut-outs, which are face-shaped).
    backgrounds = [load_image(s.path) for s in nonfaces if "mask" not in s.path.name]
    manifest, skipped = build_distant_set(
        read_manifest(args.faces / "faces.csv"),
        backgrounds,
        det,
        args.out,
        min_px=args.min_px,
        max_px=args.max_px,
        seed=args.seed,
    )
    build_nonface_scenes([(s.path.name, load_image(s.path)) for s in nonfaces], args.out)
    print(f"wrote {manifest} ({skipped} source photos without a findable face skipped) and {args.out / 'nonfaces.csv'}")
    print(f"wrote {photo_enrolled(manifest, args.faces / 'faces.csv')}")
    return 0


def photo_enrolled(manifest: Path, faces: Path) -> Path:
    """``faces_photo_enrolled.csv`` beside ``manifest``: each enrolled identity's enrolment scene replaced by its photo.

    Scene ``scenes/<identity>/<i>.jpg`` shows row ``i`` of ``faces``. The photo is copied to
    ``enrol_photos/<identity>/``, which sorts before ``scenes/`` so edge eval's split enrols it.
    """
    photos = read_manifest(faces)
    scenes = read_manifest(manifest)
    sp = split(scenes)
    replace = {idx[0] for idx in sp.enrolled.values()}
    rows: list[tuple[object, ...]] = []
    for i, s in enumerate(scenes):
        rel = s.path.relative_to(manifest.parent)
        if i in replace:
            src = photos[int(s.path.stem)]
            if src.identity != s.identity:
                raise SystemExit(f"{rel}: row {s.path.stem} of {faces} is {src.identity}, not {s.identity}")
            rel = Path("enrol_photos") / s.identity / f"{s.path.stem}{src.path.suffix}"
            (manifest.parent / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src.path, manifest.parent / rel)
        rows.append((rel.as_posix(), s.identity))
    out = manifest.parent / "faces_photo_enrolled.csv"
    write_csv(out, ["path", "identity"], rows)
    return out


def build_camera(args: argparse.Namespace) -> int:
    nonfaces = read_manifest(args.faces / "nonfaces.csv")
    # Masks are face-shaped: distractors, not background. Animals are both.
    backgrounds = [load_image(s.path) for s in nonfaces if "mask" not in s.path.name]
    lookalikes = [load_image(s.path) for s in nonfaces if any(k in s.path.name for k in LOOKALIKES)]
    with REFERENCE.open(encoding="utf-8") as fh:
        table = {
            r["path"]: (float(r["x"]), float(r["y"]), float(r["w"]), float(r["h"])) if r["w"] else None
            for r in csv.DictReader(fh)
        }
    sources = camera_scenes.reference_boxes(read_manifest(args.faces / "faces.csv"), table, args.faces)
    for variant in camera_scenes.VARIANTS:
        manifest = camera_scenes.build_camera_set(
            sources, backgrounds, lookalikes, args.out, variant, min_px=args.min_px, max_px=args.max_px, seed=args.seed
        )
        print(f"wrote {manifest} ({len(sources)} scenes) and {photo_enrolled(manifest, args.faces / 'faces.csv')}")
    print(f"wrote {camera_scenes.build_camera_nonfaces(backgrounds, lookalikes, args.out, seed=args.seed)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
