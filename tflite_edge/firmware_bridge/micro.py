"""Running a segment with TensorFlow Lite Micro on the host (the ``tflite-micro`` package).

The simulated MCU and ``firmware export`` both use this: it loads a flatbuffer into the real
TFLM kernels, measures the tensor arena the model needs, and turns TFLM's diagnostics
(which its C++ core writes to stderr) into one clear ``MicroModelError`` naming the
unsupported operators. Host only: the ``tflite-micro`` package depends on TensorFlow.

TFLM addresses tensors by position (no signatures); the bridge uses the positions and maps
them to the bundle's tensor names with ``layout.segment_layout``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._native import capture_native_stderr
from ..errors import MicroModelError
from .messages import TensorDesc

__all__ = ["MicroModel", "MicroReport", "check_micro", "model_operators"]

#: A generous first arena for measuring what a model needs (TFLM's own default is 10x the model).
_PROBE_MIN_BYTES = 64 * 1024
# TFLM crashes (not errors) when the arena cannot even hold its own bookkeeping; never try below this.
_ARENA_FLOOR_BYTES = 4 * 1024
_ARENA_TOTAL = re.compile(r"Arena allocation total (\d+) bytes")
_MISSING_OP = re.compile(r"Didn't find op for builtin opcode '([A-Z0-9_]+)'")
_MISSING_CUSTOM = re.compile(r"Didn't find op for custom opcode '([^']+)'")
def _runtime() -> Any:
    try:
        from tflite_micro.python.tflite_micro import runtime
    except ImportError as e:
        raise MicroModelError(
            "the TFLite Micro interpreter is not installed: pip install tflite-micro (host only, needs TensorFlow)"
        ) from e
    return runtime


def model_operators(model: bytes) -> list[str]:
    """Builtin (or custom) operator names a flatbuffer uses, in first-use order."""
    runtime = _runtime()
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema

    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    try:
        parsed = runtime.convert_bytearray_to_object(bytearray(model))
    except Exception as e:  # the flatbuffer library raises assorted errors on bad input
        raise MicroModelError(f"not a TFLite flatbuffer: {e}") from e
    ops: list[str] = []
    for subgraph in parsed.subgraphs or []:
        for op in subgraph.operators or []:
            code = parsed.operatorCodes[op.opcodeIndex]
            builtin = runtime.get_builtin_code_from_operator_code(code)
            name = names.get(builtin, str(builtin))
            if name == "CUSTOM" and code.customCode:
                name = f"CUSTOM:{code.customCode.decode(errors='replace')}"
            if name not in ops:
                ops.append(name)
    return ops


def _desc(details: dict[str, Any]) -> TensorDesc:
    quant = details.get("quantization_parameters") or {}
    scales = list(quant.get("scales", []))
    zero_points = list(quant.get("zero_points", []))
    return TensorDesc(
        np.dtype(details["dtype"]).name,
        tuple(int(d) for d in details["shape"]),
        float(scales[0]) if len(scales) == 1 else 0.0,
        int(zero_points[0]) if len(zero_points) == 1 else 0,
    )


def _diagnose(log_text: str, label: str, arena_bytes: int) -> MicroModelError:
    missing = _MISSING_OP.findall(log_text) + [f"CUSTOM:{c}" for c in _MISSING_CUSTOM.findall(log_text)]
    if missing:
        ops = ", ".join(dict.fromkeys(missing))
        return MicroModelError(
            f"{label} uses operators TFLite Micro does not have: {ops}. Choose cuts so the "
            "microcontroller's segment avoids them, or convert with TFLM-compatible layers"
        )
    if "Failed to allocate" in log_text or "Failed to resize buffer" in log_text:
        return MicroModelError(f"{label} does not fit a tensor arena of {arena_bytes} bytes; give it a larger arena")
    detail = " ".join(line.strip() for line in log_text.splitlines() if line.strip())[:300]
    return MicroModelError(f"TFLite Micro cannot load {label}: {detail or 'no diagnostic'}")


class MicroModel:
    """One model loaded in a TFLite Micro interpreter with a fixed arena."""

    def __init__(self, model: bytes, *, arena_bytes: int | None = None, label: str = "model") -> None:
        runtime = _runtime()
        self.label = label
        self.model_bytes = len(model)
        self.arena_bytes = max(_ARENA_FLOOR_BYTES, arena_bytes or max(_PROBE_MIN_BYTES, 10 * len(model)))
        with capture_native_stderr() as log:
            try:
                self._interpreter = runtime.Interpreter.from_bytes(bytes(model), arena_size=self.arena_bytes)
                failure: Exception | None = None
            except (RuntimeError, ValueError) as e:
                failure = e
        if failure is not None:
            raise _diagnose(log[0], label, self.arena_bytes) from failure
        # Counting tensors means asking for one past the end, which TFLM reports on stderr.
        with capture_native_stderr():
            self.inputs = self._details(self._interpreter.get_input_details)
            self.outputs = self._details(self._interpreter.get_output_details)
        self.arena_used_bytes = self._measure_arena()

    @staticmethod
    def _details(get: Any) -> tuple[TensorDesc, ...]:
        descs = []
        index = 0
        while True:
            try:
                descs.append(_desc(get(index)))
            except (RuntimeError, ValueError, IndexError):
                return tuple(descs)
            index += 1

    def _measure_arena(self) -> int:
        with capture_native_stderr() as log:
            self._interpreter.print_allocations()
        match = _ARENA_TOTAL.search(log[0])
        return int(match.group(1)) if match else 0

    def invoke(self, inputs: Sequence[np.ndarray]) -> tuple[list[np.ndarray], int]:
        """Run once on arrays given in input order; returns (outputs in order, invoke time in µs)."""
        if len(inputs) != len(self.inputs):
            raise MicroModelError(f"{self.label} takes {len(self.inputs)} inputs, got {len(inputs)}")
        for index, (array, desc) in enumerate(zip(inputs, self.inputs, strict=True)):
            if array.shape != desc.shape or array.dtype != np.dtype(desc.dtype):
                raise MicroModelError(
                    f"{self.label} input {index} must be {desc.dtype}{list(desc.shape)}, "
                    f"got {array.dtype.name}{list(array.shape)}"
                )
            self._interpreter.set_input(np.ascontiguousarray(array), index)
        with capture_native_stderr() as log:
            try:
                start = time.perf_counter_ns()
                self._interpreter.invoke()
                elapsed_us = (time.perf_counter_ns() - start) // 1000
                failure: Exception | None = None
            except RuntimeError as e:
                failure = e
        if failure is not None:
            raise MicroModelError(f"{self.label} failed in TFLite Micro: {log[0].strip() or failure}") from failure
        outputs = [np.array(self._interpreter.get_output(i)) for i in range(len(self.outputs))]
        return outputs, int(elapsed_us)


@dataclass(frozen=True)
class MicroReport:
    """What ``check_micro`` found out about a model."""

    model_bytes: int
    arena_used_bytes: int
    operators: tuple[str, ...]
    inputs: tuple[TensorDesc, ...]
    outputs: tuple[TensorDesc, ...]
    invoke_us: int


def check_micro(model: bytes, *, label: str = "model", arena_bytes: int | None = None) -> MicroReport:
    """Load ``model`` in TFLite Micro, run it once on zeros and report the arena it needs.

    Raises ``MicroModelError`` naming unsupported operators, or saying the arena is too small.
    """
    operators = tuple(model_operators(model))
    micro = MicroModel(model, arena_bytes=arena_bytes, label=label)
    zeros = [np.zeros(d.shape, dtype=d.dtype) for d in micro.inputs]
    _, invoke_us = micro.invoke(zeros)
    return MicroReport(len(model), micro.arena_used_bytes, operators, micro.inputs, micro.outputs, invoke_us)
