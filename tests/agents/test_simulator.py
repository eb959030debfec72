"""The simulator core: hand-computed outcomes, determinism, objectives, profiles."""

from __future__ import annotations

import numpy as np
import pytest

from tflite_edge.agents.objectives import Objective
from tflite_edge.agents.profiles import LatencyProfile, Platform, edgent_rpi3_slowdown, load_profile
from tflite_edge.agents.radio import get_radio
from tflite_edge.agents.simulator import Action, ExitSamples, Scenario, Simulator
from tflite_edge.agents.traces import Trace, markov_trace
from tflite_edge.bundle.manifest import Manifest
from tflite_edge.errors import PolicyError, ProfileError

CONSTANT = Trace("flat", np.array([0.0, 1.0]), np.array([2.0, 2.0]), 2.0)  # 2 Mbit/s forever


def fixed_scenario(**changes: object) -> Scenario:
    base = dict(rtt_ms=(50.0, 50.0), rtt_jitter_ms=0.0, deadline_ms=(500.0,), power_budget_mw=(2000.0, 2000.0),
                device_speed=(1.0, 1.0), edge_load=(0.5, 0.5), throttle_probability=0.0, load_burst_probability=0.0,
                budget_drop_probability=0.0)
    base.update(changes)
    return Scenario(**base)  # type: ignore[arg-type]


def make_sim(pair: tuple[Manifest, LatencyProfile], **kwargs: object) -> Simulator:
    manifest, profile = pair
    device = Platform("dev", 10.0, 1000.0)
    edge = Platform("edge", 1.0, 0.0)
    kwargs.setdefault("scenario", fixed_scenario())
    return Simulator(manifest, profile, device=device, edge=edge, radio="3g", **kwargs)  # type: ignore[arg-type]


def test_action_set(mobilenet_like: tuple[Manifest, LatencyProfile]) -> None:
    sim = make_sim(mobilenet_like)
    assert sim.action_labels() == [
        "exit_0/K0", "exit_0/local", "exit_1/K0", "exit_1/K1", "exit_1/local",
        "exit_2/K0", "exit_2/K1", "exit_2/K2", "exit_2/local",
    ]
    assert sim.actions[sim.local_action] == Action(2, 3)
    assert sim.actions[sim.remote_action] == Action(2, 0)


def test_outcomes_match_hand_computation(mobilenet_like: tuple[Manifest, LatencyProfile]) -> None:
    sim = make_sim(mobilenet_like)
    episode = sim.episode(CONSTANT, seed=0, requests=4)
    out = sim.outcomes(episode)
    k1 = sim.action_labels().index("exit_2/K1")
    # Device runs segment 0 (4.0 ms x 10); 25,088 bytes at 2 Mbit/s = 100.352 ms; RTT 50;
    # the edge runs segments 1-2 (5.8 ms) at load 0.5 -> 11.6 ms.
    np.testing.assert_allclose(out.latency_ms[:, k1], 40.0 + 100.352 + 50.0 + 11.6)
    radio = get_radio("3g")
    energy = 1000.0 * 40.0 / 1000 + radio.alpha_mw_per_mbps * 25_088 * 8e-6 + radio.beta_mw * 100.352 / 1000
    np.testing.assert_allclose(out.energy_mj[:, k1], energy)
    local = sim.local_action
    np.testing.assert_allclose(out.latency_ms[:, local], 98.0)
    np.testing.assert_allclose(out.energy_mj[:, local], 98.0)
    assert not out.offloaded[:, local].any() and out.offloaded[:, k1].all()
    np.testing.assert_allclose(out.correct[:, k1], 0.90)
    raw = sim.action_labels().index("exit_0/K0")  # 150,528 bytes raw input, edge runs segment 0 only
    np.testing.assert_allclose(out.latency_ms[:, raw], 150_528 * 8e-6 / 2 * 1000 + 50 + 8.0)


