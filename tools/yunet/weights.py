"""YuNet's weights read from the ``yuface`` wheel's ``libfacedetection.so``.

libfacedetection compiles its float weights into the library as exported data symbols
(``backbone__model0_pw_weight`` ...) and lists them, in the order its forward pass uses
them, in the exported table ``param_pConvInfo``: 53 entries of
``{int in, int out, bool depthwise, bool pointwise, bool with_bn, float *weight, float *bias}``.
The table is read with ctypes, so the library's own pointers say where each array is;
nothing is called, the library is only mapped.
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib.metadata
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PACKAGE = "yuface"
VERSION = "2023.5.1"
LIBRARY = "yuface/libfacedetection.so"
# sha256 of yuface 2023.5.1's libfacedetection.so (the manylinux x86_64 wheel): other bytes, other weights.
LIBRARY_SHA256 = "7fc3c140b563f449ce7cb5bd102ece650681e5bfeffc87efe79272be1932c4f4"
NUM_LAYERS = 53


class _ConvInfo(ctypes.Structure):
    _fields_ = [
        ("in_channels", ctypes.c_int),
        ("out_channels", ctypes.c_int),
        ("is_depthwise", ctypes.c_bool),
        ("is_pointwise", ctypes.c_bool),
        ("with_bn", ctypes.c_bool),
        ("weights", ctypes.POINTER(ctypes.c_float)),
        ("biases", ctypes.POINTER(ctypes.c_float)),
    ]


@dataclass(frozen=True)
class Conv:
    """One convolution of the table: a 1x1 (pointwise) or a 3x3 depthwise layer."""

    in_channels: int
    out_channels: int
    depthwise: bool
    weight: np.ndarray  # pointwise (out, in); depthwise (9, channels): 3x3 tap-major, as the C code reads it
    bias: np.ndarray


def library_path() -> Path:
    """The installed ``yuface`` wheel's libfacedetection.so (a build-time dependency only)."""
    try:
        dist = importlib.metadata.distribution(PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        raise SystemExit(f"{PACKAGE} is not installed: pip install {PACKAGE}=={VERSION} (build-models extra)") from None
    if dist.version != VERSION:
        raise SystemExit(f"{PACKAGE} {dist.version} is installed, the build needs {VERSION}")
    return Path(str(dist.locate_file(LIBRARY)))


def read_layers(path: Path | None = None) -> list[Conv]:
    """The 53 convolutions of libfacedetection's table, copied out of the mapped library."""
    path = path or library_path()
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != LIBRARY_SHA256:
        raise SystemExit(f"{path} has sha256 {digest}, expected {LIBRARY_SHA256} ({PACKAGE} {VERSION})")
    lib = ctypes.CDLL(str(path))
    table = (_ConvInfo * NUM_LAYERS).in_dll(lib, "param_pConvInfo")
    layers = []
    for info in table:
        if info.is_depthwise == info.is_pointwise:
            raise ValueError("a layer that is neither pointwise nor depthwise: the table layout changed")
        n_in, n_out = info.in_channels, info.out_channels
        count = n_out * 9 if info.is_depthwise else n_out * n_in
        weight = np.ctypeslib.as_array(info.weights, (count,)).astype(np.float32)  # copies
        bias = np.ctypeslib.as_array(info.biases, (n_out,)).astype(np.float32)
        shape = (9, n_out) if info.is_depthwise else (n_out, n_in)
        layers.append(Conv(n_in, n_out, bool(info.is_depthwise), weight.reshape(shape), bias))
    return layers
