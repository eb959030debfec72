"""The device's request client: publish a frame, wait for the correlated reply.

One client per device runtime, over a ``MessageLink`` (``MqttLink`` against a broker,
``MemoryLink`` in tests). Replies arrive on the device's own reply topic and are matched
to waiting requests by ``CorrelationData``; replies nobody waits for any more (the device
already fell back) are dropped. A request sent while the link is down fails at once, so
the device can fall back without waiting for its deadline.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from dataclasses import dataclass

from ..errors import BrokerConnectionError, TransportError
from ..transport.link import SYSTEM_CLOCK, Clock, Message, MessageLink
from ..transport.protocol import (
    DEFAULT_PREFIX,
    ReplyHeader,
    RequestHeader,
    Topics,
    expiry_seconds,
    validate_device_id,
)

__all__ = ["OffloadClient", "OffloadOptions", "Reply", "device_client_id"]

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


def device_client_id(device_id: str) -> str:
    """The MQTT client id of a device's request client (unique per process)."""
    return f"tfe-dev-{device_id}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


@dataclass(frozen=True)
class Reply:
    """A reply as received: header, frame bytes and when it arrived (on the client's clock)."""

    header: ReplyHeader
    payload: bytes
    received_at: float


class _Slot:
    __slots__ = ("event", "reply")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.reply: Reply | None = None


class OffloadClient:
    """Sends requests for one device id over ``link`` and waits for their replies.

    Subscribes to the device's reply topic and connects the link (see ``OffloadOptions``
    for what happens when the broker is not there).
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
        self._pending: dict[bytes, _Slot] = {}
        self._lock = threading.Lock()
        link.subscribe(self.reply_topic, self._on_reply, qos=self.qos)
        if not link.connect(options.connect_timeout_s, required=options.require_broker):
            log.warning("broker not reachable yet; answering locally until it is (retrying in the background)")

    def _on_reply(self, message: Message) -> None:
        received_at = self.clock.now()
        correlation = message.correlation
        if not correlation:
            log.debug("reply without correlation data on %s dropped", message.topic)
            return
        with self._lock:
            slot = self._pending.get(correlation)
        if slot is None:
            log.debug("late or unknown reply %r dropped", correlation)
            return
        try:
            header = ReplyHeader.from_message(message.user_properties, correlation)
        except TransportError as e:
            header = ReplyHeader.failure("", "bad_reply", f"the edge sent a malformed reply: {e}")
        slot.reply = Reply(header, message.payload, received_at)
        slot.event.set()

    # -- requests ------------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self.link.connected

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
        slot = _Slot()
        with self._lock:
            self._pending[correlation] = slot
        try:
            message = Message(
                self.topics.request(bundle_id), frame, correlation=correlation, response_topic=self.reply_topic,
                user_properties=dict(header.to_pairs()), expiry_s=expiry_seconds(deadline_ms),
            )
            if not self.link.publish(message, qos=self.qos, timeout_s=timeout_s):
                return None
            self.clock.wait(slot.event, timeout_s - (self.clock.now() - start))
            return slot.reply
        finally:
            with self._lock:
                self._pending.pop(correlation, None)

    def close(self) -> None:
        """Close the link."""
        self.link.close()
