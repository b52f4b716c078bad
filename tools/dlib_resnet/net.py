"""dlib's face-recognition ResNet (``dnn_face_recognition_ex.cpp``, ``anet_type``) in PyTorch.

Each ``affine`` layer (dlib's frozen batch-norm) is folded into the convolution before it,
and the input layer's channel means and /256 scale into the first convolution (it has no
padding, so the fold is exact). The model therefore takes raw 0..255 RGB pixels, NHWC.

dlib adds tensors of different shapes by zero-filling the smaller one at the end of each
dimension (``add_prev``): the shortcut of a down-sampling block has fewer channels than the
block, and at 8→4 px the 2×2 average pool gives 4×4 while the stride-2 convolution gives
3×3. The shortcut's average pool plus channel zero-fill is written as one 2×2 stride-2
convolution with weights 1/4 on the diagonal (exact, and the converter keeps it NHWC where a
channel PAD in NCHW made it wrap every later ADD in TRANSPOSEs); the spatial shortfall is
zero-padded at the bottom and right as dlib does.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 - the conventional name
from torch import nn

from tools.dlib_resnet.dat import DatFormatError, DlibNet, Layer

# (channels, blocks, first block down-samples) from input side: alevel4 … alevel0.
LEVELS = ((32, 3, False), (64, 4, True), (128, 3, True), (256, 3, True), (256, 1, True))


def _grow_hw(t: torch.Tensor, h: int, w: int) -> torch.Tensor:
    if t.shape[2] == h and t.shape[3] == w:
        return t
    return F.pad(t, (0, w - t.shape[3], 0, h - t.shape[2]))


def _pooling_shortcut(pool: Layer, channels_in: int, channels_out: int) -> nn.Conv2d:
    """avg_pool (no padding) followed by zero channels, as one convolution."""
    if pool.kind != "avg_pool_2" or pool.ints["padding_y"] or pool.ints["padding_x"]:
        raise DatFormatError(f"expected an unpadded avg_pool_ shortcut, found {pool.kind} {pool.ints}")
    kh, kw = pool.ints["nr"], pool.ints["nc"]
    conv = nn.Conv2d(channels_in, channels_out, (kh, kw), stride=(pool.ints["stride_y"], pool.ints["stride_x"]), bias=False)
    with torch.no_grad():
        conv.weight.zero_()
        for c in range(channels_in):
            conv.weight[c, c] = 1.0 / (kh * kw)
    return conv


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
        conv.bias = nn.Parameter(torch.from_numpy(con.arrays["bias"] * gamma + beta))
    return conv


class Block(nn.Module):
    """relu(shortcut + affine(con(relu(affine(con(x)))))), the shortcut average-pooled when down-sampling."""

    def __init__(self, layers: list[Layer], down: bool) -> None:
        super().__init__()
        self.conv1 = _conv(layers[0], layers[1])
        self.conv2 = _conv(layers[3], layers[4])
        self.shortcut: nn.Conv2d | None = None
        if down:
            self.shortcut = _pooling_shortcut(layers[5], self.conv1.in_channels, self.conv2.out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(F.relu(self.conv1(x)))
        if self.shortcut is None:
            return F.relu(y + x)
        s = self.shortcut(x)
        h, w = max(y.shape[2], s.shape[2]), max(y.shape[3], s.shape[3])
        return F.relu(_grow_hw(y, h, w) + _grow_hw(s, h, w))


class DlibResNet(nn.Module):
    def __init__(self, net: DlibNet, *, nhwc: bool = True) -> None:
        super().__init__()
        layers = list(net.layers)
        self.nhwc = nhwc
        stem = _conv(layers[0], layers[1])
        # Fold input_rgb_image_sized: (x - mean) / 256 feeds a padding-free convolution.
        means = torch.tensor(net.channel_means, dtype=torch.float32)
        with torch.no_grad():
            shift = (stem.weight * means[None, :, None, None]).sum(dim=(1, 2, 3)) / 256.0
            stem.bias = nn.Parameter(stem.bias.data - shift if stem.bias is not None else -shift)
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
        # avg_pool_everything as a pooling op: a MEAN over NCHW axes made the converter insert a TRANSPOSE.
        x = F.avg_pool2d(x, (int(x.shape[2]), int(x.shape[3])))
        out: torch.Tensor = self.fc(x.flatten(1))
        return out
