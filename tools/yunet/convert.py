"""YuNet PyTorch → TFLite (float32, float16 weights, full-integer int8): deterministic, so rebuilds hash the same.

The conversion steps are tools/tflite_convert.py's (shared with the dlib ResNet build).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tools import tflite_convert
from tools.tflite_convert import float16_tflite
from tools.yunet.weights import Conv

__all__ = ["INPUT_SIZE", "float16_tflite", "float32_tflite", "int8_tflite"]

INPUT_SIZE = 320  # the file's input side; the detector rewrites it for other multiples of 32
# The int8 output maps: each level's 16 channels share one scale (a concatenation), so the range is set here,
# not by calibration: box and landmark offsets reach about +-9 strides for the largest faces; class and
# objectness logits beyond +-10 saturate harmlessly (sigmoid 0.99995). One step is 0.08 of a stride.
OUTPUT_RANGE = (-10.0, 10.0)


def float32_tflite(layers: list[Conv], size: int = INPUT_SIZE) -> bytes:
    """The rebuilt network converted with litert-torch: NHWC float32 [1, size, size, 3] raw RGB in."""
    import torch

    from tools.yunet.net import YuNet

    return tflite_convert.float32_tflite(YuNet(layers).eval(), (torch.zeros(1, size, size, 3),))


def int8_tflite(float_model: bytes, samples: Sequence[np.ndarray]) -> bytes:
    """Full-integer YuNet: int8 = pixel - 128 in, int8 maps out, calibrated on ``samples`` ([1, 320, 320, 3] each).

    Each activation's range is its extreme over all samples, not the quantizer's default moving average:
    with that, the last samples decide, and large faces (stride 32) saturated the class and objectness
    heads (scores off by 0.4 against yuface)."""
    return tflite_convert.int8_tflite(float_model, samples, output_range=OUTPUT_RANGE, moving_average=False)
