"""Pure protocol logic: topics, ids, request/reply headers, error mapping, broker URLs."""

from __future__ import annotations

import pytest

from tflite_edge.errors import BrokerUrlError, ProtocolError, RemoteError, TopicError, UnknownBundleError
from tflite_edge.transport.mqtt import BrokerAddress, Will, make_client, parse_broker_url
from tflite_edge.transport.protocol import (
    ErrorCode,
    ReplyHeader,
    RequestHeader,
    Topics,
    pairs_to_dict,
    remote_error,
    reply_properties,
    request_properties,
    user_properties,
    validate_device_id,
)


def test_topic_scheme() -> None:
    topics = Topics()
    assert topics.request("8e4112656feb2669") == "tflite-edge/v1/req/8e4112656feb2669"
    assert topics.shared_request_filter("g1") == "$share/g1/tflite-edge/v1/req/+"
    assert topics.reply("pi-1") == "tflite-edge/v1/dev/pi-1/res"
    assert topics.device("pi-1", "telemetry") == "tflite-edge/v1/dev/pi-1/telemetry"
    assert topics.bundle_of("tflite-edge/v1/req/abc") == "abc"
    assert Topics("site/7").request("abc") == "site/7/req/abc"
    with pytest.raises(ProtocolError):
        topics.bundle_of("tflite-edge/v1/dev/x/res")
    with pytest.raises(ProtocolError):
        topics.bundle_of("tflite-edge/v1/req/a/b")
    with pytest.raises(TopicError):
        topics.device("pi-1", "secrets")


@pytest.mark.parametrize("bad", ["", "a/b", "+", "dev#1", "$SYS", "a\x00b", " pad", "x" * 129])
def test_device_ids_are_validated(bad: str) -> None:
    with pytest.raises(TopicError):
        validate_device_id(bad)
    with pytest.raises(TopicError):
        Topics().reply(bad)


@pytest.mark.parametrize("bad", ["", "/a", "a/", "a//b", "a/+/b", "#", "$share/x"])
def test_prefixes_are_validated(bad: str) -> None:
    with pytest.raises(TopicError):
        Topics(bad)


def test_request_header_round_trip_through_mqtt_properties() -> None:
    header = RequestHeader("r-1", "final", thresholds={"exit_1": 0.9}, threshold_kind="entropy")
    props = request_properties(header, response_topic="tflite-edge/v1/dev/pi-1/res", expiry_s=1)
    assert props.ResponseTopic == "tflite-edge/v1/dev/pi-1/res" and props.CorrelationData == b"r-1"
    assert props.MessageExpiryInterval == 1
    assert RequestHeader.from_message(user_properties(props), props.CorrelationData) == header
    # The common case carries one user property only: each costs time in paho on both sides.
    assert user_properties(request_properties(RequestHeader("r", "final"), response_topic="t")) == {"exit": "final"}


@pytest.mark.parametrize(
    ("pairs", "correlation"),
    [
        ([("exit", "e")], None),  # no request id
        ([("exit", "e")], b""),
        ([("exit", "e")], b"\xff\xfe"),  # not UTF-8
        ([("exit", "e")], b"x" * 129),
        ([], b"r"),  # no exit
        ([("exit", "e"), ("thr", "exit_1")], b"r"),
        ([("exit", "e"), ("thr", "exit_1=nan")], b"r"),
        ([("exit", "e"), ("thr", "a=1"), ("thr_kind", "median")], b"r"),
    ],
)
def test_malformed_requests_are_protocol_errors(pairs: list[tuple[str, str]], correlation: bytes | None) -> None:
    with pytest.raises(ProtocolError):
        RequestHeader.from_message(pairs_to_dict(pairs), correlation)


