"""The bridge's messages and their payload layouts (all integers little endian).

Requests go from the gateway (host) to the microcontroller, replies come back with the
request's sequence number and the type's high bit set. docs/serial-protocol.md gives the
byte layout of every payload; the C codec in ``c/`` implements the same layouts and both
are checked against one set of test vectors.

Decoding never trusts the sender: counts, ranks, dimensions and string lengths are bounded,
and a tensor's byte size is checked against the bytes actually present before any array is
built. Every failure is a ``SerialMessageError``.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import ClassVar

from ..errors import SerialMessageError
from .tensors import (
    DTYPE_CODES,
    MAX_RANK,
    MAX_TENSORS,
    PayloadReader,
    Tensor,
    TensorDesc,
    pack_list,
    pack_text,
    read_list,
)

__all__ = [
    "MessageType",
    "ErrorCode",
    "DTYPE_CODES",
    "MAX_RANK",
    "MAX_TENSORS",
    "TensorDesc",
    "Tensor",
    "Hello",
    "Capabilities",
    "LoadBegin",
    "LoadChunk",
    "LoadAck",
    "LoadEnd",
    "ModelInfo",
    "Invoke",
    "Result",
    "GetTelemetry",
    "Telemetry",
    "Fragment",
    "FragmentReply",
    "ErrorReply",
    "Message",
    "encode_message",
    "decode_message",
]


class MessageType(enum.IntEnum):
    """Message type byte. Replies have the high bit set."""

    HELLO = 0x01
    LOAD_BEGIN = 0x02
    LOAD_CHUNK = 0x03
    LOAD_END = 0x04
    INVOKE = 0x05
    GET_TELEMETRY = 0x06
    FRAGMENT = 0x08
    CAPABILITIES = 0x81
    LOAD_ACK = 0x82
    MODEL_INFO = 0x84
    RESULT = 0x85
    TELEMETRY = 0x86
    FRAGMENT_REPLY = 0x88
    ERROR = 0xFF


class ErrorCode(enum.IntEnum):
    """Codes an ERROR reply carries."""

    UNKNOWN_TYPE = 1
    BAD_MESSAGE = 2
    VERSION = 3
    BAD_SLOT = 4
    NO_MODEL = 5
    LOAD_ORDER = 6
    MODEL_TOO_LARGE = 7
    CHECKSUM = 8
    ARENA_TOO_SMALL = 9
    UNSUPPORTED_OP = 10
    INVOKE_FAILED = 11
    TENSOR_MISMATCH = 12
    INTERNAL = 13


class _Message:
    TYPE: ClassVar[MessageType]

    def encode_payload(self) -> bytes:
        raise NotImplementedError

    @classmethod
    def decode_payload(cls, r: PayloadReader) -> _Message:
        raise NotImplementedError


@dataclass(frozen=True)
class Hello(_Message):
    """Host -> MCU: who is there? Carries the host's protocol version and receive limits."""

    TYPE: ClassVar[MessageType] = MessageType.HELLO
    protocol_version: int
    max_payload_bytes: int
    max_message_bytes: int

    def encode_payload(self) -> bytes:
        return struct.pack("<BHI", self.protocol_version, self.max_payload_bytes, self.max_message_bytes)

    @classmethod
    def decode_payload(cls, r: PayloadReader) -> Hello:
        version, limit, message_limit = (int(v) for v in r.unpack("BHI"))
        return cls(version, limit, message_limit)


@dataclass(frozen=True)
class Capabilities(_Message):
    """MCU -> host: what the device offers."""

    TYPE: ClassVar[MessageType] = MessageType.CAPABILITIES
    protocol_version: int
    model_slots: int
    max_payload_bytes: int
    arena_bytes: int
    max_model_bytes: int
    max_message_bytes: int
    board: str
    firmware: str

    def encode_payload(self) -> bytes:
        return (
            struct.pack("<BBHIII", self.protocol_version, self.model_slots, self.max_payload_bytes,
                        self.arena_bytes, self.max_model_bytes, self.max_message_bytes)
            + pack_text(self.board) + pack_text(self.firmware)
        )

    @classmethod
    def decode_payload(cls, r: PayloadReader) -> Capabilities:
        version, slots, limit, arena, max_model, max_message = (int(v) for v in r.unpack("BBHIII"))
        return cls(version, slots, limit, arena, max_model, max_message, r.text(), r.text())


