"""Fixtures of the co-inference tests: a tiny in-memory manifest and a private broker."""

from __future__ import annotations

from typing import Iterator

import pytest

from tflite_edge.bundle.manifest import CutSpec, ExitSpec, Manifest, SegmentSpec, TensorSpec
from tflite_edge.transport.broker import MosquittoBroker


def _spec(name: str, shape: tuple[int, ...], scale: float | None = 0.5, zp: int | None = -3) -> TensorSpec:
    return TensorSpec(name, shape, "int8", scale, zp)


@pytest.fixture
def tiny_manifest() -> Manifest:
    """Two segments, exits ``early`` (segment 0) and ``logits`` (segment 1), cut tensor ``cut``."""
    image = _spec("image", (1, 4, 4, 1), 0.0039, -128)
    cut = _spec("cut", (1, 2, 3))
    early = _spec("early", (1, 10), 0.00390625, -128)
    out = _spec("logits", (1, 10), 0.00390625, -128)
    return Manifest(
        model_name="tiny",
        quantization="int8",
        input=TensorSpec("image", (1, 4, 4, 1), "float32"),
        segments=(
            SegmentSpec(0, "segment_0.tflite", "0" * 64, 10, (image,), (early, cut)),
            SegmentSpec(1, "segment_1.tflite", "1" * 64, 10, (cut,), (out,)),
        ),
        exits=(ExitSpec("early", 0, 10), ExitSpec("logits", 1, 10)),
        cuts=(CutSpec("cut", 0, 6),),
        converter_version="0",
        tensorflow_version="0",
    )


@pytest.fixture
def broker() -> Iterator[MosquittoBroker]:
    """A Mosquitto on a free loopback port, stopped after the test."""
    with MosquittoBroker() as running:
        yield running
