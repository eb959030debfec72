"""Fixtures for the policy simulator: manifests and profiles built in memory, real traces from ../shared."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from tflite_edge.agents.profiles import LatencyProfile
from tflite_edge.bundle.manifest import CutSpec, ExitSpec, Manifest, SegmentSpec, TensorSpec

REPO = Path(__file__).resolve().parents[2]
NORWAY = REPO.parent / "shared" / "data" / "bandwidth-traces" / "norway-3g"


def make_manifest(
    input_shape: Sequence[int],
    cut_shapes: Sequence[Sequence[int]],
    exit_accuracies: Sequence[float],
    exit_segments: Sequence[int] | None = None,
) -> Manifest:
    """A structurally valid int8 manifest: segment i reads cut i-1 and writes cut i and exit i."""
    num_segments = len(cut_shapes) + 1
    exit_segments = list(exit_segments) if exit_segments is not None else list(range(num_segments))
    boundaries = [TensorSpec("image", tuple(input_shape), "int8", 0.05, -128)]
    boundaries += [TensorSpec(f"cut_{i}", tuple(shape), "int8", 0.02, -10) for i, shape in enumerate(cut_shapes)]
    segments = []
    for i in range(num_segments):
        outputs = [
            TensorSpec(f"exit_{e}", (1, 10), "int8", 1 / 256, -128) for e, s in enumerate(exit_segments) if s == i
        ]
        if i < num_segments - 1:
            outputs.append(boundaries[i + 1])
        segments.append(SegmentSpec(i, f"segment_{i}.tflite", f"{i:064x}", 1000, (boundaries[i],), tuple(outputs)))
    return Manifest(
        model_name="test_exits",
        quantization="int8",
        input=TensorSpec("image", tuple(input_shape), "float32"),
        segments=tuple(segments),
        exits=tuple(
            ExitSpec(f"exit_{e}", s, 10, accuracy)
            for e, (s, accuracy) in enumerate(zip(exit_segments, exit_accuracies, strict=True))
        ),
        cuts=tuple(CutSpec(f"cut_{i}", i, boundaries[i + 1].bytes) for i in range(num_segments - 1)),
        converter_version="0.1.0",
        tensorflow_version="2.21.0",
    )


@pytest.fixture
def mobilenet_like() -> tuple[Manifest, LatencyProfile]:
    """Activation sizes of MobileNetV2-224 cut at block_5 and block_12 (int8), 9.8 ms in total."""
    manifest = make_manifest([1, 224, 224, 3], [[1, 28, 28, 32], [1, 14, 14, 96]], [0.62, 0.78, 0.90])
    return manifest, LatencyProfile((4.0, 3.5, 2.3))


@pytest.fixture
def tiny() -> tuple[Manifest, LatencyProfile]:
    """A digits-sized bundle: 64-byte input, small cuts, sub-millisecond segments."""
    manifest = make_manifest([1, 8, 8, 1], [[1, 4, 4, 16], [1, 2, 2, 32]], [0.85, 0.93, 0.97])
    return manifest, LatencyProfile((0.05, 0.04, 0.03))


@pytest.fixture(scope="session")
def norway_dir() -> Path:
    if not NORWAY.is_dir():
        pytest.skip(f"real bandwidth traces not found at {NORWAY} (the shared data directory beside the repo)")
    return NORWAY
