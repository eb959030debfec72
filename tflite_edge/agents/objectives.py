"""Objectives: turn a request's outcome (latency, energy, accuracy) into a reward.

``accuracy`` (Edgent)
    The answer's accuracy if the deadline holds, else ``-miss_penalty``.
``energy`` (AutoScale)
    ``1 - energy / energy_budget`` if the deadline holds and the exit's validation accuracy
    reaches ``accuracy_floor``, else ``-miss_penalty - 1``. The budget is what the
    request's power budget allows over its deadline (``power_budget_mw × deadline_ms``),
    which keeps rewards of different requests comparable.
``latency`` (Neurosurgeon)
    ``-latency / deadline``: plain latency minimisation, scaled by the request's deadline.
``edgeml`` (EdgeML)
    The answer's accuracy if both the deadline and the energy budget hold, else
    ``-miss_penalty``: positive only when the latency and the power limits both hold.

"The answer's accuracy" is the per-sample correctness when the simulator has per-sample
results, else the exit's validation accuracy (the expected correctness).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import PolicyError

__all__ = ["OBJECTIVES", "Objective", "get_objective"]

OBJECTIVES = ("accuracy", "energy", "latency", "edgeml")


@dataclass(frozen=True)
class Objective:
    """A selectable objective; all arrays broadcast (requests × actions)."""

    name: str = "accuracy"
    accuracy_floor: float = 0.0
    miss_penalty: float = 0.0

    def __post_init__(self) -> None:
        if self.name not in OBJECTIVES:
            raise PolicyError(f"unknown objective {self.name!r}; choose one of {', '.join(OBJECTIVES)}")
        if not 0.0 <= self.accuracy_floor <= 1.0:
            raise PolicyError("accuracy_floor must lie in [0, 1]")
        if self.miss_penalty < 0:
            raise PolicyError("miss_penalty must not be negative")

    def reward(
        self,
        *,
        latency_ms: np.ndarray,
        energy_mj: np.ndarray,
        correct: np.ndarray,
        exit_accuracy: np.ndarray,
        deadline_ms: np.ndarray | float,
        energy_budget_mj: np.ndarray | float,
    ) -> np.ndarray:
        """Reward of each outcome under this objective."""
        in_time = latency_ms <= deadline_ms
        if self.name == "accuracy":
            return np.where(in_time, correct, -self.miss_penalty)
        if self.name == "latency":
            return -latency_ms / deadline_ms
        if self.name == "energy":
            feasible = in_time & (exit_accuracy >= self.accuracy_floor)
            return np.where(feasible, 1.0 - energy_mj / energy_budget_mj, -1.0 - self.miss_penalty)
        within_power = energy_mj <= energy_budget_mj
        return np.where(in_time & within_power, correct, -self.miss_penalty)


def get_objective(name: str, *, accuracy_floor: float = 0.0, miss_penalty: float = 0.0) -> Objective:
    """An objective by name (see :data:`OBJECTIVES`)."""
    return Objective(name, accuracy_floor, miss_penalty)
