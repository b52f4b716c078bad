"""The TFLite runtime layer: one place that imports the interpreter and picks the accelerator.

``ai_edge_litert`` (maintained, numpy 2) is imported first, ``tflite_runtime`` (what
Coral's Raspberry Pi instructions install) second. The Edge TPU delegate is used only
when asked for and an ``_edgetpu`` variant of the model exists; otherwise the CPU runs it.
"""

from __future__ import annotations

import ctypes.util
import glob
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from edge.errors import ModelError, ModelLoadError, RuntimeMissingError
from edge.models import ModelManifest, ModelSpec

log = logging.getLogger(__name__)

Accelerator = Literal["auto", "cpu", "edgetpu"]
EDGETPU_LIBRARY = "libedgetpu.so.1"


def _interpreter_module() -> tuple[Any, str]:
    try:
        from ai_edge_litert import interpreter as litert

        return litert, "ai_edge_litert"
    except ImportError:
        pass
    try:
        from tflite_runtime import interpreter as tflite  # type: ignore[import-not-found]

        return tflite, "tflite_runtime"
    except ImportError as exc:
        raise RuntimeMissingError(
            "no TFLite runtime: install ai-edge-litert (`pip install ai-edge-litert`) or tflite-runtime with numpy<2"
        ) from exc


def runtime_name() -> str:
    return _interpreter_module()[1]


def _edgetpu_library_installed() -> bool:
    # Asking the runtime to load a library that is not there leaves a noisy half-built Delegate behind.
    if ctypes.util.find_library("edgetpu"):
        return True
    dirs = ("/usr/lib", "/usr/local/lib", *glob.glob("/usr/lib/*-linux-gnu*"))
    return any((Path(d) / EDGETPU_LIBRARY).exists() for d in dirs)


def edgetpu_available() -> bool:
    """True when the Edge TPU delegate library loads (a Coral is plugged in and libedgetpu installed)."""
    if not _edgetpu_library_installed():
        return False
    module, _ = _interpreter_module()
    try:
        module.load_delegate(EDGETPU_LIBRARY)
    except (ValueError, OSError, RuntimeError):
        return False
    return True


@dataclass
class LoadedModel:
    """An allocated interpreter plus what it was loaded from."""

    spec: ModelSpec
    interpreter: Any
    accelerator: str
    input_index: int
    input_shape: tuple[int, ...]
    output_indices: list[int]
    path: Path | None = None  # the verified file, for variants with another input size
    threads: int = 2

    def input_details(self) -> dict[str, Any]:
        return next(d for d in self.interpreter.get_input_details() if int(d["index"]) == self.input_index)

    def output_details(self) -> list[dict[str, Any]]:
        """The details of the outputs ``run`` returns, in that order."""
        by_index = {int(d["index"]): d for d in self.interpreter.get_output_details()}
        return [by_index[i] for i in self.output_indices]

    def quantisation(self, details: dict[str, Any]) -> tuple[float, int] | None:
        """(scale, zero point) of one of this model's integer tensors, None for a float one."""
        if np.dtype(details["dtype"]).kind == "f":
            return None
        scale, zero = details["quantization"]
        if not scale:
            raise ModelError(f"{self.spec.name}: integer tensor {details['name']!r} has no quantisation parameters")
        return float(scale), int(zero)

    def run(self, tensor: np.ndarray) -> list[np.ndarray]:
        self.interpreter.set_tensor(self.input_index, tensor)
        self.interpreter.invoke()
        return [self.interpreter.get_tensor(i) for i in self.output_indices]

    def with_input_size(self, height: int, width: int) -> LoadedModel:
        """The same (verified) model with a larger spatial input, for a fully convolutional detector.

        The interpreter cannot simply be resized: fixed-size upsampling constants inside the
        network stop it. They are rewritten for the new size (``resize_input_flatbuffer``) and
        the result is loaded from memory, so nothing new is written to disk.
        """
        if self.path is None or self.accelerator != "cpu":
            raise ModelLoadError(f"{self.spec.name}: only a CPU model loaded from its file can take another input size")
        module, runtime = _interpreter_module()
        content = resize_input_flatbuffer(self.path.read_bytes(), self.input_shape, height, width)
        try:
            interp = module.Interpreter(model_content=content, num_threads=self.threads)
        except (ValueError, RuntimeError) as exc:
            raise ModelLoadError(f"{self.spec.name}: cannot run at {width}x{height} input ({runtime}: {exc})") from exc
        log.debug("model %s prepared for %dx%d input", self.spec.name, width, height)
        return _finish(self.spec, interp, "cpu", path=self.path, threads=self.threads)


