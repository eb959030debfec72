"""``transport.properties`` against paho-mqtt's own properties code: the one-pass parser must
give exactly what paho's parser gives (values, types, length, and the same failure for
malformed input), and packed properties must be the bytes paho packs."""

from __future__ import annotations

import random
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from paho.mqtt import _packet
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties, VariableByteIntegers

from tflite_edge.transport.properties import (
    PackedProperties,
    ParsedProperties,
    install_publish_parser,
    parse_publish_properties,
)


def paho_parse(buffer: bytes) -> tuple[str, object]:
    """paho's result for ``buffer``: ("ok", (attributes, length)) or ("error", exception type)."""
    props = Properties(PacketTypes.PUBLISH)
    try:
        _, length = props.unpack(buffer)
    except Exception as e:  # whatever paho raises is what the fast path must raise too
        return "error", type(e)
    return "ok", (attributes(props), length)


def fast_parse(buffer: bytes) -> tuple[str, object]:
    props = ParsedProperties(PacketTypes.PUBLISH)
    try:
        _, length = props.unpack(buffer)
    except Exception as e:
        return "error", type(e)
    return "ok", (attributes(props), length)


def attributes(props: Properties) -> dict[str, object]:
    names = [name.replace(" ", "") for name in props.names]
    return {name: (type(getattr(props, name)), getattr(props, name)) for name in names if hasattr(props, name)}


def vbi(value: int) -> bytes:
    return VariableByteIntegers.encode(value)  # paho's encoder: independent of the code under test


def mqtt_string(data: bytes) -> bytes:
    return struct.pack("!H", len(data)) + data


VALID_TEXT = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00\ufeff"),
                     max_size=40).map(str.encode)
TEXTS = st.one_of(VALID_TEXT, VALID_TEXT, VALID_TEXT, VALID_TEXT, st.binary(max_size=12),
                  st.sampled_from([b"a\x00b", "\ufeff".encode(), b"\xed\xa0\x80"]))
FIELD = st.one_of(
    st.tuples(st.just(0x26), TEXTS, TEXTS).map(lambda t: bytes([t[0]]) + mqtt_string(t[1]) + mqtt_string(t[2])),
    st.tuples(st.sampled_from([0x08, 0x03]), TEXTS).map(lambda t: bytes([t[0]]) + mqtt_string(t[1])),
    st.binary(max_size=20).map(lambda b: b"\x09" + mqtt_string(b)),
    st.integers(0, 2**32 - 1).map(lambda v: b"\x02" + struct.pack("!L", v)),
    st.integers(0, 2**16 - 1).map(lambda v: b"\x23" + struct.pack("!H", v)),
    st.integers(0, 3).map(lambda v: bytes([0x01, v])),
)
ODD_FIELD = st.one_of(  # valid but left to paho, not for PUBLISH, unknown, cut short
    st.integers(0, 300).map(lambda v: b"\x0b" + vbi(v)),
    st.sampled_from([b"\x11\x00\x00\x00\x05", b"\x7f", b"\x80\x01", b"\x26\x00"]),
)


@st.composite
def property_blocks(draw: st.DrawFn) -> bytes:
    fields = draw(st.lists(FIELD, max_size=6))
    if draw(st.integers(0, 3)) == 0:
        fields.insert(draw(st.integers(0, len(fields))), draw(ODD_FIELD))
    body = b"".join(fields)
    declared = len(body) + draw(st.sampled_from([0] * 6 + [-1, 1, -3]))
    payload = draw(st.binary(max_size=16))
    if draw(st.integers(0, 3)) == 0 and body:  # damage one byte somewhere
        at = draw(st.integers(0, len(body) - 1))
        body = body[:at] + bytes([draw(st.integers(0, 255))]) + body[at + 1:]
    return vbi(max(declared, 0)) + body + payload


@settings(max_examples=800, deadline=None)
@given(property_blocks())
def test_parser_agrees_with_paho(buffer: bytes) -> None:
    assert fast_parse(buffer) == paho_parse(buffer)


