"""The pure protocol: framing (COBS + CRC-32) and message payloads, with property tests."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from tflite_edge.errors import SerialFrameError, SerialMessageError
from tflite_edge.firmware_bridge import framing, messages
from tflite_edge.firmware_bridge.fragments import Reassembler, split_payload
from tflite_edge.firmware_bridge.framing import Frame, FrameDecoder, decode_frame, encode_frame
from tflite_edge.firmware_bridge.messages import (
    ErrorReply,
    Hello,
    Invoke,
    MessageType,
    Tensor,
    TensorDesc,
    decode_message,
    encode_message,
)

from .vectors import example_messages

PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def test_frame_bytes_are_exact() -> None:
    # version 1, type 0x01, seq 7, length 4, payload 00 61 62 63, then CRC-32 (LE) of all that.
    body = bytes([1, 1, 7, 0, 4, 0, 0, 0x61, 0x62, 0x63])
    body += zlib.crc32(body).to_bytes(4, "little")
    wire = encode_frame(0x01, 7, b"\x00abc")
    assert wire[0] == 0 and wire[-1] == 0 and 0 not in wire[1:-1]
    assert decode_frame(wire[1:-1]) == Frame(0x01, 7, b"\x00abc")
    from cobs import cobs

    assert cobs.decode(wire[1:-1]) == body


def test_overhead_is_small() -> None:
    # header 6 + CRC 4 + two delimiters + one COBS code byte per 254 bytes
    assert framing.frame_overhead_bytes(64) == 13
    assert framing.frame_overhead_bytes(1024) == 17


def test_other_protocol_version_is_rejected() -> None:
    wire = encode_frame(0x01, 1, b"", version=2)
    with pytest.raises(SerialFrameError, match="protocol version 2"):
        decode_frame(wire[1:-1])


def test_every_example_message_round_trips() -> None:
    for message in example_messages():
        msg_type, payload = encode_message(message)
        frame = decode_frame(encode_frame(msg_type, 3, payload)[1:-1])
        assert decode_message(frame.msg_type, frame.payload) == message


def test_tensor_round_trips_numpy() -> None:
    x = np.arange(-32, 32, dtype=np.int8).reshape(1, 8, 8, 1)
    tensor = Tensor.from_array(0, x, scale=0.05, zero_point=-3)
    back = decode_message(*encode_message(Invoke(0, (tensor,))))
    assert isinstance(back, Invoke)
    np.testing.assert_array_equal(back.tensors[0].to_array(), x)
    assert back.tensors[0].desc.zero_point == -3


@pytest.mark.parametrize(
    "payload, match",
    [
        # dtype int8, rank 2, dims 1000 x 1000: 1 MB claimed, nothing present
        (bytes([0, 1, 0, 9, 2]) + (1000).to_bytes(2, "little") * 2 + bytes(8), "needs 1000000 bytes"),
        (bytes([0, 17]), "exceed the limit"),  # 17 tensors
        (bytes([0, 1, 0, 9, 7]), "rank 7"),
        (bytes([0, 1, 0, 42, 1]), "unknown dtype"),
        (bytes([0, 1, 0, 9, 1, 0, 0]) + bytes(8), "zero dimension"),
        (bytes([0]), "needs 1 more bytes"),
    ],
)
def test_hostile_tensor_payloads_are_bounded(payload: bytes, match: str) -> None:
    with pytest.raises(SerialMessageError, match=match):
        decode_message(MessageType.INVOKE, payload)


def test_trailing_bytes_and_unknown_types_are_errors() -> None:
    msg_type, payload = encode_message(Hello(1, 512, 4096))
    with pytest.raises(SerialMessageError, match="trailing"):
        decode_message(msg_type, payload + b"x")
    with pytest.raises(SerialMessageError, match="unknown message type"):
        decode_message(0x42, b"")


def test_error_text_is_truncated_to_255_bytes() -> None:
    back = decode_message(*encode_message(ErrorReply(7, "é" * 300)))
    assert isinstance(back, ErrorReply) and len(back.text.encode()) <= 255


# -- properties ------------------------------------------------------------------------

frames = st.tuples(st.integers(0, 255), st.integers(0, 0xFFFF), st.binary(max_size=600))


@seed(6)
@PROPERTY
@given(frames)
def test_frame_round_trip(f: tuple[int, int, bytes]) -> None:
    msg_type, seq, payload = f
    assert decode_frame(encode_frame(msg_type, seq, payload)[1:-1]) == Frame(msg_type, seq, payload)


@seed(6)
@PROPERTY
@given(frames, st.data())
def test_every_single_byte_corruption_is_detected(f: tuple[int, int, bytes], data: st.DataObject) -> None:
    msg_type, seq, payload = f
    wire = bytearray(encode_frame(msg_type, seq, payload))
    position = data.draw(st.integers(0, len(wire) - 1))
    wire[position] ^= data.draw(st.integers(1, 255))
    # Whatever the corruption did (split the frame, merged it with a delimiter, changed a
    # byte), the original frame must not come out altered: either intact or not at all.
    out = FrameDecoder().feed(bytes(wire))
    assert all(frame == Frame(msg_type, seq, payload) for frame in out)
    if position not in (0, len(wire) - 1):
        assert out == []


@seed(6)
@PROPERTY
@given(st.binary(max_size=2000), st.integers(1, 64))
def test_garbage_never_crashes_and_the_stream_resynchronises(garbage: bytes, chunk: int) -> None:
    decoder = FrameDecoder(max_payload_bytes=256)
    good = encode_frame(0x05, 99, b"payload")
    stream = garbage + good + good
    got = []
    for i in range(0, len(stream), chunk):
        got += decoder.feed(stream[i : i + chunk])
    # The leading delimiter of a frame ends any garbage, so both good frames survive.
    assert got[-2:] == [Frame(0x05, 99, b"payload")] * 2


@seed(6)
@PROPERTY
@given(st.binary(max_size=3000))
def test_decode_frame_raises_only_its_typed_error(raw: bytes) -> None:
    try:
        decode_frame(raw, max_payload_bytes=1024)
    except SerialFrameError:
        pass


@seed(6)
@PROPERTY
@given(st.sampled_from(list(MessageType)), st.binary(max_size=300))
def test_decode_message_raises_only_its_typed_error(msg_type: MessageType, payload: bytes) -> None:
    try:
        decode_message(int(msg_type), payload)
    except SerialMessageError:
        pass


def test_decoder_memory_is_bounded() -> None:
    decoder = FrameDecoder(max_payload_bytes=64)
    decoder.feed(b"\x01" * 100_000)
    assert len(decoder._buffer) <= framing.max_encoded_bytes(64)
    assert decoder.feed(encode_frame(1, 1, b"ok")) == [Frame(1, 1, b"ok")]
    assert decoder.stats.oversized == 1


def test_torn_frame_costs_only_itself() -> None:
    good = encode_frame(0x85, 5, bytes(range(1, 200)))
    decoder = FrameDecoder()
    assert decoder.feed(good[: len(good) // 2] + good) == [Frame(0x85, 5, bytes(range(1, 200)))]
    assert decoder.stats.dropped == 1


def test_desc_rejects_what_cannot_cross() -> None:
    with pytest.raises(SerialMessageError):
        encode_message(Invoke(0, (Tensor(0, TensorDesc("complex64", (1,)), b""),)))
    assert messages.DTYPE_CODES["int8"] == 9  # TfLiteType kTfLiteInt8


def test_importing_the_package_stays_light() -> None:
    import subprocess
    import sys

    code = ("import sys, tflite_edge.firmware_bridge as fb; fb.FrameDecoder; "
            "print([m for m in ('serial', 'tensorflow', 'tflite_micro') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# -- fragments -------------------------------------------------------------------------


@seed(6)
@PROPERTY
@given(st.binary(max_size=3000), st.integers(6, 300), st.sampled_from([0x05, 0x85]))
def test_fragments_round_trip(payload: bytes, limit: int, msg_type: int) -> None:
    parts = split_payload(msg_type, payload, limit)
    assert all(len(p) <= limit for _, p in parts)
    if len(parts) == 1:
        assert parts == [(msg_type, payload)]
        return
    joiner = Reassembler(len(payload))
    results = [joiner.push(9, decode_message(t, p)) for t, p in parts]  # type: ignore[arg-type]
    assert results[:-1] == [None] * (len(parts) - 1) and results[-1] == (msg_type, payload)
    assert {t for t, _ in parts} == {0x08 if msg_type < 0x80 else 0x88}


def test_lost_fragment_drops_the_message_until_the_retry() -> None:
    parts = [decode_message(t, p) for t, p in split_payload(0x05, bytes(range(200)), 64)]
    joiner = Reassembler(1000)
    assert joiner.push(1, parts[0]) is None  # type: ignore[arg-type]
    assert joiner.push(1, parts[2]) is None and joiner.dropped == 1  # parts[1] was lost  # type: ignore[arg-type]
    assert joiner.push(1, parts[3]) is None  # type: ignore[arg-type]
    results = [joiner.push(2, p) for p in parts]  # the retry, with a new sequence number  # type: ignore[arg-type]
    assert results[-1] == (0x05, bytes(range(200)))


def test_oversized_fragmented_message_is_refused_before_it_is_held() -> None:
    joiner = Reassembler(100)
    parts = [decode_message(t, p) for t, p in split_payload(0x05, bytes(300), 64)]
    joiner.push(1, parts[0])  # type: ignore[arg-type]
    with pytest.raises(SerialMessageError, match="exceeds 100 bytes"):
        joiner.push(1, parts[1])  # type: ignore[arg-type]
    with pytest.raises(SerialMessageError, match="invalid"):
        decode_message(0x08, bytes([0x08, 0, 0, 1, 0]))  # fragments do not nest
    with pytest.raises(SerialMessageError, match="invalid"):
        decode_message(0x08, bytes([0x05, 2, 0, 2, 0]))  # index beyond count
