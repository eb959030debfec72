"""What one device can make the broker hold, under the generated configuration, on a real Mosquitto."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tflite_edge.security.acl import BrokerLimits, write_broker_config
from tflite_edge.transport.broker import MosquittoBroker, free_port
from tflite_edge.transport.mqtt import connect_and_start, make_client

from .test_broker_acl import KEEP_USER, TOPICS, USERS, Client, _wait_for

pytestmark = pytest.mark.slow  # brokers under memory and packet limits, fed megabytes

MiB = 1024 * 1024


def _start(tmp_path: Path, **options: Any) -> tuple[MosquittoBroker, int, dict[str, str]]:
    port = free_port()
    files = write_broker_config(tmp_path, USERS, port=port, host="127.0.0.1", **options)
    passwords = {n: e["password"] for n, e in json.loads(files.credentials.read_text())["users"].items()}
    broker = MosquittoBroker(allow_anonymous=False, extra_config=KEEP_USER + files.config.read_text()).start()
    return broker, port, passwords


def _url(port: int, passwords: dict[str, str], user: str, login: str | None = None) -> str:
    return f"mqtt://{login or user}:{passwords[user]}@127.0.0.1:{port}"


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_packet_size_limit_is_enforced(tmp_path: Path) -> None:
    broker, port, passwords = _start(tmp_path, limits=BrokerLimits(max_packet_bytes=4096, max_queued_bytes=8192,
                                                                    memory_limit_bytes=64 * MiB))
    try:
        edge = Client(_url(port, passwords, "edge-1"), "edge-limit", subscribe=(TOPICS.request_filter,))
        big = Client(_url(port, passwords, "pi-1"), "pi-1")
        small = Client(_url(port, passwords, "pi-2"), "pi-2")
        try:
            big.client.publish(TOPICS.request("abc"), bytes(8192), qos=0)  # over the limit: refused
            # The broker read it and dropped the client (paho may not notice at once: wait on the log).
            _wait_for(lambda: "disconnected due to oversize packet" in broker.log_path.read_text(), 5)
            small.publish(TOPICS.request("abc"), bytes(1024))
            _wait_for(lambda: edge.messages, 5)
            assert [len(payload) for _, payload in edge.messages] == [1024]
        finally:
            for c in (edge, big, small):
                c.close()
    finally:
        broker.close()


def _session(url_user: str, password: str, port: int, client_id: str, *, clean: bool) -> tuple[paho.Client, list[int]]:
    """A client with a 5-minute session (kept by the broker while it is away)."""
    received: list[int] = []
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=MQTTProtocolVersion.MQTTv5)
    client.username_pw_set(url_user, password)
    client.on_message = lambda c, u, m: received.append(len(m.payload))
    connected = threading.Event()
    client.on_connect = lambda c, u, f, reason, p: connected.set()
    properties = Properties(PacketTypes.CONNECT)
    properties.SessionExpiryInterval = 300
    client.connect("127.0.0.1", port, clean_start=clean, properties=properties)
    client.loop_start()
    assert connected.wait(5)
    return client, received


def test_an_absent_consumers_queue_is_bounded_in_bytes(tmp_path: Path) -> None:
    """Ten 1 MiB requests for an edge that is away: the broker keeps at most max_queued_bytes of them."""
    limits = BrokerLimits(max_packet_bytes=2 * MiB, max_queued_bytes=3 * MiB, memory_limit_bytes=256 * MiB)
    broker, port, passwords = _start(tmp_path, limits=limits)
    try:
        edge, _ = _session("edge-1", passwords["edge-1"], port, "edge-away", clean=True)
        subscribed = threading.Event()
        edge.on_subscribe = lambda *args: subscribed.set()
        edge.subscribe(TOPICS.request("abc"), qos=1)
        assert subscribed.wait(5)
        edge.disconnect()
        edge.loop_stop()
        device = Client(_url(port, passwords, "pi-1"), "pi-1")
        for _ in range(10):
            device.publish(TOPICS.request("abc"), bytes(MiB))
        device.close()
        edge, received = _session("edge-1", passwords["edge-1"], port, "edge-away", clean=False)
        try:
            # A marker sent now is queued behind whatever the broker kept: once it is in, all of that is.
            marker = Client(_url(port, passwords, "pi-1"), "pi-1")
            marker.publish(TOPICS.request("abc"), b"m")
            marker.close()
            _wait_for(lambda: 1 in received, 5)
            assert 1 <= received.count(MiB) <= 3  # not all ten
        finally:
            edge.disconnect()
            edge.loop_stop()
    finally:
        broker.close()


def test_one_device_cannot_grow_the_broker_past_its_memory_limit(tmp_path: Path) -> None:
    """Retained junk on made-up request topics (without --bundle, devices may name any bundle
    level): Mosquitto's memory_limit stops it, and the broker keeps serving small messages."""
    limits = BrokerLimits(max_packet_bytes=4 * MiB, max_queued_bytes=8 * MiB, memory_limit_bytes=48 * MiB)
    broker, port, passwords = _start(tmp_path, limits=limits)
    try:
        assert broker.pid is not None
        before = _rss_mib(broker.pid)
        attacker = make_client(_url(port, passwords, "pi-1"), "pi-1", min_reconnect_delay_s=1, max_reconnect_delay_s=1)
        connect_and_start(attacker, 5)
        stored = 0
        for n in range(40):  # 120 MiB offered
            # The broker drops it at the limit; it comes back, unless the broker, still at its
            # limit, keeps it out (just as bounded): then it offers no more.
            reconnect_by = time.monotonic() + 10
            while not attacker.is_connected() and time.monotonic() < reconnect_by:
                time.sleep(0.05)
            if not attacker.is_connected():
                break
            info = attacker.publish(TOPICS.request(f"junk-{n}"), bytes(3 * MiB), qos=1, retain=True)
            try:
                info.wait_for_publish(5)
                stored += 1
            except (RuntimeError, ValueError):
                pass  # disconnected by the broker for passing the limit
        attacker.disconnect()
        attacker.loop_stop()
        after = _rss_mib(broker.pid)
        assert stored < 40 and after < 48 + 24, (stored, before, after)
        # Everyone else still gets in and is served.
        edge = Client(_url(port, passwords, "edge-1"), "edge-after",
                      subscribe=(TOPICS.shared_request_filter("g", "abc"),))
        pi2 = Client(_url(port, passwords, "pi-2"), "pi-2")
        pi2.publish(TOPICS.request("abc"), b"still works")
        _wait_for(lambda: edge.messages == [(TOPICS.request("abc"), b"still works")], 5)
        edge.close()
        pi2.close()
    finally:
        broker.close()


