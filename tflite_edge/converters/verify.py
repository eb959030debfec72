"""Equivalence and accuracy checks shared by the converter, the CLI and the tests."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ..bundle import Bundle, FusedSpec, Verification
from ..errors import VerificationError
from ..runtime import BundleRunner, SegmentInterpreter, dequantize

__all__ = [
    "compare_chain_to_model",
    "assert_bundle_matches",
    "fused_matching_chain",
    "exit_accuracies",
    "keras_exit_accuracies",
    "top1_accuracies",
    "top1_agreement",
]

# Float segments run the same kernels as the whole model; a different operator grouping
# inside XNNPACK may still reorder a few float additions.
FLOAT_TOLERANCE = 1e-4


def compare_chain_to_model(
    bundle: Bundle, whole_model: bytes, inputs: np.ndarray, *, backend: str | None = None
) -> Verification:
    """Run the segment chain and the whole converted model on ``inputs``; compare every named
    output (exits and cut activations) after dequantization."""
    runner = BundleRunner(bundle, backend=backend, use_fused=False)
    whole = SegmentInterpreter(whole_model, backend=backend, label="whole model")
    manifest = bundle.manifest
    specs = {spec.name: spec for segment in manifest.segments for spec in segment.outputs}
    max_diff = 0.0
    exact = True
    for sample in inputs:
        feed = runner.quantize_input(sample)
        chain = runner.run({manifest.input.name: feed})
        # The whole model's signature may name its one input after the Keras tensor.
        reference = whole.run({whole.input_names[0]: feed})
        for name, expected in reference.items():
            got = chain[name]
            exact = exact and np.array_equal(got, expected)
            diff = np.abs(dequantize(got, specs[name]) - dequantize(expected, specs[name]))
            max_diff = max(max_diff, float(diff.max(initial=0.0)))
    return Verification(samples=len(inputs), max_abs_diff=max_diff, bit_exact=exact)


def assert_bundle_matches(
    bundle: Bundle, whole_model: bytes, inputs: np.ndarray, *, tolerance: float | None = None,
    backend: str | None = None,
) -> Verification:
    """Like `compare_chain_to_model`, raising ``VerificationError`` when outputs differ by more
    than ``tolerance`` (default: bit-exact for int8 bundles, 1e-4 for float ones)."""
    result = compare_chain_to_model(bundle, whole_model, inputs, backend=backend)
    if tolerance is None:
        tolerance = 0.0 if bundle.manifest.quantization == "int8" else FLOAT_TOLERANCE
    if result.max_abs_diff > tolerance:
        raise VerificationError(
            f"the segment chain differs from the whole {bundle.manifest.quantization} model by up to "
            f"{result.max_abs_diff:.3g} (tolerance {tolerance:g}) over {result.samples} samples"
        )
    return result


def fused_matching_chain(bundle: Bundle, inputs: np.ndarray, *, backend: str | None = None) -> list[FusedSpec]:
    """The bundle's fused files whose every output equals the segment chain's on ``inputs``
    (bit for bit for int8 bundles, within 1e-4 for float ones)."""
    runner = BundleRunner(bundle, backend=backend, use_fused=False)
    tolerance = 0.0 if bundle.manifest.quantization == "int8" else FLOAT_TOLERANCE
    matching = []
    for fused in bundle.manifest.fused:
        interpreter = SegmentInterpreter(bundle.read_fused(fused.start, fused.stop), backend=backend,
                                         label=f"fused segments [{fused.start}, {fused.stop})")
        first = bundle.manifest.segments[fused.start]
        same = True
        for sample in inputs:
            feed = {first.inputs[0].name: runner.quantize_input(sample)}
            chain = runner.run(feed, start=fused.start, stop=fused.stop)
            got = interpreter.run(feed)
            for name in fused.outputs:
                spec = bundle.manifest.tensor(name)
                diff = np.abs(dequantize(got[name], spec) - dequantize(chain[name], spec)).max(initial=0.0)
                same = same and float(diff) <= tolerance
        if same:
            matching.append(fused)
    return matching


def _labels(y: np.ndarray) -> np.ndarray:
    y = np.asarray(y)
    return y.argmax(axis=-1) if y.ndim > 1 else y.astype(np.int64)


def exit_accuracies(bundle: Bundle, x: np.ndarray, y: np.ndarray, *, backend: str | None = None,
                    runner: BundleRunner | None = None) -> dict[str, float]:
    """Top-1 accuracy of every exit of the bundle on (x, y)."""
    runner = runner or BundleRunner(bundle, backend=backend)
    return top1_accuracies(runner.predict(x), y)


def keras_exit_accuracies(model: Any, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Top-1 accuracy of every exit of the float Keras model on (x, y)."""
    return top1_accuracies(keras_predictions(model, x), y)


def top1_accuracies(outputs: Mapping[str, np.ndarray], y: np.ndarray) -> dict[str, float]:
    """Top-1 accuracy of each exit's outputs (N, classes) against labels or one-hot ``y``."""
    labels = _labels(y)
    return {name: float(np.mean(p.argmax(axis=-1) == labels)) for name, p in outputs.items()}


def top1_agreement(outputs: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray]) -> dict[str, float]:
    """Per exit, the share of samples whose top-1 class is the reference's (``VerificationError``
    when the reference lacks an exit)."""
    missing = [name for name in outputs if name not in reference]
    if missing:
        raise VerificationError(f"the reference has no output named {', '.join(map(repr, missing))}")
    return {name: float(np.mean(p.argmax(axis=-1) == reference[name].argmax(axis=-1))) for name, p in outputs.items()}


def keras_predictions(model: Any, x: np.ndarray) -> Mapping[str, np.ndarray]:
    """The float Keras model's outputs, keyed by exit name."""
    outputs = model.predict(np.asarray(x, dtype=np.float32), verbose=0, batch_size=256)
    if not isinstance(outputs, (list, tuple)):
        outputs = [outputs]
    names = [t._keras_history.operation.name for t in model.outputs]
    return dict(zip(names, outputs, strict=True))
