"""What would keep a segment off the Edge TPU, found before running the compiler.

The rules are the documented requirements of the Edge TPU compiler (coral.ai, "TensorFlow
models on the Edge TPU"): every activation tensor 8-bit quantized, shapes fixed at compile
time, tensors with more than three dimensions may be larger than 1 only in the three
innermost ones, and only the listed operations. The compiler maps operations in graph order
and leaves the first unsupported operation *and every later one* on the CPU, so the report
names the first blocking operation.

The segment is read with the TFLite interpreter (no TensorFlow needed), so the check runs
wherever the device runtime runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import BackendError
from ..runtime.backends import resolve_backend

__all__ = ["EDGETPU_OPS", "SegmentCheck", "check_model", "check_bundle"]

# The Edge TPU's supported operations, as TFLite builtin operator names (coral.ai list for
# compiler version 16).
EDGETPU_OPS = frozenset({
    "ADD", "AVERAGE_POOL_2D", "CONCATENATION", "CONV_2D", "DEPTHWISE_CONV_2D", "EXPAND_DIMS",
    "FULLY_CONNECTED", "L2_NORMALIZATION", "LOGISTIC", "LSTM", "UNIDIRECTIONAL_SEQUENCE_LSTM",
    "MAXIMUM", "MAX_POOL_2D", "MEAN", "MINIMUM", "MUL", "PACK", "PAD", "PRELU", "QUANTIZE",
    "REDUCE_MAX", "REDUCE_MIN", "RELU", "RELU6", "RELU_N1_TO_1", "RESHAPE", "RESIZE_BILINEAR",
    "RESIZE_NEAREST_NEIGHBOR", "RSQRT", "SLICE", "SOFTMAX", "SPACE_TO_DEPTH", "SPLIT", "SQUEEZE",
    "STRIDED_SLICE", "SUB", "SUM", "SQUARED_DIFFERENCE", "TANH", "TRANSPOSE", "TRANSPOSE_CONV",
})
_EIGHT_BIT = (np.int8, np.uint8)


@dataclass(frozen=True)
class SegmentCheck:
    """The pre-check of one segment: its operators and what would keep it off the Edge TPU."""

    label: str
    operators: tuple[str, ...]
    problems: tuple[str, ...] = field(default=())
    first_cpu_op: int | None = None  # index of the first operator the compiler would leave on the CPU

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "ok": self.ok, "operators": list(self.operators),
                "problems": list(self.problems), "first_cpu_op": self.first_cpu_op}


def _graph(model: bytes, backend: str | None) -> tuple[list[dict[str, Any]], list[dict[str, Any]], set[int]]:
    chosen = resolve_backend(backend)
    try:
        interpreter = chosen.interpreter_class(model_content=model)
        ops = interpreter._get_ops_details()  # noqa: SLF001 - the only backend-neutral way to list ops
        tensors = interpreter.get_tensor_details()
        inputs = {int(d["index"]) for d in interpreter.get_input_details()}
    except (RuntimeError, ValueError, AttributeError) as e:
        raise BackendError(f"{chosen.name} cannot read the model's operators: {e}") from e
    return ops, tensors, inputs


def check_model(model: bytes, *, label: str = "model", backend: str | None = None) -> SegmentCheck:
    """Pre-check one TFLite flatbuffer for the Edge TPU."""
    ops, tensors, model_inputs = _graph(model, backend)
    by_index = {int(t["index"]): t for t in tensors}
    produced = {int(i) for op in ops for i in op["outputs"]}
    # Activations are what flows at run time: model inputs and operator results. Constant
    # operands (weights, int32 biases, shape vectors) are the compiler's business.
    activations = sorted(model_inputs | produced)
    problems: list[str] = []
    first_cpu: int | None = None
    for op in ops:
        name = str(op["op_name"])
        if name not in EDGETPU_OPS:
            problems.append(f"operator {op['index']} {name} is not an Edge TPU operation")
            first_cpu = int(op["index"]) if first_cpu is None else first_cpu
    for index in activations:
        tensor = by_index[index]
        dtype = np.dtype(tensor["dtype"])
        if dtype.type not in _EIGHT_BIT:
            problems.append(f"tensor {tensor['name']!r} is {dtype.name}; the Edge TPU needs int8/uint8 tensors "
                            "(convert with --quantize int8)")
        signature = [int(d) for d in tensor.get("shape_signature", tensor["shape"])]
        if any(d < 0 for d in signature):
            problems.append(f"tensor {tensor['name']!r} has a dynamic shape {signature}; the Edge TPU needs "
                            "shapes fixed at compile time")
        shape = [int(d) for d in tensor["shape"]]
        if len(shape) > 3 and any(d > 1 for d in shape[:-3]):
            problems.append(f"tensor {tensor['name']!r} has shape {shape}; beyond three dimensions only the "
                            "three innermost may be larger than 1 on the Edge TPU")
    return SegmentCheck(label, tuple(str(op["op_name"]) for op in ops), tuple(problems), first_cpu)


def check_bundle(
    bundle: Any, segments: Sequence[int] | None = None, *, backend: str | None = None
) -> list[SegmentCheck]:
    """Pre-check the chosen segments of a bundle (all by default)."""
    indices = range(bundle.manifest.num_segments) if segments is None else segments
    return [check_model(bundle.read_segment(i), label=f"segment {i}", backend=backend) for i in indices]
