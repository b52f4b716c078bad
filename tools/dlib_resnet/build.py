"""Build, check and verify the dlib ResNet TFLite models and their ``models/manifest.json`` entries.

    python tools/build_dlib_resnet.py            # rebuild; refuses files whose sha256 differs from the manifest
    python tools/build_dlib_resnet.py --check    # verify the files present (no torch, no dlib needed)
    python tools/build_dlib_resnet.py --verify   # cosine of each variant against dlib's own descriptors

Building needs the ``build-models`` extra (torch 2.13 CPU, litert-torch, ai-edge-quantizer,
dlib-bin, face_recognition_models 0.3.0) and the development faces for int8 calibration.
The float32 file is the reference (its sha256 names the embedding space) and is written to
models/ but not committed: the float16 file gives the same embeddings at half the size.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
MODELS = ROOT / "models"
MANIFEST = MODELS / "manifest.json"
DEFAULT_FACES = Path(os.environ.get("EDGE_DEV_FACES", "/work/shared/data/faces/faces.csv"))
DAT_SHA256 = "55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30"
REFERENCE = "dlib-resnet-float32"
FLOAT = "dlib-resnet"
INT8 = "dlib-resnet-int8"
FILES = {REFERENCE: "dlib_resnet_v1_float32.tflite", FLOAT: "dlib_resnet_v1_float16.tflite", INT8: "dlib_resnet_v1_int8.tflite"}
BUILT_BY = "tools/build_dlib_resnet.py"

log = logging.getLogger(__name__)

SOURCE = {
    "registry": "pypi",
    "package": "face_recognition_models",
    "version": "0.3.0",
    "path": "face_recognition_models/models/dlib_face_recognition_resnet_model_v1.dat",
    "sha256": DAT_SHA256,
    "upstream": "dlib (Davis E. King) dlib_face_recognition_resnet_model_v1, network of dlib's dnn_face_recognition_ex.cpp",
    "built_by": BUILT_BY,
    "tools": "torch 2.13.0 (CPU), litert-torch 0.10.0, ai-edge-quantizer 0.10.0",
}
LICENCE = (
    "CC0-1.0 (public domain dedication), as dlib's author states for dlib_face_recognition_resnet_model_v1 in the "
    "davisking/dlib-models README; the face_recognition_models package that redistributes it is MIT"
)
TRAINING = (
    "about 3 million faces, per dlib's README: the face scrub data set, the VGG data set and images scraped from "
    "the internet; 99.38% on LFW with jitter, 99.13% without (dnn_face_recognition_ex.cpp)"
)
INPUT = {
    "shape": [1, 150, 150, 3],
    "dtype": "float32",
    "colour": "RGB",
    "normalisation": "x",
    "alignment": "dlib-chip-150",
    "note": "raw 0..255 RGB: dlib's channel means (122.782, 117.001, 104.298) and /256 are folded into the first "
    "convolution; a batch of 1 (face and mirror are two calls, as fast as a batch of 2 here and what the Edge TPU "
    "compiler wants)",
}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def entries(hashes: dict[str, tuple[str, int]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Manifest entries for the shipped variants and the float32 reference, from (sha256, size) per name."""
    space = hashes[REFERENCE][0]

    def entry(name: str, precision: str, variant_of: str | None) -> dict[str, Any]:
        digest, size = hashes[name]
        return {
            "kind": "embedder",
            "file": FILES[name],
            "sha256": digest,
            "size": size,
            **({"variant_of": variant_of} if variant_of else {}),
            "source": SOURCE,
            "licence": LICENCE,
            "training_data": TRAINING,
            "precision": precision,
            "input": copy.deepcopy(INPUT),
            "outputs": {"embeddings": [1, 128]},
            "dimension": 128,
            "embedding_space": space,
        }

    reference = entry(REFERENCE, "float32 (the reference, matches dlib; built, not shipped)", None)
    reference["kind"] = "embedder-reference"
    models = {
        FLOAT: entry(FLOAT, "float16 weights, float32 compute: the float reference's embeddings (cosine > 0.99999)", REFERENCE),
        INT8: entry(INT8, "full-integer int8 (weights, activations, input and output), calibrated on dlib chips", FLOAT),
    }
    int8_input = models[INT8]["input"]
    int8_input["dtype"] = "int8"
    int8_input["quantisation"] = {"scale": 1.0, "zero_point": -128, "note": "int8 = pixel - 128"}
    models[INT8]["calibration_data"] = "dlib chips (get_face_chip 150 px, padding 0.25) of the development faces.csv"
    return models, reference