def test_episodes_are_deterministic(mobilenet_like: tuple[Manifest, LatencyProfile]) -> None:
    manifest, profile = mobilenet_like
    sim = Simulator(manifest, profile)
    trace = markov_trace(seed=1, duration_s=60)
    a, b, c = sim.episode(trace, seed=7), sim.episode(trace, seed=7), sim.episode(trace, seed=8)
    np.testing.assert_array_equal(a.observations(), b.observations())
    np.testing.assert_array_equal(sim.outcomes(a).latency_ms, sim.outcomes(b).latency_ms)
    assert not np.array_equal(a.observations(), c.observations())
    assert len(a) == 120  # 60 s at one request every 0.5 s
    # The walk stays in its range; a throttling period slows it by 0.25..0.6, a burst loads the edge to 0.95.
    assert np.all((a.device_speed >= 0.6 * 0.25) & (a.device_speed <= 1.0))
    assert np.all((a.edge_load >= 0.0) & (a.edge_load <= 0.95))
    assert set(np.unique(a.deadline_ms)) <= {f * sim.reference_ms for f in (0.5, 1.0, 2.0)}


def test_prediction_misses_a_bandwidth_drop(mobilenet_like: tuple[Manifest, LatencyProfile]) -> None:
    # 8 Mbit/s for 10 s, then 0.25 Mbit/s: a request just before the drop is mispredicted.
    trace = Trace("drop", np.array([0.0, 10.0]), np.array([8.0, 0.25]), 20.0)
    sim = make_sim(mobilenet_like, scenario=fixed_scenario(request_interval_s=0.05, estimate_window_s=2.0))
    episode = sim.episode(trace, seed=0, requests=400)
    raw = sim.remote_action
    true, predicted = sim.outcomes(episode).latency_ms[:, raw], sim.predicted(episode).latency_ms[:, raw]
    # Raw input: 1.2 Mbit, 150 ms at 8 Mbit/s; started in the last 100 ms before the drop it
    # runs into the slow period, which the throughput estimate has not seen yet.
    before_drop = (episode.t_s % 20 > 9.9) & (episode.t_s % 20 < 10.0)
    steady = (episode.t_s % 20 > 3.0) & (episode.t_s % 20 < 9.0)
    assert before_drop.any() and steady.any()
    assert np.all(true[before_drop] > predicted[before_drop] * 2)
    np.testing.assert_allclose(true[steady], predicted[steady])


def test_objectives() -> None:
    kw = dict(
        latency_ms=np.array([100.0, 300.0, 100.0]),
        energy_mj=np.array([50.0, 50.0, 500.0]),
        correct=np.array([1.0, 1.0, 0.8]),
        exit_accuracy=np.array([0.9, 0.9, 0.6]),
        deadline_ms=np.array([200.0, 200.0, 200.0]),
        energy_budget_mj=np.array([100.0, 100.0, 100.0]),
    )
    np.testing.assert_allclose(Objective("accuracy").reward(**kw), [1.0, 0.0, 0.8])
    np.testing.assert_allclose(Objective("accuracy", miss_penalty=0.5).reward(**kw), [1.0, -0.5, 0.8])
    np.testing.assert_allclose(Objective("latency").reward(**kw), [-0.5, -1.5, -0.5])
    np.testing.assert_allclose(Objective("energy", accuracy_floor=0.7).reward(**kw), [0.5, -1.0, -1.0])
    np.testing.assert_allclose(Objective("edgeml").reward(**kw), [1.0, 0.0, 0.0])
    with pytest.raises(PolicyError, match="unknown objective"):
        Objective("speed")


