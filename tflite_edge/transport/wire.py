"""The activation frame: one tensor at a cut, as bytes on the wire.

Pure bytes in, bytes out; no I/O. The layout is documented in ``docs/wire-format.md``.
All integers are little-endian (the byte order of every device and edge we target, so
the payload is the tensor's memory as is)::

    offset size  field
     0      4    magic b"TFEA"
     4      1    version (1)
     5      1    codec: 0 none, 1 zlib, 2 lz4 (block), 3 zstd
     6      1    dtype code (see DTYPE_CODES)
     7      1    rank, 0..MAX_RANK
     8      2    segment index (uint16): the segment that reads this tensor
    10      1    bundle id length, 1..MAX_BUNDLE_ID_BYTES
    11      1    tensor name length, 1..255
    12      8    scale (float64); 0.0 for a tensor that is not quantized
    20      4    zero point (int32)
    24      4    raw payload bytes (uint32) = prod(shape) * itemsize
    28      4    stored payload bytes (uint32) = bytes that follow the shape
    32      .    bundle id (ASCII), tensor name (UTF-8), shape (rank x uint32), payload

Parsing never trusts the sender: the fixed header is read first, every length is bounded
and must add up to the frame's size exactly, and with ``expect`` the tensor is checked
against the bundle's manifest before any decompression or array is made.
"""

from __future__ import annotations

import functools
import math
import struct
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from ..bundle.manifest import Manifest, TensorSpec
from ..errors import (
    CompressionError,
    FrameHeaderError,
    FrameLimitError,
    FrameMismatchError,
    FrameTruncatedError,
    WireFormatError,
)

__all__ = [
    "MAGIC",
    "VERSION",
    "HEADER",
    "CODECS",
    "DTYPE_CODES",
    "MAX_RANK",
    "MAX_PAYLOAD_BYTES",
    "FrameHeader",
    "available_codecs",
    "encode_frame",
    "parse_header",
    "decode_frame",
    "decode_activation",
    "decode_exit_output",
    "expect_activation",
    "compress",
    "encode_tensor",
    "TensorEncoder",
    "is_frame",
]

MAGIC = b"TFEA"
VERSION = 1
HEADER = struct.Struct("<4sBBBBHBBdiII")  # 32 bytes
MAX_RANK = 8
MAX_BUNDLE_ID_BYTES = 64
MAX_PAYLOAD_BYTES = 64 * 1024 * 1024  # a hard ceiling even without a manifest to compare with
MAX_DIM = 2**31 - 1

CODECS: Mapping[str, int] = {"none": 0, "zlib": 1, "lz4": 2, "zstd": 3}
_CODEC_NAMES = {v: k for k, v in CODECS.items()}
DTYPE_CODES: Mapping[str, int] = {
    "int8": 1,
    "uint8": 2,
    "int16": 3,
    "float16": 4,
    "int32": 5,
    "float32": 6,
    "int64": 7,
    "bool": 8,
}
_DTYPE_NAMES = {v: k for k, v in DTYPE_CODES.items()}
_LE = {name: np.dtype(name).newbyteorder("<") for name in DTYPE_CODES}
_NATIVE_NAMES = {np.dtype(name): name for name in DTYPE_CODES}
_SWAPPED = frozenset(name for name, dtype in _LE.items() if dtype != np.dtype(name))  # empty on little-endian hosts


@dataclass(frozen=True)
class FrameHeader:
    """Everything a frame says about its tensor, before the payload is touched."""

    bundle_id: str
    segment: int
    tensor: str
    dtype: str
    shape: tuple[int, ...]
    scale: float
    zero_point: int
    codec: str
    raw_bytes: int
    stored_bytes: int
    payload_offset: int

    def matches(self, spec: TensorSpec) -> bool:
        """True when name, dtype, shape and quantization equal the manifest's ``spec``."""
        return not _mismatch(self, spec)


# -- codecs ------------------------------------------------------------------------------

def _lz4_block() -> object | None:
    try:
        import lz4.block

        module: object = lz4.block
        return module
    except ImportError:
        return None


def _zstd() -> object | None:
    try:
        import zstandard

        return zstandard
    except ImportError:
        return None