def resize_input_flatbuffer(content: bytes, shape: tuple[int, ...], height: int, width: int) -> bytes:
    """Rewrite a TFLite model for an ``height`` x ``width`` input: input shape and RESIZE_* size constants.

    Patched in place (same lengths), found with the flatbuffer reader: rebuilding the whole
    model through the object API takes seconds, this takes a millisecond.
    """
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError as exc:
        raise ModelLoadError("another detector input size needs ai-edge-litert (pip install ai-edge-litert)") from exc
    out = bytearray(content)
    model = schema.Model.GetRootAs(out, 0)
    graph = model.Subgraphs(0)
    resize_ops = {schema.BuiltinOperator.RESIZE_BILINEAR, schema.BuiltinOperator.RESIZE_NEAREST_NEIGHBOR}
    codes = [
        max(model.OperatorCodes(i).BuiltinCode(), model.OperatorCodes(i).DeprecatedBuiltinCode())
        for i in range(model.OperatorCodesLength())
    ]

    def int32_view(table: Any) -> np.ndarray:
        # Field 4 is the first vector of both Buffer (data) and Tensor (shape).
        start = table._tab.Vector(table._tab.Offset(4))
        length = table._tab.VectorLen(table._tab.Offset(4))
        view = np.frombuffer(out, dtype=np.uint8, count=length * (4 if isinstance(table, schema.Tensor) else 1), offset=start)
        return view.view(np.int32)

    done: set[int] = set()
    base_h, base_w = shape[1], shape[2]
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        if codes[op.OpcodeIndex()] not in resize_ops:
            continue
        index = graph.Tensors(op.Inputs(1)).Buffer()
        if index in done:
            continue
        done.add(index)
        size = int32_view(model.Buffers(index))
        # Sizes scale with the input: an upsampling to 24x24 behind a 192x192 input is 1/8 of it.
        new_h, new_w = int(size[0]) * height // base_h, int(size[1]) * width // base_w
        if new_h * base_h != size[0] * height or new_w * base_w != size[1] * width:
            raise ModelLoadError(f"input {width}x{height} does not fit the network's {size[1]}x{size[0]} upsampling grid")
        size[:] = (new_h, new_w)
    int32_view(graph.Tensors(graph.Inputs(0)))[:] = (shape[0], height, width, shape[3])
    return bytes(out)


def load_model(
    manifest: ModelManifest,
    name: str,
    *,
    kind: str,
    accelerator: Accelerator = "auto",
    threads: int = 2,
) -> LoadedModel:
    """Verify and load model ``name``, on the Edge TPU when asked for and possible, else on the CPU."""
    spec = manifest.get(name, kind)
    module, runtime = _interpreter_module()
    if accelerator in ("auto", "edgetpu"):
        tpu_spec = manifest.variant(name, "edgetpu")
        if tpu_spec is None:
            if accelerator == "edgetpu":
                log.warning(
                    "accelerator=edgetpu but models/manifest.json lists no _edgetpu variant of %s; running it on the CPU",
                    name,
                )
        elif not _edgetpu_library_installed():
            log.warning("Edge TPU library %s is not installed; running %s on the CPU", EDGETPU_LIBRARY, name)
        else:
            try:
                delegate = module.load_delegate(EDGETPU_LIBRARY)
            except (ValueError, OSError, RuntimeError) as exc:
                log.warning("Edge TPU not usable (%s: %s); running %s on the CPU", EDGETPU_LIBRARY, exc, name)
            else:
                path = manifest.verified_path(tpu_spec)
                interp = module.Interpreter(model_path=str(path), experimental_delegates=[delegate])
                log.info("model %s runs on the Edge TPU (%s, %s)", name, tpu_spec.file, runtime)
                return _finish(tpu_spec, interp, "edgetpu", path=path)
    path = manifest.verified_path(spec)
    try:
        interp = module.Interpreter(model_path=str(path), num_threads=max(1, threads))
    except (ValueError, RuntimeError) as exc:
        raise ModelLoadError(f"runtime {runtime} refused model file {path} ({spec.name}): {exc}") from exc
    log.info("model %s runs on the CPU (%s, %d threads, %s)", name, spec.file, threads, runtime)
    return _finish(spec, interp, "cpu", path=path, threads=max(1, threads))


def _finish(spec: ModelSpec, interp: Any, accelerator: str, *, path: Path | None = None, threads: int = 2) -> LoadedModel:
    try:
        interp.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        raise ModelLoadError(f"cannot allocate tensors for {spec.file} ({spec.name}): {exc}") from exc
    inp = interp.get_input_details()[0]
    outputs = sorted(interp.get_output_details(), key=lambda d: d["index"])
    return LoadedModel(
        spec=spec,
        interpreter=interp,
        accelerator=accelerator,
        input_index=int(inp["index"]),
        input_shape=tuple(int(x) for x in inp["shape"]),
        output_indices=[int(d["index"]) for d in outputs],
        path=path,
        threads=threads,
    )
