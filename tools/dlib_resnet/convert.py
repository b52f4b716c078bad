"""PyTorch → TFLite: the float32 reference, a float16-weight copy and a full-integer int8 model.

The conversion steps are tools/tflite_convert.py's; here only what is dlib's: the network, its
150x150 input, batches of crops. Calibration crops are taken in file order, so rebuilds hash the same.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tools import tflite_convert
from tools.dlib_resnet.dat import DlibNet
from tools.tflite_convert import float16_tflite

__all__ = ["INPUT_SIZE", "float16_tflite", "float32_tflite", "int8_tflite", "run"]

INPUT_SIZE = 150


def float32_tflite(net: DlibNet, batch: int) -> bytes:
    """The rebuilt network converted with litert-torch: NHWC float32 [batch, 150, 150, 3] raw RGB in."""
    import torch

    from tools.dlib_resnet.net import DlibResNet

    return tflite_convert.float32_tflite(DlibResNet(net).eval(), (torch.zeros(batch, INPUT_SIZE, INPUT_SIZE, 3),))


def int8_tflite(float_model: bytes, crops: Sequence[np.ndarray]) -> bytes:
    """Full-integer model (int8 weights, activations, input and output) calibrated on ``crops``, a batch at a time."""
    batch = _input_shape(float_model)[0]
    samples = [np.stack(list(crops[i : i + batch])) for i in range(0, len(crops) - batch + 1, batch)]
    return tflite_convert.int8_tflite(float_model, samples)


def _input_shape(model: bytes) -> tuple[int, ...]:
    return tuple(int(x) for x in tflite_convert.interpreter(model).get_input_details()[0]["shape"])


def run(model: bytes, crops: Sequence[np.ndarray]) -> np.ndarray:
    """Raw (not normalised) outputs of ``model`` for RGB uint8 crops, quantising I/O where the model is integer."""
    interp = tflite_convert.interpreter(model)
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    batch = int(inp["shape"][0])
    results = []
    for i in range(0, len(crops), batch):
        chunk = np.zeros(tuple(int(x) for x in inp["shape"]), np.float32)
        part = np.stack(list(crops[i : i + batch])).astype(np.float32)
        chunk[: len(part)] = part
        interp.set_tensor(inp["index"], tflite_convert.quantise(chunk, inp))
        interp.invoke()
        results.append(tflite_convert.dequantise(interp.get_tensor(out["index"]), out)[: len(part)])
    return np.concatenate(results)
