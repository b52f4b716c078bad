"""PyTorch → TFLite steps shared by the model build tools (tools/dlib_resnet, tools/yunet).

litert-torch converts a module to a float32 model; ai-edge-quantizer makes a float16-weight copy
or a full-integer int8 model from it. Every step is deterministic (fixed weights, fixed
calibration inputs in a fixed order, one calibration thread), so a rebuild gives byte-identical
files and the hashes in ``models/manifest.json`` hold.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

# Raw RGB pixels: an int8 input covering exactly 0..255 has scale 1 and zero point -128 (int8 = pixel - 128),
# whatever range the calibration images happen to reach.
PIXEL_RANGE = (0.0, 255.0)


def float32_tflite(module: Any, sample: tuple[Any, ...]) -> bytes:
    """``module`` (a torch module in eval mode) converted with litert-torch for inputs shaped like ``sample``."""
    import litert_torch

    edge_model = litert_torch.convert(module, sample)
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
    """Weights stored as float16 (half the size), computed in float32: the float model's outputs, same speed."""
    from ai_edge_quantizer import qtyping, recipe

    q = _quantizer(float_model)
    q.add_weight_only_config(
        regex=".*",
        operation_name=qtyping.TFLOperationName.ALL_SUPPORTED,
        num_bits=16,
        algorithm_key=recipe.AlgorithmName.FLOAT_CASTING,
    )
    return _serialise(q.quantize())


def int8_tflite(
    float_model: bytes,
    samples: Sequence[np.ndarray],
    input_range: tuple[float, float] = PIXEL_RANGE,
    output_range: tuple[float, float] | None = None,
    *,
    moving_average: bool = True,
    ranges: dict[str, tuple[float, float]] | None = None,
) -> bytes:
    """Full-integer model (int8 weights per channel, int8 activations, input and output) calibrated on ``samples``
    (each a whole input tensor); the input's range is ``input_range``, not what the samples reach, and so are
    the outputs' with ``output_range`` (values beyond it saturate).

    ai-edge-quantizer's calibration keeps a moving average of each tensor's min and max (the last
    few dozen samples dominate); ``moving_average=False`` keeps the extremes over all samples instead,
    so no rare input (a large face) saturates a tensor the other samples keep small.
    ``ranges`` fixes further tensors' ranges by name (e.g. the input of a final reshape, which passes its
    quantisation on to the output).
    """
    from ai_edge_quantizer import calibrator, recipe
    from ai_edge_quantizer.utils import qsv_utils

    q = _quantizer(float_model, recipe.static_wi8_ai8())
    interp = interpreter(float_model)
    signatures = interp.get_signature_list()
    signature = next(iter(signatures))
    input_name = str(signatures[signature]["inputs"][0])
    data = {signature: [{input_name: s.astype(np.float32)} for s in samples]}
    if moving_average:
        calibration = q.calibrate(data, num_threads=1)
    else:
        # Quantizer.calibrate offers no choice of update rule: its Calibrator, with min_max_update.
        calib = calibrator.Calibrator(bytearray(float_model), num_threads=1, qsv_update_func=qsv_utils.min_max_update)
        calib.calibrate(data, q._recipe_manager)
        calibration = calib.get_model_qsvs()
    tensor = str(interp.get_input_details()[0]["name"])
    if tensor not in calibration:
        raise KeyError(f"calibration has no entry for the input tensor {tensor!r}")
    fixed = {tensor: input_range}
    if output_range is not None:
        fixed |= {str(d["name"]): output_range for d in interp.get_output_details()}
    fixed |= ranges or {}
    for name, (low, high) in fixed.items():
        calibration[name] = {**calibration[name], "min": np.array(low), "max": np.array(high)}
    return _serialise(q.quantize(calibration))


def quantizer_ready(model: bytes, signature: str = "serving_default") -> bytes:
    """``model`` as ai-edge-quantizer needs it, for a tflite file from an old converter.

    Such files set only the operator codes' ``deprecated_builtin_code`` (the quantizer reads
    ``builtin_code`` and would take every op for ADD) and may have no signature (calibration runs one).
    """
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    fb = flatbuffer_utils.convert_bytearray_to_object(bytearray(model))
    for code in fb.operatorCodes:
        code.builtinCode = max(code.builtinCode, code.deprecatedBuiltinCode)
    if not fb.signatureDefs:
        graph = fb.subgraphs[0]

        def tensor_map(index: int) -> Any:
            entry = schema.TensorMapT()
            entry.name, entry.tensorIndex = graph.tensors[index].name, index
            return entry

        sig = schema.SignatureDefT()
        sig.signatureKey, sig.subgraphIndex = signature, 0
        sig.inputs = [tensor_map(int(i)) for i in graph.inputs]
        sig.outputs = [tensor_map(int(i)) for i in graph.outputs]
        fb.signatureDefs = [sig]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(fb))


def interpreter(model: bytes) -> Any:
    from ai_edge_litert import interpreter as litert

    return litert.Interpreter(model_content=model)


def quantise(x: np.ndarray, details: dict[str, Any]) -> np.ndarray:
    """``x`` (float) as the tensor of ``details`` takes it: unchanged for a float tensor, else scaled and rounded."""
    dtype = np.dtype(details["dtype"])
    if dtype.kind == "f":
        return x.astype(dtype)
    scale, zero = details["quantization"]
    info = np.iinfo(dtype)
    out: np.ndarray = np.clip(np.round(x / scale + zero), info.min, info.max).astype(dtype)
    return out


def dequantise(y: np.ndarray, details: dict[str, Any]) -> np.ndarray:
    """A tensor of ``details`` as float32."""
    if np.dtype(details["dtype"]).kind == "f":
        return y.astype(np.float32)
    scale, zero = details["quantization"]
    out: np.ndarray = (y.astype(np.float32) - zero) * scale
    return out


def check_files(
    listed: dict[str, dict[str, Any] | None], models: Path, manifest_name: str, *, optional: frozenset[str] = frozenset()
) -> int:
    """Print ok/BAD for each built file against its manifest entry; the number that are missing or differ.

    ``optional``: files that need not be present (an unshipped reference); absent, they are reported, not counted.
    """
    failures = 0
    for name, entry in listed.items():
        if entry is None:
            print(f"BAD      {name}: not in {manifest_name}")
            failures += 1
            continue
        path = models / entry["file"]
        if not path.is_file():
            ok = name in optional
            print(f"{'absent  ' if ok else 'BAD     '} {name}: {entry['file']} {'(not shipped)' if ok else 'is missing'}")
            failures += 0 if ok else 1
            continue
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        good = digest == entry["sha256"]
        print(f"{'ok      ' if good else 'BAD     '} {name}: {entry['file']}{'' if good else f' has sha256 {digest}'}")
        failures += 0 if good else 1
    return failures
