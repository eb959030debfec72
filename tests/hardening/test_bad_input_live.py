"""Hostile requests sent through a real Mosquitto to a live edge worker: each is refused with a
clear error reply (or dropped when it names no usable reply address), and the worker keeps
serving the next valid request."""

from __future__ import annotations

import struct
import threading
import time
from typing import Any

import numpy as np
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tflite_edge.bundle import Bundle
from tflite_edge.edge import EdgeWorker
from tflite_edge.transport.broker import MosquittoBroker
from tflite_edge.transport.mqtt import connect_and_start, make_client
from tflite_edge.transport.protocol import RequestHeader, Topics, request_properties, user_properties
from tflite_edge.transport.wire import HEADER, MAGIC, encode_frame, encode_tensor

TOPICS = Topics()


class Prober:
    """A raw MQTT client that sends arbitrary requests and collects every reply it can see."""

    def __init__(self, url: str) -> None:
        self.replies: list[tuple[str, bytes, dict[str, str], bytes | None]] = []
        self.arrived = threading.Condition()
        self.client = make_client(url, "prober")
        self.client.on_message = self._on_message
        connect_and_start(self.client)
        self.client.subscribe("#")
        time.sleep(0.3)

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        if message.topic.startswith(f"{TOPICS.prefix}/req/"):
            return  # our own requests
        with self.arrived:
            self.replies.append((message.topic, message.payload, user_properties(message.properties),
                                 getattr(message.properties, "CorrelationData", None)))
            self.arrived.notify_all()

    def send(self, topic: str, payload: bytes, *, rid: str = "r", exit_name: str = "final",
             response_topic: str | None = TOPICS.reply("prober"), props: Properties | None = None) -> None:
        if props is None:
            if response_topic is None:
                props = Properties(PacketTypes.PUBLISH)
                props.CorrelationData = rid.encode()
            else:
                props = request_properties(RequestHeader(rid, exit_name), response_topic=response_topic)
        self.client.publish(topic, payload, qos=1, properties=props).wait_for_publish(5)

    def reply_to(self, rid: str, timeout_s: float = 5.0) -> tuple[str, bytes, dict[str, str], bytes | None] | None:
        deadline = time.monotonic() + timeout_s
        with self.arrived:
            while True:
                for reply in self.replies:
                    if reply[3] == rid.encode():
                        return reply
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.arrived.wait(left)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_hostile_requests_are_refused_and_the_worker_keeps_serving(broker: MosquittoBroker,
                                                                    digits_bundle: Bundle) -> None:
    manifest = digits_bundle.manifest
    cut = manifest.segments[1].inputs[0]
    good = encode_tensor(np.zeros(cut.shape, np.int8), cut, bundle_id=manifest.bundle_id, segment=1)
    request_topic = TOPICS.request(manifest.bundle_id)
    # A header that claims a 4 GiB tensor; the payload follows the header as it says.
    huge = bytearray(good)
    struct.pack_into("<II", huge, 24, 2**32 - 1, len(good) - HEADER.size - len(manifest.bundle_id) - len(cut.name)
                     - 4 * len(cut.shape))
    wrong_dtype = encode_frame(np.zeros(cut.shape, np.uint8), bundle_id=manifest.bundle_id, segment=1,
                               tensor=cut.name)
    wrong_shape = encode_tensor(np.zeros((1, 3, 3, 16), np.int8), cut, bundle_id=manifest.bundle_id, segment=1)
    oversized = MAGIC + bytes(2 * 2**20)  # 2 MiB of junk
    expected = {
        "huge": (request_topic, bytes(huge), "too_large"),
        "dtype": (request_topic, wrong_dtype, "mismatch"),
        "shape": (request_topic, wrong_shape, "mismatch"),
        "noexit": (request_topic, good, "bad_request"),
    }
    prober = Prober(broker.url)
    try:
        with EdgeWorker(broker.url, [digits_bundle], group="g") as worker:
            for rid, (topic, payload, _) in expected.items():
                prober.send(topic, payload, rid=rid, exit_name="nope" if rid == "noexit" else "final")
            # No usable reply address: dropped, and nothing is published anywhere else.
            prober.send(request_topic, good, rid="noresp", response_topic=None)
            for trick in ("elsewhere/topic", f"{TOPICS.prefix}/dev/+/res", f"{TOPICS.prefix}/dev/a/b/res",
                          f"{TOPICS.prefix}/dev/pi-1/telemetry", "$SYS/broker/x"):
                prober.send(request_topic, good, rid=f"trick:{trick}", response_topic=trick)
            prober.send(f"{TOPICS.prefix}/req/a/b", good, rid="deep")  # not a request topic
            prober.send(TOPICS.request("0123456789abcdef"), good, rid="unknown")  # a bundle it does not serve
            # Larger than any request of its bundles: the broker does not deliver it to the worker.
            prober.send(request_topic, oversized, rid="oversized")
            prober.send(request_topic, good, rid="valid")
            ok = prober.reply_to("valid")
            assert ok is not None and "error" not in ok[2] and ok[1].startswith(MAGIC)
            for rid, (_, _, code) in expected.items():
                reply = prober.reply_to(rid, timeout_s=1)
                assert reply is not None and reply[2].get("error") == code, (rid, reply and reply[2])
                assert reply[0] == TOPICS.reply("prober") and reply[1] == b""
            time.sleep(0.3)
            unanswered = (b"noresp", b"deep", b"unknown", b"oversized")
            strays = [r for r in prober.replies if r[3] and (r[3].startswith(b"trick:") or r[3] in unanswered)]
            assert strays == []
            assert worker.served == 1 and worker.failed == len(expected)
            assert worker.max_request_bytes < len(oversized)
    finally:
        prober.close()
