"""The one cost model: its formula, and every user of it agreeing with it."""

from __future__ import annotations

import numpy as np
import pytest

from tflite_edge.agents import Simulator
from tflite_edge.agents.cost import EDGE_LOAD_CAP, action_cost, edge_wait_factor, energy_mj, transmit_ms
from tflite_edge.agents.radio import get_radio, transmit_energy_mj


def test_edge_wait_factor_is_mm1_and_capped() -> None:
    assert edge_wait_factor(0.0) == pytest.approx(1.0)
    assert edge_wait_factor(0.5) == pytest.approx(2.0)
    assert edge_wait_factor(0.999) == pytest.approx(1 / (1 - EDGE_LOAD_CAP))
    assert edge_wait_factor(-1.0) == pytest.approx(1.0)


def test_action_cost_by_hand() -> None:
    radio = get_radio("3g")
    latency, energy = action_cost(
        device_ms=10.0, edge_ms=4.0, megabits=0.2, offloaded=1, transmit_ms=transmit_ms(0.2, 2.0), rtt_ms=30.0,
        device_speed=0.5, edge_load=0.5, device_power_mw=2000.0,
        radio_alpha_mw_per_mbps=radio.alpha_mw_per_mbps, radio_beta_mw=radio.beta_mw,
    )
    # 10 / 0.5 on the device, 0.2 Mbit at 2 Mbit/s = 100 ms, 30 ms RTT, 4 ms × 2 at half load.
    assert float(latency) == pytest.approx(20 + 100 + 30 + 8)
    assert float(energy) == pytest.approx(2.0 * 20 + radio.alpha_mw_per_mbps * 0.2 + radio.beta_mw * 0.1)
    local_latency, local_energy = action_cost(
        device_ms=10.0, edge_ms=4.0, megabits=0.2, offloaded=0, transmit_ms=100.0, rtt_ms=30.0, device_speed=1.0,
        edge_load=0.9, device_power_mw=2000.0, radio_alpha_mw_per_mbps=1.0, radio_beta_mw=1.0,
    )
    assert float(local_latency) == pytest.approx(10.0)
    assert float(local_energy) == pytest.approx(20.0)


def test_radio_energy_is_the_cost_models() -> None:
    radio = get_radio("lte")
    assert float(transmit_energy_mj(radio, 0.5, np.array(40.0))) == pytest.approx(float(energy_mj(
        device_ms=0.0, megabits=0.5, transmit_ms=40.0, device_power_mw=0.0,
        radio_alpha_mw_per_mbps=radio.alpha_mw_per_mbps, radio_beta_mw=radio.beta_mw)))


def test_partition_bytes(mobilenet_like) -> None:
    manifest, _ = mobilenet_like
    assert manifest.partition_bytes() == (150_528, 25_088, 18_816, 0)


def test_planner_prediction_equals_simulation_on_a_constant_link(mobilenet_like) -> None:
    """On a link of constant speed with a known RTT, the planning model predicts the simulated outcome."""
    from tflite_edge.agents.traces import Trace

    manifest, profile = mobilenet_like
    trace = Trace("flat", np.arange(0.0, 600.0, 1.0), np.full(600, 4.0), 600.0)
    sim = Simulator(manifest, profile, device="host").with_scenario(rtt_jitter_ms=0.0, estimate_window_s=1.0)
    episode = sim.episode(trace, seed=2, requests=50)
    true = sim.outcomes(episode)
    latency, energy = sim.planning_model.predict(
        throughput_mbps=np.full(len(episode), 4.0), rtt_ms=episode.rtt_ms, device_speed=episode.device_speed,
        edge_load=episode.edge_load)
    np.testing.assert_allclose(latency, true.latency_ms, rtol=1e-9)
    np.testing.assert_allclose(energy, true.energy_mj, rtol=1e-9)
