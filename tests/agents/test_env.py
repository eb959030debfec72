"""The Gymnasium-style environment."""

from __future__ import annotations

import numpy as np
import pytest

from tflite_edge.agents.env import CoInferenceEnv
from tflite_edge.agents.objectives import Objective
from tflite_edge.agents.profiles import LatencyProfile
from tflite_edge.agents.simulator import OBSERVATION_FEATURES, Simulator
from tflite_edge.agents.traces import markov_trace
from tflite_edge.bundle.manifest import Manifest
from tflite_edge.errors import PolicyError


def make_env(pair: tuple[Manifest, LatencyProfile], seed: int = 0) -> CoInferenceEnv:
    traces = [markov_trace(seed=i, duration_s=30) for i in range(3)]
    return CoInferenceEnv(Simulator(*pair), traces, Objective("accuracy"), seed=seed)


def test_reset_step_api(mobilenet_like: tuple[Manifest, LatencyProfile]) -> None:
    env = make_env(mobilenet_like)
    obs, info = env.reset(seed=4)
    assert obs.shape == (len(OBSERVATION_FEATURES),) and obs.dtype == np.float32
    assert env.observation_space.contains(obs) and info["trace"].startswith("markov-")
    steps, total, terminated = 0, 0.0, False
    while not terminated:
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample(np.random.default_rng(steps)))
        assert not truncated and reward <= info["oracle_reward"]
        total += reward
        steps += 1
    assert steps == 60
    with pytest.raises(PolicyError, match="reset"):
        env.step(0)
    with pytest.raises(PolicyError, match="not in"):
        env.reset()
        env.step(env.action_space.n)


def test_same_seed_same_episode(mobilenet_like: tuple[Manifest, LatencyProfile]) -> None:
    def run(seed: int) -> list[float]:
        env = make_env(mobilenet_like)
        env.reset(seed=seed)
        return [env.step(i % env.action_space.n)[1] for i in range(20)]

    assert run(1) == run(1)
    assert run(1) != run(2)


def test_step_before_reset(mobilenet_like: tuple[Manifest, LatencyProfile]) -> None:
    with pytest.raises(PolicyError, match="reset"):
        make_env(mobilenet_like).step(0)


def test_policy_features(mobilenet_like: tuple[Manifest, LatencyProfile]) -> None:
    sim = Simulator(*mobilenet_like)
    env = CoInferenceEnv(sim, [markov_trace(seed=0, duration_s=10)], Objective("accuracy"), features="policy")
    obs, _ = env.reset(seed=0)
    assert obs.shape == env.observation_space.shape == (len(OBSERVATION_FEATURES) + len(sim.actions),)
    # The appended features are the planner's predicted rewards: its choice is their argmax.
    predicted = obs[len(OBSERVATION_FEATURES):]
    assert np.all((predicted >= 0) & (predicted <= 1))
    with pytest.raises(PolicyError, match="features"):
        CoInferenceEnv(sim, [markov_trace(seed=0, duration_s=10)], Objective("accuracy"), features="pixels")
