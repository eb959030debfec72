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
import math
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, TypeVar

import numpy as np

from ..errors import SerialMessageError

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


#: Tensor dtype byte = TfLiteType enum value, so firmware can copy ``tensor->type``.
DTYPE_CODES: dict[str, int] = {
    "float32": 1,
    "int32": 2,
    "uint8": 3,
    "int64": 4,
    "bool": 6,
    "int16": 7,
    "int8": 9,
    "float16": 10,
}
_DTYPE_NAMES = {code: name for name, code in DTYPE_CODES.items()}
MAX_RANK = 6
MAX_TENSORS = 16
MAX_TEXT_BYTES = 255


class _Reader:
    """Bounded little-endian reader over one payload."""

    def __init__(self, data: bytes, what: str) -> None:
        self.data = data
        self.pos = 0
        self.what = what

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise SerialMessageError(
                f"{self.what}: needs {n} more bytes at offset {self.pos}, payload has {len(self.data)}"
            )
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def unpack(self, fmt: str) -> tuple[int | float, ...]:
        s = struct.Struct("<" + fmt)
        return s.unpack(self.take(s.size))

    def u8(self) -> int:
        return int(self.unpack("B")[0])

    def text(self) -> str:
        raw = self.take(self.u8())
        return raw.decode("utf-8", errors="replace")

    def rest(self) -> bytes:
        return self.take(len(self.data) - self.pos)

    def done(self) -> None:
        if self.pos != len(self.data):
            raise SerialMessageError(f"{self.what}: {len(self.data) - self.pos} unexpected trailing bytes")


def _text(value: str) -> bytes:
    # Cut at a character boundary so the receiver gets valid UTF-8.
    raw = value.encode("utf-8")[:MAX_TEXT_BYTES].decode("utf-8", errors="ignore").encode("utf-8")
    return bytes([len(raw)]) + raw


@dataclass(frozen=True)
class TensorDesc:
    """dtype, shape and per-tensor quantization of one tensor (scale 0 = not quantized)."""

    dtype: str
    shape: tuple[int, ...]
    scale: float = 0.0
    zero_point: int = 0

    def __post_init__(self) -> None:
        # The link carries float32; rounding here makes encode/decode an exact round trip.
        object.__setattr__(self, "scale", float(np.float32(self.scale)))

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * np.dtype(self.dtype).itemsize

    def encode(self) -> bytes:
        if self.dtype not in DTYPE_CODES:
            raise SerialMessageError(f"dtype {self.dtype!r} cannot cross the serial link")
        if len(self.shape) > MAX_RANK or any(not 0 < d <= 0xFFFF for d in self.shape):
            raise SerialMessageError(f"shape {list(self.shape)} exceeds rank {MAX_RANK} or 65535 per dimension")
        return (
            struct.pack("<BB", DTYPE_CODES[self.dtype], len(self.shape))
            + struct.pack(f"<{len(self.shape)}H", *self.shape)
            + struct.pack("<fi", self.scale, self.zero_point)
        )

    @classmethod
    def read(cls, r: _Reader) -> TensorDesc:
        code, rank = r.unpack("BB")
        if code not in _DTYPE_NAMES:
            raise SerialMessageError(f"{r.what}: unknown dtype code {code}")
        if rank > MAX_RANK:
            raise SerialMessageError(f"{r.what}: rank {rank} exceeds {MAX_RANK}")
        shape = tuple(int(d) for d in r.unpack(f"{rank}H"))
        if any(d == 0 for d in shape):
            raise SerialMessageError(f"{r.what}: zero dimension in shape {list(shape)}")
        scale, zero_point = r.unpack("fi")
        if not math.isfinite(scale) or scale < 0:
            raise SerialMessageError(f"{r.what}: quantization scale {scale} is not a finite non-negative number")
        return cls(_DTYPE_NAMES[int(code)], shape, float(scale), int(zero_point))


