"""Read the layers of a serialised dlib DNN (``dlib/dnn/core.h``, ``layers.h``) without dlib.

dlib writes a network outermost layer first: the loss layer's details, then one version
number per nested layer down to the input layer, then each layer's details in forward
order (input to output), each followed by its ``add_layer`` bookkeeping (flags and empty
gradient tensors). Tag and skip layers leave nothing after their version number, so the
forward stream is just the computational layers; the topology (which tag a skip refers
to) comes from the network definition in ``net.py``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

INPUT_NAME = b"input_rgb_image_sized"


class DatFormatError(ValueError):
    """The file is not the dlib network serialisation this reader understands."""


@dataclass
class Layer:
    kind: str  # dlib's version string, e.g. "con_4", "affine_", "relu_"
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    ints: dict[str, int] = field(default_factory=dict)


@dataclass
class DlibNet:
    loss: str
    channel_means: tuple[float, float, float]  # red, green, blue
    input_size: tuple[int, int]
    layers: list[Layer]


class Reader:
    def __init__(self, data: bytes, pos: int = 0) -> None:
        self.data = data
        self.pos = pos

    def _take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise DatFormatError(f"unexpected end of file at byte {self.pos}")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def int_(self) -> int:
        """dlib's packed integer: a control byte (bit 7 sign, low nibble byte count), then little-endian bytes."""
        ctrl = self._take(1)[0]
        size = ctrl & 0x0F
        if ctrl & 0x70 or size > 8:
            raise DatFormatError(f"bad integer control byte {ctrl:#x} at byte {self.pos - 1}")
        value = int.from_bytes(self._take(size), "little") if size else 0
        return -value if ctrl & 0x80 else value

    def float_(self) -> float:
        """dlib's portable float: packed mantissa and exponent (special exponents mark inf/nan)."""
        mantissa = self.int_()
        exponent = self.int_()
        if exponent >= 32000:  # dlib's markers for non-finite values
            return math.nan if exponent == 32002 else math.copysign(math.inf, mantissa or 1)
        return math.ldexp(mantissa, exponent)

    def bool_(self) -> bool:
        ch = self._take(1)
        if ch not in (b"0", b"1"):
            raise DatFormatError(f"bad bool {ch!r} at byte {self.pos - 1}")
        return ch == b"1"

    def str_(self) -> str:
        return self._take(self.int_()).decode("ascii")

    def tensor(self) -> np.ndarray:
        if self.int_() != 2:
            raise DatFormatError(f"unknown tensor version at byte {self.pos}")
        shape = tuple(self.int_() for _ in range(4))
        count = int(np.prod(shape))
        values = np.frombuffer(self._take(4 * count), dtype="<f4").astype(np.float32)
        return values.reshape(shape)

    def alias(self) -> tuple[int, ...]:
        if self.int_() != 1:
            raise DatFormatError(f"unknown alias_tensor version at byte {self.pos}")
        return tuple(self.int_() for _ in range(4))


def _split(params: np.ndarray, *shapes: tuple[int, ...]) -> list[np.ndarray]:
    flat = params.reshape(-1)
    out, start = [], 0
    for shape in shapes:
        n = int(np.prod(shape))
        out.append(flat[start : start + n].reshape(shape))
        start += n
    if start != flat.size:
        raise DatFormatError(f"parameter tensor holds {flat.size} values, the layer's shapes need {start}")
    return out


def _details(r: Reader, kind: str) -> Layer:
    layer = Layer(kind)
    if kind in ("con_4", "con_5"):
        params = r.tensor()
        layer.ints["filters"] = r.int_()
        for key in ("nr", "nc", "stride_y", "stride_x", "padding_y", "padding_x"):
            layer.ints[key] = r.int_()
        filters, biases = r.alias(), r.alias()
        for _ in range(4):  # learning-rate and weight-decay multipliers
            r.float_()
        use_bias = r.bool_() if kind == "con_5" else True
        w, b = _split(params, filters, biases)
        layer.arrays["weight"] = w
        layer.arrays["bias"] = b.reshape(-1) if use_bias else np.zeros(filters[0], np.float32)
    elif kind in ("affine_", "affine_2"):
        params = r.tensor()
        gamma, beta = r.alias(), r.alias()
        layer.ints["mode"] = r.int_()
        if kind == "affine_2" and r.bool_():
            raise DatFormatError("disabled affine layers are not supported")
        g, b = _split(params, gamma, beta)
        layer.arrays["gamma"], layer.arrays["beta"] = g.reshape(-1), b.reshape(-1)
    elif kind in ("max_pool_2", "avg_pool_2"):
        for key in ("nr", "nc", "stride_y", "stride_x", "padding_y", "padding_x"):
            layer.ints[key] = r.int_()
    elif kind in ("fc_2", "fc_3"):
        layer.ints["outputs"], layer.ints["inputs"] = r.int_(), r.int_()
        params = r.tensor()
        weights, biases = r.alias(), r.alias()
        layer.ints["bias_mode"] = r.int_()
        for _ in range(4):
            r.float_()
        if kind == "fc_3":
            r.bool_()
        shapes = (weights,) if layer.ints["bias_mode"] == 1 else (weights, biases)
        parts = _split(params, *shapes)
        # dlib computes x @ W with W of shape (inputs, outputs).
        layer.arrays["weight"] = parts[0].reshape(layer.ints["inputs"], layer.ints["outputs"])
        if len(parts) > 1:
            layer.arrays["bias"] = parts[1].reshape(-1)
    elif kind not in ("relu_", "add_prev_"):
        raise DatFormatError(f"layer type {kind!r} is not supported")
    return layer


def parse(data: bytes) -> DlibNet:
    r = Reader(data)
    if r.int_() != 1:
        raise DatFormatError("not a dlib add_loss_layer (version 1)")
    loss = r.str_()
    if loss == "loss_metric_2":
        r.float_(), r.float_()  # margin and distance threshold: training-only
    elif loss != "loss_metric_":
        raise DatFormatError(f"expected a metric-learning network, found loss {loss!r}")
    marker = data.find(bytes([1, len(INPUT_NAME)]) + INPUT_NAME, r.pos)
    if marker < 0:
        raise DatFormatError("no input_rgb_image_sized layer")
    while r.pos < marker:  # one version number per nested layer
        if r.int_() not in (1, 2, 3):
            raise DatFormatError(f"unexpected layer version before byte {r.pos}")
    r.str_()
    means = (r.float_(), r.float_(), r.float_())
    size = (r.int_(), r.int_())
    layers: list[Layer] = []
    first = True
    while r.pos < len(data):
        layers.append(_details(r, r.str_()))
        for _ in range(3):  # setup-called, gradient-stale and output-disabled flags
            r.bool_()
        r.tensor(), r.tensor(), r.tensor()  # x_grad, cached output, params/final grad (empty when saved clean)
        if first:  # the add_layer over the input layer also stores its sample expansion factor
            r.int_()
            first = False
    return DlibNet(loss, means, size, layers)


def summary(net: DlibNet) -> str:
    parts = []
    for layer in net.layers:
        shape = "x".join(str(s) for s in layer.arrays["weight"].shape) if "weight" in layer.arrays else ""
        parts.append(f"{layer.kind}{'(' + shape + ')' if shape else ''}")
    return " ".join(parts)