def test_common_messages_take_the_fast_path() -> None:
    # A request and a reply as the framework sends them never need paho's parser.
    for packed in (
        PackedProperties(response_topic="p/dev/d/res", correlation=b"r-1", expiry_s=2,
                         user=[("exit", "final"), ("dl_us", "1796078959170806")]).pack(),
        PackedProperties(correlation=b"r-1", user=[("edge_us", "153"), ("rx_us", "17960789")]).pack(),
    ):
        parsed = parse_publish_properties(packed + b"payload")
        assert parsed is not None and parsed[1] == len(packed)
        assert fast_parse(packed + b"payload") == paho_parse(packed + b"payload")


@pytest.mark.parametrize("seed", range(3))
def test_packed_properties_are_pahos_bytes(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(200):
        topic = "".join(rng.choice("abc/é") for _ in range(rng.randint(0, 20)))
        correlation = rng.randbytes(rng.randint(0, 30))
        expiry = rng.choice([None, rng.randint(1, 2**32 - 1)])
        user = [(f"k{i}", "v" * rng.randint(0, 5)) for i in range(rng.randint(0, 4))]
        reference = Properties(PacketTypes.PUBLISH)
        if expiry is not None:
            reference.MessageExpiryInterval = expiry
        reference.ResponseTopic = topic
        reference.CorrelationData = correlation
        if user:
            reference.UserProperty = user
        packed = PackedProperties(response_topic=topic, correlation=correlation, expiry_s=expiry, user=user)
        assert packed.pack() == reference.pack()
        assert packed.ResponseTopic == topic and packed.CorrelationData == correlation


def test_installed_into_pahos_decoder() -> None:
    assert install_publish_parser()
    assert _packet.Properties is ParsedProperties
    assert install_publish_parser()  # idempotent
    props = PackedProperties(response_topic="a/b", correlation=b"x", user=[("exit", "final")]).pack()
    topic = b"t/1"
    packet = struct.pack("!H", len(topic)) + topic + props + b"frame"
    decoded = _packet.decode_publish(0x30, packet, 5)  # MQTT 5, QoS 0
    assert decoded.payload == b"frame" and decoded.topic == topic
    assert isinstance(decoded.properties, ParsedProperties)
    assert decoded.properties.ResponseTopic == "a/b" and decoded.properties.UserProperty == [("exit", "final")]
    # Other packet types keep paho's parser and still work.
    suback = Properties(PacketTypes.SUBACK)
    suback.ReasonString = "ok"
    parsed = ParsedProperties(PacketTypes.SUBACK)
    parsed.unpack(suback.pack())
    assert parsed.ReasonString == "ok"


def test_valid_properties_packed_by_paho_agree() -> None:
    # Every property a PUBLISH may carry, set through paho and packed by paho: valid input,
    # which the one-pass parser must read itself (all but the Subscription Identifier).
    rng = random.Random(7)
    fast = 0
    for _ in range(1500):
        props = Properties(PacketTypes.PUBLISH)
        text = lambda: "".join(rng.choice("az/é€ 1") for _ in range(rng.randint(0, 12)))  # noqa: E731
        if rng.random() < 0.5:
            props.PayloadFormatIndicator = rng.randint(0, 1)
        if rng.random() < 0.5:
            props.MessageExpiryInterval = rng.randint(0, 2**32 - 1)
        if rng.random() < 0.5:
            props.ContentType = text()
        if rng.random() < 0.7:
            props.ResponseTopic = text()
        if rng.random() < 0.7:
            props.CorrelationData = rng.randbytes(rng.randint(0, 40))
        if rng.random() < 0.3:
            props.TopicAlias = rng.randint(1, 2**16 - 1)
        if rng.random() < 0.1:
            props.SubscriptionIdentifier = rng.randint(1, 2**28 - 1)
        for _ in range(rng.choice([0, 0, 1, 3])):
            props.UserProperty = (text(), text())
        buffer = props.pack() + rng.randbytes(rng.randint(0, 10))
        assert fast_parse(buffer) == paho_parse(buffer)
        fast += parse_publish_properties(buffer) is not None
    assert fast > 1200  # the fast path did the work