@dataclass(frozen=True)
class LoadBegin(_Message):
    """Host -> MCU: a model of ``total_bytes`` with CRC-32 ``crc32`` follows for ``slot``."""

    TYPE: ClassVar[MessageType] = MessageType.LOAD_BEGIN
    slot: int
    total_bytes: int
    crc32: int

    def encode_payload(self) -> bytes:
        return struct.pack("<BII", self.slot, self.total_bytes, self.crc32)

    @classmethod
    def decode_payload(cls, r: PayloadReader) -> LoadBegin:
        slot, total, crc = (int(v) for v in r.unpack("BII"))
        return cls(slot, total, crc)


@dataclass(frozen=True)
class LoadChunk(_Message):
    """Host -> MCU: model bytes at ``offset`` (the frame CRC checks each chunk)."""

    TYPE: ClassVar[MessageType] = MessageType.LOAD_CHUNK
    slot: int
    offset: int
    data: bytes

    def encode_payload(self) -> bytes:
        return struct.pack("<BI", self.slot, self.offset) + self.data

    @classmethod
    def decode_payload(cls, r: PayloadReader) -> LoadChunk:
        slot, offset = (int(v) for v in r.unpack("BI"))
        return cls(slot, offset, r.rest())


@dataclass(frozen=True)
class LoadAck(_Message):
    """MCU -> host: bytes received so far for ``slot`` (the next offset it expects)."""

    TYPE: ClassVar[MessageType] = MessageType.LOAD_ACK
    slot: int
    next_offset: int

    def encode_payload(self) -> bytes:
        return struct.pack("<BI", self.slot, self.next_offset)

    @classmethod
    def decode_payload(cls, r: PayloadReader) -> LoadAck:
        slot, offset = (int(v) for v in r.unpack("BI"))
        return cls(slot, offset)


@dataclass(frozen=True)
class LoadEnd(_Message):
    """Host -> MCU: all chunks sent; check the whole-model CRC and build the interpreter."""

    TYPE: ClassVar[MessageType] = MessageType.LOAD_END
    slot: int

    def encode_payload(self) -> bytes:
        return bytes([self.slot])

    @classmethod
    def decode_payload(cls, r: PayloadReader) -> LoadEnd:
        return cls(r.u8())


@dataclass(frozen=True)
class ModelInfo(_Message):
    """MCU -> host: the model in ``slot`` is ready; its arena use and tensor descriptions."""

    TYPE: ClassVar[MessageType] = MessageType.MODEL_INFO
    slot: int
    arena_used_bytes: int
    inputs: tuple[TensorDesc, ...]
    outputs: tuple[TensorDesc, ...]

    def encode_payload(self) -> bytes:
        head = struct.pack("<BI", self.slot, self.arena_used_bytes)
        return head + pack_list(self.inputs) + pack_list(self.outputs)

    @classmethod
    def decode_payload(cls, r: PayloadReader) -> ModelInfo:
        slot, arena = (int(v) for v in r.unpack("BI"))
        return cls(slot, arena, read_list(r, TensorDesc.read), read_list(r, TensorDesc.read))


@dataclass(frozen=True)
class Invoke(_Message):
    """Host -> MCU: run the model in ``slot`` on these input tensors."""

    TYPE: ClassVar[MessageType] = MessageType.INVOKE
    slot: int
    tensors: tuple[Tensor, ...]

    def encode_payload(self) -> bytes:
        return bytes([self.slot]) + pack_list(self.tensors)

    @classmethod
    def decode_payload(cls, r: PayloadReader) -> Invoke:
        return cls(r.u8(), read_list(r, Tensor.read))


@dataclass(frozen=True)
class Result(_Message):
    """MCU -> host: output tensors and the on-chip invoke time in microseconds."""

    TYPE: ClassVar[MessageType] = MessageType.RESULT
    latency_us: int
    tensors: tuple[Tensor, ...]

    def encode_payload(self) -> bytes:
        return struct.pack("<I", self.latency_us) + pack_list(self.tensors)

    @classmethod
    def decode_payload(cls, r: PayloadReader) -> Result:
        (latency,) = r.unpack("I")
        return cls(int(latency), read_list(r, Tensor.read))