def test_thresholds_use_per_sample_confidence(tiny: tuple[Manifest, LatencyProfile]) -> None:
    manifest, profile = tiny
    # Sample 0 is confident at exit 0 (and right there); sample 1 is not (and only exit 2 is right).
    samples = ExitSamples(np.array([[1, 1, 1], [0, 0, 1]], dtype=bool), np.array([[0.95, 0.9, 0.99], [0.3, 0.5, 0.9]]))
    sim = Simulator(manifest, profile, scenario=fixed_scenario(), samples=samples, thresholds=(0.8,),
                    device=Platform("dev", 10.0, 1000.0), edge=Platform("edge", 1.0, 0.0))
    labels = sim.action_labels()
    assert "exit_2/local@0.8" in labels and "exit_0/local@0.8" not in labels
    episode = sim.episode(CONSTANT, seed=3, requests=50)
    out = sim.outcomes(episode)
    early = labels.index("exit_2/local@0.8")
    confident = episode.sample_index == 0
    assert confident.any() and (~confident).any()
    np.testing.assert_array_equal(out.exit_taken[:, early], np.where(confident, 0, 2))
    np.testing.assert_allclose(out.latency_ms[confident, early], 0.5)  # segment 0 only, 0.05 ms x 10
    np.testing.assert_allclose(out.latency_ms[~confident, early], 1.2)
    np.testing.assert_array_equal(out.correct[:, early], 1.0)
    # The same threshold with the cut before segment 1: confident samples never transmit.
    split = labels.index("exit_2/K1@0.8")
    assert not out.offloaded[confident, split].any() and out.offloaded[~confident, split].all()
    with pytest.raises(PolicyError, match="per-sample"):
        Simulator(manifest, profile, thresholds=(0.5,))


def test_profiles(tmp_path, mobilenet_like: tuple[Manifest, LatencyProfile]) -> None:  # type: ignore[no-untyped-def]
    manifest, _ = mobilenet_like
    doc = {"segments": [{"index": 1, "median_ms": 2.0}, {"index": 0, "median_ms": 1.0}, {"index": 2, "median_ms": 3.0}],
           "cuts": [{"activation_bytes": 25_088}, {"activation_bytes": 18_816}], "extra": True}
    assert LatencyProfile.from_dict(doc, manifest).segment_ms == (1.0, 2.0, 3.0)
    with pytest.raises(ProfileError, match="another bundle"):
        LatencyProfile.from_dict({**doc, "cuts": [{"activation_bytes": 1}]}, manifest)
    with pytest.raises(ProfileError, match="2 segment latencies"):
        LatencyProfile.from_dict({"segments": doc["segments"][1:2] + doc["segments"][:1]}, manifest)
    with pytest.raises(ProfileError, match="median_ms"):
        LatencyProfile.from_dict({"segments": [{"index": 0}]})
    (tmp_path / "p.json").write_text("{not json")
    with pytest.raises(ProfileError, match="cannot read"):
        load_profile(tmp_path / "p.json")
    # Edgent's Pi 3 / desktop convolution regressions at MobileNetV2's first layer.
    assert 90 < edgent_rpi3_slowdown() < 110


def test_planning_model_on_a_steady_link(mobilenet_like: tuple[Manifest, LatencyProfile]) -> None:
    from tflite_edge.agents.planning import PlanningModel, policy_observations

    sim = make_sim(mobilenet_like, scenario=fixed_scenario(device_speed=(0.7, 0.7), edge_load=(0.3, 0.3)))
    episode = sim.episode(CONSTANT, seed=0, requests=10)
    true, predicted = sim.outcomes(episode), sim.predicted(episode)
    # Steady 2 Mbit/s, constant RTT: the estimate is right, so prediction equals the truth.
    np.testing.assert_allclose(predicted.latency_ms, true.latency_ms)
    np.testing.assert_allclose(predicted.energy_mj, true.energy_mj)
    np.testing.assert_array_equal(predicted.offloaded, true.offloaded)
    # It survives policy.json, and a device computes the same features from it.
    model = PlanningModel.from_dict(sim.planning_model.to_dict())
    objective = Objective("edgeml")
    rewards = model.predicted_rewards(
        objective, throughput_mbps=episode.est_mbps, rtt_ms=episode.rtt_est_ms, device_speed=episode.device_speed,
        edge_load=episode.edge_load, deadline_ms=episode.deadline_ms, power_budget_mw=episode.power_budget_mw,
    )
    features = policy_observations(sim, episode, objective)
    assert features.shape == (10, 8 + len(sim.actions))
    np.testing.assert_allclose(features[:, 8:], rewards, rtol=1e-6)
    with pytest.raises(PolicyError, match="malformed planning model"):
        PlanningModel.from_dict({**sim.planning_model.to_dict(), "edge_ms": [1.0]})
