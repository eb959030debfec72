"""Baselines, the oracle and the comparison table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tflite_edge.agents.baselines import BASELINES, BestStatic, LinUCB, make_policy
from tflite_edge.agents.evaluate import compare, episodes_for, format_table
from tflite_edge.agents.objectives import Objective
from tflite_edge.agents.profiles import LatencyProfile
from tflite_edge.agents.simulator import Simulator
from tflite_edge.agents.traces import load_traces, markov_trace
from tflite_edge.bundle.manifest import Manifest
from tflite_edge.errors import PolicyError

OBJECTIVES = ("accuracy", "energy", "latency", "edgeml")


@pytest.fixture
def sim(mobilenet_like: tuple[Manifest, LatencyProfile]) -> Simulator:
    return Simulator(*mobilenet_like)


@pytest.fixture
def traces() -> list:  # type: ignore[type-arg]
    return [markov_trace(seed=i, duration_s=120) for i in range(4)]


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_oracle_bounds_every_policy(sim: Simulator, traces: list, objective: str) -> None:  # type: ignore[type-arg]
    results = {r.policy: r for r in compare(sim, traces, Objective(objective), seed=1)}
    assert set(results) == set(BASELINES)
    oracle = results["oracle"].mean_reward
    for name, result in results.items():
        assert result.mean_reward <= oracle + 1e-9, name
        assert result.requests == sum(int(t.duration_s / 0.5) for t in traces)
        assert abs(sum(result.action_mix.values()) - 1.0) < 1e-3
    # Best static in hindsight is at least as good as either fixed placement.
    assert results["best-static"].mean_reward >= max(results["device-only"].mean_reward,
                                                     results["edge-only"].mean_reward) - 1e-9


def test_fixed_placements(sim: Simulator, traces: list) -> None:  # type: ignore[type-arg]
    results = {r.policy: r for r in compare(sim, traces, Objective("accuracy"), ["device-only", "edge-only"])}
    assert results["device-only"].offload_rate == 0.0 and results["edge-only"].offload_rate == 1.0
    assert results["device-only"].action_mix == {"exit_2/local": 1.0}
    assert results["device-only"].accuracy == pytest.approx(0.90)


def test_neurosurgeon_and_edgent_follow_their_rules(sim: Simulator, traces: list) -> None:  # type: ignore[type-arg]
    objective = Objective("accuracy")
    episode = episodes_for(sim, traces[:1], seed=2)[0]
    predicted = sim.predicted(episode).latency_ms
    ns = make_policy("neurosurgeon").decide(sim, episode, objective)
    assert all(sim.actions[a].exit == 2 for a in ns)
    final = [i for i, a in enumerate(sim.actions) if a.exit == 2]
    np.testing.assert_allclose(predicted[np.arange(len(episode)), ns], predicted[:, final].min(axis=1))
    ed = make_policy("edgent").decide(sim, episode, objective)
    chosen_latency = predicted[np.arange(len(episode)), ed]
    chosen_exit = np.array([sim.actions[a].exit for a in ed])
    feasible = chosen_latency <= episode.deadline_ms
    # Wherever the final exit could meet the deadline (as predicted), Edgent takes it.
    final_ok = predicted[:, final].min(axis=1) <= episode.deadline_ms
    assert np.all(chosen_exit[final_ok] == 2)
    # Where nothing is predicted to meet the deadline, it takes the fastest action.
    none_ok = predicted.min(axis=1) > episode.deadline_ms
    np.testing.assert_allclose(chosen_latency[none_ok], predicted[none_ok].min(axis=1))
    assert feasible[~none_ok].all()


def test_best_static_is_the_hindsight_argmax(sim: Simulator, traces: list) -> None:  # type: ignore[type-arg]
    objective = Objective("latency")
    episodes = episodes_for(sim, traces, seed=0)
    policy = BestStatic()
    policy.prepare(sim, episodes, objective)
    means = [np.mean(np.concatenate([sim.rewards(e, sim.outcomes(e), objective)[:, a] for e in episodes]))
             for a in range(len(sim.actions))]
    assert policy.action == int(np.argmax(means))


def test_linucb_learns_the_better_arm() -> None:
    # Two arms; arm 1 pays 1 when feature 0 is positive, arm 0 otherwise.
    bandit = LinUCB(alpha=0.3)
    bandit._init(2)
    rng = np.random.default_rng(0)
    hits = []
    for _ in range(600):
        x = np.zeros(8)
        x[0], x[-1] = rng.choice((-1.0, 1.0)), 1.0
        arm = bandit.select(x)
        best = int(x[0] > 0)
        bandit.update(arm, x, float(arm == best))
        hits.append(arm == best)
    assert np.mean(hits[-200:]) > 0.95


def test_table_and_unknown_policy(sim: Simulator, traces: list) -> None:  # type: ignore[type-arg]
    table = format_table(compare(sim, traces[:1], Objective("accuracy"), ["oracle", "edgent"]))
    lines = table.splitlines()
    assert lines[0].split()[:3] == ["policy", "reward", "accuracy"]
    assert lines[2].startswith("oracle") and lines[3].startswith("edgent")
    with pytest.raises(PolicyError, match="unknown policy"):
        make_policy("random-forest")


def test_compare_is_reproducible(sim: Simulator, traces: list) -> None:  # type: ignore[type-arg]
    a = compare(sim, traces, Objective("edgeml"), ["linucb", "oracle"], seed=5)
    b = compare(sim, traces, Objective("edgeml"), ["linucb", "oracle"], seed=5)
    assert [r.to_dict() for r in a] == [r.to_dict() for r in b]


def test_on_real_traces(sim: Simulator, norway_dir: Path) -> None:
    traces = load_traces(norway_dir)[:10]
    results = {r.policy: r for r in compare(sim, traces, Objective("accuracy"))}
    assert results["oracle"].mean_reward >= max(r.mean_reward for r in results.values()) - 1e-9
    assert results["oracle"].deadline_miss_rate < results["device-only"].deadline_miss_rate