def test_replies_and_error_mapping() -> None:
    ok = ReplyHeader.success("r", 1234)
    props = reply_properties(ok, correlation=b"r")
    assert ReplyHeader.from_message(user_properties(props), props.CorrelationData) == ok
    bad = ReplyHeader.failure("r", ErrorCode.UNKNOWN_BUNDLE, "this edge does not serve bundle 'x'")
    parsed = ReplyHeader.from_message(user_properties(reply_properties(bad, correlation=b"r")), b"r")
    assert not parsed.ok and parsed.code == ErrorCode.UNKNOWN_BUNDLE
    with pytest.raises(UnknownBundleError, match="does not serve"):
        parsed.raise_for_error()
    other = remote_error("truncated", "frame too short")
    assert type(other) is RemoteError and other.code == "truncated"
    with pytest.raises(ProtocolError):
        ReplyHeader.from_message({"status": "maybe"}, b"r")
    with pytest.raises(ProtocolError):
        ReplyHeader.from_message({"edge_us": "soon"}, b"r")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("mqtt://127.0.0.1:1883", BrokerAddress("127.0.0.1", 1883)),
        ("mqtt://broker", BrokerAddress("broker", 1883)),
        ("mqtts://broker", BrokerAddress("broker", 8883, tls=True)),
        ("MQTT://broker:1", BrokerAddress("broker", 1)),
        ("mqtt://user:p%40ss@broker:1884", BrokerAddress("broker", 1884, username="user", password="p@ss")),
        ("mqtt://user@broker", BrokerAddress("broker", 1883, username="user")),
        ("mqtt://[::1]:1883/", BrokerAddress("::1", 1883)),
    ],
)
def test_parse_broker_url(url: str, expected: BrokerAddress) -> None:
    address = parse_broker_url(url)
    assert address == expected and address.password == expected.password


@pytest.mark.parametrize(
    "url", ["", "broker:1883", "http://broker", "tcp://broker", "mqtt://", "mqtt://:1883", "mqtt://b:0",
            "mqtt://b:70000", "mqtt://b:x", "mqtt://b/topic", "mqtt://b?x=1", "mqtt://:pw@b"],
)
def test_bad_broker_urls(url: str) -> None:
    with pytest.raises(BrokerUrlError):
        parse_broker_url(url)


def test_password_never_shows() -> None:
    address = parse_broker_url("mqtt://user:secret@broker")
    assert "secret" not in str(address) and "secret" not in repr(address)
    with pytest.raises(BrokerUrlError) as info:
        parse_broker_url("mqtt://user:secret@broker:port")
    assert "secret" not in str(info.value)


def test_make_client_is_mqtt5_with_will() -> None:
    client = make_client("mqtt://user:pw@127.0.0.1:1", "c1", will=Will("t/status", b"offline", retain=True))
    assert client.protocol == 5  # MQTT 5
    assert client.host == "127.0.0.1" and client.port == 1
    assert not client.is_connected()


def test_packed_properties_match_paho_packing() -> None:
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    header = RequestHeader("abcdef01-7", "final", thresholds={"exit_1": 0.5})
    fast = request_properties(header, response_topic="tflite-edge/v1/dev/pi-1/res", expiry_s=2)
    slow = Properties(PacketTypes.PUBLISH)
    slow.MessageExpiryInterval = 2
    slow.ResponseTopic = "tflite-edge/v1/dev/pi-1/res"
    slow.CorrelationData = b"abcdef01-7"
    slow.UserProperty = header.to_pairs()
    assert fast.pack() == slow.pack()
    # paho parses them back to the same values.
    parsed = Properties(PacketTypes.PUBLISH)
    parsed.unpack(fast.pack())
    assert parsed.ResponseTopic == fast.ResponseTopic and parsed.CorrelationData == b"abcdef01-7"
    assert RequestHeader.from_message(user_properties(parsed), parsed.CorrelationData) == header
    long_reply = reply_properties(ReplyHeader.failure("r", "internal", "x" * 300), correlation=b"r")
    parsed.unpack(long_reply.pack())  # a property length above 127 takes two length bytes
    assert user_properties(parsed)["message"] == "x" * 300
