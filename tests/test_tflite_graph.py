"""The lossless graph rewrite the shipped MobileFaceNet is built with (tools/tflite_graph.py)."""

from __future__ import annotations

import numpy as np
import pytest
from ai_edge_litert import schema_py_generated as schema

from edge.models import load_manifest
from tools.tflite_graph import GraphError, apply, fuse_prelu

OPS = schema.BuiltinOperator


def spelled_out_prelu(channels: int, slope: np.ndarray) -> bytes:
    """A model of one PReLU as the TensorFlow export spells it: relu(x) + (slope / 2) * (x - |x|)."""
    import flatbuffers

    model = schema.ModelT()
    model.version = 3
    codes = [OPS.RELU, OPS.ABS, OPS.SUB, OPS.MUL, OPS.ADD]
    model.operatorCodes = []
    for c in codes:
        code = schema.OperatorCodeT()
        code.builtinCode = c
        code.deprecatedBuiltinCode = c
        code.version = 1
        model.operatorCodes.append(code)
    empty = schema.BufferT()
    half = schema.BufferT()
    half.data = np.frombuffer((slope / 2).astype(np.float32).tobytes(), dtype=np.uint8)
    model.buffers = [empty, half]
    shape = np.array([2, 4, 4, channels], dtype=np.int32)

    def tensor(name: str, buffer: int = 0, dims: np.ndarray = shape) -> schema.TensorT:
        t = schema.TensorT()
        t.name, t.shape, t.type, t.buffer = name.encode(), dims, schema.TensorType.FLOAT32, buffer
        return t

    graph = schema.SubGraphT()
    graph.tensors = [
        tensor("x"), tensor("relu"), tensor("abs"), tensor("sub"),
        tensor("half", 1, np.array([channels], dtype=np.int32)), tensor("mul"), tensor("y"),
    ]  # fmt: skip

    def op(code: int, inputs: list[int], outputs: list[int]) -> schema.OperatorT:
        o = schema.OperatorT()
        o.opcodeIndex, o.inputs, o.outputs = code, np.array(inputs, np.int32), np.array(outputs, np.int32)
        return o

    graph.operators = [op(0, [0], [1]), op(1, [0], [2]), op(2, [0, 2], [3]), op(3, [4, 3], [5]), op(4, [1, 5], [6])]
    graph.inputs, graph.outputs = np.array([0], np.int32), np.array([6], np.int32)
    model.subgraphs = [graph]
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def run(content: bytes, x: np.ndarray) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=content, num_threads=1)
    interp.allocate_tensors()
    interp.set_tensor(interp.get_input_details()[0]["index"], x)
    interp.invoke()
    return np.array(interp.get_tensor(interp.get_output_details()[0]["index"]))


def operators(content: bytes) -> list[int]:
    model = schema.Model.GetRootAs(content, 0)
    graph = model.Subgraphs(0)
    codes = [max(model.OperatorCodes(i).BuiltinCode(), model.OperatorCodes(i).DeprecatedBuiltinCode())
             for i in range(model.OperatorCodesLength())]  # fmt: skip
    return [codes[graph.Operators(i).OpcodeIndex()] for i in range(graph.OperatorsLength())]


def test_five_element_wise_operators_become_one_prelu_with_bit_identical_output() -> None:
    slope = np.linspace(-0.5, 0.9, 8).astype(np.float32)
    original = spelled_out_prelu(8, slope)
    fused, count = fuse_prelu(original)
    assert count == 1 and operators(fused) == [OPS.PRELU]
    x = np.random.default_rng(0).standard_normal((2, 4, 4, 8)).astype(np.float32)
    out = run(fused, x)
    assert np.array_equal(out, run(original, x))
    assert np.array_equal(out, np.where(x > 0, x, slope * x))
    assert fuse_prelu(original)[0] == fused  # a rebuild gives the same bytes (the manifest's sha256)


def test_the_shipped_embedder_is_the_fused_graph() -> None:
    manifest = load_manifest(None)
    spec = manifest.models["mobilefacenet"]
    content = (manifest.directory / spec.file).read_bytes()
    ops = operators(content)
    assert OPS.ABS not in ops and ops.count(OPS.PRELU) == 33
    assert spec.extra["source"]["transform"] == "fuse-prelu"
    # The embedding space stays the package file's: watchlists built before the rewrite still apply.
    assert spec.extra["embedding_space"] == spec.extra["source"]["sha256"]


def test_a_model_without_the_pattern_or_not_a_model_is_refused() -> None:
    fused, _ = fuse_prelu(spelled_out_prelu(4, np.ones(4, np.float32)))
    with pytest.raises(GraphError, match="nothing to rewrite"):
        apply("fuse-prelu", fused)
    with pytest.raises(GraphError, match="unknown transform"):
        apply("fold-everything", fused)
    with pytest.raises(GraphError):
        fuse_prelu(b"not a flatbuffer at all")
