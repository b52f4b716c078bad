"""Face embedding: the ``Embedder`` interface and MobileFaceNet on TFLite.

The MobileFaceNet export has a fixed batch of 2 (it cannot be resized to 1 under
XNNPACK). A single face fills both slots with the crop and its mirror image; the two
embeddings are summed before L2 normalisation, which makes the result less sensitive
to pose and lighting asymmetry. Several faces are embedded two crops per call.
"""

from __future__ import annotations

import logging
from typing import Protocol

import numpy as np

from edge.runtime import LoadedModel

log = logging.getLogger(__name__)


class Embedder(Protocol):
    name: str
    dimension: int
    crop_size: int
    sha256: str
    embedding_space: str

    def embed(self, crops: list[np.ndarray]) -> np.ndarray:
        """(N, dimension) float32 L2-normalised embeddings of aligned RGB crops."""
        ...


def l2_normalise(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    out: np.ndarray = (x / np.maximum(norms, 1e-10)).astype(np.float32)
    return out


class TFLiteEmbedder:
    def __init__(self, model: LoadedModel, *, flip: bool = True) -> None:
        spec = model.spec
        self.model = model
        self.name = spec.name
        self.sha256 = spec.sha256
        self.embedding_space = str(spec.extra.get("embedding_space", spec.sha256))
        self.dimension = int(spec.extra["dimension"])
        self.batch = int(model.input_shape[0])
        self.crop_size = int(model.input_shape[1])
        self.flip = flip
        norm = spec.extra["input"]["normalisation"]
        if norm != "(x - 127.5) / 128":
            raise ValueError(f"{self.name}: unsupported normalisation {norm!r}")

    def _run(self, crops: list[np.ndarray]) -> np.ndarray:
        """Raw embeddings for up to ``batch`` crops (unused slots are zeros)."""
        tensor = np.zeros((self.batch, self.crop_size, self.crop_size, 3), dtype=np.float32)
        for i, crop in enumerate(crops):
            tensor[i] = (crop.astype(np.float32) - 127.5) / 128.0
        return np.asarray(self.model.run(tensor)[0][: len(crops)], dtype=np.float32)

    def embed(self, crops: list[np.ndarray]) -> np.ndarray:
        if not crops:
            return np.zeros((0, self.dimension), dtype=np.float32)
        for c in crops:
            if c.shape != (self.crop_size, self.crop_size, 3):
                raise ValueError(f"{self.name} needs {self.crop_size}x{self.crop_size} RGB crops, got {c.shape}")
        inputs = [x for c in crops for x in (c, c[:, ::-1])] if self.flip else list(crops)
        raw = np.concatenate([self._run(inputs[i : i + self.batch]) for i in range(0, len(inputs), self.batch)])
        if self.flip:
            raw = l2_normalise(raw).reshape(len(crops), 2, -1).sum(axis=1)
        return l2_normalise(raw)
