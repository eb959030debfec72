"""A circuit breaker for offloading: stop waiting on an edge that does not answer.

Closed (the normal state): requests are offloaded. After ``failures_to_open`` offloads in
a row got no reply in time, the breaker opens: requests are answered locally at once for
``backoff_s``. Then one request probes the edge (half-open): a reply closes the breaker,
another timeout opens it again for twice as long, up to ``max_backoff_s``. A reply at
any time, or an edge worker for the bundle coming online (``reset``), closes it and
restores the first back-off.

Pure logic with an injected clock, so it is tested without time passing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["BreakerConfig", "CircuitBreaker"]


@dataclass(frozen=True)
class BreakerConfig:
    """``enabled=False`` keeps the breaker closed whatever happens (every offload is sent),
    e.g. to measure a fixed placement as it is."""

    failures_to_open: int = 3
    backoff_s: float = 1.0
    max_backoff_s: float = 30.0
    enabled: bool = True

    def __post_init__(self) -> None:
        if self.failures_to_open < 1 or self.backoff_s <= 0 or self.max_backoff_s < self.backoff_s:
            raise ValueError("failures_to_open >= 1 and 0 < backoff_s <= max_backoff_s")


class CircuitBreaker:
    """Counts consecutive offload timeouts and says when to try the edge again."""

    def __init__(self, config: BreakerConfig | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config or BreakerConfig()
        self._clock = clock
        self.failures = 0
        self.backoff_s = self.config.backoff_s
        self.open_until: float | None = None  # None: closed
        self._probing = False

    @property
    def is_open(self) -> bool:
        return self.open_until is not None

    def allow(self) -> bool:
        """May this request be offloaded? While open, one request after the back-off probes."""
        if self.open_until is None:
            return True
        if self._probing or self._clock() < self.open_until:
            return False
        self._probing = True
        return True

    def retry_in_s(self) -> float:
        return 0.0 if self.open_until is None else max(self.open_until - self._clock(), 0.0)

    def record_success(self) -> bool:
        """The edge answered; True when this closed an open breaker."""
        was_open = self.is_open
        self.reset()
        return was_open

    def record_timeout(self) -> bool:
        """An offload got no reply in time; True when this opened a closed breaker."""
        if self._probing:  # the probe failed: back off longer
            self._probing = False
            self.backoff_s = min(self.backoff_s * 2, self.config.max_backoff_s)
            self.open_until = self._clock() + self.backoff_s
            return False
        self.failures += 1
        if self.open_until is None and self.config.enabled and self.failures >= self.config.failures_to_open:
            self.open_until = self._clock() + self.backoff_s
            return True
        return False

    def release_probe(self) -> None:
        """The probe request was not sent after all (e.g. no time left): let the next one probe."""
        self._probing = False

    def reset(self) -> None:
        self.failures = 0
        self.backoff_s = self.config.backoff_s
        self.open_until = None
        self._probing = False
