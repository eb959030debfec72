"""An in-memory ``MessageLink`` and a manual clock, for tests and broker-free experiments.

``MemoryLink`` is to the device what a mock transport is to an HTTP client: every message
the device publishes goes to ``responder``, a plain function that returns the messages to
deliver back (a reply, several, or none), and those reach the link's own subscriptions as
if a broker had routed them. Replies can also be delivered later with ``deliver(...,
after_s=...)``, or by the test at any moment. ``online = False`` makes the link behave
like a lost broker connection.

``ManualClock`` is a clock that only moves when told to (``advance``) or when the code
under test sleeps or waits on it; callbacks scheduled with ``call_later`` run, in time
order, as the clock passes them. A ``MemoryLink`` on a ``ManualClock`` delivers delayed
replies at exact simulated times, so deadline logic is tested without wall-clock slack::

    clock = ManualClock()
    link = MemoryLink(lambda request: None, clock=clock)      # an edge that never answers
    runtime = DeviceRuntime(bundle, link=link, clock=clock)
"""

from __future__ import annotations

import heapq
import itertools
import threading
from collections.abc import Callable, Iterable

import paho.mqtt.client as paho

from ..errors import BrokerConnectionError
from .link import SYSTEM_CLOCK, Clock, Message, MessageHandler

__all__ = ["ManualClock", "MemoryLink", "Responder"]

Responder = Callable[[Message], "Message | Iterable[Message] | None"]


class ManualClock:
    """A clock for tests: time advances only through ``advance``, ``sleep`` and ``wait``."""

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        self._queue: list[tuple[float, int, Callable[[], None]]] = []
        self._order = itertools.count()
        self._lock = threading.RLock()
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self._now

    def call_later(self, delay_s: float, callback: Callable[[], None]) -> None:
        """Run ``callback`` when the clock reaches now + ``delay_s``."""
        with self._lock:
            heapq.heappush(self._queue, (self._now + max(delay_s, 0.0), next(self._order), callback))

    def advance(self, seconds: float) -> None:
        """Move time forward, running every callback that falls due on the way."""
        self._run_until(self._now + max(seconds, 0.0), None)

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.advance(seconds)

    def wait(self, event: threading.Event, timeout_s: float) -> bool:
        return self._run_until(self._now + max(timeout_s, 0.0), event)

    def _run_until(self, target: float, event: threading.Event | None) -> bool:
        with self._lock:
            while not (event is not None and event.is_set()):
                if not self._queue or self._queue[0][0] > target:
                    break
                due, _, callback = heapq.heappop(self._queue)
                self._now = max(self._now, due)
                callback()
            if event is not None and event.is_set():
                return True
            self._now = max(self._now, target)
            return event is None


class MemoryLink:
    """A ``MessageLink`` answered by ``responder`` in-process (see the module docstring).

    ``published`` lists every message sent, in order (requests a test can inspect).
    """

    def __init__(self, responder: Responder | None = None, *, clock: Clock | None = None,
                 online: bool = True) -> None:
        self.responder = responder
        self.clock = clock if clock is not None else SYSTEM_CLOCK
        self.published: list[Message] = []
        self.retained: dict[str, Message] = {}
        self.closed = False
        self._subscriptions: dict[str, MessageHandler] = {}
        self._lock = threading.Lock()
        self._online = False
        self._connections = 0
        self.online = online

    @property
    def online(self) -> bool:
        """Whether the in-memory broker is reachable; going online again counts as a reconnect
        (retained messages are delivered again)."""
        return self._online

    @online.setter
    def online(self, value: bool) -> None:
        if value and not self._online:
            self._connections += 1
            self._online = True
            with self._lock:
                subscriptions = list(self._subscriptions)
            for topic_filter in subscriptions:
                self._deliver_retained(topic_filter)
        self._online = value

    @property
    def connected(self) -> bool:
        return self._online and not self.closed

    @property
    def connections(self) -> int:
        return self._connections

    def subscribe(self, topic_filter: str, handler: MessageHandler, *, qos: int = 0, optional: bool = False) -> None:
        with self._lock:
            self._subscriptions[topic_filter] = handler
        if self.connected:
            self._deliver_retained(topic_filter)

    def _deliver_retained(self, topic_filter: str) -> None:
        with self._lock:
            handler = self._subscriptions[topic_filter]
            matching = [m for t, m in self.retained.items() if paho.topic_matches_sub(topic_filter, t)]
        for message in matching:
            handler(message)

    def connect(self, timeout_s: float, *, required: bool = True) -> bool:
        if self.connected:
            return True
        if required:
            raise BrokerConnectionError("the in-memory link is offline")
        return False

    def publish(self, message: Message, *, qos: int = 0, timeout_s: float | None = None) -> bool:
        if not self.connected:
            raise BrokerConnectionError("not connected (the in-memory link is offline)")
        self.published.append(message)
        answer = self.responder(message) if self.responder is not None else None
        if isinstance(answer, Message):
            answer = (answer,)
        for reply in answer or ():
            self.deliver(reply)
        return True

    def deliver(self, message: Message, *, after_s: float = 0.0, retain: bool = False) -> None:
        """Hand ``message`` to every matching subscription, now or ``after_s`` later on the clock.

        ``retain=True`` also keeps it for later subscriptions and reconnects, like an MQTT
        retained message (an empty payload deletes the retained message of its topic).
        """
        if after_s > 0:
            if isinstance(self.clock, ManualClock):
                self.clock.call_later(after_s, lambda: self.deliver(message, retain=retain))
            else:
                timer = threading.Timer(after_s, self.deliver, args=(message,), kwargs={"retain": retain})
                timer.daemon = True
                timer.start()
            return
        if retain:
            if message.payload:
                self.retained[message.topic] = message
            else:
                self.retained.pop(message.topic, None)
        if not self.connected:
            return
        with self._lock:
            handlers = [h for f, h in self._subscriptions.items() if paho.topic_matches_sub(f, message.topic)]
        for handler in handlers:
            handler(message)

    def close(self) -> None:
        self.closed = True
