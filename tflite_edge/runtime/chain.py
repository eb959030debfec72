"""Running a bundle's segments as a chain, on one machine.

``BundleRunner`` owns one interpreter per segment (created on first use) and moves named
tensors from segment to segment exactly as the manifest wires them. Quantized tensors
stay quantized between segments, so a chain reproduces the whole quantized model; only the
user-facing ends (model input, exit outputs) are converted from and to float32.

When the bundle has a fused file for exactly the range asked for (``run(start=0,
stop=K)``), that one interpreter runs instead of K: the converter verified it against the
chain, and each interpreter hand-over costs a thread-pool wake-up (with XNNPACK's
multi-threading, the idle pool's spinning threads also compete with the next one's).

With an Edge TPU delegate, a segment that the bundle holds compiled for the Edge TPU runs
from its compiled variant (checksum-verified), and no fused file replaces it; other
segments run their CPU file through the delegate, which leaves them on the CPU.
"""

from __future__ import annotations

import dataclasses
import logging
import platform
from collections.abc import Iterable, Mapping

import numpy as np

from ..arrays import check_values
from ..bundle import Bundle, MeasuredOn, TensorSpec
from ..errors import DelegateError, InputError
from .backends import Interpreter, InterpreterFactory, InterpreterOptions, resolve_backend

log = logging.getLogger(__name__)

# The first requests' inputs are compared with the calibrated input range; misuse (e.g. 0..255
# pixels for a bundle calibrated on 0..1) is systematic, so a few requests show it.
INPUT_RANGE_CHECKS = 32


def calibrated_range(spec: TensorSpec) -> tuple[float, float] | None:
    """The float range an int8/uint8 input tensor can represent: the range seen during
    calibration (the converter derives the input's scale and zero point from it)."""
    if not spec.is_quantized or spec.scale is None:
        return None
    info = np.iinfo(np.dtype(spec.dtype))
    zero_point = spec.zero_point or 0
    return spec.scale * (info.min - zero_point), spec.scale * (info.max - zero_point)


def far_outside(x: np.ndarray, bounds: tuple[float, float]) -> bool:
    """True when ``x`` leaves ``bounds`` by more than the range's own width (clipping at
    the edges of a calibrated range is normal; a different scale is not)."""
    low, high = bounds
    width = high - low
    return bool(np.min(x) < low - width or np.max(x) > high + width)

__all__ = ["BundleRunner", "quantize", "dequantize", "softmax_confidence"]


