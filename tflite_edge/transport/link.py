"""The message link a device talks to its edge through, and the clock it measures time with.

``MessageLink`` is the whole surface the device's request client needs from MQTT: publish
a message (with the MQTT 5 request/reply properties), subscribe a handler to a topic
filter, know whether the link is up, wait for it to come up, close it. Two
implementations ship: ``MqttLink`` (``transport.mqtt_link``, paho-mqtt against a real
broker) and ``MemoryLink`` (``transport.memory``, in-process, for tests and for logic
that should run without a broker). Benchmarks wrap a link to emulate a slower network
(``device.link.EmulatedLink``) instead of teaching the production client about it.

``Clock`` is the time source of the device runtime: ``SystemClock`` in production, a
``ManualClock`` (``transport.memory``) in tests, so deadline and fallback logic can be
checked step by step without wall-clock slack.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

__all__ = ["Clock", "Message", "MessageHandler", "MessageLink", "SystemClock"]


@dataclass(frozen=True)
class Message:
    """One MQTT 5 message as the device's protocol sees it.

    ``correlation`` and ``response_topic`` are the request/reply properties,
    ``user_properties`` the MQTT 5 user properties (first value of a key wins, bounded by
    ``protocol.user_properties`` on receipt), ``expiry_s`` the message expiry interval in
    whole seconds (the broker drops the message when nobody took it by then).
    """

    topic: str
    payload: bytes
    correlation: bytes | None = None
    response_topic: str | None = None
    user_properties: Mapping[str, str] = field(default_factory=dict)
    expiry_s: int | None = None


MessageHandler = Callable[[Message], None]


class MessageLink(Protocol):
    """A publish/subscribe connection to a broker (or to something that behaves like one)."""

    @property
    def connected(self) -> bool:
        """True while messages can be published and every required subscription is active."""
        ...

    @property
    def connections(self) -> int:
        """How many times the link has connected; state built from retained messages of an
        earlier connection is stale once this changes (they are sent again)."""
        ...

    def subscribe(self, topic_filter: str, handler: MessageHandler, *, qos: int = 0, optional: bool = False) -> None:
        """Deliver every message matching ``topic_filter`` to ``handler`` (kept across reconnects).

        Handlers run on the link's delivery thread; they must be quick and never raise. An
        ``optional`` subscription that the broker refuses is logged and does not keep the
        link from counting as connected.
        """
        ...

    def connect(self, timeout_s: float, *, required: bool = True) -> bool:
        """Start connecting and wait up to ``timeout_s`` until ``connected``.

        Returns True when connected. When not, raises ``BrokerConnectionError`` if
        ``required``, else returns False and keeps connecting in the background.
        """
        ...

    def publish(self, message: Message, *, qos: int = 0, timeout_s: float | None = None) -> bool:
        """Send ``message``. False when it could not leave within ``timeout_s`` (then it was not sent).

        Raises ``BrokerConnectionError`` when the link is down.
        """
        ...

    def close(self) -> None:
        """Disconnect and stop delivering messages."""
        ...


class Clock(Protocol):
    """Monotonic time in seconds, sleeping and waiting on events."""

    def now(self) -> float:
        ...

    def sleep(self, seconds: float) -> None:
        ...

    def wait(self, event: threading.Event, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for ``event``; True when it is set."""
        ...


class SystemClock:
    """The real clock: ``time.perf_counter``, ``time.sleep`` and ``Event.wait``."""

    def now(self) -> float:
        return time.perf_counter()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)

    def wait(self, event: threading.Event, timeout_s: float) -> bool:
        return event.wait(max(timeout_s, 0.0))


SYSTEM_CLOCK = SystemClock()
