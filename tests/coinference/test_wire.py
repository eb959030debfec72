"""The activation wire format: byte-exact frames, typed rejection of malformed ones."""

from __future__ import annotations

import dataclasses
import struct
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tflite_edge.bundle.manifest import Manifest
from tflite_edge.errors import (
    CompressionError,
    FrameHeaderError,
    FrameLimitError,
    FrameMismatchError,
    FrameTruncatedError,
    WireFormatError,
)
from tflite_edge.transport import wire

# A hand-built frame: int8 tensor "t" of shape [2, 3] for segment 1 of bundle "abc",
# scale 0.5, zero point -3, no compression.
HAND_FRAME = bytes.fromhex(
    "54464541"  # magic "TFEA"
    "01"  # version
    "00"  # codec none
    "01"  # dtype int8
    "02"  # rank 2
    "0100"  # segment 1
    "03"  # bundle id length
    "01"  # tensor name length
    "000000000000e03f"  # scale 0.5 (float64 LE)
    "fdffffff"  # zero point -3
    "06000000"  # raw bytes 6
    "06000000"  # stored bytes 6
    "616263"  # "abc"
    "74"  # "t"
    "02000000" "03000000"  # shape [2, 3]
    "010203ff8000"  # payload
)
HAND_ARRAY = np.array([[1, 2, 3], [-1, -128, 0]], dtype=np.int8)


def test_encode_is_byte_exact() -> None:
    frame = wire.encode_frame(HAND_ARRAY, bundle_id="abc", segment=1, tensor="t", scale=0.5, zero_point=-3)
    assert frame == HAND_FRAME


def test_decode_hand_built_frame() -> None:
    header, array = wire.decode_frame(HAND_FRAME)
    assert (header.bundle_id, header.segment, header.tensor, header.dtype) == ("abc", 1, "t", "int8")
    assert header.shape == (2, 3) and header.scale == 0.5 and header.zero_point == -3
    assert header.codec == "none" and header.raw_bytes == header.stored_bytes == 6
    assert array.dtype == np.int8 and np.array_equal(array, HAND_ARRAY)
    # Uncompressed payloads are views of the frame, not copies.
    assert not array.flags.owndata


def test_float32_frame_is_little_endian() -> None:
    frame = wire.encode_frame(np.array([1.0], np.float32), bundle_id="b", segment=0, tensor="x")
    assert frame[6] == wire.DTYPE_CODES["float32"]
    assert frame[-4:] == struct.pack("<f", 1.0) and frame[12:20] == bytes(8)


@pytest.mark.parametrize("codec", wire.available_codecs())
def test_round_trip_every_codec(codec: str) -> None:
    rng = np.random.default_rng(0)
    for dtype in ("int8", "uint8", "int16", "float16", "int32", "float32", "int64", "bool"):
        array = (rng.integers(-5, 5, size=(1, 3, 4, 5)) > 0 if dtype == "bool"
                 else rng.integers(-5, 5, size=(1, 3, 4, 5)).astype(dtype))
        frame = wire.encode_frame(array, bundle_id="bundle", segment=2, tensor="act", codec=codec)
        header, back = wire.decode_frame(frame)
        assert header.codec == codec and back.dtype == array.dtype and np.array_equal(back, array)


def test_zlib_frame_is_byte_exact() -> None:
    frame = wire.encode_frame(HAND_ARRAY, bundle_id="abc", segment=1, tensor="t", scale=0.5, zero_point=-3,
                              codec="zlib")
    payload = zlib.compress(HAND_ARRAY.tobytes(), 1)
    expected = (HAND_FRAME[:5] + b"\x01" + HAND_FRAME[6:28] + struct.pack("<I", len(payload))
                + HAND_FRAME[32:44] + payload)
    assert frame == expected


def _patched(offset: int, value: bytes, frame: bytes = HAND_FRAME) -> bytes:
    return frame[:offset] + value + frame[offset + len(value):]


