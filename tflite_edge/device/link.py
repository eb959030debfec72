"""Emulating a slower link between device and edge: a token-bucket shaper.

On loopback every transfer is nearly free, which hides the trade-off a partition makes.
``TokenBucket`` delays each message as a link of ``rate_mbps`` with a ``burst_bytes``
buffer would, so the device runtime can be measured (and policies trained) at 1, 5, 20 or
100 Mbit/s without root rights or ``tc``. Pure logic: it computes waits, the caller sleeps.
"""

from __future__ import annotations

import math
import threading
import time

from ..errors import InputError

__all__ = ["TokenBucket"]


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
