"""The outcome of one inference request on a device."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np

__all__ = ["RAN_ON", "InferenceResult", "RanOn"]


class RanOn(StrEnum):
    """Where a request's answer was computed (the value is what results and telemetry carry)."""

    DEVICE = "device"  # every segment used ran locally (also every fallback)
    EDGE = "edge"  # the device sent the raw input
    SPLIT = "split"  # the device ran the head and the edge the tail


RAN_ON = tuple(place.value for place in RanOn)


@dataclass(frozen=True)
class InferenceResult:
    """One request's answer and where its time went.

    ``transfer_ms`` is the offload round trip (encode, MQTT both ways, decode) minus the
    edge's compute time; ``request_bytes``/``reply_bytes`` are the frame sizes sent and
    received. ``fell_back`` is set when an offload was planned but the device answered
    locally (deadline, edge error, broker gone); ``error`` then says why.
    """

    request_id: str
    exit: str
    partition: int
    top1_class: int
    top1_score: float
    device_ms: float
    transfer_ms: float
    edge_ms: float
    total_ms: float
    ran_on: RanOn
    fell_back: bool = False
    early_exit: bool = False
    error: str | None = None
    request_bytes: int = 0
    reply_bytes: int = 0
    codec: str = "none"
    deadline_ms: float | None = None
    probabilities: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32), repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.ran_on, RanOn):  # also accepted as its text
            object.__setattr__(self, "ran_on", RanOn(self.ran_on))

    @property
    def offloaded(self) -> bool:
        """True when the answer came from the edge."""
        return self.ran_on in (RanOn.EDGE, RanOn.SPLIT)

    @property
    def met_deadline(self) -> bool | None:
        return None if self.deadline_ms is None else self.total_ms <= self.deadline_ms

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (probabilities left out; they are in ``probabilities``)."""
        return {
            "request_id": self.request_id,
            "exit": self.exit,
            "partition": self.partition,
            "top1_class": self.top1_class,
            "top1_score": round(self.top1_score, 6),
            "device_ms": round(self.device_ms, 3),
            "transfer_ms": round(self.transfer_ms, 3),
            "edge_ms": round(self.edge_ms, 3),
            "total_ms": round(self.total_ms, 3),
            "ran_on": self.ran_on.value,
            "fell_back": self.fell_back,
            "early_exit": self.early_exit,
            "error": self.error,
            "request_bytes": self.request_bytes,
            "reply_bytes": self.reply_bytes,
            "codec": self.codec,
            "deadline_ms": self.deadline_ms,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))
