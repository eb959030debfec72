"""The planning model: every action's outcome predicted from an observed context.

This is what Neurosurgeon's and Edgent's regression models give them: device and edge
compute per action from the bundle's profile, scaled by the measured device speed and edge
load, plus the transfer at the *estimated* throughput and the last RTT. It is a handful of
per-action constants, so a device can evaluate it in microseconds without the simulator,
and it travels inside ``policy.json``: a learned policy receives the predicted reward of
every action as features next to the raw context, and learns when to trust them (for
instance, not when the link is volatile).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import PolicyError
from .cost import action_cost, transmit_ms
from .objectives import Objective

if TYPE_CHECKING:
    from .simulator import Episode, Simulator

__all__ = ["PlanningModel", "policy_feature_names", "policy_observations"]

_FIELDS = ("device_ms", "edge_ms", "megabits", "accuracy", "offloaded")


@dataclass(frozen=True, eq=False)
class PlanningModel:
    """Per-action constants: device compute at nominal speed, edge compute when idle,
    megabits sent, exit accuracy, and whether the action offloads.

    ``device_segment_ms`` is every segment's device time at nominal speed (speed 1): a
    device divides it by its measured segment times to know its speed (empty in policies
    trained before it was recorded).
    """

    device_ms: np.ndarray
    edge_ms: np.ndarray
    megabits: np.ndarray
    accuracy: np.ndarray
    offloaded: np.ndarray
    device_power_mw: float
    radio_alpha_mw_per_mbps: float
    radio_beta_mw: float
    device_segment_ms: tuple[float, ...] = ()

    @classmethod
    def from_simulator(cls, simulator: Simulator) -> PlanningModel:
        """The planning model of ``simulator``'s bundle, profile, platforms and radio."""
        values: dict[str, list[float]] = {k: [] for k in _FIELDS}
        n = simulator.manifest.num_segments
        for action in simulator.actions:
            segment = simulator.manifest.exits[action.exit].segment
            local = segment < action.partition
            k = min(action.partition, n)
            device = simulator.device_cum_ms[segment + 1] if local else simulator.device_cum_ms[k]
            values["device_ms"].append(float(device))
            edge = 0.0 if local else simulator.edge_cum_ms[segment + 1] - simulator.edge_cum_ms[k]
            values["edge_ms"].append(float(edge))
            values["megabits"].append(0.0 if local else float(simulator.partition_megabits[k]))
            values["accuracy"].append(simulator.exit_accuracy[action.exit])
            values["offloaded"].append(0.0 if local else 1.0)
        arrays = {k: np.asarray(v, dtype=np.float64) for k, v in values.items()}
        return cls(
            **arrays,  # type: ignore[arg-type]
            device_power_mw=simulator.device.compute_power_mw,
            radio_alpha_mw_per_mbps=simulator.radio.alpha_mw_per_mbps,
            radio_beta_mw=simulator.radio.beta_mw,
            device_segment_ms=tuple(float(v) for v in np.diff(simulator.device_cum_ms)),
        )

    @property
    def num_actions(self) -> int:
        return int(self.device_ms.size)

    def probe_action(self) -> int | None:
        """The offloading action that sends the fewest bytes (the most accurate such): the
        cheapest request that measures the uplink. None when no action offloads."""
        offloading = np.flatnonzero(self.offloaded)
        if offloading.size == 0:
            return None
        megabits = self.megabits[offloading]
        fewest = offloading[megabits <= megabits.min() + 1e-12]
        return int(fewest[np.argmax(self.accuracy[fewest])])

    def predict(
        self,
        *,
        throughput_mbps: np.ndarray | float,
        rtt_ms: np.ndarray | float,
        device_speed: np.ndarray | float,
        edge_load: np.ndarray | float,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Predicted (latency_ms, energy_mj), each (requests, actions), from the cost model."""
        def column(value: np.ndarray | float) -> np.ndarray:
            return np.atleast_1d(np.asarray(value, dtype=np.float64))[:, None]

        return self._cost(column(throughput_mbps), column(rtt_ms), column(device_speed), column(edge_load))

    def _cost(self, throughput_mbps: np.ndarray | float, rtt_ms: np.ndarray | float,
              device_speed: np.ndarray | float, edge_load: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
        return action_cost(
            device_ms=self.device_ms, edge_ms=self.edge_ms, megabits=self.megabits, offloaded=self.offloaded,
            transmit_ms=transmit_ms(self.megabits, throughput_mbps), rtt_ms=rtt_ms, device_speed=device_speed,
            edge_load=edge_load, device_power_mw=self.device_power_mw,
            radio_alpha_mw_per_mbps=self.radio_alpha_mw_per_mbps, radio_beta_mw=self.radio_beta_mw,
        )

    def predicted_rewards(
        self,
        objective: Objective,
        *,
        throughput_mbps: np.ndarray | float,
        rtt_ms: np.ndarray | float,
        device_speed: np.ndarray | float,
        edge_load: np.ndarray | float,
        deadline_ms: np.ndarray | float,
        power_budget_mw: np.ndarray | float,
    ) -> np.ndarray:
        """Every action's reward under ``objective`` as predicted, (requests, actions)."""
        latency, energy = self.predict(
            throughput_mbps=throughput_mbps, rtt_ms=rtt_ms, device_speed=device_speed, edge_load=edge_load
        )
        deadline = np.atleast_1d(np.asarray(deadline_ms, dtype=np.float64))[:, None]
        budget = np.atleast_1d(np.asarray(power_budget_mw, dtype=np.float64))[:, None] * deadline / 1000.0
        accuracy = np.broadcast_to(self.accuracy, latency.shape)
        return objective.reward(latency_ms=latency, energy_mj=energy, correct=accuracy, exit_accuracy=accuracy,
                                deadline_ms=deadline, energy_budget_mj=budget)

    def predicted_rewards_one(
        self,
        objective: Objective,
        *,
        throughput_mbps: float,
        rtt_ms: float,
        device_speed: float,
        edge_load: float,
        deadline_ms: float,
        power_budget_mw: float,
    ) -> np.ndarray:
        """:meth:`predicted_rewards` for one context, in a few microseconds (the device's path)."""
        latency, energy = self._cost(throughput_mbps, rtt_ms, device_speed, edge_load)
        return objective.reward(latency_ms=latency, energy_mj=energy, correct=self.accuracy,
                                exit_accuracy=self.accuracy, deadline_ms=float(deadline_ms),
                                energy_budget_mj=power_budget_mw * deadline_ms / 1000.0)

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {k: [float(v) for v in getattr(self, k)] for k in _FIELDS}
        doc.update(device_power_mw=self.device_power_mw, radio_alpha_mw_per_mbps=self.radio_alpha_mw_per_mbps,
                   radio_beta_mw=self.radio_beta_mw, device_segment_ms=list(self.device_segment_ms))
        return doc

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> PlanningModel:
        try:
            arrays = {k: np.asarray(doc[k], dtype=np.float64) for k in _FIELDS}
            scalars = {k: float(doc[k]) for k in ("device_power_mw", "radio_alpha_mw_per_mbps", "radio_beta_mw")}
            segment_ms = tuple(float(v) for v in doc.get("device_segment_ms", ()))
        except (KeyError, TypeError, ValueError) as e:
            raise PolicyError(f"malformed planning model: {e}") from e
        shapes = {a.shape for a in arrays.values()}
        if len(shapes) != 1 or len(next(iter(shapes))) != 1 or not all(np.all(np.isfinite(a)) for a in arrays.values()):
            raise PolicyError("malformed planning model: per-action lists must be finite and of equal length")
        if not all(math.isfinite(v) and v >= 0 for v in segment_ms):
            raise PolicyError("malformed planning model: device_segment_ms must be non-negative numbers")
        return cls(**arrays, **scalars, device_segment_ms=segment_ms)  # type: ignore[arg-type]


def policy_feature_names(simulator: Simulator) -> list[str]:
    """Names of a learned policy's inputs: the context features, then each action's predicted reward."""
    from .simulator import OBSERVATION_FEATURES

    return [*OBSERVATION_FEATURES, *(f"predicted_reward:{label}" for label in simulator.action_labels())]


def policy_observations(simulator: Simulator, episode: Episode, objective: Objective) -> np.ndarray:
    """A learned policy's inputs for every request of ``episode``, float32 (requests, features)."""
    predicted = simulator.rewards(episode, simulator.predicted(episode), objective)
    return np.concatenate([episode.observations(), predicted.astype(np.float32)], axis=1)
