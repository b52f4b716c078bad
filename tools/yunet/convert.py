"""YuNet PyTorch → TFLite (float32, then float16 weights): deterministic, so rebuilds hash the same."""

from __future__ import annotations

import tempfile
from pathlib import Path

from tools.yunet.weights import Conv

INPUT_SIZE = 320  # the file's input side; the detector rewrites it for other multiples of 32


def float32_tflite(layers: list[Conv], size: int = INPUT_SIZE) -> bytes:
    """The rebuilt network converted with litert-torch: NHWC float32 [1, size, size, 3] raw RGB in."""
    import litert_torch
    import torch

    from tools.yunet.net import YuNet

    model = YuNet(layers).eval()
    edge_model = litert_torch.convert(model, (torch.zeros(1, size, size, 3),))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.tflite"
        edge_model.export(str(path))
        return path.read_bytes()


def float16_tflite(float_model: bytes) -> bytes:
    """Weights stored as float16, computed in float32 (the dlib build's recipe)."""
    from tools.dlib_resnet.convert import float16_tflite as cast

    return cast(float_model)
