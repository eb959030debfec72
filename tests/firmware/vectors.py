"""Test vectors shared by the Python codec tests and the C codec test."""

from __future__ import annotations

import numpy as np

from tflite_edge.firmware_bridge.messages import (
    DTYPE_CODES,
    Capabilities,
    ErrorReply,
    Fragment,
    FragmentReply,
    GetTelemetry,
    Hello,
    Invoke,
    LoadAck,
    LoadBegin,
    LoadChunk,
    LoadEnd,
    Message,
    ModelInfo,
    Result,
    Telemetry,
    Tensor,
    TensorDesc,
)


def example_messages() -> list[Message]:
    """One or more instances of every message type, with awkward values (zeros, limits)."""
    image = np.arange(64, dtype=np.int16).astype(np.int8).reshape(1, 8, 8, 1) - 32
    logits = np.array([[-128, 0, 127, 5]], dtype=np.int8)
    floats = np.array([0.5, -1.25, 3.0e-8], dtype=np.float32)
    return [
        Hello(1, 512, 4096),
        Hello(1, 0xFFFF, 0xFFFFFFFF),
        Capabilities(1, 2, 1024, 96 * 1024, 256 * 1024, 64 * 1024, "sim-cortex-m4", "tflite-edge-sim 0.1.0"),
        Capabilities(1, 1, 256, 0, 0, 256, "", ""),
        Fragment(0x05, 0, 3, bytes(range(1, 200))),
        Fragment(0x03, 65534, 65535, b""),
        FragmentReply(0x85, 1, 2, b"\x00" * 17),
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


def _tensors(label: str, items: tuple, with_data: bool) -> str:
    out = f" {label}={len(items)}"
    for item in items:
        desc = item.desc if with_data else item
        shape = ("s" + "".join(f"x{d}" for d in desc.shape)) if desc.shape else ""
        out += " ["
        if with_data:
            out += f"{item.index}:"
        out += f"{DTYPE_CODES[desc.dtype]}:{shape}:{desc.scale:.9g}:{desc.zero_point}"
        if with_data:
            out += ":" + item.data.hex()
        out += "]"
    return out


def canonical(m: Message) -> str:
    """The text form the C test driver prints for a decoded message (tests/firmware/codec_driver.c)."""
    if isinstance(m, Hello):
        return f"HELLO v={m.protocol_version} max={m.max_payload_bytes} msg={m.max_message_bytes}"
    if isinstance(m, Capabilities):
        return (f"CAPS v={m.protocol_version} slots={m.model_slots} max={m.max_payload_bytes} arena={m.arena_bytes} "
                f"model={m.max_model_bytes} msg={m.max_message_bytes} board={m.board.encode().hex()} "
                f"fw={m.firmware.encode().hex()}")
    if isinstance(m, Fragment):  # FragmentReply too
        return f"FRAG type={int(m.TYPE)} inner={m.inner_type} idx={m.index} count={m.count} data={m.data.hex()}"
    if isinstance(m, LoadBegin):
        return f"LOAD_BEGIN slot={m.slot} total={m.total_bytes} crc={m.crc32}"
    if isinstance(m, LoadChunk):
        return f"LOAD_CHUNK slot={m.slot} off={m.offset} data={m.data.hex()}"
    if isinstance(m, LoadAck):
        return f"LOAD_ACK slot={m.slot} next={m.next_offset}"
    if isinstance(m, LoadEnd):
        return f"LOAD_END slot={m.slot}"
    if isinstance(m, ModelInfo):
        return (f"MODEL_INFO slot={m.slot} arena={m.arena_used_bytes}"
                + _tensors("in", m.inputs, False) + _tensors("out", m.outputs, False))
    if isinstance(m, Invoke):
        return f"INVOKE slot={m.slot}" + _tensors("t", m.tensors, True)
    if isinstance(m, Result):
        return f"RESULT us={m.latency_us}" + _tensors("t", m.tensors, True)
    if isinstance(m, GetTelemetry):
        return "GET_TELEMETRY"
    if isinstance(m, Telemetry):
        return (f"TELEMETRY up={m.uptime_ms} p={m.power_mw:.9g} v={m.voltage_mv:.9g} t={m.temperature_c:.9g} "
                f"free={m.free_memory_bytes} n={m.invokes}")
    assert isinstance(m, ErrorReply)
    return f"ERROR code={m.code} text={m.text.encode().hex()}"
