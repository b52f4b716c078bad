"""PyTorch → TFLite: the float32 reference, a float16-weight copy and a full-integer int8 model.

Every step is deterministic (fixed weights, fixed calibration crops in file order), so a
rebuild gives byte-identical files and the hashes in ``models/manifest.json`` hold.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tools.dlib_resnet.dat import DlibNet

log = logging.getLogger(__name__)

INPUT_SIZE = 150
# The int8 input covers the whole pixel range, not just what the calibration crops reach:
# with min 0 and max 255 the input scale is exactly 1 and zero point -128 (int8 = pixel - 128).
PIXEL_RANGE = (0.0, 255.0)


def float32_tflite(net: DlibNet, batch: int) -> bytes:
    """The rebuilt network converted with litert-torch: NHWC float32 [batch, 150, 150, 3] raw RGB in."""
    import litert_torch
    import torch

    from tools.dlib_resnet.net import DlibResNet

    model = DlibResNet(net).eval()
    sample = (torch.zeros(batch, INPUT_SIZE, INPUT_SIZE, 3),)
    edge_model = litert_torch.convert(model, sample)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.tflite"
        edge_model.export(str(path))
        return path.read_bytes()


def _quantizer(float_model: bytes, recipe: Any = None) -> Any:
    from ai_edge_quantizer import quantizer

    return quantizer.Quantizer(bytearray(float_model), recipe)


def _serialise(result: Any) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.tflite"
        result.export_model(str(path))
        return path.read_bytes()


def float16_tflite(float_model: bytes) -> bytes:
    """Weights stored as float16 (half the size), computed in float32: same embeddings, same speed."""
    from ai_edge_quantizer import qtyping, recipe

    q = _quantizer(float_model)
    q.add_weight_only_config(
        regex=".*",
        operation_name=qtyping.TFLOperationName.ALL_SUPPORTED,
        num_bits=16,
        algorithm_key=recipe.AlgorithmName.FLOAT_CASTING,
    )
    return _serialise(q.quantize())


def int8_tflite(float_model: bytes, crops: Sequence[np.ndarray]) -> bytes:
    """Full-integer model (int8 weights, activations, input and output) calibrated on ``crops``."""
    from ai_edge_quantizer import recipe

    q = _quantizer(float_model, recipe.static_wi8_ai8())
    signature, input_name = _signature(float_model)
    batch = _input_shape(float_model)[0]
    samples = [np.stack(list(crops[i : i + batch])).astype(np.float32) for i in range(0, len(crops) - batch + 1, batch)]
    calibration = q.calibrate({signature: [{input_name: s} for s in samples]}, num_threads=1)
    tensor = _input_tensor_name(float_model)
    if tensor not in calibration:
        raise KeyError(f"calibration has no entry for the input tensor {tensor!r}")
    calibration[tensor] = {**calibration[tensor], "min": np.array(PIXEL_RANGE[0]), "max": np.array(PIXEL_RANGE[1])}
    return _serialise(q.quantize(calibration))


def _interpreter(model: bytes) -> Any:
    from ai_edge_litert import interpreter

    return interpreter.Interpreter(model_content=model)


def _signature(model: bytes) -> tuple[str, str]:
    signatures = _interpreter(model).get_signature_list()
    name = next(iter(signatures))
    return name, str(signatures[name]["inputs"][0])


def _input_shape(model: bytes) -> tuple[int, ...]:
    return tuple(int(x) for x in _interpreter(model).get_input_details()[0]["shape"])


def _input_tensor_name(model: bytes) -> str:
    return str(_interpreter(model).get_input_details()[0]["name"])


def run(model: bytes, crops: Sequence[np.ndarray]) -> np.ndarray:
    """Raw (not normalised) outputs of ``model`` for RGB uint8 crops, quantising I/O where the model is integer."""
    interp = _interpreter(model)
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    batch = int(inp["shape"][0])
    results = []
    for i in range(0, len(crops), batch):
        chunk = np.zeros(tuple(int(x) for x in inp["shape"]), np.float32)
        part = np.stack(list(crops[i : i + batch])).astype(np.float32)
        chunk[: len(part)] = part
        if inp["dtype"] != np.float32:
            scale, zero = inp["quantization"]
            info = np.iinfo(inp["dtype"])
            chunk = np.clip(np.round(chunk / scale + zero), info.min, info.max).astype(inp["dtype"])
        interp.set_tensor(inp["index"], chunk)
        interp.invoke()
        y = interp.get_tensor(out["index"]).astype(np.float32)
        if out["dtype"] != np.float32:
            scale, zero = out["quantization"]
            y = (y - zero) * scale
        results.append(y[: len(part)])
    return np.concatenate(results)
