"""Several edge groups on one broker, each serving its own bundle: requests are routed by bundle."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import paho.mqtt.client as paho
import pytest

from tflite_edge.bundle import Bundle
from tflite_edge.device import DeviceRuntime
from tflite_edge.edge import EdgeWorker
from tflite_edge.errors import UnknownBundleError
from tflite_edge.transport.broker import MosquittoBroker
from tflite_edge.transport.mqtt import connect_and_start, make_client
from tflite_edge.transport.protocol import ErrorCode, ReplyHeader, Topics, reply_properties

from .conftest import announce_silent_edge

pytestmark = pytest.mark.slow

REQUESTS = 25


def test_two_groups_serving_two_bundles_compute_each_request_once(
    broker: MosquittoBroker, digits_bundle: Bundle, other_bundle: Bundle, digits_split: Any
) -> None:
    samples = digits_split[2][:REQUESTS].astype(np.float32)
    with EdgeWorker(broker.url, [digits_bundle], group="site-a") as a, \
            EdgeWorker(broker.url, [other_bundle], group="site-b") as b, \
            DeviceRuntime(digits_bundle, broker_url=broker.url, device_id="pi-a") as device_a, \
            DeviceRuntime(other_bundle, broker_url=broker.url, device_id="pi-b") as device_b:
        results = [device.infer(x, partition=1, deadline_ms=5000)
                   for x in samples for device in (device_a, device_b)]
    assert [r.error for r in results if r.fell_back] == []
    # Each request computed by exactly one worker, and no group answered the other's bundle.
    assert (a.served, a.failed, b.served, b.failed) == (REQUESTS, 0, REQUESTS, 0)


class _WrongGroup:
    """An edge of another generation subscribed to every request, answering ``unknown_bundle`` at once."""

    def __init__(self, url: str) -> None:
        self.answered = 0
        self._subscribed = threading.Event()
        self.client = make_client(url, "wrong-group")
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *args: self._subscribed.set()
        connect_and_start(self.client, 5)
        self.client.subscribe(Topics().shared_request_filter("everything"), qos=0)
        assert self._subscribed.wait(5)

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        correlation = message.properties.CorrelationData
        header = ReplyHeader.failure("", ErrorCode.UNKNOWN_BUNDLE, "this edge does not serve that bundle")
        props = reply_properties(header, correlation=correlation)
        client.publish(message.properties.ResponseTopic, b"", properties=props)
        self.answered += 1

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_an_unknown_bundle_reply_from_another_group_is_not_taken_for_the_answer(
    broker: MosquittoBroker, digits_bundle: Bundle, digits_split: Any
) -> None:
    samples = digits_split[2][:10].astype(np.float32)
    wrong = _WrongGroup(broker.url)
    try:
        # With no other answer, the unknown_bundle reply is what the device reports, at its deadline.
        announce_silent_edge(broker.url, [digits_bundle.bundle_id])
        with DeviceRuntime(digits_bundle, broker_url=broker.url, raise_remote_errors=True) as device:
            with pytest.raises(UnknownBundleError, match="does not serve"):
                device.infer(samples[0], partition=1, deadline_ms=600)
        wrong.answered = 0
        with EdgeWorker(broker.url, [digits_bundle], group="right") as worker, \
                DeviceRuntime(digits_bundle, broker_url=broker.url) as device:
            results = [device.infer(x, partition=1, deadline_ms=5000) for x in samples]
        assert wrong.answered == len(samples)  # the wrong group did answer every request first or last
        assert [r.error for r in results if r.fell_back] == []
        assert worker.served == len(samples)
    finally:
        wrong.close()
