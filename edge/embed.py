"""Face embedding: the ``Embedder`` interface and TFLite embedders (MobileFaceNet, dlib's ResNet).

Each embedder's manifest entry says how its input is prepared: ``input.normalisation``
(applied to RGB 0..255 pixels), ``input.alignment`` (the crop template, see edge/align.py)
and the crop size (the model's input shape). Full-integer models (int8 input and output)
are fed and read through their tensors' quantisation parameters.

A single face fills a batch with the crop and its mirror image (two calls for a batch-1
model); the two embeddings are L2-normalised and summed before the final normalisation,
which makes the result less sensitive to pose and lighting asymmetry. MobileFaceNet's
export has a fixed batch of 2 (it cannot be resized to 1 under XNNPACK).
"""

from __future__ import annotations

import logging
from typing import Protocol

import numpy as np

from edge.align import DEFAULT_ALIGNMENT, TEMPLATES
from edge.errors import ModelError
from edge.runtime import LoadedModel

log = logging.getLogger(__name__)

# manifest normalisation -> (per-channel offset, divisor): model input = (pixel - offset) / divisor
NORMALISATIONS: dict[str, tuple[tuple[float, float, float], float]] = {
    "(x - 127.5) / 128": ((127.5, 127.5, 127.5), 128.0),
    # dlib's ResNet with its input layer folded into the first convolution: raw pixels.
    "x": ((0.0, 0.0, 0.0), 1.0),
    # dlib's input_rgb_image_sized, for an export that keeps it outside the model.
    "(x - [122.782, 117.001, 104.298]) / 256": ((122.782, 117.001, 104.298), 256.0),
}


class Embedder(Protocol):
    name: str
    dimension: int
    crop_size: int
    alignment: str
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
        inp = spec.extra["input"]
        norm = inp["normalisation"]
        if norm not in NORMALISATIONS:
            raise ModelError(f"{self.name}: unsupported normalisation {norm!r}; known: {sorted(NORMALISATIONS)}")
        offset, divisor = NORMALISATIONS[norm]
        self._offset = np.array(offset, dtype=np.float32)
        self._divisor = np.float32(divisor)
        self.alignment = str(inp.get("alignment", DEFAULT_ALIGNMENT))
        if self.alignment not in TEMPLATES:
            raise ModelError(f"{self.name}: unknown alignment {self.alignment!r}; known: {sorted(TEMPLATES)}")
        in_details = model.input_details()
        self._in_dtype = np.dtype(in_details["dtype"])
        self._in_q = model.quantisation(in_details)
        self._out_q = model.quantisation(model.output_details()[0])

    def _prepare(self, tensor: np.ndarray) -> np.ndarray:
        x = (tensor - self._offset) / self._divisor
        if self._in_q is None:
            return x.astype(self._in_dtype)
        scale, zero = self._in_q
        info = np.iinfo(self._in_dtype)
        return np.clip(np.round(x / scale + zero), info.min, info.max).astype(self._in_dtype)

    def _run(self, crops: list[np.ndarray]) -> np.ndarray:
        """Raw embeddings for up to ``batch`` crops (unused slots are zeros)."""
        tensor = np.zeros((self.batch, self.crop_size, self.crop_size, 3), dtype=np.float32)
        for i, crop in enumerate(crops):
            tensor[i] = crop
        raw = self.model.run(self._prepare(tensor))[0][: len(crops)]
        if self._out_q is None:
            return np.asarray(raw, dtype=np.float32)
        scale, zero = self._out_q
        out: np.ndarray = (raw.astype(np.float32) - zero) * scale
        return out

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
