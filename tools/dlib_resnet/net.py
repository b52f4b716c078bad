"""dlib's face-recognition ResNet (``dnn_face_recognition_ex.cpp``, ``anet_type``) in PyTorch.

Each ``affine`` layer (dlib's frozen batch-norm) is folded into the convolution before it,
and the input layer's channel means and /256 scale into the first convolution (it has no
padding, so the fold is exact). The model therefore takes raw 0..255 RGB pixels, NHWC.

dlib adds tensors of different shapes by zero-filling the smaller one at the end of each
dimension (``add_prev``): the shortcut of a down-sampling block has fewer channels than the
block, and at 8→4 px the 2×2 average pool gives 4×4 while the stride-2 convolution gives
3×3. ``_dlib_add`` reproduces that.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 - the conventional name
from torch import nn

from tools.dlib_resnet.dat import DatFormatError, DlibNet, Layer

# (channels, blocks, first block down-samples) from input side: alevel4 … alevel0.
LEVELS = ((32, 3, False), (64, 4, True), (128, 3, True), (256, 3, True), (256, 1, True))


def _dlib_add(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    c, h, w = (max(a.shape[i], b.shape[i]) for i in (1, 2, 3))

    def grow(t: torch.Tensor) -> torch.Tensor:
        if tuple(t.shape[1:]) == (c, h, w):
            return t
        return F.pad(t, (0, w - t.shape[3], 0, h - t.shape[2], 0, c - t.shape[1]))

    return grow(a) + grow(b)


def _conv(con: Layer, affine: Layer) -> nn.Conv2d:
    if not con.kind.startswith("con_") or not affine.kind.startswith("affine"):
        raise DatFormatError(f"expected con_ then affine_, found {con.kind} then {affine.kind}")
    w = con.arrays["weight"]
    gamma, beta = affine.arrays["gamma"], affine.arrays["beta"]
    conv = nn.Conv2d(
        w.shape[1],
        w.shape[0],
        (w.shape[2], w.shape[3]),
        stride=(con.ints["stride_y"], con.ints["stride_x"]),
        padding=(con.ints["padding_y"], con.ints["padding_x"]),
    )
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(w * gamma[:, None, None, None]))
        conv.bias.copy_(torch.from_numpy(con.arrays["bias"] * gamma + beta))
    return conv


class Block(nn.Module):
    """relu(shortcut + affine(con(relu(affine(con(x)))))), the shortcut average-pooled when down-sampling."""

    def __init__(self, layers: list[Layer], down: bool) -> None:
        super().__init__()
        self.conv1 = _conv(layers[0], layers[1])
        self.conv2 = _conv(layers[3], layers[4])
        self.pool = None
        if down:
            p = layers[5]
            self.pool = nn.AvgPool2d((p.ints["nr"], p.ints["nc"]), (p.ints["stride_y"], p.ints["stride_x"]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(F.relu(self.conv1(x)))
        shortcut = x if self.pool is None else self.pool(x)
        return F.relu(_dlib_add(y, shortcut))


class DlibResNet(nn.Module):
    def __init__(self, net: DlibNet, *, nhwc: bool = True) -> None:
        super().__init__()
        layers = list(net.layers)
        self.nhwc = nhwc
        stem = _conv(layers[0], layers[1])
        # Fold input_rgb_image_sized: (x - mean) / 256 feeds a padding-free convolution.
        means = torch.tensor(net.channel_means, dtype=torch.float32)
        with torch.no_grad():
            stem.bias -= (stem.weight * means[None, :, None, None]).sum(dim=(1, 2, 3)) / 256.0
            stem.weight /= 256.0
        if layers[0].ints["padding_y"] or layers[0].ints["padding_x"]:
            raise DatFormatError("the input normalisation can only be folded into an unpadded first convolution")
        self.stem = stem
        mp = layers[3]
        self.max_pool = nn.MaxPool2d((mp.ints["nr"], mp.ints["nc"]), (mp.ints["stride_y"], mp.ints["stride_x"]))
        pos = 4
        blocks: list[Block] = []
        for _, count, down_first in LEVELS:
            for i in range(count):
                down = down_first and i == 0
                span = 8 if down else 7  # con affine relu con affine [avg_pool] add_prev relu
                chunk = layers[pos : pos + span]
                if chunk[-2].kind != "add_prev_" or chunk[-1].kind != "relu_":
                    raise DatFormatError(f"layer {pos}: not the residual block dnn_face_recognition_ex defines")
                blocks.append(Block(chunk, down))
                pos += span
        self.blocks = nn.Sequential(*blocks)
        if layers[pos].kind != "avg_pool_2" or layers[pos].ints["nr"] != 0 or layers[pos + 1].kind != "fc_2":
            raise DatFormatError("expected avg_pool_everything then fc_no_bias at the top of the network")
        fc = layers[pos + 1]
        self.fc = nn.Linear(fc.ints["inputs"], fc.ints["outputs"], bias=False)
        with torch.no_grad():
            self.fc.weight.copy_(torch.from_numpy(np.ascontiguousarray(fc.arrays["weight"].T)))
        if pos + 2 != len(layers):
            raise DatFormatError(f"{len(layers) - pos - 2} unexpected layers after the fc layer")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.nhwc:
            x = x.permute(0, 3, 1, 2)
        x = self.max_pool(F.relu(self.stem(x)))
        x = self.blocks(x)
        return self.fc(x.mean(dim=(2, 3)))
