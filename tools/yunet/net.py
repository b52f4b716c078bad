"""YuNet (libfacedetection 2023) as a PyTorch module, with the weights of the ``yuface`` wheel.

The forward pass follows libfacedetection's ``objectdetect_cnn`` (src/facedetectcnn-model.cpp):
a 3x3 stride-2 head, depthwise-separable blocks (1x1 conv, then 3x3 depthwise conv and ReLU)
with 2x2 max pooling between stages, a top-down neck with nearest 2x upsampling and
additions, and per level (strides 8, 16, 32) four heads: class and objectness logits,
box (dx, dy, log w, log h) and 5 landmarks (dx, dy), all in units of the stride.

Input: NHWC float32 RGB, raw 0..255 (libfacedetection takes BGR: the head's input channels
are swapped here instead), height and width multiples of 32. Output per level: an NHWC map
of 16 channels (cls, obj, 4 box, 10 landmarks), raw: decoding is the detector's job.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from tools.yunet.weights import Conv

HEAD_ORDER = ("cls", "obj", "bbox", "kps")  # output channel groups, 1 + 1 + 4 + 10
# Table indices of libfacedetection's forward pass (pointwise, depthwise pairs).
BACKBONE_UNITS = [(3, 4, 5, 6), (7, 8, 9, 10), (11, 12, 13, 14), (15, 16, 17, 18), (19, 20, 21, 22)]
NECK = {0: (23, 24), 1: (25, 26), 2: (27, 28)}
HEADS = {"cls": 29, "bbox": 35, "obj": 41, "kps": 47}  # level l uses index + 2 * l (pointwise) and + 1 (depthwise)


def _pointwise(conv: Conv) -> nn.Conv2d:
    layer = nn.Conv2d(conv.in_channels, conv.out_channels, 1)
    layer.weight.data = torch.from_numpy(conv.weight.reshape(conv.out_channels, conv.in_channels, 1, 1).copy())
    layer.bias.data = torch.from_numpy(conv.bias.copy())
    return layer


def _depthwise(conv: Conv) -> nn.Conv2d:
    layer = nn.Conv2d(conv.out_channels, conv.out_channels, 3, padding=1, groups=conv.out_channels)
    layer.weight.data = torch.from_numpy(np.ascontiguousarray(conv.weight.T.reshape(conv.out_channels, 1, 3, 3)))
    layer.bias.data = torch.from_numpy(conv.bias.copy())
    return layer


class _DP(nn.Module):
    """libfacedetection's convolutionDP: 1x1 conv, 3x3 depthwise conv, optional ReLU."""

    def __init__(self, layers: list[Conv], p: int, d: int, relu: bool = True) -> None:
        super().__init__()
        self.p, self.d, self.relu = _pointwise(layers[p]), _depthwise(layers[d]), relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.d(self.p(x))
        return torch.relu(y) if self.relu else y


def head_conv(first: Conv) -> nn.Conv2d:
    """The 3x3 stride-2 head: libfacedetection stores it as a 1x1 conv over 27 (+5 zero) inputs ordered
    (row, column, channel) of the 3x3 window, fed BGR; here a real 3x3 conv fed RGB."""
    w = first.weight[:, :27].reshape(first.out_channels, 3, 3, 3)  # out, ky, kx, BGR
    w = w[:, :, :, ::-1].transpose(0, 3, 1, 2)  # out, RGB, ky, kx
    layer = nn.Conv2d(3, first.out_channels, 3, stride=2, padding=1)
    layer.weight.data = torch.from_numpy(np.ascontiguousarray(w))
    layer.bias.data = torch.from_numpy(first.bias.copy())
    return layer


class YuNet(nn.Module):
    def __init__(self, layers: list[Conv]) -> None:
        super().__init__()
        self.head = head_conv(layers[0])
        self.stem = _DP(layers, 1, 2)
        self.units = nn.ModuleList(nn.Sequential(_DP(layers, a, b), _DP(layers, c, d)) for a, b, c, d in BACKBONE_UNITS)
        self.neck = nn.ModuleList(_DP(layers, *NECK[level]) for level in range(3))
        self.heads = nn.ModuleList(
            nn.ModuleList(_DP(layers, HEADS[name] + 2 * level, HEADS[name] + 2 * level + 1, relu=False) for name in HEAD_ORDER)
            for level in range(3)
        )

    def forward(self, image: torch.Tensor) -> tuple[Any, ...]:
        x = image.permute(0, 3, 1, 2)  # NHWC in, as TFLite wants
        x = self.stem(torch.relu(self.head(x)))
        x = nn.functional.max_pool2d(x, 2)
        x = self.units[1](self.units[0](x))
        fb1 = self.units[2](nn.functional.max_pool2d(x, 2))
        fb2 = self.units[3](nn.functional.max_pool2d(fb1, 2))
        fb3 = self.units[4](nn.functional.max_pool2d(fb2, 2))
        fb3 = self.neck[2](fb3)
        fb2 = self.neck[1](nn.functional.interpolate(fb3, scale_factor=2, mode="nearest") + fb2)
        fb1 = self.neck[0](nn.functional.interpolate(fb2, scale_factor=2, mode="nearest") + fb1)
        outs = []
        for level, feat in enumerate((fb1, fb2, fb3)):
            maps = torch.cat([head(feat) for head in self.heads[level]], dim=1)
            outs.append(maps.permute(0, 2, 3, 1))
        return tuple(outs)
