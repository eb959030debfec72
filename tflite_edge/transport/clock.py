"""The device-edge clock offset, estimated from request/reply round trips (pure logic).

A request may carry an absolute deadline so that an edge can drop work nobody waits for
any more. Device and edge clocks differ, so the device states the deadline in the edge's
clock: ``edge_time ≈ device_time + offset``. Every successful reply gives one sample, as
in NTP's on-wire protocol with the edge's two timestamps folded into one::

    device sends at t0 (device clock)          edge receives at r  (edge clock, ``rx_us``)
    device receives at t1 (device clock)       edge computed for c (``edge_us``)

    offset = ((r - t0) + (r + c - t1)) / 2     delay = (t1 - t0) - c

The error of one sample is at most ``delay / 2`` (when all of the delay is on one side),
so the estimator keeps the sample with the smallest delay among the last ``window``
(NTP's minimum-delay filter): queueing inflates delay, not the best sample's accuracy.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

__all__ = ["ClockSample", "ClockOffset"]


@dataclass(frozen=True)
class ClockSample:
    """One round trip's estimate: ``offset_s`` (edge minus device) within ``± delay_s / 2``."""

    offset_s: float
    delay_s: float


class ClockOffset:
    """Keeps the last ``window`` samples and answers with the least-delayed one's offset."""

    def __init__(self, window: int = 16) -> None:
        if window < 1:
            raise ValueError("window must be >= 1")
        self._samples: deque[ClockSample] = deque(maxlen=window)
        self._best: ClockSample | None = None  # found when a sample comes, read per request

    def add(self, sent_s: float, received_s: float, edge_rx_s: float, edge_compute_s: float) -> ClockSample:
        """Record one round trip (device clock: ``sent_s``, ``received_s``; edge clock:
        ``edge_rx_s`` and the compute time between its receipt and its reply)."""
        delay_s = max((received_s - sent_s) - edge_compute_s, 0.0)
        offset_s = ((edge_rx_s - sent_s) + (edge_rx_s + edge_compute_s - received_s)) / 2.0
        sample = ClockSample(offset_s, delay_s)
        samples = self._samples
        evicted = samples[0] if len(samples) == samples.maxlen else None
        samples.append(sample)
        best = self._best
        if best is None or delay_s < best.delay_s:
            self._best = sample
        elif evicted is best:  # the best sample left the window: look again
            self._best = min(samples, key=_delay)
        return sample

    @property
    def best(self) -> ClockSample | None:
        """The least-delayed recent sample; None before the first reply."""
        return self._best

    def edge_time_s(self, device_time_s: float) -> float | None:
        """``device_time_s`` in the edge's clock; None while no round trip is known."""
        best = self.best
        return None if best is None else device_time_s + best.offset_s

    def one_way_s(self) -> float:
        """Half the smallest recent network delay: how long a reply takes to come back."""
        best = self.best
        return 0.0 if best is None else best.delay_s / 2.0

    def edge_deadline_us(self, wait_until_s: float) -> int | None:
        """A request's ``dl_us``: when the edge must have answered, in its clock (Unix µs),
        for the reply to arrive by ``wait_until_s`` (this clock): the end of the wait minus
        the reply's way back. None until a round trip has given the offset, so an edge whose
        clock is far off is never told that every request is late."""
        edge_s = self.edge_time_s(wait_until_s - self.one_way_s())
        return None if edge_s is None else max(int(edge_s * 1e6), 0)


def _delay(sample: ClockSample) -> float:
    return sample.delay_s
