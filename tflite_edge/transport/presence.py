"""Edge presence: which bundles edge workers online serve, from retained MQTT messages.

Each edge worker publishes one retained message on ``{prefix}/edge/{worker_id}``::

    {"bundles": ["<bundle id>", ...], "group": "tflite-edge"}

and registers an empty retained message on the same topic as its last will; a worker that
stops cleanly publishes that empty message itself. An empty retained message deletes the
retained one, so the broker keeps exactly one message per live worker and a device that
subscribes to ``{prefix}/edge/+`` learns at once which workers are online and, when one
goes (clean stop, crash or lost connection), that it went.

The tracking here is pure (topic and bytes in, state out) so it is tested without a broker.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from ..errors import ProtocolError
from .protocol import Topics

__all__ = ["MAX_PRESENCE_BYTES", "EdgePresence", "presence_payload", "presence_topic", "presence_filter"]

MAX_PRESENCE_BYTES = 64 * 1024  # far more than any bundle list; bounded before parsing


def presence_topic(prefix: str, worker_id: str) -> str:
    return Topics(prefix).edge_presence(worker_id)


def presence_filter(prefix: str) -> str:
    return Topics(prefix).edge_presence_filter


def presence_payload(bundle_ids: list[str], group: str) -> bytes:
    return json.dumps({"bundles": sorted(bundle_ids), "group": group}).encode()


def _parse(payload: bytes) -> frozenset[str]:
    if len(payload) > MAX_PRESENCE_BYTES:
        raise ProtocolError(f"presence message of {len(payload)} B exceeds {MAX_PRESENCE_BYTES} B")
    try:
        document = json.loads(payload)
    except ValueError as e:
        raise ProtocolError(f"presence message is not JSON: {e}") from e
    bundles = document.get("bundles") if isinstance(document, dict) else None
    if not isinstance(bundles, list) or not all(isinstance(b, str) for b in bundles):
        raise ProtocolError("presence message needs a list of bundle ids under 'bundles'")
    return frozenset(bundles)


@dataclass
class EdgePresence:
    """The workers currently online and their bundles, updated from presence messages."""

    prefix: str
    workers: dict[str, frozenset[str]] = field(default_factory=dict)

    def update(self, topic: str, payload: bytes) -> None:
        """Apply one presence message; ``ProtocolError`` for a malformed one (state unchanged)."""
        head = f"{self.prefix}/edge/"
        if not topic.startswith(head):
            raise ProtocolError(f"{topic!r} is not a presence topic under {self.prefix!r}")
        worker = topic[len(head):]
        if not payload:
            self.workers.pop(worker, None)
            return
        self.workers[worker] = _parse(payload)

    def online(self, bundle_id: str) -> int:
        """How many workers online serve ``bundle_id``."""
        return sum(bundle_id in bundles for bundles in self.workers.values())