@dataclass(frozen=True)
class Tensor:
    """A tensor on the link: its position in the model's inputs or outputs, desc and raw bytes."""

    index: int
    desc: TensorDesc
    data: bytes

    @classmethod
    def from_array(cls, index: int, array: np.ndarray, scale: float = 0.0, zero_point: int = 0) -> Tensor:
        arr = np.ascontiguousarray(array)
        desc = TensorDesc(arr.dtype.name, tuple(int(d) for d in arr.shape), float(scale), int(zero_point))
        return cls(index, desc, arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes())

    def to_array(self) -> np.ndarray:
        dtype = np.dtype(self.desc.dtype).newbyteorder("<")
        return np.frombuffer(self.data, dtype=dtype).astype(self.desc.dtype).reshape(self.desc.shape)

    def encode(self) -> bytes:
        if len(self.data) != self.desc.nbytes:
            raise SerialMessageError(
                f"tensor {self.index}: {len(self.data)} data bytes, shape needs {self.desc.nbytes}"
            )
        return bytes([self.index]) + self.desc.encode() + self.data

    @classmethod
    def read(cls, r: _Reader) -> Tensor:
        index = r.u8()
        desc = TensorDesc.read(r)
        # Bound by what is present before computing anything that could be huge.
        remaining = len(r.data) - r.pos
        if desc.nbytes > remaining:
            raise SerialMessageError(f"{r.what}: tensor {index} needs {desc.nbytes} bytes, {remaining} remain")
        return cls(index, desc, r.take(desc.nbytes))


def _encode_list(items: tuple[Tensor, ...] | tuple[TensorDesc, ...]) -> bytes:
    if len(items) > MAX_TENSORS:
        raise SerialMessageError(f"{len(items)} tensors exceed the limit of {MAX_TENSORS}")
    return bytes([len(items)]) + b"".join(item.encode() for item in items)


_T = TypeVar("_T")


def _read_list(r: _Reader, read: Callable[[_Reader], _T]) -> tuple[_T, ...]:
    count = r.u8()
    if count > MAX_TENSORS:
        raise SerialMessageError(f"{r.what}: {count} tensors exceed the limit of {MAX_TENSORS}")
    return tuple(read(r) for _ in range(count))


class _Message:
    TYPE: ClassVar[MessageType]

    def encode_payload(self) -> bytes:
        raise NotImplementedError

    @classmethod
    def decode_payload(cls, r: _Reader) -> _Message:
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
    def decode_payload(cls, r: _Reader) -> Hello:
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
            + _text(self.board) + _text(self.firmware)
        )

    @classmethod
    def decode_payload(cls, r: _Reader) -> Capabilities:
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
    def decode_payload(cls, r: _Reader) -> LoadBegin:
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
    def decode_payload(cls, r: _Reader) -> LoadChunk:
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
    def decode_payload(cls, r: _Reader) -> LoadAck:
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
    def decode_payload(cls, r: _Reader) -> LoadEnd:
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
        return head + _encode_list(self.inputs) + _encode_list(self.outputs)

    @classmethod
    def decode_payload(cls, r: _Reader) -> ModelInfo:
        slot, arena = (int(v) for v in r.unpack("BI"))
        return cls(slot, arena, _read_list(r, TensorDesc.read), _read_list(r, TensorDesc.read))


@dataclass(frozen=True)
class Invoke(_Message):
    """Host -> MCU: run the model in ``slot`` on these input tensors."""

    TYPE: ClassVar[MessageType] = MessageType.INVOKE
    slot: int
    tensors: tuple[Tensor, ...]

    def encode_payload(self) -> bytes:
        return bytes([self.slot]) + _encode_list(self.tensors)

    @classmethod
    def decode_payload(cls, r: _Reader) -> Invoke:
        return cls(r.u8(), _read_list(r, Tensor.read))


@dataclass(frozen=True)
class Result(_Message):
    """MCU -> host: output tensors and the on-chip invoke time in microseconds."""

    TYPE: ClassVar[MessageType] = MessageType.RESULT
    latency_us: int
    tensors: tuple[Tensor, ...]

    def encode_payload(self) -> bytes:
        return struct.pack("<I", self.latency_us) + _encode_list(self.tensors)

    @classmethod
    def decode_payload(cls, r: _Reader) -> Result:
        (latency,) = r.unpack("I")
        return cls(int(latency), _read_list(r, Tensor.read))


@dataclass(frozen=True)
class GetTelemetry(_Message):
    """Host -> MCU: send a telemetry reading."""

    TYPE: ClassVar[MessageType] = MessageType.GET_TELEMETRY

    def encode_payload(self) -> bytes:
        return b""

    @classmethod
    def decode_payload(cls, r: _Reader) -> GetTelemetry:
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
    def decode_payload(cls, r: _Reader) -> Telemetry:
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
    def decode_payload(cls, r: _Reader) -> Fragment:
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
        return struct.pack("<H", self.code) + _text(self.text)

    @classmethod
    def decode_payload(cls, r: _Reader) -> ErrorReply:
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
    r = _Reader(payload, cls.__name__)
    message = cls.decode_payload(r)
    r.done()
    return message  # type: ignore[return-value]
