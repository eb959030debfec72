"""The device's request client: publish a frame, wait for the correlated reply.

One client per device runtime, over a ``MessageLink`` (``MqttLink`` against a broker,
``MemoryLink`` in tests). Replies arrive on the device's own reply topic and are matched
to waiting requests by ``CorrelationData``; replies nobody waits for any more (the device
already fell back) are dropped. An ``unknown_bundle`` reply (from an edge that does not
serve the bundle, e.g. one subscribed to every request) does not end the wait: another
edge may still answer; it is returned only if nothing else arrives in time. A request
sent while the link is down fails at once, so the device can fall back without waiting
for its deadline.

The client also follows the edge workers' retained presence messages
(``transport.presence``): ``workers_online(bundle_id)`` says how many workers serving a
bundle are online, so the runtime does not offload while there is none.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from ..errors import BrokerConnectionError, ProtocolError, TransportError
from ..transport.link import SYSTEM_CLOCK, Clock, Message, MessageLink
from ..transport.presence import EdgePresence, presence_filter
from ..transport.protocol import (
    DEFAULT_PREFIX,
    ErrorCode,
    ReplyHeader,
    RequestHeader,
    Topics,
    expiry_seconds,
    validate_device_id,
)

__all__ = ["OffloadClient", "OffloadOptions", "Reply"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OffloadOptions:
    """How a device reaches its edge: topic prefix, MQTT QoS and the broker at start-up.

    ``require_broker=False`` starts even when the broker cannot be reached within
    ``connect_timeout_s``: requests fall back locally until the background connection
    succeeds. By default an unreachable broker is an error.
    """

    prefix: str = DEFAULT_PREFIX
    qos: int = 0
    connect_timeout_s: float = 10.0
    require_broker: bool = True


@dataclass(frozen=True)
class Reply:
    """A reply as received: header, frame bytes and when it arrived (on the client's clock)."""

    header: ReplyHeader
    payload: bytes
    received_at: float


class _Slot:
    """Where one request's reply arrives. Each requesting thread reuses its own slot from
    request to request; the client only touches a slot under its lock while the slot is
    pending, so a late reply never lands in a later request's slot."""

    __slots__ = ("event", "reply")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.reply: Reply | None = None

    def reset(self) -> None:
        self.event.clear()
        self.reply = None


class OffloadClient:
    """Sends requests for one device id over ``link`` and waits for their replies.

    Subscribes to the edge presence topics and to the device's reply topic, then connects
    the link (see ``OffloadOptions`` for a broker that is not there).
    """

    def __init__(
        self,
        link: MessageLink,
        device_id: str,
        options: OffloadOptions = OffloadOptions(),
        *,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.device_id = validate_device_id(device_id)
        self.link = link
        self.clock = clock
        self.topics = Topics(options.prefix)
        self.reply_topic = self.topics.reply(self.device_id)
        self.qos = options.qos
        self._request_topics: dict[str, str] = {}
        self._pending: dict[bytes, _Slot] = {}
        self._local = threading.local()  # each requesting thread's reply slot
        self._lock = threading.Lock()
        self._presence = EdgePresence(self.topics.prefix)
        self._presence_connection = -1  # the link connection the presence state comes from
        # Presence first: the broker sends its retained messages before it acknowledges the
        # reply subscription, so the device knows which workers are online once connected.
        link.subscribe(presence_filter(self.topics.prefix), self._on_presence, qos=1, optional=True)
        link.subscribe(self.reply_topic, self._on_reply, qos=self.qos)
        if not link.connect(options.connect_timeout_s, required=options.require_broker):
            log.warning("broker not reachable yet; answering locally until it is (retrying in the background)")

    @classmethod
    def over_mqtt(cls, broker_url: str, device_id: str, options: OffloadOptions = OffloadOptions(), *,
                  clock: Clock = SYSTEM_CLOCK) -> OffloadClient:
        """A client on an ``MqttLink`` to ``broker_url``, logged in as the device's request connection."""
        from ..transport.mqtt import device_connection
        from ..transport.mqtt_link import MqttLink

        return cls(MqttLink(*device_connection(broker_url, device_id)), device_id, options, clock=clock)

    # -- link handlers (delivery thread) ---------------------------------------------------
    def _on_presence(self, message: Message) -> None:
        with self._lock:
            self._current_presence()
            try:
                self._presence.update(message.topic, message.payload)
            except ProtocolError as e:
                log.debug("presence message on %s ignored: %s", message.topic, e)

    def _current_presence(self) -> EdgePresence:
        # Retained presence is sent again on every connection: state from an earlier
        # connection is forgotten (workers may have left meanwhile). Caller holds the lock.
        if self._presence_connection != self.link.connections:
            self._presence.workers.clear()
            self._presence_connection = self.link.connections
        return self._presence

    def _on_reply(self, message: Message) -> None:
        received_at = self.clock.now()
        correlation = message.correlation
        if not correlation:
            log.debug("reply without correlation data on %s dropped", message.topic)
            return
        if correlation not in self._pending:  # a cheap first look; decided under the lock below
            log.debug("late or unknown reply %r dropped", correlation)
            return
        try:
            header = ReplyHeader.from_message(message.user_properties, correlation)
        except TransportError as e:
            header = ReplyHeader.failure("", ErrorCode.BAD_REPLY, f"the edge sent a malformed reply: {e}")
        reply = Reply(header, message.payload, received_at)
        with self._lock:
            slot = self._pending.get(correlation)  # still waiting?
            if slot is None:
                return
            if not header.ok and header.code == ErrorCode.UNKNOWN_BUNDLE:
                if slot.reply is None:
                    slot.reply = reply  # kept in case no edge answers
                return
            slot.reply = reply
            slot.event.set()

    # -- requests ------------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self.link.connected

    def workers_online(self, bundle_id: str) -> int:
        """Edge workers serving ``bundle_id`` whose presence is current (0 while disconnected)."""
        if not self.connected:
            return 0
        with self._lock:
            return self._current_presence().online(bundle_id)

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

        Raises ``BrokerConnectionError`` at once when the link is down, so the caller can
        fall back without spending its deadline.
        """
        if not self.link.connected:
            raise BrokerConnectionError("not connected to the MQTT broker (reconnecting in the background)")
        start = self.clock.now()
        correlation = header.request_id.encode("utf-8")
        slot = getattr(self._local, "slot", None)
        if slot is None:
            slot = self._local.slot = _Slot()
        slot.reset()
        with self._lock:
            self._pending[correlation] = slot
        try:
            message = Message(
                self._request_topic(bundle_id), frame, correlation=correlation, response_topic=self.reply_topic,
                user_properties=dict(header.to_pairs()), expiry_s=expiry_seconds(deadline_ms),
            )
            if not self.link.publish(message, qos=self.qos, timeout_s=timeout_s):
                return None
            self.clock.wait(slot.event, timeout_s - (self.clock.now() - start))
            return slot.reply
        finally:
            with self._lock:
                self._pending.pop(correlation, None)

    def _request_topic(self, bundle_id: str) -> str:
        topic = self._request_topics.get(bundle_id)
        if topic is None:  # validated once per bundle id, not per request
            topic = self._request_topics[bundle_id] = self.topics.request(bundle_id)
        return topic

    def close(self) -> None:
        """Close the link."""
        self.link.close()