def available_codecs() -> tuple[str, ...]:
    """Codecs usable in this environment: ``none`` and ``zlib`` always, ``lz4``/``zstd`` if installed."""
    found = ["none", "zlib"]
    if _lz4_block() is not None:
        found.append("lz4")
    if _zstd() is not None:
        found.append("zstd")
    return tuple(found)


def compress(data: bytes | memoryview, codec: str, level: int | None = None) -> bytes | memoryview:
    """``data`` compressed with ``codec`` (``none`` returns it unchanged, without a copy)."""
    if codec == "none":
        return data
    if codec == "zlib":
        return zlib.compress(data, 1 if level is None else level)
    if codec == "lz4":
        block = _lz4_block()
        if block is None:
            raise CompressionError("codec 'lz4' needs the lz4 package: pip install lz4")
        return block.compress(data, store_size=False)  # type: ignore[attr-defined, no-any-return]
    if codec == "zstd":
        zstd = _zstd()
        if zstd is None:
            raise CompressionError("codec 'zstd' needs the zstandard package: pip install zstandard")
        return zstd.ZstdCompressor(level=1 if level is None else level).compress(data)  # type: ignore[attr-defined, no-any-return]
    raise CompressionError(f"unknown codec {codec!r}; choose one of {', '.join(CODECS)}")


def _decompress(data: memoryview, codec: str, raw_bytes: int) -> bytes | memoryview:
    # Every path is bounded by raw_bytes, which was checked before we got here, so a
    # small frame cannot make the receiver allocate more than the tensor's size.
    if codec == "none":
        return data
    try:
        if codec == "zlib":
            inflater = zlib.decompressobj()
            out = inflater.decompress(data, raw_bytes)
            if inflater.unconsumed_tail or not inflater.eof:
                raise CompressionError("zlib payload is longer than the tensor or incomplete")
        elif codec == "lz4":
            block = _lz4_block()
            if block is None:
                raise CompressionError("the frame uses lz4, which is not installed here: pip install lz4")
            out = block.decompress(data, uncompressed_size=raw_bytes)  # type: ignore[attr-defined]
        else:
            zstd = _zstd()
            if zstd is None:
                raise CompressionError("the frame uses zstd, which is not installed here: pip install zstandard")
            declared = zstd.frame_content_size(data)  # type: ignore[attr-defined]
            if declared != raw_bytes:
                raise CompressionError(f"zstd frame declares {declared} bytes, the header {raw_bytes}")
            out = zstd.ZstdDecompressor().decompress(data, max_output_size=raw_bytes)  # type: ignore[attr-defined]
    except CompressionError:
        raise
    except Exception as e:  # each codec has its own error class; all mean "corrupt payload"
        raise CompressionError(f"{codec} payload does not decompress: {e}") from e
    if len(out) != raw_bytes:
        raise CompressionError(f"{codec} payload decompressed to {len(out)} bytes, expected {raw_bytes}")
    return out


# -- encoding ----------------------------------------------------------------------------

def encode_frame(
    array: np.ndarray,
    *,
    bundle_id: str,
    segment: int,
    tensor: str,
    scale: float | None = None,
    zero_point: int | None = None,
    codec: str = "none",
    level: int | None = None,
) -> bytes:
    """One tensor as a frame. The array is written in C order, little-endian.

    With ``codec="none"`` the tensor's memory is copied exactly once, into the result.
    """
    dtype = array.dtype
    # numpy computes a dtype's name on every access; the names of the few dtypes a frame
    # can carry are looked up instead.
    dtype_name = _NATIVE_NAMES.get(dtype) or dtype.name
    if dtype_name not in DTYPE_CODES:
        raise FrameHeaderError(f"dtype {dtype_name} cannot be sent; supported: {', '.join(DTYPE_CODES)}")
    if codec not in CODECS:
        raise CompressionError(f"unknown codec {codec!r}; choose one of {', '.join(CODECS)}")
    contiguous = np.ascontiguousarray(array, dtype=_LE[dtype_name])
    raw = memoryview(contiguous).cast("B")  # type: ignore[arg-type]  # ndarray is a buffer
    if len(raw) > MAX_PAYLOAD_BYTES:
        raise FrameLimitError(f"tensor of {len(raw)} bytes exceeds the {MAX_PAYLOAD_BYTES}-byte frame limit")
    stored = compress(raw, codec, level)
    prefix = _frame_prefix(
        bundle_id, segment, tensor, dtype_name, tuple(array.shape), 0.0 if scale is None else float(scale),
        int(zero_point or 0), CODECS[codec], len(raw), len(stored),
    )
    return b"".join((prefix, stored))


