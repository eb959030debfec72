"""Which bundle tensor sits at which position of a segment's inputs and outputs.

TFLite Micro (and so the serial protocol) addresses tensors by position in the model's
subgraph; the bundle names them through the ``serving_default`` signature. The mapping is
read from the flatbuffer with whichever TFLite interpreter the gateway has (LiteRT or
tflite-runtime), so it works on a device without TensorFlow.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..bundle import Bundle, TensorSpec
from ..errors import BackendError, MicroModelError
from ..runtime import resolve_backend
from .messages import TensorDesc

__all__ = ["SegmentLayout", "segment_layout", "desc_of"]

_SIGNATURE = "serving_default"


@dataclass(frozen=True)
class SegmentLayout:
    """A segment's input and output tensor specs, in the model's positional order."""

    segment: int
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def input_index(self, name: str) -> int:
        return [t.name for t in self.inputs].index(name)


def desc_of(spec: TensorSpec) -> TensorDesc:
    """The serial-link description of a manifest tensor."""
    return TensorDesc(spec.dtype, spec.shape, spec.scale or 0.0, spec.zero_point or 0)


def _positional_names(model: bytes, backend: str | None) -> tuple[list[str], list[str]]:
    interpreter: Any = resolve_backend(backend).interpreter_class(model_content=model)
    try:
        runner = interpreter.get_signature_runner(_SIGNATURE)
    except ValueError as e:
        raise MicroModelError(f"the segment has no {_SIGNATURE!r} signature naming its tensors") from e
    by_index_in = {d["index"]: name for name, d in runner.get_input_details().items()}
    by_index_out = {d["index"]: name for name, d in runner.get_output_details().items()}
    try:
        inputs = [by_index_in[d["index"]] for d in interpreter.get_input_details()]
        outputs = [by_index_out[d["index"]] for d in interpreter.get_output_details()]
    except KeyError as e:
        raise MicroModelError(f"tensor {e.args[0]} of the segment is not named by its signature") from e
    return inputs, outputs


def segment_layout(bundle: Bundle, index: int, *, backend: str | None = None) -> SegmentLayout:
    """The positional layout of segment ``index``, checked against the manifest."""
    spec = bundle.manifest.segments[index]
    try:
        input_names, output_names = _positional_names(bundle.read_segment(index), backend)
    except (RuntimeError, ValueError) as e:
        raise BackendError(f"cannot read the tensor layout of segment {index}: {e}") from e
    by_name = {t.name: t for t in (*spec.inputs, *spec.outputs)}
    missing = [n for n in (*input_names, *output_names) if n not in by_name]
    if missing or set(input_names) != {t.name for t in spec.inputs}:
        raise MicroModelError(
            f"segment {index}'s flatbuffer tensors {input_names + output_names} do not match its manifest entry"
        )
    return SegmentLayout(
        index, tuple(by_name[n] for n in input_names), tuple(by_name[n] for n in output_names)
    )