def check(manifest: dict[str, Any]) -> int:
    """Verify the dlib files present against the manifest; the unshipped float32 reference may be absent."""
    from tools.tflite_convert import check_files

    listed = {n: manifest["models"].get(n) for n in (FLOAT, INT8)} | {REFERENCE: manifest.get("references", {}).get(REFERENCE)}
    return check_files(listed, MODELS, MANIFEST.name, optional=frozenset({REFERENCE}))


def build(faces: Path) -> dict[str, bytes]:
    from tools.dlib_resnet import convert, dat
    from tools.dlib_resnet.reference import RESNET_FILE, DlibReference, package_file

    raw = package_file(RESNET_FILE).read_bytes()
    if sha256(raw) != DAT_SHA256:
        raise SystemExit(f"{RESNET_FILE} has sha256 {sha256(raw)}, expected {DAT_SHA256} (face_recognition_models 0.3.0)")
    net = dat.parse(raw)
    print(f"parsed {len(net.layers)} layers, input means {net.channel_means}, {net.input_size[0]}x{net.input_size[1]}")
    float32 = convert.float32_tflite(net, batch=1)
    float16 = convert.float16_tflite(float32)
    chips = [f.chip for f in DlibReference().faces(faces)]
    print(f"int8 calibration on {len(chips)} dlib chips of {faces}")
    return {REFERENCE: float32, FLOAT: float16, INT8: convert.int8_tflite(float32, chips)}


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    out: np.ndarray = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    return out


def verify(faces: Path) -> int:
    """Print each variant's cosine to dlib's descriptors on dlib chips, and int8 against float."""
    from tools.dlib_resnet import convert
    from tools.dlib_resnet.reference import DlibReference

    ref = DlibReference().faces(faces)
    chips = [f.chip for f in ref]
    dlib_desc = np.stack([f.descriptor for f in ref])
    outputs: dict[str, np.ndarray] = {}
    for name, file in FILES.items():
        path = MODELS / file
        if not path.is_file():
            print(f"{name}: {file} absent, skipped")
            continue
        outputs[name] = convert.run(path.read_bytes(), chips)
        cos = _cosine(outputs[name], dlib_desc)
        print(f"{name:20s} vs dlib: cosine min {cos.min():.7f} mean {cos.mean():.7f} ({len(chips)} chips)")
    float_name = REFERENCE if REFERENCE in outputs else FLOAT
    if INT8 in outputs and float_name in outputs:
        cos = _cosine(outputs[INT8], outputs[float_name])
        print(f"{INT8:20s} vs {float_name}: cosine min {cos.min():.7f} mean {cos.mean():.7f}")
    worst = min((_cosine(outputs[n], dlib_desc).min() for n in (REFERENCE, FLOAT) if n in outputs), default=0.0)
    return 0 if worst >= 0.999 else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="verify the files present against the manifest")
    parser.add_argument("--verify", action="store_true", help="compare the models with dlib on the development faces")
    parser.add_argument("--update-hashes", action="store_true", help="record new hashes (a deliberate model change)")
    parser.add_argument("--faces", type=Path, default=DEFAULT_FACES, help="path,identity CSV for calibration and --verify")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    manifest = json.loads(MANIFEST.read_text(encoding="utf-8"))
    if args.check:
        return 1 if check(manifest) else 0
    if args.verify:
        return verify(args.faces)
    built = build(args.faces)
    hashes = {name: (sha256(data), len(data)) for name, data in built.items()}
    known = {n: manifest["models"].get(n) for n in (FLOAT, INT8)} | {REFERENCE: manifest.get("references", {}).get(REFERENCE)}
    changed = [n for n, e in known.items() if e is not None and e["sha256"] != hashes[n][0]]
    if changed and not args.update_hashes:
        for name in changed:
            print(f"BAD      {name}: rebuilt sha256 {hashes[name][0]}, the manifest says {known[name]['sha256']}")  # type: ignore[index]
        print("refusing to write; pass --update-hashes for a deliberate model change")
        return 1
    models, reference = entries(hashes)
    for name, entry in models.items():
        old = manifest["models"].get(name, {})
        manifest["models"][name] = entry | ({"threshold": old["threshold"]} if "threshold" in old and not changed else {})
    manifest.setdefault("references", {})[REFERENCE] = reference
    for name, data in built.items():
        (MODELS / FILES[name]).write_bytes(data)
        print(f"wrote    {name}: {FILES[name]} ({len(data)} bytes, sha256 {hashes[name][0]})")
    MANIFEST.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