@functools.lru_cache(maxsize=256)
def _frame_prefix(
    bundle_id: str, segment: int, tensor: str, dtype_name: str, shape: tuple[int, ...], scale: float,
    zero_point: int, codec_id: int, raw_bytes: int, stored_bytes: int,
) -> bytes:
    # Everything before the payload. A device or edge sends the same few tensors over and
    # over, so the validated, packed prefix is cached (bounded) instead of rebuilt.
    bundle_bytes = bundle_id.encode("ascii") if bundle_id.isascii() else b""
    if not 1 <= len(bundle_bytes) <= MAX_BUNDLE_ID_BYTES:
        raise FrameHeaderError(f"bundle id must be 1..{MAX_BUNDLE_ID_BYTES} ASCII characters, got {bundle_id!r}")
    name_bytes = tensor.encode("utf-8")
    if not 1 <= len(name_bytes) <= 255:
        raise FrameHeaderError(f"tensor name must be 1..255 UTF-8 bytes, got {len(name_bytes)}")
    if len(shape) > MAX_RANK:
        raise FrameLimitError(f"rank {len(shape)} exceeds {MAX_RANK}")
    if not 0 <= segment <= 0xFFFF:
        raise FrameHeaderError(f"segment index {segment} does not fit in 16 bits")
    if not -(2**31) <= zero_point < 2**31:
        raise FrameHeaderError(f"zero point {zero_point} does not fit in 32 bits")
    if not math.isfinite(scale) or scale < 0:
        raise FrameHeaderError(f"scale must be a finite number >= 0, got {scale}")
    header = HEADER.pack(
        MAGIC, VERSION, codec_id, DTYPE_CODES[dtype_name], len(shape), segment,
        len(bundle_bytes), len(name_bytes), scale, zero_point, raw_bytes, stored_bytes,
    )
    return b"".join((header, bundle_bytes, name_bytes, struct.pack(f"<{len(shape)}I", *shape)))


# -- decoding ----------------------------------------------------------------------------

def parse_header(frame: bytes | bytearray | memoryview, *, max_payload_bytes: int = MAX_PAYLOAD_BYTES) -> FrameHeader:
    """Read and bound-check a frame's header without touching its payload."""
    view = memoryview(frame)
    if len(view) < HEADER.size:
        raise FrameTruncatedError(f"frame has {len(view)} bytes, fewer than the {HEADER.size}-byte header")
    # The full check runs once per distinct header (cached), since a stream of requests
    # repeats the same few headers; a frame too short for its names and shape gets the
    # precise error from it.
    return _parse_header(_header_bytes(view), len(view), max_payload_bytes)


def _header_bytes(view: memoryview) -> bytes:
    # Everything before the payload (or all there is, when the frame ends sooner): its length
    # comes from three single bytes of the fixed header, which the caller knows is there.
    return bytes(view[:HEADER.size + view[10] + view[11] + 4 * view[7]])


