"""The simulator as a TF-Agents ``PyEnvironment`` (wrapping :class:`~.env.CoInferenceEnv`).

Importing this module does not import TensorFlow; :func:`make_py_environment` does,
through the TF-Agents import path that sets ``TF_USE_LEGACY_KERAS=1`` first.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .env import CoInferenceEnv
from .training import import_tf_agents

__all__ = ["make_py_environment"]


def make_py_environment(env: CoInferenceEnv) -> Any:
    """A TF-Agents ``PyEnvironment`` over ``env``: one episode per trace, one step per request.

    Observations are float32 vectors (``env.observation_space.shape``), actions int32
    scalars in ``[0, env.action_space.n)``; the discount is 1 within an episode.
    """
    import_tf_agents()
    from tf_agents.environments import py_environment
    from tf_agents.specs import array_spec
    from tf_agents.trajectories import time_step as ts

    class CoInferencePyEnvironment(py_environment.PyEnvironment):  # type: ignore[misc]
        def __init__(self, inner: CoInferenceEnv) -> None:
            super().__init__(handle_auto_reset=True)  # a step after the last one starts a new episode
            self.inner = inner
            self._observation_spec = array_spec.ArraySpec(inner.observation_space.shape, np.float32, "observation")
            self._action_spec = array_spec.BoundedArraySpec((), np.int32, 0, inner.action_space.n - 1, "action")

        def observation_spec(self) -> Any:
            return self._observation_spec

        def action_spec(self) -> Any:
            return self._action_spec

        def _reset(self) -> Any:
            observation, _ = self.inner.reset()
            return ts.restart(observation)

        def _step(self, action: Any) -> Any:
            observation, reward, terminated, _, _ = self.inner.step(int(action))
            if terminated:
                return ts.termination(observation, np.float32(reward))
            return ts.transition(observation, np.float32(reward), discount=np.float32(1.0))

    return CoInferencePyEnvironment(env)
