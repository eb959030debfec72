"""Quantizing float inputs to a tensor's storage dtype: the affine rule, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from tflite_edge.bundle.manifest import TensorSpec
from tflite_edge.runtime.chain import dequantize, quantize


@pytest.mark.parametrize(("dtype", "scale", "zero_point"), [("int8", 0.0078125, -1), ("int8", 0.0039, -128),
                                                            ("uint8", 0.02, 128), ("int16", 0.001, 0)])
def test_quantize_follows_the_affine_rule_and_leaves_its_input_alone(dtype: str, scale: float,
                                                                     zero_point: int) -> None:
    spec = TensorSpec("image", (1, 64, 64, 3), dtype, scale, zero_point)
    rng = np.random.default_rng(7)
    x = rng.uniform(-40, 40, size=spec.shape).astype(np.float32) * np.float32(scale)
    x.flat[:6] = np.float32(scale) * np.array([0.5, 1.5, -0.5, -2.5, 1e6, -1e6], np.float32)  # ties, far out
    original = x.copy()
    info = np.iinfo(dtype)
    expected = np.clip(np.round(x / np.float32(scale)) + zero_point, info.min, info.max).astype(dtype)
    got = quantize(x, spec)
    assert got.dtype == np.dtype(dtype) and np.array_equal(got, expected)
    assert np.array_equal(x, original)  # the caller's array is not used as scratch space
    # Within range, quantizing what dequantizing gave is the identity.
    assert np.array_equal(quantize(dequantize(got, spec), spec), got)