@functools.lru_cache(maxsize=256)
def _parse_header(head: bytes, frame_bytes: int, max_payload_bytes: int) -> FrameHeader:
    view = memoryview(head)
    if len(view) < HEADER.size:
        raise FrameTruncatedError(f"frame has {len(view)} bytes, fewer than the {HEADER.size}-byte header")
    (magic, version, codec_id, dtype_id, rank, segment, bid_len, name_len, scale, zero_point,
     raw_bytes, stored_bytes) = HEADER.unpack_from(view, 0)
    if magic != MAGIC:
        raise FrameHeaderError(f"not an activation frame (magic {bytes(magic)!r}, expected {MAGIC!r})")
    if version != VERSION:
        raise FrameHeaderError(f"frame version {version} is not supported (this side speaks {VERSION})")
    if codec_id not in _CODEC_NAMES:
        raise FrameHeaderError(f"unknown codec id {codec_id}")
    if dtype_id not in _DTYPE_NAMES:
        raise FrameHeaderError(f"unknown dtype code {dtype_id}")
    if rank > MAX_RANK:
        raise FrameLimitError(f"rank {rank} exceeds {MAX_RANK}")
    if not 1 <= bid_len <= MAX_BUNDLE_ID_BYTES:
        raise FrameHeaderError(f"bundle id length {bid_len} is outside 1..{MAX_BUNDLE_ID_BYTES}")
    if name_len < 1:
        raise FrameHeaderError("tensor name is empty")
    if not math.isfinite(scale) or scale < 0:
        raise FrameHeaderError(f"scale {scale} is not a finite number >= 0")
    if raw_bytes > max_payload_bytes:
        raise FrameLimitError(f"payload of {raw_bytes} bytes exceeds the limit of {max_payload_bytes}")
    payload_offset = HEADER.size + bid_len + name_len + 4 * rank
    if frame_bytes < payload_offset:
        raise FrameTruncatedError(f"frame ends inside its names and shape ({frame_bytes} < {payload_offset} bytes)")
    if frame_bytes != payload_offset + stored_bytes:
        kind = FrameTruncatedError if frame_bytes < payload_offset + stored_bytes else FrameLimitError
        raise kind(f"frame has {frame_bytes - payload_offset} payload bytes, its header says {stored_bytes}")
    codec = _CODEC_NAMES[codec_id]
    if codec == "none" and stored_bytes != raw_bytes:
        raise FrameHeaderError(f"uncompressed payload of {stored_bytes} bytes, header says raw {raw_bytes}")
    try:
        bundle_id = bytes(view[HEADER.size:HEADER.size + bid_len]).decode("ascii")
        name_at = HEADER.size + bid_len
        tensor = bytes(view[name_at:name_at + name_len]).decode("utf-8")
    except UnicodeDecodeError as e:
        raise FrameHeaderError(f"bundle id or tensor name is not valid text: {e}") from e
    shape = struct.unpack_from(f"<{rank}I", view, name_at + name_len)
    if any(d < 1 or d > MAX_DIM for d in shape):
        raise FrameHeaderError(f"shape {list(shape)} has a dimension outside 1..{MAX_DIM}")
    dtype = _DTYPE_NAMES[dtype_id]
    # Python ints do not overflow, so the product is exact even for hostile shapes.
    expected = math.prod(shape) * _LE[dtype].itemsize
    if expected != raw_bytes:
        raise FrameHeaderError(f"shape {list(shape)} of {dtype} needs {expected} bytes, header says {raw_bytes}")
    return FrameHeader(
        bundle_id=bundle_id, segment=segment, tensor=tensor, dtype=dtype, shape=tuple(shape),
        scale=scale, zero_point=zero_point, codec=codec, raw_bytes=raw_bytes,
        stored_bytes=stored_bytes, payload_offset=payload_offset,
    )


Expectation = Callable[[FrameHeader], None]


def decode_frame(
    frame: bytes | bytearray | memoryview,
    *,
    expect: Expectation | None = None,
    max_payload_bytes: int = MAX_PAYLOAD_BYTES,
) -> tuple[FrameHeader, np.ndarray]:
    """Header and tensor of a frame. ``expect`` vets the header before any decompression.

    The array is a read-only view of ``frame`` when the payload is not compressed.
    Raises a ``WireFormatError`` subclass for anything malformed or unexpected.
    """
    header = parse_header(frame, max_payload_bytes=max_payload_bytes)
    if expect is not None:
        expect(header)
    return header, _payload_array(frame, header)


def _payload_array(frame: bytes | bytearray | memoryview, header: FrameHeader) -> np.ndarray:
    dtype = _LE[header.dtype]
    if header.codec == "none":  # a view of the frame, no copy
        array = np.frombuffer(frame, dtype=dtype, count=header.raw_bytes // dtype.itemsize,
                              offset=header.payload_offset).reshape(header.shape)
    else:
        raw = _decompress(memoryview(frame)[header.payload_offset:], header.codec, header.raw_bytes)
        array = np.frombuffer(raw, dtype=dtype).reshape(header.shape)
    if header.dtype in _SWAPPED:  # big-endian host: convert once
        array = array.astype(header.dtype)
    return array