@dataclass(frozen=True)
class GetTelemetry(_Message):
    """Host -> MCU: send a telemetry reading."""

    TYPE: ClassVar[MessageType] = MessageType.GET_TELEMETRY

    def encode_payload(self) -> bytes:
        return b""

    @classmethod
    def decode_payload(cls, r: PayloadReader) -> GetTelemetry:
        return cls()


@dataclass(frozen=True)
class Telemetry(_Message):
    """MCU -> host: power and health readings."""

    TYPE: ClassVar[MessageType] = MessageType.TELEMETRY
    uptime_ms: int
    power_mw: float
    voltage_mv: float
    temperature_c: float
    free_memory_bytes: int
    invokes: int

    def encode_payload(self) -> bytes:
        return struct.pack("<IfffII", self.uptime_ms, self.power_mw, self.voltage_mv, self.temperature_c,
                           self.free_memory_bytes, self.invokes)

    @classmethod
    def decode_payload(cls, r: PayloadReader) -> Telemetry:
        uptime, power, volts, temp, free, invokes = r.unpack("IfffII")
        return cls(int(uptime), float(power), float(volts), float(temp), int(free), int(invokes))


@dataclass(frozen=True)
class Fragment(_Message):
    """Host -> MCU: part ``index`` of ``count`` of a message too large for one frame.

    Every fragment of a message carries the message's sequence number and comes in order;
    the receiver answers only when the last one has arrived.
    """

    TYPE: ClassVar[MessageType] = MessageType.FRAGMENT
    inner_type: int
    index: int
    count: int
    data: bytes

    def encode_payload(self) -> bytes:
        return struct.pack("<BHH", self.inner_type, self.index, self.count) + self.data

    @classmethod
    def decode_payload(cls, r: PayloadReader) -> Fragment:
        inner, index, count = (int(v) for v in r.unpack("BHH"))
        if inner in (MessageType.FRAGMENT, MessageType.FRAGMENT_REPLY) or not index < count:
            raise SerialMessageError(f"{r.what}: fragment {index} of {count} of type 0x{inner:02x} is invalid")
        return cls(inner, index, count, r.rest())


@dataclass(frozen=True)
class FragmentReply(Fragment):
    """MCU -> host: part of a reply too large for one frame (same layout as ``Fragment``)."""

    TYPE: ClassVar[MessageType] = MessageType.FRAGMENT_REPLY


@dataclass(frozen=True)
class ErrorReply(_Message):
    """MCU -> host: the request failed; a numeric code and a short text."""

    TYPE: ClassVar[MessageType] = MessageType.ERROR
    code: int
    text: str

    def encode_payload(self) -> bytes:
        return struct.pack("<H", self.code) + pack_text(self.text)

    @classmethod
    def decode_payload(cls, r: PayloadReader) -> ErrorReply:
        (code,) = r.unpack("H")
        return cls(int(code), r.text())


Message = (
    Hello | Capabilities | LoadBegin | LoadChunk | LoadAck | LoadEnd | ModelInfo | Invoke | Result
    | GetTelemetry | Telemetry | Fragment | FragmentReply | ErrorReply
)
_CLASSES: tuple[type[_Message], ...] = (
    Hello, Capabilities, LoadBegin, LoadChunk, LoadAck, LoadEnd, ModelInfo, Invoke, Result, GetTelemetry, Telemetry,
    Fragment, FragmentReply, ErrorReply,
)
_BY_TYPE: dict[int, type[_Message]] = {cls.TYPE: cls for cls in _CLASSES}


def encode_message(message: Message) -> tuple[int, bytes]:
    """The (type byte, payload) of a message, ready for ``framing.encode_frame``."""
    try:
        return int(message.TYPE), message.encode_payload()
    except struct.error as e:
        raise SerialMessageError(f"{type(message).__name__}: a field is out of range: {e}") from e


def decode_message(msg_type: int, payload: bytes) -> Message:
    """Parse one frame's payload. Raises only ``SerialMessageError``."""
    cls = _BY_TYPE.get(msg_type)
    if cls is None:
        raise SerialMessageError(f"unknown message type 0x{msg_type:02x}")
    r = PayloadReader(payload, cls.__name__)
    message = cls.decode_payload(r)
    r.done()
    return message  # type: ignore[return-value]
