"""The requests an edge worker has read but not answered yet, and which to answer next.

A worker computes on its network thread, one request at a time. Before it computes, it
reads every request already waiting on its connection into this backlog, then answers
the newest first (last in, first out) while more than one waits. Under overload that is
what keeps answers useful: the newest request has the most time left before its device
gives up, so it is answered in time, while the oldest ones (whose devices are about to
answer locally, or already did) wait and are dropped once their deadline or their MQTT
message expiry has passed. With at most one request waiting, the order is simply the
order of arrival. A worker reads at most ``MAX_BACKLOG_REQUESTS`` requests or
``MAX_BACKLOG_BYTES`` ahead; beyond that, requests wait in the broker's queue, nothing is
dropped for want of room. A device cannot jump the queue by claiming a far deadline: the order
depends only on arrival.

Pure logic: no MQTT, no clock of its own (times are passed in), so it is tested with
made-up times.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["Backlog", "Pending", "MAX_BACKLOG_REQUESTS", "MAX_BACKLOG_BYTES"]

MAX_BACKLOG_REQUESTS = 256
MAX_BACKLOG_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class Pending:
    """One request as read: where it came from and where its answer goes."""

    topic: str
    payload: bytes
    properties: Mapping[str, str]
    correlation: bytes | None
    response_topic: str
    arrived_s: float  # the worker's monotonic clock
    expires_s: float | None = None  # MQTT message expiry, on the same clock; None: never


class Backlog:
    """Requests read ahead, up to ``max_requests`` or ``max_bytes``."""

    def __init__(self, max_requests: int = MAX_BACKLOG_REQUESTS, max_bytes: int = MAX_BACKLOG_BYTES) -> None:
        self.max_requests = max_requests
        self.max_bytes = max_bytes
        self._items: deque[Pending] = deque()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._items)

    @property
    def full(self) -> bool:
        """At a bound: the worker reads no further ahead (requests wait in the broker's queue)."""
        return len(self._items) >= self.max_requests or self._bytes >= self.max_bytes

    def add(self, request: Pending) -> None:
        """Queue ``request`` (the worker adds none while ``full``, except the one just read)."""
        self._items.append(request)
        self._bytes += len(request.payload)

    def take(self, now_s: float) -> tuple[Pending | None, list[Pending]]:
        """The request to answer next (None when empty) and the expired ones dropped on the way.

        Newest first while several wait; a request whose MQTT expiry has passed is never
        returned (the broker would not have delivered it by now either).
        """
        expired = []
        while self._items:
            request = self._pop(left=len(self._items) == 1)
            if request.expires_s is not None and now_s > request.expires_s:
                expired.append(request)
                continue
            return request, expired
        return None, expired

    def clear(self) -> list[Pending]:
        """Empty the backlog; returns what it held."""
        items = list(self._items)
        self._items.clear()
        self._bytes = 0
        return items

    def _pop(self, *, left: bool) -> Pending:
        request = self._items.popleft() if left else self._items.pop()
        self._bytes -= len(request.payload)
        return request
