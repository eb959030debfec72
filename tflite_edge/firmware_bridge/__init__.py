"""Microcontrollers as the first stage of the pipeline, over a serial link.

A gateway (e.g. a Raspberry Pi) talks to a microcontroller running TensorFlow Lite Micro
over USB serial or a UART. The protocol (docs/serial-protocol.md) frames messages with COBS
and a CRC-32 (``framing``); the messages (``messages``) load a segment in checksummed
chunks, invoke it on quantized tensors and read power telemetry; messages larger than a
frame travel as fragments (``fragments``). ``c/`` holds the same codec in C for firmware.
On the host:

- ``BridgeClient``: the pyserial client (retries, timeouts, reconnection);
- ``SimulatedMcu`` / ``serve`` / ``open_pty``: a simulated MCU running real TFLM kernels
  (needs the ``tflite-micro`` package, host only);
- ``McuSegmentRunner`` and ``Gateway``: segment 0 on the MCU, the rest locally or on the edge;
- ``export_segment``: a segment as a C array for firmware, checked in TFLM first.

Submodules that need pyserial or tflite-micro import them when used, so importing this
package costs nothing on a device.
"""

from __future__ import annotations

from typing import Any

from .framing import PROTOCOL_VERSION, Frame, FrameDecoder, decode_frame, encode_frame, frame_overhead_bytes
from .messages import ErrorCode, MessageType, decode_message, encode_message

__all__ = [
    "PROTOCOL_VERSION",
    "BridgeClient",
    "ErrorCode",
    "Frame",
    "FrameDecoder",
    "Gateway",
    "McuSegmentRunner",
    "MessageType",
    "SimulatedMcu",
    "decode_frame",
    "decode_message",
    "encode_frame",
    "encode_message",
    "export_segment",
    "frame_overhead_bytes",
]

_LAZY = {
    "BridgeClient": ".client",
    "SimulatedMcu": ".simulator",
    "McuSegmentRunner": ".gateway",
    "Gateway": ".gateway",
    "export_segment": ".export",
}


def __getattr__(name: str) -> Any:
    # Lazy so that `import tflite_edge.firmware_bridge` never pulls in TFLM or the runtime.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
