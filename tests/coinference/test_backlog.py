"""The edge worker's backlog: newest first while several requests wait, arrival order
otherwise, nothing past its expiry, bounded (pure logic); and the worker reading ahead
on a real socket before it computes, but never beyond the backlog's bound."""

from __future__ import annotations

import socket
from typing import Any

import numpy as np
import pytest
from paho.mqtt.client import MQTTMessage
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tflite_edge.bundle import Bundle
from tflite_edge.edge.backlog import Backlog, Pending
from tflite_edge.edge.worker import EdgeWorker
from tflite_edge.transport.protocol import RequestHeader, Topics, user_properties
from tflite_edge.transport.wire import encode_tensor


def pending(name: str, arrived_s: float = 0.0, expires_s: float | None = None, size: int = 10) -> Pending:
    return Pending(f"req/{name}", bytes(size), {}, name.encode(), "p/dev/d/res", arrived_s, expires_s)


def test_one_waiting_request_is_taken_and_several_are_taken_newest_first() -> None:
    backlog = Backlog()
    backlog.add(pending("a"))
    assert backlog.take(0.0) == (pending("a"), [])
    for name in "abc":
        backlog.add(pending(name))
    order = [backlog.take(0.0)[0] for _ in range(3)]
    assert [p.topic for p in order if p is not None] == ["req/c", "req/b", "req/a"]
    assert backlog.take(0.0) == (None, []) and len(backlog) == 0


def test_requests_past_their_expiry_are_dropped_not_taken() -> None:
    backlog = Backlog()
    backlog.add(pending("old", expires_s=1.0))
    backlog.add(pending("new", expires_s=3.0))
    backlog.add(pending("newest", expires_s=1.5))
    request, expired = backlog.take(2.0)
    assert request is not None and request.topic == "req/new"
    assert [p.topic for p in expired] == ["req/newest"]
    assert backlog.take(2.0) == (None, [pending("old", expires_s=1.0)])


def test_the_backlog_says_when_it_is_full_by_count_or_bytes() -> None:
    backlog = Backlog(max_requests=3, max_bytes=100)
    for name in "ab":
        backlog.add(pending(name))
    assert not backlog.full
    backlog.add(pending("c"))
    assert backlog.full  # three requests
    backlog.take(0.0)
    assert not backlog.full
    backlog.add(pending("big", size=85))
    assert backlog.full  # 105 bytes
    assert [p.topic for p in backlog.clear()] == ["req/a", "req/b", "req/big"] and len(backlog) == 0


class FakeClient:
    """The part of paho's client a worker's callbacks use, over a real socket pair whose far
    end plays the broker: bytes written there are 'waiting on the connection'."""

    def __init__(self) -> None:
        self.ours, self.broker = socket.socketpair()
        self.ours.setblocking(False)
        self.published: list[tuple[str, bytes, Any]] = []

    def socket(self) -> socket.socket:
        return self.ours

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False,
                properties: Any = None) -> None:
        self.published.append((topic, payload, properties))

    def loop_write(self) -> int:
        return 0

    def close(self) -> None:
        self.ours.close()
        self.broker.close()


def request_message(bundle: Bundle, rid: str) -> MQTTMessage:
    manifest = bundle.manifest
    cut = manifest.segments[1].inputs[0]
    message = MQTTMessage(topic=Topics().request(bundle.bundle_id).encode())
    message.payload = encode_tensor(np.zeros(cut.shape, np.int8), cut, bundle_id=bundle.bundle_id, segment=1)
    props = Properties(PacketTypes.PUBLISH)
    props.ResponseTopic = Topics().reply("dev-1")
    props.CorrelationData = rid.encode()
    props.UserProperty = RequestHeader(rid, "final").to_pairs()
    message.properties = props
    return message


@pytest.fixture
def worker(tiny_bundle: Bundle) -> Any:
    worker = EdgeWorker("mqtt://127.0.0.1:1", [tiny_bundle], load_period_s=None)  # never connected
    worker.handler.warmup()
    yield worker


def test_the_worker_reads_every_waiting_request_then_answers_the_newest_first(
    worker: EdgeWorker, tiny_bundle: Bundle
) -> None:
    client = FakeClient()
    try:
        client.broker.sendall(b"\x30")  # the first byte of another PUBLISH is waiting: read it first
        worker._on_message(client, None, request_message(tiny_bundle, "r1"))
        worker._on_message(client, None, request_message(tiny_bundle, "r2"))
        assert client.published == [] and len(worker._backlog) == 2
        client.ours.recv(1)  # nothing waits any more: answer the backlog
        worker._on_message(client, None, request_message(tiny_bundle, "r3"))
        answered = [bytes(props.CorrelationData) for _, _, props in client.published]
        assert answered == [b"r3", b"r2", b"r1"]
        assert all("edge_us" in user_properties(props) for _, _, props in client.published)
    finally:
        client.close()


def test_a_waiting_packet_that_is_no_request_does_not_hold_the_answer(worker: EdgeWorker, tiny_bundle: Bundle) -> None:
    client = FakeClient()
    try:
        client.broker.sendall(b"\xd0\x00")  # a PINGRESP: paho reads it without calling back
        worker._on_message(client, None, request_message(tiny_bundle, "r1"))
        assert [bytes(props.CorrelationData) for _, _, props in client.published] == [b"r1"]
    finally:
        client.close()


def test_a_full_backlog_is_answered_before_reading_further(worker: EdgeWorker, tiny_bundle: Bundle) -> None:
    client = FakeClient()
    worker._backlog.max_requests = 2
    try:
        client.broker.sendall(b"\x30")  # more requests keep waiting on the connection
        worker._on_message(client, None, request_message(tiny_bundle, "r1"))
        assert client.published == []
        worker._on_message(client, None, request_message(tiny_bundle, "r2"))  # full: one is answered
        assert [bytes(props.CorrelationData) for _, _, props in client.published] == [b"r2"]
        assert len(worker._backlog) == 1 and worker.shed == 0  # nothing was dropped for want of room
    finally:
        client.close()
