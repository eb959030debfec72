"""How busy an edge worker is, measured by the worker and published for devices to decide on.

Every worker publishes a small JSON message every ``period_s`` (QoS 0, not retained) on
``{prefix}/edge/{worker_id}/load``; devices subscribe to ``{prefix}/edge/+/load``
(:class:`tflite_edge.device.context.EdgeLoadTracker`). The message::

    {"schema": "tflite-edge/edge-load/1", "worker_id": "tfe-edge-...", "group": "tflite-edge",
     "load": 0.42, "busy_share": 0.30, "compute_ratio": 1.2, "requests": 17, "window_s": 2.0}

``busy_share``: the share of the last ``window_s`` seconds the worker spent answering
requests (requests arriving meanwhile wait in the broker's queue). ``compute_ratio``: the
mean compute time of the window's requests against the fastest time this worker has seen
for the same kind of request (bundle, activation size, exit) — above 1 when other work
on the edge machine slows it down. ``load`` combines both into the quantity the cost model
uses (:func:`tflite_edge.agents.cost.edge_wait_factor`, ``1 / (1 - load)``): the M/M/1
waiting factor of ``busy_share`` times the slowdown ``compute_ratio`` gives
``load = 1 - (1 - busy_share) / compute_ratio``, clipped to [0, 0.99].
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass

from ..transport.protocol import Topics

__all__ = ["EDGE_LOAD_SCHEMA", "EdgeLoad", "LoadMeter", "edge_load_filter", "edge_load_topic"]

EDGE_LOAD_SCHEMA = "tflite-edge/edge-load/1"


def edge_load_topic(prefix: str, worker_id: str) -> str:
    """Where worker ``worker_id`` publishes its load."""
    return Topics(prefix).edge_load(worker_id)


def edge_load_filter(prefix: str) -> str:
    """The subscription that receives every worker's load."""
    return Topics(prefix).edge_load_filter


@dataclass(frozen=True)
class EdgeLoad:
    """One worker's load over its last window."""

    load: float
    busy_share: float
    compute_ratio: float
    requests: int
    window_s: float

    def to_message(self, worker_id: str, group: str) -> bytes:
        return json.dumps({
            "schema": EDGE_LOAD_SCHEMA, "worker_id": worker_id, "group": group, "load": round(self.load, 4),
            "busy_share": round(self.busy_share, 4), "compute_ratio": round(self.compute_ratio, 4),
            "requests": self.requests, "window_s": round(self.window_s, 3),
        }, separators=(",", ":")).encode()


class LoadMeter:
    """Counts busy time and compute time of a worker's requests over a sliding window (thread-safe)."""

    def __init__(self, window_s: float = 2.0, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.window_s = window_s
        self._clock = clock
        self._lock = threading.Lock()
        self._started = clock()
        # (end time, busy seconds, compute ratio) per request answered.
        self._requests: deque[tuple[float, float, float]] = deque(maxlen=100_000)
        self._fastest: dict[Hashable, float] = {}

    def record(self, busy_s: float, *, kind: Hashable, compute_s: float | None = None) -> None:
        """One answered request: how long the worker was busy with it and, for a request it
        computed, its compute time (error replies count as busy time only)."""
        with self._lock:
            ratio = 1.0
            if compute_s is not None:
                compute = max(compute_s, 1e-9)
                fastest = min(self._fastest.get(kind, compute), compute)
                self._fastest[kind] = fastest
                ratio = compute / fastest
            self._requests.append((self._clock(), max(busy_s, 0.0), ratio))

    def snapshot(self) -> EdgeLoad:
        """The load over the last ``window_s`` seconds (or since the meter started)."""
        with self._lock:
            now = self._clock()
            while self._requests and self._requests[0][0] < now - self.window_s:
                self._requests.popleft()
            window = min(self.window_s, max(now - self._started, 1e-3))
            busy = min(sum(r[1] for r in self._requests) / window, 1.0)
            count = len(self._requests)
            ratio = sum(r[2] for r in self._requests) / count if count else 1.0
        load = min(max(1.0 - (1.0 - busy) / ratio, 0.0), 0.99)
        return EdgeLoad(load, busy, ratio, count, window)
