"""Running a bundle's segments as a chain, on one machine.

``BundleRunner`` owns one interpreter per segment (created on first use) and moves named
tensors from segment to segment exactly as the manifest wires them. Quantized tensors
stay quantized between segments, so a chain reproduces the whole quantized model; only the
user-facing ends (model input, exit outputs) are converted from and to float32.

With an Edge TPU delegate, a segment that the bundle holds compiled for the Edge TPU runs
from its compiled variant (checksum-verified); other segments run their CPU file through the
delegate, which leaves them on the CPU.
"""

from __future__ import annotations

import logging
import platform
from collections.abc import Iterable, Mapping

import numpy as np

from ..bundle import Bundle, MeasuredOn, TensorSpec
from ..errors import DelegateError, InputError
from .backends import SegmentInterpreter

log = logging.getLogger(__name__)

__all__ = ["BundleRunner", "quantize", "dequantize", "softmax_confidence"]


def quantize(values: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """Float values to the tensor's storage dtype (affine int quantization when quantized)."""
    dtype = np.dtype(spec.dtype)
    if not spec.is_quantized:
        return np.asarray(values, dtype=dtype)
    info = np.iinfo(dtype)
    assert spec.scale is not None
    q = np.round(np.asarray(values, dtype=np.float32) / np.float32(spec.scale)) + (spec.zero_point or 0)
    return np.clip(q, info.min, info.max).astype(dtype)


def dequantize(values: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """Stored tensor values to float32."""
    if not spec.is_quantized:
        return np.asarray(values, dtype=np.float32)
    assert spec.scale is not None
    return (values.astype(np.float32) - np.float32(spec.zero_point or 0)) * np.float32(spec.scale)


def softmax_confidence(probabilities: np.ndarray) -> tuple[int, float]:
    """Top-1 class and its probability from one exit's (already softmaxed) output."""
    flat = probabilities.reshape(-1)
    top = int(np.argmax(flat))
    return top, float(flat[top])


class BundleRunner:
    """Runs any contiguous range of a bundle's segments locally."""

    def __init__(
        self,
        bundle: Bundle,
        *,
        backend: str | None = None,
        num_threads: int | None = None,
        delegate: str | None = None,
        allow_fallback: bool = False,
        kernels: str = "default",
    ) -> None:
        self.bundle = bundle
        self.manifest = bundle.manifest
        self.kernels = kernels
        self._options = {
            "backend": backend,
            "num_threads": num_threads,
            "delegate": delegate,
            "allow_fallback": allow_fallback,
            "kernels": kernels,
        }
        self._interpreters: dict[int, SegmentInterpreter] = {}

    def interpreter(self, index: int) -> SegmentInterpreter:
        if index not in self._interpreters:
            self._interpreters[index] = self._open(index)
        return self._interpreters[index]

    def _open(self, index: int) -> SegmentInterpreter:
        label = f"segment {index}"
        delegate = self._options["delegate"]
        if isinstance(delegate, str) and delegate.split(":", 1)[0] == "edgetpu" and (
            self.manifest.segments[index].variant("edgetpu") is not None
        ):
            compiled = self.bundle.read_variant(index, "edgetpu")
            try:
                return SegmentInterpreter(compiled, label=f"{label} (Edge TPU)",
                                          **{**self._options, "allow_fallback": False})  # type: ignore[arg-type]
            except DelegateError as e:
                if not self._options["allow_fallback"]:
                    raise
                # The compiled file cannot run without the delegate: fall back to the CPU file.
                log.warning("%s; running %s on the CPU", str(e), label)
                return SegmentInterpreter(self.bundle.read_segment(index), label=label,
                                          **{**self._options, "delegate": None})  # type: ignore[arg-type]
        return SegmentInterpreter(self.bundle.read_segment(index), label=label, **self._options)  # type: ignore[arg-type]

    @property
    def backend_name(self) -> str:
        return self.interpreter(0).backend.name

    def measured_on(self) -> MeasuredOn:
        """What runs this chain (backend, its version, kernels, CPU), as the manifest records it."""
        backend = self.interpreter(0).backend
        return MeasuredOn(backend.name, backend.version, self.kernels, platform.machine())

    def quantize_input(self, x: np.ndarray) -> np.ndarray:
        """One float sample (with or without the batch axis) to segment 0's input tensor."""
        spec = self.manifest.segments[0].inputs[0]
        x = np.asarray(x)
        if x.shape == spec.shape[1:]:
            x = x[np.newaxis]
        if x.shape != spec.shape:
            raise InputError(f"input must have shape {list(spec.shape[1:])} (one sample), got {list(x.shape)}")
        if x.dtype == np.dtype(spec.dtype) and spec.is_quantized:
            return x  # already quantized
        return quantize(x, spec)

    def run_segment(self, index: int, tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run segment ``index`` on the named tensors it reads; returns its named outputs."""
        spec = self.manifest.segments[index]
        try:
            feeds = {t.name: tensors[t.name] for t in spec.inputs}
        except KeyError as e:
            raise InputError(f"segment {index} needs tensor {e.args[0]!r}, which was not provided") from e
        return self.interpreter(index).run(feeds)

    def run(
        self, tensors: Mapping[str, np.ndarray], *, start: int = 0, stop: int | None = None
    ) -> dict[str, np.ndarray]:
        """Run segments [start, stop) and return every tensor seen, inputs included."""
        stop = self.manifest.num_segments if stop is None else stop
        if not 0 <= start <= stop <= self.manifest.num_segments:
            raise InputError(f"segment range [{start}, {stop}) is outside 0..{self.manifest.num_segments}")
        seen = dict(tensors)
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
        return dequantize(tensors[exit_name], spec)[0]

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
