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


@pytest.mark.slow  # waits for paho's reconnect back-off
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


@pytest.mark.parametrize("qos", [0, 1])
def test_packets_written_by_publishing_threads_arrive_whole_and_in_order(broker: MosquittoBroker, qos: int) -> None:
    # Publishing threads write their packets themselves (write_in_caller) while paho's network
    # thread writes too (acknowledgements of the QoS 1 messages it receives meanwhile, and
    # the rest of packets the socket did not take at once): every message must arrive
    # intact, and each thread's in the order it sent them (MQTT keeps the order of messages
    # of one QoS; mixing QoS levels reorders them even with paho's own writes).
    threads, per_thread, size = 4, 20, 512 * 1024
    received: dict[int, list[int]] = {t: [] for t in range(threads)}
    corrupt: list[str] = []
    done = threading.Event()

    def on_message(message: Message) -> None:
        thread, seq = (int(x) for x in message.topic.rsplit("/", 2)[-2:])
        if message.payload != payload(thread, seq):
            corrupt.append(message.topic)
        received[thread].append(seq)
        if sum(map(len, received.values())) == threads * per_thread:
            done.set()

    def payload(thread: int, seq: int) -> bytes:
        return bytes([thread * 31 + seq & 0xFF]) * size

    listener = MqttLink(broker.url, "order-listener")
    listener.subscribe("order/+/+", on_message, qos=1)
    sender = MqttLink(broker.url, "order-sender")
    sender.subscribe("chatter", lambda m: None, qos=1)
    chatter = MqttLink(broker.url, "order-chatter")
    try:
        assert listener.connect(5) and sender.connect(5) and chatter.connect(5)
        stop = threading.Event()

        def chat() -> None:  # keeps the sender's network thread writing PUBACKs
            while not stop.is_set():
                chatter.publish(Message("chatter", b"x" * 100), qos=1)

        def send(thread: int) -> None:
            for seq in range(per_thread):
                sender.publish(Message(f"order/{thread}/{seq}", payload(thread, seq)), qos=qos)

        noise = threading.Thread(target=chat, daemon=True)
        noise.start()
        senders = [threading.Thread(target=send, args=(t,)) for t in range(threads)]
        for t in senders:
            t.start()
        for t in senders:
            t.join(60)
        stop.set()
        noise.join(5)
        assert done.wait(60), {t: len(v) for t, v in received.items()}
    finally:
        for link in (sender, chatter, listener):
            link.close()
    assert not corrupt
    assert all(seqs == list(range(per_thread)) for seqs in received.values()), received
