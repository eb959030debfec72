"""Cutting segments out of one converted TFLite flatbuffer.

The whole model is converted (and quantized) once, with every exit and every cut
activation as a named signature output. Each segment is then carved out of that one
flatbuffer: the operators needed to compute its outputs from its inputs, their tensors,
buffers and operator codes, renumbered, with a ``serving_default`` signature naming its
inputs and outputs. Both sides of a cut therefore share one tensor with one scale and
zero point, and the chain of segments runs exactly the operators of the whole model.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..bundle import TensorSpec
from ..errors import ConversionError

__all__ = ["WholeModel", "read_whole_model", "extract_segment"]

SIGNATURE_KEY = "serving_default"
_TFLITE_DTYPES = {0: "float32", 1: "float16", 2: "int32", 3: "uint8", 4: "int64", 6: "bool", 7: "int16", 9: "int8"}


def _schema() -> Any:
    from tensorflow.lite.python import schema_py_generated

    return schema_py_generated


def _text(value: bytes | str | None) -> str:
    return value.decode() if isinstance(value, bytes) else (value or "")


@dataclass
class WholeModel:
    """The converted whole model with its named signature tensors."""

    model: Any  # schema ModelT
    inputs: dict[str, int]
    outputs: dict[str, int]

    def tensor_spec(self, name: str, index: int) -> TensorSpec:
        tensor = self.model.subgraphs[0].tensors[index]
        dtype = _TFLITE_DTYPES.get(tensor.type)
        if dtype is None:
            raise ConversionError(f"tensor {name!r} has unsupported TFLite type {tensor.type}")
        shape = tuple(int(d) for d in tensor.shape)
        scale = zero_point = None
        quant = tensor.quantization
        per_tensor = quant is not None and quant.scale is not None and len(quant.scale) == 1
        if per_tensor and dtype in ("int8", "uint8", "int16"):
            scale = float(quant.scale[0])
            zero_point = int(quant.zeroPoint[0])
        return TensorSpec(name, shape, dtype, scale, zero_point)


def read_whole_model(data: bytes) -> WholeModel:
    """Parse a converted flatbuffer and its ``serving_default`` signature."""
    schema = _schema()
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(bytearray(data), 0))
    if len(model.subgraphs) != 1:
        raise ConversionError(
            f"the converted model has {len(model.subgraphs)} subgraphs (control flow); only plain "
            "feed-forward models can be segmented"
        )
    signatures = [s for s in (model.signatureDefs or []) if _text(s.signatureKey) == SIGNATURE_KEY]
    if not signatures:
        raise ConversionError("the converted model has no serving_default signature")
    signature = signatures[0]
    return WholeModel(
        model,
        {_text(t.name): t.tensorIndex for t in signature.inputs},
        {_text(t.name): t.tensorIndex for t in signature.outputs},
    )


def _has_data(model: Any, tensor: Any) -> bool:
    buffer = model.buffers[tensor.buffer] if tensor.buffer < len(model.buffers) else None
    return buffer is not None and (
        (buffer.data is not None and len(buffer.data) > 0) or bool(getattr(buffer, "offset", 0))
    )


def extract_segment(whole: WholeModel, inputs: Sequence[str], outputs: Sequence[str]) -> bytes:
    """A standalone flatbuffer computing the named ``outputs`` from the named ``inputs``.

    Names refer to the whole model's signature tensors. Raises ``ConversionError`` when an
    operator needs a tensor that is neither constant nor one of the inputs.
    """
    source = whole.model
    graph = source.subgraphs[0]
    known = {**whole.inputs, **whole.outputs}
    in_idx = [known[n] for n in inputs]
    out_idx = [known[n] for n in outputs]
    producer = {t: i for i, op in enumerate(graph.operators) for t in op.outputs if t >= 0}

    needed_ops: set[int] = set()
    stack, seen = list(out_idx), set(in_idx)
    while stack:
        tensor_index = stack.pop()
        if tensor_index in seen:
            continue
        seen.add(tensor_index)
        if tensor_index in producer:
            op_index = producer[tensor_index]
            if op_index not in needed_ops:
                needed_ops.add(op_index)
                op = graph.operators[op_index]
                stack.extend(t for t in op.inputs if t >= 0)
                stack.extend(t for t in (op.intermediates if op.intermediates is not None else []) if t >= 0)
        elif not _has_data(source, graph.tensors[tensor_index]):
            name = _text(graph.tensors[tensor_index].name)
            raise ConversionError(
                f"a segment from {list(inputs)} to {list(outputs)} also needs tensor {name!r}, which is "
                "neither constant nor one of its inputs: the cut does not separate the converted graph"
            )

    ops = [graph.operators[i] for i in sorted(needed_ops)]
    used_tensors = sorted(
        {*in_idx, *out_idx}
        | {t for op in ops for t in (*op.inputs, *op.outputs) if t >= 0}
        | {t for op in ops for t in (op.intermediates if op.intermediates is not None else []) if t >= 0}
    )
    named_inputs = dict(zip(inputs, in_idx, strict=True))
    named_outputs = dict(zip(outputs, out_idx, strict=True))
    return _build(source, graph, ops, used_tensors, named_inputs, named_outputs)


def _build(
    source: Any, graph: Any, ops: list[Any], used_tensors: list[int], inputs: dict[str, int], outputs: dict[str, int]
) -> bytes:
    schema = _schema()
    tensor_map = {old: new for new, old in enumerate(used_tensors)}
    buffers = [schema.BufferT()]  # buffer 0 is the shared empty sentinel
    buffer_map = {0: 0}

    def remap_buffer(old: int) -> int:
        if old not in buffer_map:
            buffer_map[old] = len(buffers)
            buffers.append(source.buffers[old])
        return buffer_map[old]

    tensors = []
    for old in used_tensors:
        tensor = copy.copy(graph.tensors[old])
        tensor.buffer = remap_buffer(tensor.buffer)
        tensors.append(tensor)
    for name, old in {**inputs, **outputs}.items():
        tensors[tensor_map[old]].name = name

    code_map: dict[int, int] = {}
    operator_codes: list[Any] = []
    new_ops = []
    for op in ops:
        op = copy.copy(op)
        if op.opcodeIndex not in code_map:
            code_map[op.opcodeIndex] = len(operator_codes)
            operator_codes.append(source.operatorCodes[op.opcodeIndex])
        op.opcodeIndex = code_map[op.opcodeIndex]
        op.inputs = np.array([tensor_map[t] if t >= 0 else -1 for t in op.inputs], dtype=np.int32)
        op.outputs = np.array([tensor_map[t] for t in op.outputs], dtype=np.int32)
        if op.intermediates is not None:
            op.intermediates = np.array([tensor_map[t] for t in op.intermediates if t >= 0], dtype=np.int32)
        new_ops.append(op)

    subgraph = schema.SubGraphT()
    subgraph.name = graph.name
    subgraph.tensors = tensors
    subgraph.operators = new_ops
    subgraph.inputs = np.array([tensor_map[t] for t in inputs.values()], dtype=np.int32)
    subgraph.outputs = np.array([tensor_map[t] for t in outputs.values()], dtype=np.int32)

    signature = schema.SignatureDefT()
    signature.signatureKey = SIGNATURE_KEY
    signature.subgraphIndex = 0
    signature.inputs = [_tensor_map(schema, name, tensor_map[t]) for name, t in inputs.items()]
    signature.outputs = [_tensor_map(schema, name, tensor_map[t]) for name, t in outputs.items()]

    model = schema.ModelT()
    model.version = source.version
    model.description = source.description
    model.operatorCodes = operator_codes
    model.subgraphs = [subgraph]
    model.signatureDefs = [signature]
    model.metadata = []
    for item in source.metadata or []:
        item = copy.copy(item)
        item.buffer = remap_buffer(item.buffer)
        model.metadata.append(item)
    model.buffers = buffers

    builder = _flatbuffers().Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _tensor_map(schema: Any, name: str, index: int) -> Any:
    item = schema.TensorMapT()
    item.name = name
    item.tensorIndex = index
    return item


def _flatbuffers() -> Any:
    import flatbuffers

    return flatbuffers
