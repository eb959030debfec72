"""Tensors on the serial link, and the bounded reader every payload is parsed with.

A tensor travels as ``u8 index, desc, data``; its description (``desc``) as
``u8 dtype, u8 rank, u16 dim x rank, f32 scale, i32 zero_point``. Sizes are checked
against the bytes actually present before any array is built; every failure is a
``SerialMessageError``.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from ..errors import SerialMessageError

__all__ = [
    "DTYPE_CODES",
    "MAX_RANK",
    "MAX_TENSORS",
    "MAX_TEXT_BYTES",
    "PayloadReader",
    "Tensor",
    "TensorDesc",
    "pack_list",
    "pack_text",
    "read_list",
]

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


class PayloadReader:
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


def pack_text(value: str) -> bytes:
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
    def read(cls, r: PayloadReader) -> TensorDesc:
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
    def read(cls, r: PayloadReader) -> Tensor:
        index = r.u8()
        desc = TensorDesc.read(r)
        # Bound by what is present before computing anything that could be huge.
        remaining = len(r.data) - r.pos
        if desc.nbytes > remaining:
            raise SerialMessageError(f"{r.what}: tensor {index} needs {desc.nbytes} bytes, {remaining} remain")
        return cls(index, desc, r.take(desc.nbytes))


def pack_list(items: tuple[Tensor, ...] | tuple[TensorDesc, ...]) -> bytes:
    if len(items) > MAX_TENSORS:
        raise SerialMessageError(f"{len(items)} tensors exceed the limit of {MAX_TENSORS}")
    return bytes([len(items)]) + b"".join(item.encode() for item in items)


_T = TypeVar("_T")


def read_list(r: PayloadReader, read: Callable[[PayloadReader], _T]) -> tuple[_T, ...]:
    count = r.u8()
    if count > MAX_TENSORS:
        raise SerialMessageError(f"{r.what}: {count} tensors exceed the limit of {MAX_TENSORS}")
    return tuple(read(r) for _ in range(count))
