"""Serial framing: COBS-stuffed frames with a version byte, a sequence number and a CRC-32.

A frame on the wire is ``0x00 COBS(body) 0x00``; ``body`` is::

    offset  size  field
    0       1     protocol version (PROTOCOL_VERSION)
    1       1     message type (see messages.MessageType)
    2       2     sequence number, little endian
    4       2     payload length N, little endian
    6       N     payload
    6+N     4     CRC-32 (zlib/IEEE 802.3) of bytes 0 .. 6+N-1, little endian

COBS removes every zero byte from the body, so ``0x00`` only ever marks a frame boundary
and a receiver that joins mid-stream, or loses bytes, resynchronises at the next zero. The
leading delimiter flushes whatever partial frame the receiver holds, so a torn frame costs
only itself. The pure decoder here never raises on incoming bytes: bad frames are counted
and dropped, and the sender's retry recovers them.
"""

from __future__ import annotations

import logging
import struct
import zlib
from dataclasses import dataclass, field

from cobs import cobs

from ..errors import SerialFrameError

__all__ = [
    "PROTOCOL_VERSION",
    "HEADER_BYTES",
    "CRC_BYTES",
    "MAX_PAYLOAD_BYTES",
    "Frame",
    "DecoderStats",
    "FrameDecoder",
    "encode_frame",
    "decode_frame",
    "max_encoded_bytes",
    "frame_overhead_bytes",
]

log = logging.getLogger(__name__)

PROTOCOL_VERSION = 1
HEADER_BYTES = 6
CRC_BYTES = 4
#: The length field is 16 bits; devices advertise a smaller limit in their capabilities.
MAX_PAYLOAD_BYTES = 0xFFFF
_HEADER = struct.Struct("<BBHH")
_CRC = struct.Struct("<I")


@dataclass(frozen=True)
class Frame:
    """One intact frame: its message type, sequence number and payload bytes."""

    msg_type: int
    seq: int
    payload: bytes
    version: int = PROTOCOL_VERSION


def max_encoded_bytes(max_payload_bytes: int) -> int:
    """Largest COBS-encoded body (without delimiters) for a payload of ``max_payload_bytes``."""
    body = HEADER_BYTES + max_payload_bytes + CRC_BYTES
    # COBS adds one code byte per started block of 254 data bytes.
    return body + body // 254 + 1


def frame_overhead_bytes(payload_bytes: int) -> int:
    """Bytes on the wire beyond the payload itself: header, CRC, COBS codes, two delimiters."""
    body = HEADER_BYTES + payload_bytes + CRC_BYTES
    return len(cobs.encode(b"\x01" * body)) + 2 - payload_bytes


def encode_frame(msg_type: int, seq: int, payload: bytes, *, version: int = PROTOCOL_VERSION) -> bytes:
    """The complete wire bytes of one frame, delimiters included."""
    if not 0 <= msg_type <= 0xFF:
        raise SerialFrameError(f"message type {msg_type} does not fit in one byte")
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise SerialFrameError(
            f"payload of {len(payload)} bytes exceeds the protocol limit of {MAX_PAYLOAD_BYTES}; "
            "send large data in chunks"
        )
    head = _HEADER.pack(version & 0xFF, msg_type, seq & 0xFFFF, len(payload)) + payload
    body = head + _CRC.pack(zlib.crc32(head))
    return b"\x00" + cobs.encode(body) + b"\x00"


def decode_frame(encoded: bytes, *, max_payload_bytes: int = MAX_PAYLOAD_BYTES) -> Frame:
    """Decode one COBS-encoded body (delimiters stripped). Raises only ``SerialFrameError``."""
    if len(encoded) > max_encoded_bytes(max_payload_bytes):
        raise SerialFrameError(f"frame of {len(encoded)} encoded bytes exceeds the limit")
    try:
        body = cobs.decode(encoded)
    except cobs.DecodeError as e:
        raise SerialFrameError(f"frame is not valid COBS: {e}") from e
    if len(body) < HEADER_BYTES + CRC_BYTES:
        raise SerialFrameError(f"frame of {len(body)} bytes is shorter than header and CRC")
    version, msg_type, seq, length = _HEADER.unpack_from(body)
    if length != len(body) - HEADER_BYTES - CRC_BYTES:
        raise SerialFrameError(f"frame length field says {length} payload bytes, frame holds {len(body) - 10}")
    (crc,) = _CRC.unpack_from(body, len(body) - CRC_BYTES)
    if crc != zlib.crc32(body[: len(body) - CRC_BYTES]):
        raise SerialFrameError("frame CRC does not match: bytes were corrupted on the link")
    if version != PROTOCOL_VERSION:
        raise SerialFrameError(
            f"frame uses protocol version {version}, this side speaks {PROTOCOL_VERSION}: "
            "update the firmware or tflite-edge so both match"
        )
    if length > max_payload_bytes:
        raise SerialFrameError(f"payload of {length} bytes exceeds this receiver's limit of {max_payload_bytes}")
    return Frame(msg_type, seq, bytes(body[HEADER_BYTES : HEADER_BYTES + length]), version)


@dataclass
class DecoderStats:
    """What a ``FrameDecoder`` has seen so far."""

    frames: int = 0
    dropped: int = 0
    oversized: int = 0
    bytes_in: int = 0
    last_error: SerialFrameError | None = field(default=None, repr=False)


class FrameDecoder:
    """Streaming decoder: feed it any bytes, get back the intact frames among them.

    Memory is bounded by ``max_encoded_bytes(max_payload_bytes)``: a run of bytes longer
    than any legal frame is discarded up to the next delimiter. Corrupt frames are dropped
    and counted in ``stats``; ``feed`` itself never raises.
    """

    def __init__(self, *, max_payload_bytes: int = MAX_PAYLOAD_BYTES) -> None:
        if not 0 <= max_payload_bytes <= MAX_PAYLOAD_BYTES:
            raise SerialFrameError(f"max_payload_bytes must be within 0..{MAX_PAYLOAD_BYTES}")
        self.max_payload_bytes = max_payload_bytes
        self._limit = max_encoded_bytes(max_payload_bytes)
        self._buffer = bytearray()
        self._discarding = False
        self.stats = DecoderStats()

    def reset(self) -> None:
        """Forget any partial frame (e.g. after the port was reopened)."""
        self._buffer.clear()
        self._discarding = False

    def feed(self, data: bytes) -> list[Frame]:
        """Consume ``data``; return the frames completed by it, in order."""
        self.stats.bytes_in += len(data)
        frames: list[Frame] = []
        pieces = bytes(data).split(b"\x00")
        for piece in pieces[:-1]:
            self._append(piece)
            self._complete(frames)
        self._append(pieces[-1])
        return frames

    def _append(self, piece: bytes) -> None:
        if self._discarding:
            return
        if len(self._buffer) + len(piece) > self._limit:
            # Longer than any legal frame: garbage or a lost delimiter. Skip to the next zero.
            self._buffer.clear()
            self._discarding = True
            self.stats.oversized += 1
            return
        self._buffer += piece

    def _complete(self, frames: list[Frame]) -> None:
        if self._discarding:
            self._discarding = False
            self.stats.dropped += 1
            return
        if not self._buffer:
            return  # back-to-back delimiters separate nothing
        encoded = bytes(self._buffer)
        self._buffer.clear()
        try:
            frames.append(decode_frame(encoded, max_payload_bytes=self.max_payload_bytes))
            self.stats.frames += 1
        except SerialFrameError as e:
            self.stats.dropped += 1
            self.stats.last_error = e
            log.debug("dropped a frame: %s", e)
