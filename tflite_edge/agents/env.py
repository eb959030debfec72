"""A Gymnasium-style environment over the simulator (no gymnasium dependency).

The API has Gymnasium's shape: ``reset(seed=None, options=None) -> (observation, info)`` and
``step(action) -> (observation, reward, terminated, truncated, info)``, with
``observation_space`` (a box of float32 features, see ``OBSERVATION_FEATURES``) and
``action_space`` (a discrete space over ``Simulator.actions``). One episode is one pass
of requests over one trace; each step is one request. Outcomes are evaluated for the whole
episode at reset (vectorised), so a step is a table lookup. ``features="policy"`` appends
every action's predicted reward to the context, as the learned policy sees it.
:func:`tflite_edge.agents.tf_env.make_py_environment` wraps it for TF-Agents.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import PolicyError
from .objectives import Objective
from .planning import policy_observations
from .simulator import OBSERVATION_FEATURES, Episode, Simulator
from .traces import Trace

__all__ = ["Box", "CoInferenceEnv", "Discrete"]


@dataclass(frozen=True)
class Discrete:
    """Actions ``0 .. n-1``."""

    n: int

    def sample(self, rng: np.random.Generator) -> int:
        return int(rng.integers(self.n))

    def contains(self, x: object) -> bool:
        return isinstance(x, (int, np.integer)) and 0 <= int(x) < self.n


@dataclass(frozen=True)
class Box:
    """Real vectors of ``shape``; bounds are informative (features are unbounded in principle)."""

    shape: tuple[int, ...]
    dtype: type = np.float32
    low: float = -np.inf
    high: float = np.inf

    def contains(self, x: object) -> bool:
        return isinstance(x, np.ndarray) and x.shape == self.shape


class CoInferenceEnv:
    """Per-request exit/partition decisions over bandwidth traces, Gymnasium style."""

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(
        self,
        simulator: Simulator,
        traces: Sequence[Trace],
        objective: Objective,
        *,
        requests_per_episode: int | None = None,
        seed: int = 0,
        features: str = "context",
    ) -> None:
        if not traces:
            raise PolicyError("the environment needs at least one trace")
        if features not in ("context", "policy"):
            raise PolicyError("features must be 'context' (the context alone) or 'policy' (plus predicted rewards)")
        self.features = features
        self.simulator = simulator
        self.traces = list(traces)
        self.objective = objective
        self.requests_per_episode = requests_per_episode
        self.action_space = Discrete(len(simulator.actions))
        width = len(OBSERVATION_FEATURES) + (len(simulator.actions) if features == "policy" else 0)
        self.observation_space = Box((width,))
        self._observations = np.zeros((0, width), dtype=np.float32)
        self._rng = np.random.default_rng(seed)
        self._episode: Episode | None = None
        self._rewards = np.zeros((0, 0))
        self._step = 0

    @property
    def episode(self) -> Episode:
        if self._episode is None:
            raise PolicyError("call reset() before step()")
        return self._episode

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start an episode on a random trace (or ``options["trace"]``, an index)."""
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        index = int(self._rng.integers(len(self.traces)))
        if options and "trace" in options:
            index = int(options["trace"])
        episode_seed = int(self._rng.integers(2**31))
        self._episode = self.simulator.episode(
            self.traces[index], seed=episode_seed, requests=self.requests_per_episode
        )
        outcomes = self.simulator.outcomes(self._episode)
        self._rewards = self.simulator.rewards(self._episode, outcomes, self.objective)
        if self.features == "policy":
            self._observations = policy_observations(self.simulator, self._episode, self.objective)
        else:
            self._observations = self._episode.observations()
        self._step = 0
        return self._observations[0], {"trace": self.traces[index].name, "seed": episode_seed}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Serve the current request with ``action``; returns the next request's observation."""
        episode = self.episode
        if self._step >= len(episode):
            raise PolicyError("the episode has ended; call reset()")
        if not self.action_space.contains(action):
            raise PolicyError(f"action {action!r} is not in [0, {self.action_space.n})")
        i, a = self._step, int(action)
        outcomes = self.simulator.outcomes(episode)
        reward = float(self._rewards[i, a])
        info = {
            "latency_ms": float(outcomes.latency_ms[i, a]),
            "energy_mj": float(outcomes.energy_mj[i, a]),
            "correct": float(outcomes.correct[i, a]),
            "deadline_ms": float(episode.deadline_ms[i]),
            "oracle_reward": float(self._rewards[i].max()),
        }
        self._step += 1
        terminated = self._step >= len(episode)
        observation = self._observations[min(self._step, len(episode) - 1)]
        return observation, reward, terminated, False, info
