"""The device's MQTT 5 request client: publish a frame, wait for the correlated reply.

One paho client per device runtime. Replies arrive on the device's own reply topic and
are matched to waiting requests by ``CorrelationData``; replies nobody waits for any
more (the device already fell back) are dropped. An ``unknown_bundle`` reply (from an edge
that does not serve the bundle, e.g. one subscribed to every request) does not end the wait:
another edge may still answer; it is returned only if nothing else arrives in time.
The network loop runs in paho's thread
and reconnects on its own; a request sent while disconnected fails at once, so the
device can fall back without waiting for its deadline.

The client also follows the edge workers' retained presence messages
(``transport.presence``): ``workers_online(bundle_id)`` says how many workers serving a
bundle are online, so the runtime does not offload while there is none.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.reasoncodes import ReasonCode

from ..errors import BrokerConnectionError, ProtocolError, TransportError
from ..transport.mqtt import connect_and_start, device_connection, make_client
from ..transport.presence import EdgePresence, presence_filter
from ..transport.protocol import (
    DEFAULT_PREFIX,
    ErrorCode,
    ReplyHeader,
    RequestHeader,
    Topics,
    expiry_seconds,
    request_properties,
    user_properties,
    validate_device_id,
)
from .link import TokenBucket

__all__ = ["Reply", "OffloadClient"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Reply:
    """A reply as received: header, frame bytes and when it arrived (``perf_counter``)."""

    header: ReplyHeader
    payload: bytes
    received_at: float


class _Slot:
    __slots__ = ("event", "reply")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.reply: Reply | None = None


class OffloadClient:
    """Sends requests for one device id and waits for their replies.

    With ``require_broker=False`` a broker that cannot be reached at start is not an error:
    the client keeps connecting in the background and requests fall back until it succeeds.
    """

    def __init__(
        self,
        broker_url: str,
        device_id: str,
        *,
        prefix: str = DEFAULT_PREFIX,
        qos: int = 0,
        connect_timeout_s: float = 10.0,
        link_mbps: float | None = None,
        uplink_delay_s: Callable[[int], float] | None = None,
        require_broker: bool = True,
    ) -> None:
        self.device_id = validate_device_id(device_id)
        # An emulated link (benchmarks, experiments): a shaper per direction, or a caller's
        # uplink model (seconds a request of n bytes takes).
        self.downlink = TokenBucket(link_mbps) if link_mbps is not None else None
        if uplink_delay_s is None and link_mbps is not None:
            uplink_delay_s = TokenBucket(link_mbps).delay_s
        self.uplink_delay_s = uplink_delay_s
        self.topics = Topics(prefix)
        self.reply_topic = self.topics.reply(self.device_id)
        self.qos = qos
        self._pending: dict[bytes, _Slot] = {}
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self._presence = EdgePresence(self.topics.prefix)
        self._presence_filter = presence_filter(self.topics.prefix)
        self._reply_mid: int | None = None
        self._client = make_client(*device_connection(broker_url, self.device_id))
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        if not require_broker:
            # Start anyway: requests fall back locally until the background loop connects.
            self._client.loop_start()
            if not self._subscribed.wait(connect_timeout_s):
                log.warning("broker not reachable yet; answering locally until it is (retrying in the background)")
            return
        connect_and_start(self._client, connect_timeout_s)
        if not self._subscribed.wait(connect_timeout_s):
            self.close()
            raise BrokerConnectionError(f"the broker did not confirm the subscription to {self.reply_topic}")

    # -- paho callbacks (network thread) ------------------------------------------------
    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any) -> None:
        if reason.is_failure:
            log.warning("broker refused the connection: %s", reason)
            return
        # Subscribed again on every (re)connect: sessions are not kept by the broker.
        # Presence first: the broker sends its retained messages before it acknowledges the
        # reply subscription, so the device knows which workers are online once connected.
        with self._lock:
            self._presence.workers.clear()
        client.subscribe(self._presence_filter, qos=1)
        self._reply_mid = client.subscribe(self.reply_topic, qos=self.qos)[1]

    def _on_subscribe(self, client: paho.Client, userdata: Any, mid: int, codes: list[ReasonCode], props: Any) -> None:
        if mid != self._reply_mid:
            if not codes or codes[0].is_failure:
                log.warning("subscription to edge presence %s refused (%s): offloading cannot tell whether "
                            "a worker is online", self._presence_filter, codes)
            return
        if codes and not codes[0].is_failure:
            self._subscribed.set()
        else:
            log.warning("subscription to %s refused: %s", self.reply_topic, codes)

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any) -> None:
        self._subscribed.clear()
        if reason.is_failure:
            log.info("disconnected from the broker (%s); reconnecting in the background", reason)

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        received_at = time.perf_counter()
        if message.topic != self.reply_topic:
            with self._lock:
                try:
                    self._presence.update(message.topic, message.payload)
                except ProtocolError as e:
                    log.debug("presence message on %s ignored: %s", message.topic, e)
            return
        correlation = getattr(message.properties, "CorrelationData", None)
        if not correlation:
            log.debug("reply without correlation data on %s dropped", message.topic)
            return
        with self._lock:
            slot = self._pending.get(bytes(correlation))
        if slot is None:
            log.debug("late or unknown reply %r dropped", correlation)
            return
        try:
            header = ReplyHeader.from_message(user_properties(message.properties), correlation)
        except TransportError as e:
            header = ReplyHeader.failure("", "bad_reply", f"the edge sent a malformed reply: {e}")
        if not header.ok and header.code == ErrorCode.UNKNOWN_BUNDLE:
            if slot.reply is None:
                slot.reply = Reply(header, message.payload, received_at)  # kept in case no edge answers
            return
        slot.reply = Reply(header, message.payload, received_at)
        slot.event.set()

    # -- requests ------------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self._client.is_connected() and self._subscribed.is_set()

    def workers_online(self, bundle_id: str) -> int:
        """Edge workers serving ``bundle_id`` whose presence is current (0 while disconnected)."""
        if not self.connected:
            return 0
        with self._lock:
            return self._presence.online(bundle_id)

    def request(
        self,
        bundle_id: str,
        frame: bytes,
        header: RequestHeader,
        *,
        timeout_s: float,
        deadline_ms: float | None = None,
    ) -> Reply | None:
        """Publish a request and wait up to ``timeout_s`` for its reply (None on timeout).

        ``deadline_ms`` sets the request's MQTT message expiry, so the broker drops it
        rather than deliver it to a worker after nobody waits for it any more.

        Raises ``BrokerConnectionError`` at once when the client is not connected, so the
        caller can fall back without spending its deadline.
        """
        if not self.connected:
            raise BrokerConnectionError("not connected to the MQTT broker (reconnecting in the background)")
        start = time.perf_counter()
        if self.uplink_delay_s is not None and not _sleep_within(self.uplink_delay_s(len(frame)), timeout_s):
            return None
        correlation = header.request_id.encode("utf-8")
        slot = _Slot()
        with self._lock:
            self._pending[correlation] = slot
        try:
            props = request_properties(header, response_topic=self.reply_topic, expiry_s=expiry_seconds(deadline_ms))
            info = self._client.publish(self.topics.request(bundle_id), frame, qos=self.qos, properties=props)
            if info.rc != paho.MQTT_ERR_SUCCESS:
                raise BrokerConnectionError(f"publishing the request failed: {paho.error_string(info.rc)}")
            slot.event.wait(max(timeout_s - (time.perf_counter() - start), 0.0))
            reply = slot.reply
            if reply is not None and self.downlink is not None:
                remaining_s = timeout_s - (time.perf_counter() - start)
                if not _sleep_within(self.downlink.delay_s(len(reply.payload)), remaining_s):
                    return None
                reply = Reply(reply.header, reply.payload, time.perf_counter())
            return reply
        finally:
            with self._lock:
                self._pending.pop(correlation, None)

    def close(self) -> None:
        """Disconnect and stop the network thread."""
        try:
            self._client.disconnect()
        finally:
            self._client.loop_stop()


def _sleep_within(delay_s: float, budget_s: float) -> bool:
    """Sleep ``delay_s`` if it fits in ``budget_s`` (True); else sleep the budget (False)."""
    if delay_s <= budget_s:
        if delay_s > 0:
            time.sleep(delay_s)
        return True
    time.sleep(max(budget_s, 0.0))
    return False
