"""MqttLink against a real Mosquitto: the MessageLink contract the device relies on."""

from __future__ import annotations

import threading

import pytest

from tests.support.waiting import wait_until
from tflite_edge.errors import BrokerConnectionError
from tflite_edge.transport.broker import MosquittoBroker
from tflite_edge.transport.link import Message
from tflite_edge.transport.mqtt_link import MqttLink


def test_request_properties_survive_the_round_trip(broker: MosquittoBroker) -> None:
    received: list[Message] = []
    arrived = threading.Event()
    listener = MqttLink(broker.url, "link-listener")
    listener.subscribe("t/req/+", lambda m: (received.append(m), arrived.set()), qos=1)
    sender = MqttLink(broker.url, "link-sender")
    try:
        assert listener.connect(5) and sender.connect(5)
        assert listener.connected and listener.connections == 1
        sender.publish(Message("t/req/abc", b"\x00frame", correlation=b"rid-1", response_topic="t/dev/d/res",
                               user_properties={"exit": "final", "thr": "exit_1=0.9"}, expiry_s=2), qos=1)
        assert arrived.wait(5)
    finally:
        sender.close()
        listener.close()
    (message,) = received
    assert (message.topic, message.payload, message.correlation, message.response_topic) == (
        "t/req/abc", b"\x00frame", b"rid-1", "t/dev/d/res")
    assert message.user_properties == {"exit": "final", "thr": "exit_1=0.9"}


def test_an_unreachable_broker_is_an_error_unless_not_required() -> None:
    broker = MosquittoBroker()  # a free port with nothing listening yet
    strict = MqttLink(broker.url, "link-strict")
    with pytest.raises(BrokerConnectionError):
        strict.connect(0.2)
    lenient = MqttLink(broker.url, "link-lenient")
    lenient.subscribe("t/x", lambda m: None)
    try:
        assert lenient.connect(0.2, required=False) is False
        assert not lenient.connected
        with pytest.raises(BrokerConnectionError):
            lenient.publish(Message("t/x", b""))
        with broker:
            wait_until(lambda: lenient.connected, 15, "background connection and subscription")
            assert lenient.connections == 1
    finally:
        lenient.close()