@pytest.mark.parametrize(
    ("frame", "error"),
    [
        (HAND_FRAME[:20], FrameTruncatedError),  # shorter than the header
        (_patched(0, b"XXXX"), FrameHeaderError),  # magic
        (_patched(4, b"\x02"), FrameHeaderError),  # version
        (_patched(5, b"\x09"), FrameHeaderError),  # codec id
        (_patched(6, b"\x00"), FrameHeaderError),  # dtype code
        (_patched(7, b"\x09"), FrameLimitError),  # rank above MAX_RANK
        (_patched(10, b"\x00"), FrameHeaderError),  # empty bundle id
        (_patched(10, b"\x41"), FrameHeaderError),  # bundle id longer than 64
        (_patched(11, b"\x00"), FrameHeaderError),  # empty tensor name
        (_patched(12, struct.pack("<d", float("nan"))), FrameHeaderError),  # scale
        (_patched(12, struct.pack("<d", -1.0)), FrameHeaderError),
        (_patched(24, struct.pack("<I", 7)), FrameHeaderError),  # raw size != stored for codec none
        (_patched(28, struct.pack("<I", 7)), FrameTruncatedError),  # stored size beyond the frame
        (_patched(28, struct.pack("<I", 5)), FrameLimitError),  # bytes after the payload
        (HAND_FRAME[:-1], FrameTruncatedError),
        (HAND_FRAME + b"\x00", FrameLimitError),
        (HAND_FRAME[:40], FrameTruncatedError),  # ends inside the shape
        (_patched(36, struct.pack("<I", 0)), FrameHeaderError),  # zero dimension
        (_patched(36, struct.pack("<I", 4)), FrameHeaderError),  # shape disagrees with the size
        (_patched(32, b"\xff"), FrameHeaderError),  # bundle id not ASCII
        (_patched(35, b"\xff"), FrameHeaderError),  # tensor name not UTF-8
    ],
)
def test_malformed_frames_are_rejected_with_typed_errors(frame: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        wire.decode_frame(frame)


def test_hostile_sizes_are_rejected_before_allocation() -> None:
    # Declares a 2**32-element float32 tensor in a 60-byte frame.
    frame = (struct.pack("<4sBBBBHBBdiII", b"TFEA", 1, 1, 6, 2, 0, 1, 1, 0.0, 0, 0xFFFFFFFF, 4)
             + b"bx" + struct.pack("<2I", 65536, 65536) + b"\x00" * 4)
    with pytest.raises(FrameLimitError):
        wire.decode_frame(frame)
    small = wire.encode_frame(np.zeros(100, np.int8), bundle_id="b", segment=0, tensor="x")
    with pytest.raises(FrameLimitError):
        wire.decode_frame(small, max_payload_bytes=99)


def test_decompression_bomb_is_bounded() -> None:
    bomb = zlib.compress(bytes(10_000_000), 9)
    frame = (struct.pack("<4sBBBBHBBdiII", b"TFEA", 1, 1, 1, 1, 0, 1, 1, 0.0, 0, 16, len(bomb))
             + b"bx" + struct.pack("<I", 16) + bomb)
    with pytest.raises(CompressionError):
        wire.decode_frame(frame)


@pytest.mark.parametrize("codec", [c for c in wire.available_codecs() if c != "none"])
def test_corrupt_compressed_payload(codec: str) -> None:
    frame = wire.encode_frame(np.arange(64, dtype=np.int8), bundle_id="b", segment=0, tensor="x", codec=codec)
    header = wire.parse_header(frame)
    garbage = frame[: header.payload_offset] + bytes(b ^ 0x5A for b in frame[header.payload_offset:])
    with pytest.raises(CompressionError):
        wire.decode_frame(garbage)
    # The same payload declared as a larger tensor must not decompress either.
    larger = _patched(24, struct.pack("<I", 128), _patched(32 + 2, struct.pack("<I", 128), frame))
    with pytest.raises(WireFormatError):
        wire.decode_frame(larger)


def test_frames_are_checked_against_the_manifest(tiny_manifest: Manifest) -> None:
    manifest = tiny_manifest
    good = wire.encode_frame(HAND_ARRAY[np.newaxis], bundle_id=manifest.bundle_id, segment=1, tensor="cut",
                             scale=0.5, zero_point=-3)
    header, array = wire.decode_activation(good, manifest)
    assert header.segment == 1 and array.shape == (1, 2, 3)
    cases = {
        "bundle": dict(bundle_id="0123456789abcdef"),
        "segment": dict(segment=7),
        "tensor": dict(tensor="image"),
        "scale": dict(scale=0.25),
        "zero point": dict(zero_point=0),
    }
    for change in cases.values():
        kwargs = dict(bundle_id=manifest.bundle_id, segment=1, tensor="cut", scale=0.5, zero_point=-3) | change
        with pytest.raises(FrameMismatchError):
            wire.decode_activation(wire.encode_frame(HAND_ARRAY[np.newaxis], **kwargs), manifest)
    wrong_shape = wire.encode_frame(HAND_ARRAY, bundle_id=manifest.bundle_id, segment=1, tensor="cut",
                                    scale=0.5, zero_point=-3)
    with pytest.raises(FrameMismatchError):
        wire.decode_activation(wrong_shape, manifest)
    wrong_dtype = wire.encode_frame(HAND_ARRAY[np.newaxis].astype(np.int16), bundle_id=manifest.bundle_id,
                                    segment=1, tensor="cut")
    with pytest.raises(FrameMismatchError):
        wire.decode_activation(wrong_dtype, manifest)


def test_a_tensor_encoder_writes_what_encode_tensor_writes(tiny_manifest: Manifest) -> None:
    spec = tiny_manifest.segments[1].inputs[0]  # int8 (1, 2, 3), scale 0.5, zero point -3
    bundle_id = tiny_manifest.bundle_id

    def reference(array: np.ndarray, codec: str = "none") -> bytes:
        return wire.encode_tensor(array, spec, bundle_id=bundle_id, segment=1, codec=codec)

    plain = wire.TensorEncoder(spec, bundle_id=bundle_id, segment=1)
    conforming = HAND_ARRAY[np.newaxis]
    strided = np.stack([HAND_ARRAY, -HAND_ARRAY], axis=-1)[np.newaxis, ..., 1]
    assert strided.shape == (1, 2, 3) and not strided.flags.c_contiguous
    cases = [conforming, np.asfortranarray(HAND_ARRAY)[np.newaxis], strided,
             conforming.astype(np.int16), HAND_ARRAY]  # the spec's, not C order, a view, wrong dtype, wrong shape
    for array in cases:
        assert plain.encode(array) == reference(array)
    header, decoded = wire.decode_activation(plain.encode(conforming), tiny_manifest)
    assert header.tensor == "cut" and np.array_equal(decoded, conforming)
    zlib_encoder = wire.TensorEncoder(spec, bundle_id=bundle_id, segment=1, codec="zlib")
    assert zlib_encoder.encode(conforming) == reference(conforming, "zlib")
    # What cannot be framed fails when encoding, with encode_tensor's error.
    with pytest.raises(FrameHeaderError):
        wire.TensorEncoder(spec, bundle_id="", segment=1).encode(conforming)


def test_a_remembered_header_still_gets_each_frames_own_payload(tiny_manifest: Manifest) -> None:
    encoder = wire.TensorEncoder(tiny_manifest.segments[1].inputs[0], bundle_id=tiny_manifest.bundle_id, segment=1)
    for seed in range(3):  # same header, new payloads
        array = np.random.default_rng(seed).integers(-128, 127, size=(1, 2, 3), dtype=np.int8)
        assert np.array_equal(wire.decode_activation(encoder.encode(array), tiny_manifest)[1], array)
    # A header checked for one bundle is checked again for another.
    other = dataclasses.replace(tiny_manifest, bundle_id="0123456789abcdef")
    with pytest.raises(FrameMismatchError):
        wire.decode_activation(encoder.encode(np.zeros((1, 2, 3), np.int8)), other)


def test_manifest_bounds_the_payload_before_decompression(tiny_manifest: Manifest) -> None:
    manifest = tiny_manifest
    # A frame for a tensor larger than any the bundle has is refused on its header alone.
    frame = wire.encode_frame(np.zeros((1, 64, 64), np.int8), bundle_id=manifest.bundle_id, segment=1,
                              tensor="cut", scale=0.5, zero_point=-3, codec="zlib")
    with pytest.raises(FrameLimitError):
        wire.decode_activation(frame, manifest)


def test_encode_rejects_what_it_cannot_describe() -> None:
    with pytest.raises(FrameHeaderError):
        wire.encode_frame(np.zeros(2, np.complex64), bundle_id="b", segment=0, tensor="x")
    with pytest.raises(FrameHeaderError):
        wire.encode_frame(np.zeros(2, np.int8), bundle_id="", segment=0, tensor="x")
    with pytest.raises(FrameHeaderError):
        wire.encode_frame(np.zeros(2, np.int8), bundle_id="b", segment=70000, tensor="x")
    with pytest.raises(FrameLimitError):
        wire.encode_frame(np.zeros((1,) * 9, np.int8), bundle_id="b", segment=0, tensor="x")
    with pytest.raises(CompressionError):
        wire.encode_frame(np.zeros(2, np.int8), bundle_id="b", segment=0, tensor="x", codec="brotli")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_never_crash_the_parser(data: bytes) -> None:
    try:
        wire.decode_frame(data)
    except WireFormatError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.integers(0, len(HAND_FRAME) - 1), st.integers(0, 255))
def test_single_byte_corruption_is_rejected_or_harmless(position: int, value: int) -> None:
    frame = _patched(position, bytes([value]))
    try:
        header, array = wire.decode_frame(frame)
    except WireFormatError:
        return
    assert array.nbytes == header.raw_bytes <= len(frame)
