"""Emulating a slower link between device and edge: a token-bucket shaper and a link wrapper.

On loopback every transfer is nearly free, which hides the trade-off a partition makes.
``TokenBucket`` delays each message as a link of ``rate_mbps`` with a ``burst_bytes``
buffer would, so the device runtime can be measured (and policies trained) at 1, 5, 20 or
100 Mbit/s without root rights or ``tc``. Pure logic: it computes waits, the caller sleeps.

``EmulatedLink`` wraps any ``MessageLink`` and holds each message for the time a slower
link would need: benchmarks and demos use it; the device's request client knows nothing
of it.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

from ..errors import InputError
from ..transport.link import SYSTEM_CLOCK, Clock, Message, MessageHandler, MessageLink

__all__ = ["DelayModel", "EmulatedLink", "TokenBucket"]

DelayModel = Callable[[int], float]  # seconds a message of n bytes takes


class TokenBucket:
    """A link of ``rate_mbps`` megabits per second that can send ``burst_bytes`` at once."""

    def __init__(self, rate_mbps: float, *, burst_bytes: int = 1500) -> None:
        if not math.isfinite(rate_mbps) or rate_mbps <= 0:
            raise InputError(f"link rate must be a positive number of Mbit/s, got {rate_mbps}")
        if burst_bytes < 1:
            raise InputError(f"burst must be at least one byte, got {burst_bytes}")
        self.rate_mbps = rate_mbps
        self.burst_bytes = burst_bytes
        self._bytes_per_s = rate_mbps * 1e6 / 8
        self._tokens = float(burst_bytes)
        self._stamp: float | None = None
        self._lock = threading.Lock()

    def delay_s(self, nbytes: int, now: float | None = None) -> float:
        """Seconds to wait before ``nbytes`` have crossed the link; reserves them.

        Messages queue behind each other: a second message sent right after a first one
        waits for both.
        """
        now = time.monotonic() if now is None else now
        with self._lock:
            if self._stamp is not None:
                self._tokens = min(self.burst_bytes, self._tokens + (now - self._stamp) * self._bytes_per_s)
            self._stamp = now
            self._tokens -= nbytes
            if self._tokens >= 0:
                return 0.0
            return -self._tokens / self._bytes_per_s

    def transfer_ms(self, nbytes: int) -> float:
        """Time on an idle link for ``nbytes`` beyond the burst (for estimates)."""
        return max(nbytes - self.burst_bytes, 0) / self._bytes_per_s * 1e3


class EmulatedLink:
    """A ``MessageLink`` that adds transfer time to ``inner``.

    ``uplink_delay_s(n)`` is how long a published message of ``n`` payload bytes takes;
    the publishing thread waits that long before the message leaves, and a message whose
    transfer would not end within the caller's ``timeout_s`` is not sent at all (the caller
    waited the timeout). ``downlink_delay_s(n)`` delays each received message before its
    handler sees it. Either may be None (no delay in that direction).
    """

    def __init__(
        self,
        inner: MessageLink,
        *,
        uplink_delay_s: DelayModel | None = None,
        downlink_delay_s: DelayModel | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.inner = inner
        self.uplink_delay_s = uplink_delay_s
        self.downlink_delay_s = downlink_delay_s
        self.clock = clock

    @classmethod
    def at_rate(cls, inner: MessageLink, link_mbps: float, *, uplink_delay_s: DelayModel | None = None,
                clock: Clock = SYSTEM_CLOCK) -> EmulatedLink:
        """A link of ``link_mbps`` in both directions (one token bucket each); ``uplink_delay_s``
        replaces the uplink's bucket (e.g. a bandwidth trace)."""
        return cls(inner, uplink_delay_s=uplink_delay_s or TokenBucket(link_mbps).delay_s,
                   downlink_delay_s=TokenBucket(link_mbps).delay_s, clock=clock)

    @property
    def connected(self) -> bool:
        return self.inner.connected

    @property
    def connections(self) -> int:
        return self.inner.connections

    def subscribe(self, topic_filter: str, handler: MessageHandler, *, qos: int = 0, optional: bool = False) -> None:
        delay = self.downlink_delay_s
        if delay is None:
            self.inner.subscribe(topic_filter, handler, qos=qos, optional=optional)
            return

        def delayed(message: Message) -> None:
            self.clock.sleep(delay(len(message.payload)))
            handler(message)

        self.inner.subscribe(topic_filter, delayed, qos=qos, optional=optional)

    def connect(self, timeout_s: float, *, required: bool = True) -> bool:
        return self.inner.connect(timeout_s, required=required)

    def publish(self, message: Message, *, qos: int = 0, timeout_s: float | None = None) -> bool:
        delay_s = self.uplink_delay_s(len(message.payload)) if self.uplink_delay_s is not None else 0.0
        if timeout_s is not None and delay_s > timeout_s:
            self.clock.sleep(max(timeout_s, 0.0))
            return False
        self.clock.sleep(delay_s)
        remaining = None if timeout_s is None else timeout_s - delay_s
        return self.inner.publish(message, qos=qos, timeout_s=remaining)

    def close(self) -> None:
        self.inner.close()