def expect_activation(manifest: Manifest, *, segment: int | None = None, spec: TensorSpec | None = None) -> Expectation:
    """An ``expect`` check for frames of ``manifest``'s bundle.

    With ``spec`` the frame must carry exactly that tensor (e.g. an exit output in a
    reply). Otherwise the frame must name a segment that exists (``segment``, if given,
    pins it) and one of that segment's inputs, with the manifest's dtype, shape and
    quantization.
    """

    def check(header: FrameHeader) -> None:
        if header.bundle_id != manifest.bundle_id:
            raise FrameMismatchError(f"frame is for bundle {header.bundle_id!r}, expected {manifest.bundle_id!r}")
        if segment is not None and header.segment != segment:
            raise FrameMismatchError(f"frame is for segment {header.segment}, expected {segment}")
        if spec is not None:
            wanted = spec
        else:
            if header.segment >= manifest.num_segments:
                raise FrameMismatchError(
                    f"segment {header.segment} does not exist; the bundle has {manifest.num_segments} segments"
                )
            inputs = {t.name: t for t in manifest.segments[header.segment].inputs}
            if header.tensor not in inputs:
                raise FrameMismatchError(
                    f"segment {header.segment} does not read tensor {header.tensor!r} (it reads {', '.join(inputs)})"
                )
            wanted = inputs[header.tensor]
        problem = _mismatch(header, wanted)
        if problem:
            raise FrameMismatchError(f"tensor {header.tensor!r}: {problem}")

    return check


def _mismatch(header: FrameHeader, spec: TensorSpec) -> str:
    if header.tensor != spec.name:
        return f"frame carries {header.tensor!r}, expected {spec.name!r}"
    if header.dtype != spec.dtype:
        return f"dtype {header.dtype}, the bundle has {spec.dtype}"
    if header.shape != tuple(spec.shape):
        return f"shape {list(header.shape)}, the bundle has {list(spec.shape)}"
    if spec.is_quantized:
        # Scales are float32 in TFLite; compare at that precision (a float64 beyond float32's
        # range becomes inf and simply mismatches, without a RuntimeWarning per hostile frame).
        with np.errstate(over="ignore"):
            scale_differs = np.float32(header.scale) != np.float32(spec.scale)
        if scale_differs or header.zero_point != (spec.zero_point or 0):
            return (f"quantization scale={header.scale}, zero_point={header.zero_point}; the bundle has "
                    f"scale={spec.scale}, zero_point={spec.zero_point}")
    elif header.scale != 0.0:
        return f"frame is quantized (scale={header.scale}) but the bundle's tensor is not"
    return ""


def decode_activation(frame: bytes | bytearray | memoryview, manifest: Manifest) -> tuple[FrameHeader, np.ndarray]:
    """Decode a request frame for ``manifest``'s bundle, checked against it before allocation."""
    limit = _INPUT_LIMITS.get(manifest.bundle_id)
    if limit is None:
        limit = _INPUT_LIMITS[manifest.bundle_id] = max(t.bytes for s in manifest.segments for t in s.inputs)
    header = _checked_header(frame, manifest, limit, _CHECKED, _check_activation)
    return header, _payload_array(frame, header)


def decode_exit_output(frame: bytes | bytearray | memoryview, manifest: Manifest) -> tuple[FrameHeader, np.ndarray]:
    """Decode a reply frame: the output of one of ``manifest``'s exits, named by the frame's
    tensor, checked against the bundle's output spec before any array is made."""
    limit = _OUTPUT_LIMITS.get(manifest.bundle_id)
    if limit is None:
        limit = _OUTPUT_LIMITS[manifest.bundle_id] = max(
            manifest.segments[e.segment].output(e.name).bytes for e in manifest.exits)
    header = _checked_header(frame, manifest, limit, _CHECKED_OUTPUTS, _check_exit_output)
    return header, _payload_array(frame, header)