@pytest.mark.slow
def test_retained_requests_are_refused_or_deleted(tmp_path: Path, digits_bundle: Any) -> None:
    """With --bundle, devices may request only those bundles: retained junk on other topic levels
    is refused, and a retained request on a served bundle is deleted by the edge unanswered."""
    from tflite_edge.edge import EdgeWorker

    bundle_id = digits_bundle.bundle_id
    broker, port, passwords = _start(tmp_path, bundles=(bundle_id,))
    try:
        device = Client(_url(port, passwords, "pi-1"), "pi-1")
        live = Client(_url(port, passwords, "edge-1"), "edge-live", subscribe=(TOPICS.request_filter,))
        with EdgeWorker(_url(port, passwords, "edge-1"), [digits_bundle], group="g") as worker:
            for n in range(5):
                device.client.publish(TOPICS.request(f"junk-{n}"), bytes(MiB), qos=1, retain=True).wait_for_publish(5)
            # A retained request small enough to be one (the worker is sent nothing larger than
            # max_request_bytes): the edge deletes it with an empty retained message on its topic.
            parked = bytes(1024)
            assert len(parked) < worker.max_request_bytes
            device.client.publish(TOPICS.request(bundle_id), parked, qos=1, retain=True).wait_for_publish(5)
            _wait_for(lambda: (TOPICS.request(bundle_id), b"") in live.messages, 5)
        assert [(t, len(m)) for t, m in live.messages] == [(TOPICS.request(bundle_id), len(parked)),
                                                           (TOPICS.request(bundle_id), 0)]
        assert worker.served == 0 and worker.failed == 0
        device.close()
        live.close()
        # What a newcomer finds retained under the request topics: nothing.
        watcher = Client(_url(port, passwords, "edge-1"), "edge-watch", subscribe=(TOPICS.request_filter,))
        # Retained messages come right after the subscription is granted, before this marker.
        marker = Client(_url(port, passwords, "pi-1"), "pi-1")
        marker.publish(TOPICS.request(bundle_id), b"m")
        marker.close()
        _wait_for(lambda: watcher.messages, 5)
        assert watcher.messages == [(TOPICS.request(bundle_id), b"m")]
        watcher.close()
    finally:
        broker.close()
