"""Build, check and verify the YuNet TFLite model and its ``models/manifest.json`` entry.

    python tools/build_yunet.py            # rebuild; refuses a file whose sha256 differs from the manifest
    python tools/build_yunet.py --check    # verify the file present (no torch, no yuface needed)
    python tools/build_yunet.py --verify   # boxes, landmarks and scores against yuface.detect

Building needs the ``build-models`` extra (torch 2.13 CPU, litert-torch, ai-edge-quantizer and
yuface 2023.5.1, whose x86_64 wheel carries the weights). yuface is never needed at run time.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
MODELS = ROOT / "models"
MANIFEST = MODELS / "manifest.json"
NAME = "yunet"
FILE = "yunet_2023_float16.tflite"
BUILT_BY = "tools/build_yunet.py"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def entry(digest: str, size: int) -> dict[str, Any]:
    from tools.yunet.convert import INPUT_SIZE
    from tools.yunet.weights import LIBRARY, LIBRARY_SHA256, PACKAGE, VERSION

    side = INPUT_SIZE
    return {
        "kind": "detector",
        "family": "yunet",
        "file": FILE,
        "sha256": digest,
        "size": size,
        "source": {
            "registry": "pypi",
            "package": PACKAGE,
            "version": VERSION,
            "path": LIBRARY,
            "sha256": LIBRARY_SHA256,
            "upstream": "libfacedetection (Shiqi Yu, ShiqiYu/libfacedetection) YuNet face detector; weights from the "
            "library's exported data symbols (param_pConvInfo), network of src/facedetectcnn-model.cpp",
            "built_by": BUILT_BY,
            "tools": "torch 2.13.0 (CPU), litert-torch 0.10.0, ai-edge-quantizer 0.10.0",
        },
        "licence": "BSD-3-Clause (libfacedetection licence, Copyright (c) 2018-2021 and 2023-2025 Shiqi Yu; "
        "reproduced in docs/models.md)",
        "training_data": "WIDER FACE, per libfacedetection's README",
        "precision": "float16 weights, float32 compute",
        "input": {
            "shape": [1, side, side, 3],
            "dtype": "float32",
            "colour": "RGB",
            "normalisation": "x",
            "resize": "scale, zero padding right and bottom to multiples of 32",
        },
        "outputs": {f"stride{s}": [1, side // s, side // s, 16] for s in (8, 16, 32)},
        "output_channels": ["cls", "obj", "dx", "dy", "log_w", "log_h", *[f"{p}{a}" for p in range(5) for a in "xy"]],
        "keypoints": ["right_eye", "left_eye", "nose_tip", "right_mouth_corner", "left_mouth_corner"],
        "score_threshold": 0.5,
        "retry_score_threshold": 0.6,
        "nms_iou": 0.3,
        "min_face_input_px": 16.0,
        "input_multiple": 32,
    }


def check(manifest: dict[str, Any]) -> int:
    """1 when the YuNet file is missing or differs from its manifest entry."""
    listed = manifest["models"].get(NAME)
    if listed is None:
        print(f"BAD      {NAME}: not in {MANIFEST.name}")
        return 1
    path = MODELS / listed["file"]
    if not path.is_file():
        print(f"BAD      {NAME}: {listed['file']} is missing")
        return 1
    digest = sha256(path.read_bytes())
    good = digest == listed["sha256"]
    print(f"{'ok      ' if good else 'BAD     '} {NAME}: {listed['file']}{'' if good else f' has sha256 {digest}'}")
    return 0 if good else 1


def build() -> bytes:
    from tools.yunet import convert
    from tools.yunet.weights import read_layers

    layers = read_layers()
    print(f"read {len(layers)} convolutions from the yuface wheel")
    return convert.float16_tflite(convert.float32_tflite(layers))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="verify the file present against the manifest")
    parser.add_argument("--verify", action="store_true", help="compare with yuface.detect on photos and distant scenes")
    parser.add_argument("--update-hashes", action="store_true", help="record a new hash (a deliberate model change)")
    parser.add_argument("--images", type=Path, nargs="*", help="--verify: images (default: development faces and scenes)")
    args = parser.parse_args(argv)
    manifest = json.loads(MANIFEST.read_text(encoding="utf-8"))
    if args.check:
        return check(manifest)
    if args.verify:
        from tools.yunet.verify import verify

        return verify(MODELS / FILE, args.images)
    data = build()
    digest = sha256(data)
    old = manifest["models"].get(NAME)
    if old is not None and old["sha256"] != digest and not args.update_hashes:
        print(f"BAD      {NAME}: rebuilt sha256 {digest}, the manifest says {old['sha256']}")
        print("refusing to write; pass --update-hashes for a deliberate model change")
        return 1
    new = entry(digest, len(data))
    # Values measured or calibrated after the build (thresholds, reach) stay as the manifest has them.
    keep = ("score_threshold", "retry_score_threshold", "nms_iou", "min_face_input_px", "verify_score", "note", "verify_note")
    manifest["models"][NAME] = new | {k: old[k] for k in keep if old is not None and k in old}
    (MODELS / FILE).write_bytes(data)
    MANIFEST.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    print(f"wrote    {NAME}: {FILE} ({len(data)} bytes, sha256 {digest})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