def quantize(values: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """Float values to the tensor's storage dtype (affine int quantization when quantized)."""
    dtype = np.dtype(spec.dtype)
    if not spec.is_quantized:
        return np.asarray(values, dtype=dtype)
    info = np.iinfo(dtype)
    assert spec.scale is not None
    # In place after the division: a fresh buffer per step costs more than the arithmetic
    # (page faults on every new large array; 6x the time for a 224x224x3 image).
    q = np.divide(np.asarray(values, dtype=np.float32), np.float32(spec.scale))
    np.round(q, out=q)
    q += np.float32(spec.zero_point or 0)
    np.clip(q, info.min, info.max, out=q)
    stored: np.ndarray = q.astype(dtype)
    return stored


def dequantize(values: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """Stored tensor values to float32."""
    if not spec.is_quantized:
        return np.asarray(values, dtype=np.float32)
    assert spec.scale is not None
    return (values.astype(np.float32) - np.float32(spec.zero_point or 0)) * np.float32(spec.scale)


def softmax_confidence(probabilities: np.ndarray) -> tuple[int, float]:
    """Top-1 class and its probability from one exit's (already softmaxed) output."""
    flat = probabilities.reshape(-1)
    top = int(flat.argmax())  # the method: np.argmax's dispatch costs more than the search here
    return top, float(flat[top])


class BundleRunner:
    """Runs any contiguous range of a bundle's segments locally.

    Interpreters come from ``interpreters`` (an ``InterpreterFactory``: a flatbuffer and a
    label in, an interpreter out), by default TFLite interpreters made with the backend,
    thread, delegate and fallback keywords. Tests pass a factory of fakes.
    """

    def __init__(
        self,
        bundle: Bundle,
        *,
        backend: str | None = None,
        num_threads: int | None = None,
        delegate: str | None = None,
        allow_fallback: bool = False,
        use_fused: bool = True,
        interpreters: InterpreterFactory | None = None,
        kernels: str = "default",
    ) -> None:
        self.bundle = bundle
        self.manifest = bundle.manifest
        self.kernels = kernels
        self._edgetpu = isinstance(delegate, str) and delegate.split(":", 1)[0] == "edgetpu"
        self._options = InterpreterOptions(backend, num_threads, delegate, allow_fallback, kernels)
        self._factory: InterpreterFactory = interpreters or self._options.make
        self.use_fused = use_fused
        self._interpreters: dict[int, Interpreter] = {}
        self._fused: dict[tuple[int, int], Interpreter] = {}
        self._range_checks_left = INPUT_RANGE_CHECKS

    def interpreter(self, index: int) -> Interpreter:
        if index not in self._interpreters:
            self._interpreters[index] = self._open(index)
        return self._interpreters[index]

    def _open(self, index: int) -> Interpreter:
        label = f"segment {index}"
        if self._edgetpu and self.manifest.segments[index].variant("edgetpu") is not None:
            compiled = self.bundle.read_variant(index, "edgetpu")
            try:
                return dataclasses.replace(self._options, allow_fallback=False).make(compiled, f"{label} (Edge TPU)")
            except DelegateError as e:
                if not self._options.allow_fallback:
                    raise
                # The compiled file cannot run without the delegate: fall back to the CPU file.
                log.warning("%s; running %s on the CPU", str(e), label)
                return dataclasses.replace(self._options, delegate=None).make(self.bundle.read_segment(index), label)
        return self._factory(self.bundle.read_segment(index), label)

    def has_fused(self, start: int, stop: int) -> bool:
        """Whether ``run(start=start, stop=stop)`` runs one fused interpreter (never in place of
        Edge TPU variants when the Edge TPU delegate is asked for)."""
        if self._edgetpu and any(self.manifest.segments[i].variant("edgetpu") for i in range(start, stop)):
            return False
        return self.use_fused and self.manifest.fused_span(start, stop) is not None

    def fused_interpreter(self, start: int, stop: int) -> Interpreter:
        key = (start, stop)
        if key not in self._fused:
            self._fused[key] = self._factory(self.bundle.read_fused(start, stop), f"fused segments [{start}, {stop})")
        return self._fused[key]

    @property
    def backend_name(self) -> str:
        return self.interpreter(0).backend_name

    def measured_on(self) -> MeasuredOn:
        """What runs this chain (backend, its version, kernels, CPU), as the manifest records it."""
        backend = resolve_backend(self.interpreter(0).backend_name)
        return MeasuredOn(backend.name, backend.version, self.kernels, platform.machine())

    def quantize_input(self, x: np.ndarray) -> np.ndarray:
        """One float sample (with or without the batch axis) to segment 0's input tensor."""
        spec = self.manifest.segments[0].inputs[0]
        x = np.asarray(x)
        # Nothing is computed from NaN, infinity or complex numbers (quantizing would hide them).
        check_values(x, "input")
        if x.shape == spec.shape[1:]:
            x = x[np.newaxis]
        if x.shape != spec.shape:
            raise InputError(f"input must have shape {list(spec.shape[1:])} (one sample), got {list(x.shape)}")
        if x.dtype == np.dtype(spec.dtype) and spec.is_quantized:
            return x  # already quantized
        if self._range_checks_left > 0:
            self._check_input_range(x, spec)
        return quantize(x, spec)

    def _check_input_range(self, x: np.ndarray, spec: TensorSpec) -> None:
        self._range_checks_left -= 1
        bounds = calibrated_range(spec)
        if bounds is None:
            self._range_checks_left = 0  # float inputs are not clipped
        elif x.size and far_outside(x, bounds):
            self._range_checks_left = 0  # said once
            log.warning(
                "inputs range over %.4g..%.4g but bundle %s was calibrated on about %.3g..%.3g: they are clipped "
                "and the results are wrong; scale inputs as they were for calibration (e.g. pixels / 255)",
                float(np.min(x)), float(np.max(x)), self.manifest.bundle_id, *bounds,
            )

    def run_segment(self, index: int, tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run segment ``index`` on the named tensors it reads; returns its named outputs."""
        return self.interpreter(index).run(self._feeds(index, tensors))

    def _feeds(self, index: int, tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            return {t.name: tensors[t.name] for t in self.manifest.segments[index].inputs}
        except KeyError as e:
            raise InputError(f"segment {index} needs tensor {e.args[0]!r}, which was not provided") from e

    def run(
        self, tensors: Mapping[str, np.ndarray], *, start: int = 0, stop: int | None = None
    ) -> dict[str, np.ndarray]:
        """Run segments [start, stop) and return every tensor seen, inputs included."""
        stop = self.manifest.num_segments if stop is None else stop
        if not 0 <= start <= stop <= self.manifest.num_segments:
            raise InputError(f"segment range [{start}, {stop}) is outside 0..{self.manifest.num_segments}")
        seen = dict(tensors)
        if self.has_fused(start, stop):
            seen.update(self.fused_interpreter(start, stop).run(self._feeds(start, seen)))
            return seen
        for index in range(start, stop):
            seen.update(self.run_segment(index, seen))
        return seen

    def run_sample(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Run the whole chain on one float sample; returns every named tensor (raw dtype)."""
        return self.run({self.manifest.input.name: self.quantize_input(x)})

    def exit_probabilities(self, tensors: Mapping[str, np.ndarray], exit_name: str) -> np.ndarray:
        """An exit's output as float32 probabilities (batch axis dropped)."""
        exit_spec = self.manifest.exit(exit_name)
        spec = self.manifest.segments[exit_spec.segment].output(exit_name)
        probabilities: np.ndarray = dequantize(tensors[exit_name], spec)[0]
        return probabilities

    def predict(self, x: np.ndarray, exits: Iterable[str] | None = None) -> dict[str, np.ndarray]:
        """Float outputs of the requested exits for a batch of samples, shape (N, classes)."""
        names = list(exits) if exits is not None else list(self.manifest.exit_names)
        for name in names:
            self.manifest.exit(name)
        last = max(self.manifest.exit(n).segment for n in names) + 1
        x = np.asarray(x)
        if x.shape == self.manifest.input.shape[1:]:
            x = x[np.newaxis]
        results: dict[str, list[np.ndarray]] = {n: [] for n in names}
        for sample in x:
            seen = self.run({self.manifest.input.name: self.quantize_input(sample)}, stop=last)
            for n in names:
                results[n].append(self.exit_probabilities(seen, n))
        return {n: np.stack(v) if v else np.zeros((0,), np.float32) for n, v in results.items()}
