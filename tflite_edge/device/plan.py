"""What one inference request should do, and how confident an early exit must be.

A ``Plan`` is what a policy decides per request: the target exit, the partition (how many
segments run on the device), the deadline and an optional early-exit rule. ``ExitRule``
is the BranchyNet/SPINN confidence test, shared by the device and the edge so both stop
at the same exit for the same data.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from ..bundle.manifest import Manifest
from ..errors import InputError
from ..transport.protocol import ThresholdKind

__all__ = ["EXIT_RULE_KINDS", "ExitRule", "NO_RULE", "Plan", "ThresholdKind", "resolve_plan", "ResolvedPlan"]

EXIT_RULE_KINDS = tuple(kind.value for kind in ThresholdKind)


@dataclass(frozen=True)
class ExitRule:
    """Stop at an exit when it is confident enough.

    ``kind="top1"``: the exit's top-1 probability is at least the threshold.
    ``kind="entropy"``: the Shannon entropy (natural log, nats) of the exit's probabilities
    is at most the threshold (BranchyNet's criterion). Exits without a threshold never stop
    a request early.
    """

    thresholds: Mapping[str, float] = field(default_factory=dict)
    kind: ThresholdKind = ThresholdKind.TOP1

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "kind", ThresholdKind(self.kind))
        except ValueError as e:
            raise InputError(f"exit rule kind {self.kind!r} is not one of {', '.join(EXIT_RULE_KINDS)}") from e
        for name, value in self.thresholds.items():
            if not math.isfinite(value) or value < 0:
                raise InputError(f"threshold for exit {name!r} must be a finite number >= 0, got {value}")
            if self.kind == "top1" and value > 1:
                raise InputError(
                    f"threshold for exit {name!r} is {value:g}, but a top-1 probability is at most 1, so it would "
                    "never stop a request: use a value in 0..1, e.g. 0.9 (or maximum entropies with --entropy)"
                )
        object.__setattr__(self, "thresholds", dict(self.thresholds))

    def confident(self, exit_name: str, probabilities: np.ndarray) -> bool:
        """True when ``exit_name`` has a threshold and ``probabilities`` clear it."""
        threshold = self.thresholds.get(exit_name)
        if threshold is None:
            return False
        flat = np.asarray(probabilities, dtype=np.float64).reshape(-1)
        if self.kind is ThresholdKind.TOP1:
            return bool(flat.max() >= threshold)
        return entropy_nats(flat) <= threshold

    def __bool__(self) -> bool:
        return bool(self.thresholds)


NO_RULE = ExitRule()  # no early exit: shared, since a rule is never changed after it is made


def entropy_nats(probabilities: np.ndarray) -> float:
    """Shannon entropy in nats of a probability vector (zeros contribute nothing)."""
    p = np.asarray(probabilities, dtype=np.float64).reshape(-1)
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


@dataclass(frozen=True)
class Plan:
    """A request's plan. ``exit=None`` means the last exit; ``partition=None`` runs all on the device.

    ``partition=K`` runs segments [0, K) on the device and the rest on the edge; ``0`` sends
    the raw (quantized) input.
    """

    exit: str | None = None
    partition: int | None = None
    deadline_ms: float | None = None
    rule: ExitRule = field(default_factory=ExitRule)


@dataclass(frozen=True)
class ResolvedPlan:
    """A plan checked against a bundle, with the numbers the runtime needs."""

    exit: str
    exit_segment: int
    partition: int
    local_stop: int  # segments [0, local_stop) run on the device before any offload
    offload: bool
    deadline_ms: float | None
    rule: ExitRule


def resolve_plan(manifest: Manifest, plan: Plan) -> ResolvedPlan:
    """Check ``plan`` against ``manifest``; ``InputError`` says what to change."""
    exit_name = plan.exit if plan.exit is not None else manifest.exits[-1].name
    try:
        exit_segment = manifest.exit(exit_name).segment
    except KeyError as e:
        raise InputError(str(e.args[0])) from e
    n = manifest.num_segments
    partition = n if plan.partition is None else plan.partition
    if not 0 <= partition <= n:
        raise InputError(f"partition {partition} is outside 0..{n} (the bundle has {n} segments)")
    for name in plan.rule.thresholds:
        if name not in manifest.exit_names:
            raise InputError(f"threshold for unknown exit {name!r}; this bundle has {', '.join(manifest.exit_names)}")
    if plan.deadline_ms is not None and (not math.isfinite(plan.deadline_ms) or plan.deadline_ms <= 0):
        raise InputError(f"deadline must be a positive number of milliseconds, got {plan.deadline_ms}")
    local_stop = min(partition, exit_segment + 1)
    offload = local_stop <= exit_segment
    if offload and len(manifest.segments[partition].inputs) != 1:
        names = [t.name for t in manifest.segments[partition].inputs]
        raise InputError(f"partition {partition} would send {len(names)} tensors ({', '.join(names)}); "
                         "choose a partition at a single-tensor cut")
    return ResolvedPlan(exit_name, exit_segment, partition, local_stop, offload, plan.deadline_ms, plan.rule)
