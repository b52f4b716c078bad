"""MobileFaceNet's PReLU rewritten in operators an int8 quantiser and the Edge TPU both take.

The TF export spells each PReLU as ``relu(x) + c * (x - abs(x))`` (c = alpha / 2). ai-edge-quantizer
has no int8 ABS and the Edge TPU compiler no ABS at all: the float ABS stays, wrapped in 33
QUANTIZE/DEQUANTIZE pairs, which makes the "int8" model 4x slower than the float one on a CPU.
Since ``x - abs(x) = 2 * (x - relu(x))``, each block becomes ``relu(x) + 2c * (x - relu(x))``:
the SUB takes the RELU's output instead of the ABS's, the constant is doubled and the ABS goes.
Then each RELU becomes ``MUL(x, 1)`` with a fused RELU: XNNPACK runs no standalone int8 RELU (each
left the graph in 34 partitions, the int8 model 3x slower than the float one), a fused activation it does.
The float result is the same (bit for bit on the development faces).
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _code(model: Any, op: Any) -> int:
    c = model.operatorCodes[op.opcodeIndex]
    return int(max(c.builtinCode, c.deprecatedBuiltinCode))


def _drop_unused_tensors(graph: Any) -> None:
    """Remove the tensors no operator or graph input/output names (the ABS outputs), renumbering the rest."""
    used = {int(i) for op in graph.operators for i in (*op.inputs, *op.outputs) if int(i) >= 0}
    used |= {int(i) for i in (*graph.inputs, *graph.outputs)}
    keep = sorted(used)
    new_index = {old: new for new, old in enumerate(keep)}

    def renumber(indices: Any) -> np.ndarray:
        return np.array([new_index[int(i)] if int(i) >= 0 else -1 for i in indices], np.int32)

    graph.tensors = [graph.tensors[i] for i in keep]
    for op in graph.operators:
        op.inputs, op.outputs = renumber(op.inputs), renumber(op.outputs)
    graph.inputs, graph.outputs = renumber(graph.inputs), renumber(graph.outputs)


def _fused_relus(fb: Any, graph: Any) -> None:
    """Each RELU op replaced by MUL(x, 1.0) with a fused RELU (a constant 1.0 of its own each)."""
    from ai_edge_litert import schema_py_generated as schema

    codes = [max(c.builtinCode, c.deprecatedBuiltinCode) for c in fb.operatorCodes]
    mul = codes.index(schema.BuiltinOperator.MUL)
    for op in [op for op in graph.operators if _code(fb, op) == schema.BuiltinOperator.RELU]:
        buffer = schema.BufferT()
        buffer.data = np.frombuffer(np.float32(1).astype("<f4").tobytes(), np.uint8)
        fb.buffers.append(buffer)
        one = schema.TensorT()
        one.shape, one.type, one.buffer = np.array([1], np.int32), schema.TensorType.FLOAT32, len(fb.buffers) - 1
        one.name = f"{graph.tensors[int(op.outputs[0])].name.decode()}/one".encode()
        graph.tensors.append(one)
        options = schema.MulOptionsT()
        options.fusedActivationFunction = schema.ActivationFunctionType.RELU
        op.opcodeIndex, op.inputs = mul, np.array([int(op.inputs[0]), len(graph.tensors) - 1], np.int32)
        op.builtinOptionsType, op.builtinOptions = schema.BuiltinOptions.MulOptions, options


def without_abs(model: bytes) -> bytes:
    """``model`` with every ``c * (x - abs(x))`` rewritten as ``2c * (x - relu(x))`` (see the module doc)."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    ops = schema.BuiltinOperator
    fb = flatbuffer_utils.convert_bytearray_to_object(bytearray(model))
    graph = fb.subgraphs[0]
    producer = {int(out): op for op in graph.operators for out in op.outputs}
    relu_of = {int(op.inputs[0]): int(op.outputs[0]) for op in graph.operators if _code(fb, op) == ops.RELU}
    drop, doubled = [], set()
    for sub in [op for op in graph.operators if _code(fb, op) == ops.SUB]:
        x, abs_out = (int(i) for i in sub.inputs)
        abs_op = producer.get(abs_out)
        if abs_op is None or _code(fb, abs_op) != ops.ABS or int(abs_op.inputs[0]) != x or x not in relu_of:
            continue
        (sub_out,) = (int(o) for o in sub.outputs)
        users = [op for op in graph.operators if sub_out in (int(i) for i in op.inputs)]
        if len(users) != 1 or _code(fb, users[0]) != ops.MUL:
            raise ValueError(f"x - abs(x) at tensor {sub_out} is not scaled by one MUL")
        const = [int(i) for i in users[0].inputs if fb.buffers[graph.tensors[int(i)].buffer].data is not None]
        if len(const) != 1:
            raise ValueError(f"the MUL after tensor {sub_out} has no single constant")
        if const[0] not in doubled:  # a constant shared by several blocks is doubled once
            tensor = graph.tensors[const[0]]
            if sum(t.buffer == tensor.buffer for t in graph.tensors) != 1:
                raise ValueError(f"the constant {tensor.name!r} shares its buffer: doubling it would change another")
            values = np.frombuffer(bytes(fb.buffers[tensor.buffer].data), "<f4") * np.float32(2)
            fb.buffers[tensor.buffer].data = np.frombuffer(values.astype("<f4").tobytes(), np.uint8)
            doubled.add(const[0])
        sub.inputs = np.array([x, relu_of[x]], np.int32)
        drop.append(abs_op)
    graph.operators = [op for op in graph.operators if all(op is not d for d in drop)]
    if not drop:
        raise ValueError("no x - abs(x) found: not the MobileFaceNet export this expects")
    _drop_unused_tensors(graph)
    _fused_relus(fb, graph)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(fb))
