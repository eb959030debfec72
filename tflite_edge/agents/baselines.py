"""Baseline policies and the oracle.

Every policy turns an episode into one action index per request with
``decide(simulator, episode, objective)``. Non-learning policies decide a whole episode at
once (vectorised); online learners go request by request and learn only from the reward of
the action they took, as a device would.

``device-only``   the final exit, all segments on the device.
``edge-only``     the final exit, the raw input sent to the edge (K = 0).
``best-static``   the single action with the best mean reward over the evaluation episodes,
                  chosen in hindsight (``prepare`` sees every episode first).
``neurosurgeon``  Kang et al., ASPLOS 2017: the final exit and the partition with the least
                  predicted latency (least predicted energy under the energy objective),
                  predicted from the profile and the current throughput estimate.
``edgent``        Li et al., 2018/2019: from the most accurate exit down, the first exit
                  whose latency-minimal partition is predicted to meet the deadline (the
                  fastest action when none does).
``planner``       the action with the best objective reward predicted from the observed
                  context (a certainty-equivalent planner: Edgent's search generalised to
                  every objective).
``linucb``        an online contextual bandit in the spirit of ANS (Zhang et al., "Autodidactic
                  Neurosurgeon", WWW 2021): disjoint LinUCB over all actions, learning across
                  episodes from its own rewards only.
``oracle``        knows the true throughput during each transfer (and every other hidden
                  quantity): the best action per request in hindsight. The upper bound.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from ..errors import PolicyError
from .objectives import Objective
from .simulator import OBSERVATION_FEATURES, Episode, Simulator

__all__ = [
    "BASELINES",
    "BestStatic",
    "DeviceOnly",
    "EdgeOnly",
    "Edgent",
    "LinUCB",
    "Neurosurgeon",
    "Oracle",
    "Planner",
    "Policy",
    "best_actions",
    "make_policy",
]


class Policy:
    """Base class: a named rule that picks one action per request of an episode."""

    name = "policy"

    def prepare(self, simulator: Simulator, episodes: Sequence[Episode], objective: Objective) -> None:
        """Called once with every evaluation episode before any ``decide`` (hindsight baselines use it)."""

    def decide(self, simulator: Simulator, episode: Episode, objective: Objective) -> np.ndarray:
        raise NotImplementedError


class DeviceOnly(Policy):
    name = "device-only"

    def decide(self, simulator: Simulator, episode: Episode, objective: Objective) -> np.ndarray:
        return np.full(len(episode), simulator.local_action)


class EdgeOnly(Policy):
    name = "edge-only"

    def decide(self, simulator: Simulator, episode: Episode, objective: Objective) -> np.ndarray:
        return np.full(len(episode), simulator.remote_action)


class BestStatic(Policy):
    name = "best-static"

    def __init__(self) -> None:
        self.action: int | None = None

    def prepare(self, simulator: Simulator, episodes: Sequence[Episode], objective: Objective) -> None:
        total = np.zeros(len(simulator.actions))
        count = 0
        for episode in episodes:
            rewards = simulator.rewards(episode, simulator.outcomes(episode), objective)
            total += rewards.sum(axis=0)
            count += len(episode)
        self.action = int(np.argmax(total / max(count, 1)))

    def decide(self, simulator: Simulator, episode: Episode, objective: Objective) -> np.ndarray:
        if self.action is None:
            self.prepare(simulator, [episode], objective)
        return np.full(len(episode), self.action)


def _plain_actions(simulator: Simulator, exit_index: int | None = None) -> np.ndarray:
    """Indices of actions without an early-exit threshold (optionally for one exit)."""
    return np.array(
        [
            i for i, a in enumerate(simulator.actions)
            if a.threshold is None and (exit_index is None or a.exit == exit_index)
        ]
    )


class Neurosurgeon(Policy):
    name = "neurosurgeon"

    def decide(self, simulator: Simulator, episode: Episode, objective: Objective) -> np.ndarray:
        final = simulator.actions[simulator.local_action].exit
        candidates = _plain_actions(simulator, final)
        predicted = simulator.predicted(episode)
        cost = predicted.energy_mj if objective.name == "energy" else predicted.latency_ms
        return candidates[np.argmin(cost[:, candidates], axis=1)]


class Edgent(Policy):
    name = "edgent"

    def decide(self, simulator: Simulator, episode: Episode, objective: Objective) -> np.ndarray:
        latency = simulator.predicted(episode).latency_ms
        accuracy = list(simulator.exit_accuracy)
        order = sorted(range(len(accuracy)), key=lambda e: -accuracy[e])
        everything = _plain_actions(simulator)
        choice = everything[np.argmin(latency[:, everything], axis=1)]
        decided = np.zeros(len(episode), dtype=bool)
        for exit_index in order:
            candidates = _plain_actions(simulator, exit_index)
            best = candidates[np.argmin(latency[:, candidates], axis=1)]
            meets = ~decided & (latency[np.arange(len(episode)), best] <= episode.deadline_ms)
            choice[meets] = best[meets]
            decided |= meets
        return choice


def best_actions(rewards: np.ndarray, latency_ms: np.ndarray) -> np.ndarray:
    """Per row, the highest-reward action; ties (e.g. every action misses) go to the fastest."""
    top = rewards.max(axis=1, keepdims=True)
    return np.argmin(np.where(rewards >= top - 1e-12, latency_ms, np.inf), axis=1)


class Planner(Policy):
    name = "planner"

    def decide(self, simulator: Simulator, episode: Episode, objective: Objective) -> np.ndarray:
        predicted = simulator.predicted(episode)
        return best_actions(simulator.rewards(episode, predicted, objective), predicted.latency_ms)


class Oracle(Policy):
    name = "oracle"

    def decide(self, simulator: Simulator, episode: Episode, objective: Objective) -> np.ndarray:
        outcomes = simulator.outcomes(episode)
        return best_actions(simulator.rewards(episode, outcomes, objective), outcomes.latency_ms)


class LinUCB(Policy):
    """Disjoint LinUCB (Li et al., WWW 2010) over the simulator's actions, numpy only."""

    name = "linucb"

    def __init__(self, *, alpha: float = 0.5, ridge: float = 1.0, seed: int = 0) -> None:
        if alpha < 0 or ridge <= 0:
            raise PolicyError("LinUCB needs alpha >= 0 and ridge > 0")
        self.alpha = alpha
        self.ridge = ridge
        self.seed = seed
        self._a_inv: np.ndarray | None = None
        self._b: np.ndarray | None = None

    def _init(self, arms: int) -> None:
        d = len(OBSERVATION_FEATURES)
        self._a_inv = np.repeat(np.eye(d)[None] / self.ridge, arms, axis=0)
        self._b = np.zeros((arms, d))

    def select(self, x: np.ndarray) -> int:
        """The arm with the highest upper confidence bound for features ``x``."""
        assert self._a_inv is not None and self._b is not None
        theta = np.einsum("aij,aj->ai", self._a_inv, self._b)
        width = np.sqrt(np.maximum(np.einsum("i,aij,j->a", x, self._a_inv, x), 0.0))
        return int(np.argmax(theta @ x + self.alpha * width))

    def update(self, arm: int, x: np.ndarray, reward: float) -> None:
        """Sherman-Morrison update of arm ``arm`` with one observed reward."""
        assert self._a_inv is not None and self._b is not None
        a_inv = self._a_inv[arm]
        ax = a_inv @ x
        self._a_inv[arm] = a_inv - np.outer(ax, ax) / (1.0 + x @ ax)
        self._b[arm] += reward * x

    def decide(self, simulator: Simulator, episode: Episode, objective: Objective) -> np.ndarray:
        if self._a_inv is None or self._a_inv.shape[0] != len(simulator.actions):
            self._init(len(simulator.actions))
        rewards = simulator.rewards(episode, simulator.outcomes(episode), objective)
        features = episode.observations().astype(np.float64)
        chosen = np.empty(len(episode), dtype=np.int64)
        for i, x in enumerate(features):
            arm = self.select(x)
            self.update(arm, x, float(rewards[i, arm]))
            chosen[i] = arm
        return chosen


BASELINES: dict[str, Callable[[], Policy]] = {
    "device-only": DeviceOnly,
    "edge-only": EdgeOnly,
    "best-static": BestStatic,
    "neurosurgeon": Neurosurgeon,
    "edgent": Edgent,
    "planner": Planner,
    "linucb": LinUCB,
    "oracle": Oracle,
}


def make_policy(name: str) -> Policy:
    """A fresh baseline policy by name (see :data:`BASELINES`)."""
    try:
        return BASELINES[name]()
    except KeyError:
        raise PolicyError(f"unknown policy {name!r}; choose one of {', '.join(BASELINES)}") from None
