"""Test vectors shared by the Python codec tests and the C codec test."""

from __future__ import annotations

import numpy as np

from tflite_edge.firmware_bridge.messages import (
    Capabilities, ErrorReply, GetTelemetry, Hello, Invoke, LoadAck, LoadBegin, LoadChunk, LoadEnd,
    Message, ModelInfo, Result, Telemetry, Tensor, TensorDesc,
)


def example_messages() -> list[Message]:
    """One or more instances of every message type, with awkward values (zeros, limits)."""
    image = np.arange(64, dtype=np.int16).astype(np.int8).reshape(1, 8, 8, 1) - 32
    logits = np.array([[-128, 0, 127, 5]], dtype=np.int8)
    floats = np.array([0.5, -1.25, 3.0e-8], dtype=np.float32)
    return [
        Hello(1, 512),
        Hello(1, 0xFFFF),
        Capabilities(1, 2, 1024, 96 * 1024, 256 * 1024, "sim-cortex-m4", "tflite-edge-sim 0.1.0"),
        Capabilities(1, 1, 256, 0, 0, "", ""),
        LoadBegin(0, 5120, 0xDEADBEEF),
        LoadChunk(1, 4096, bytes(range(256)) * 2),
        LoadChunk(0, 0, b""),
        LoadAck(0, 5120),
        LoadEnd(0),
        ModelInfo(0, 3040, (TensorDesc("int8", (1, 8, 8, 1), 0.0627451, -128),),
                  (TensorDesc("int8", (1, 10), 0.00390625, -128), TensorDesc("int8", (1, 4, 4, 8), 0.02, -7))),
        Invoke(0, (Tensor.from_array(0, image, 0.0627451, -128),)),
        Invoke(1, (Tensor.from_array(0, floats), Tensor.from_array(3, np.array([7, -7], np.int32)))),
        Result(1234, (Tensor.from_array(1, logits, 0.00390625, -128),)),
        Result(0, ()),
        GetTelemetry(),
        Telemetry(60_000, 42.5, 3300.0, 31.25, 12_345, 7),
        ErrorReply(9, "arena too small: needs 3040 bytes, has 2048"),
        ErrorReply(1, ""),
    ]