def _check_activation(manifest: Manifest, header: FrameHeader) -> None:
    expect_activation(manifest)(header)


def _check_exit_output(manifest: Manifest, header: FrameHeader) -> None:
    try:
        exit_spec = manifest.exit(header.tensor)
    except KeyError as e:
        raise FrameMismatchError(f"frame carries {header.tensor!r}, which is not an exit of bundle "
                                 f"{manifest.bundle_id}") from e
    expect_activation(manifest, spec=manifest.segments[exit_spec.segment].output(header.tensor))(header)


HeaderKey = tuple[str, int, bytes]  # bundle id, frame length, header bytes


def _checked_header(
    frame: bytes | bytearray | memoryview, manifest: Manifest, limit: int, checked: dict[HeaderKey, FrameHeader],
    check: Callable[[Manifest, FrameHeader], None],
) -> FrameHeader:
    # A stream of frames repeats the same few headers: one that passed ``check`` for this
    # bundle is remembered by its bytes and the frame's length (which is all parsing reads),
    # and found again with one lookup. Bounded: a peer sending ever new headers only costs
    # the checks.
    view = memoryview(frame)
    key = None
    if len(view) >= HEADER.size:
        key = (manifest.bundle_id, len(view), _header_bytes(view))
        header = checked.get(key)
        if header is not None:
            return header
    header = parse_header(view, max_payload_bytes=limit)
    check(manifest, header)
    if key is not None:
        if len(checked) >= 1024:
            checked.clear()
        checked[key] = header
    return header


_INPUT_LIMITS: dict[str, int] = {}
_OUTPUT_LIMITS: dict[str, int] = {}
_CHECKED: dict[HeaderKey, FrameHeader] = {}
_CHECKED_OUTPUTS: dict[HeaderKey, FrameHeader] = {}


def encode_tensor(array: np.ndarray, spec: TensorSpec, *, bundle_id: str, segment: int,
                  codec: str = "none", level: int | None = None) -> bytes:
    """``encode_frame`` with name and quantization taken from the manifest's ``spec``."""
    return encode_frame(
        array, bundle_id=bundle_id, segment=segment, tensor=spec.name,
        scale=spec.scale if spec.is_quantized else None,
        zero_point=spec.zero_point if spec.is_quantized else None,
        codec=codec, level=level,
    )


class TensorEncoder:
    """Frames one manifest tensor, sent over and over (a device's activation at its cut, an
    edge's exit output): ``encode(array)`` is ``encode_tensor(array, spec, ...)``, with the
    header checked and packed once. An uncompressed array of the spec's dtype and shape, in
    C order, becomes the header and one copy of its memory; anything else (other arrays, a
    codec) takes ``encode_tensor``'s way, with its checks and errors.
    """

    def __init__(self, spec: TensorSpec, *, bundle_id: str, segment: int, codec: str = "none",
                 level: int | None = None) -> None:
        self._general = functools.partial(encode_tensor, spec=spec, bundle_id=bundle_id, segment=segment,
                                          codec=codec, level=level)
        self._dtype = _LE.get(spec.dtype)
        self._shape = tuple(spec.shape)
        self._prefix: bytes | None = None
        if codec == "none" and self._dtype is not None and all(d >= 1 for d in self._shape):
            raw_bytes = math.prod(self._shape) * self._dtype.itemsize
            scale, zero_point = (spec.scale or 0.0, spec.zero_point or 0) if spec.is_quantized else (0.0, 0)
            try:
                self._prefix = _frame_prefix(bundle_id, segment, spec.name, spec.dtype, self._shape, float(scale),
                                             int(zero_point), CODECS[codec], raw_bytes, raw_bytes)
            except WireFormatError:
                pass  # every encode takes the general way, which reports the problem

    def encode(self, array: np.ndarray) -> bytes:
        if (self._prefix is not None and array.dtype == self._dtype and array.shape == self._shape
                and array.flags.c_contiguous):
            return b"".join((self._prefix, array.data))
        return self._general(array)


def is_frame(data: bytes | memoryview) -> bool:
    """True when ``data`` starts with the frame magic (a cheap first check)."""
    return bytes(memoryview(data)[:4]) == MAGIC

