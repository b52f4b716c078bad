"""Build, check and verify the YuNet TFLite model and its ``models/manifest.json`` entry.

    python tools/build_yunet.py            # rebuild; refuses files whose sha256 differs from the manifest
    python tools/build_yunet.py --check    # verify the files present (no torch, no yuface needed)
    python tools/build_yunet.py --verify   # boxes, landmarks and scores against yuface.detect
    python tools/build_yunet.py --speed    # detection time of both models, called in turn on the same frames

Two models: ``yunet`` (float16 weights) and ``yunet-int8`` (full-integer: int8 weights per channel,
int8 activations, int8 input and outputs, for integer CPUs and the Edge TPU op set), calibrated on
the images listed in tools/yunet/calibration.csv (development photos and distant scenes built by
``tools/build_distant_set.py --out build/distant``).

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
INT8 = "yunet-int8"
FILES = {NAME: "yunet_2023_float16.tflite", INT8: "yunet_2023_int8.tflite"}
# Values measured or calibrated after the build (thresholds, reach, verification), kept across rebuilds;
# the int8 model starts from the float16 model's until measured on its own.
MEASURED = ("score_threshold", "retry_score_threshold", "nms_iou", "min_face_input_px", "verify_score", "note", "verify_note")
BUILT_BY = "tools/build_yunet.py"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def entry(name: str, digest: str, size: int) -> dict[str, Any]:
    from tools.yunet.convert import INPUT_SIZE
    from tools.yunet.weights import LIBRARY, LIBRARY_SHA256, PACKAGE, VERSION

    side = INPUT_SIZE
    out: dict[str, Any] = {
        "kind": "detector",
        "family": "yunet",
        "file": FILES[name],
        "sha256": digest,
        "size": size,
        **({"variant_of": NAME} if name == INT8 else {}),
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
    if name == INT8:
        out["precision"] = "full-integer int8 (weights per output channel, activations, input and outputs)"
        out["input"]["dtype"] = "int8"
        out["input"]["quantisation"] = {"scale": 1.0, "zero_point": -128, "note": "int8 = pixel - 128"}
        out["output_quantisation"] = "int8 maps with their own scale and zero point each (in the file)"
        out["calibration_data"] = (
            "tools/yunet/calibration.csv: the development photos (faces, group photos, face-free images) as full-frame "
            "inputs and every other original distant scene as a fine-pass window around its face"
        )
    return out


def check(manifest: dict[str, Any]) -> int:
    """The number of YuNet files missing or differing from their manifest entries."""
    from tools.tflite_convert import check_files

    return check_files({name: manifest["models"].get(name) for name in FILES}, MODELS, MANIFEST.name)


def build() -> dict[str, bytes]:
    from tools.yunet import calibration, convert
    from tools.yunet.weights import read_layers

    layers = read_layers()
    print(f"read {len(layers)} convolutions from the yuface wheel")
    float32 = convert.float32_tflite(layers)
    samples = calibration.inputs()
    print(f"int8 calibration on {len(samples)} inputs listed in {calibration.LISTING.name}")
    return {NAME: convert.float16_tflite(float32), INT8: convert.int8_tflite(float32, samples)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="verify the file present against the manifest")
    parser.add_argument("--verify", action="store_true", help="compare with yuface.detect on photos and distant scenes")
    parser.add_argument("--speed", action="store_true", help="time both models' detection side by side")
    parser.add_argument("--update-hashes", action="store_true", help="record a new hash (a deliberate model change)")
    parser.add_argument("--images", type=Path, nargs="*", help="--verify: images (default: development faces and scenes)")
    args = parser.parse_args(argv)
    manifest = json.loads(MANIFEST.read_text(encoding="utf-8"))
    if args.check:
        return 1 if check(manifest) else 0
    if args.speed:
        from tools.yunet.speed import speed

        return speed(list(FILES))
    if args.verify:
        from tools.yunet import verify

        tolerances = {NAME: verify.FLOAT16, INT8: verify.INT8}
        return verify.verify({name: (MODELS / FILES[name], tolerances[name]) for name in FILES}, args.images)
    built = build()
    known = {name: manifest["models"].get(name) for name in FILES}
    changed = [n for n, e in known.items() if e is not None and e["sha256"] != sha256(built[n])]
    if changed and not args.update_hashes:
        for name in changed:
            print(f"BAD      {name}: rebuilt sha256 {sha256(built[name])}, the manifest says {known[name]['sha256']}")  # type: ignore[index]
        print("refusing to write; pass --update-hashes for a deliberate model change")
        return 1
    for name, data in built.items():
        old = known[name] or {}
        measured = old or manifest["models"][NAME]
        new = entry(name, sha256(data), len(data)) | {k: measured[k] for k in MEASURED if k in measured}
        # The entry's keys in the manifest's order, so an unchanged rebuild leaves the file unchanged.
        manifest["models"][name] = {k: new[k] for k in old if k in new} | new
        (MODELS / FILES[name]).write_bytes(data)
        print(f"wrote    {name}: {FILES[name]} ({len(data)} bytes, sha256 {sha256(data)})")
    MANIFEST.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
