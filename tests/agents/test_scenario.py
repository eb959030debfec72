"""The changing world: in-episode throttling, load bursts and budget drops, and scenario files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tflite_edge.agents import Simulator, markov_trace
from tflite_edge.agents.scenario import Schedule, load_scenario_file, parse_scenario
from tflite_edge.cli import main
from tflite_edge.errors import ScenarioError

EXAMPLE = {
    "description": "a throttling period, a burst of edge load, a budget drop",
    "device_speed": [[0, 1.0], [10, 0.4], [20, 1.0]],
    "edge_load": [[0, 0.1], [15, 0.9], [25, 0.1]],
    "power_budget_mw": [[0, 3000], [30, 800]],
    "rtt_ms": [[0, 40]],
}


def test_schedule_is_piecewise_constant() -> None:
    schedule = Schedule((0.0, 10.0, 20.0), (1.0, 0.4, 1.0))
    np.testing.assert_array_equal(schedule.at(np.array([0.0, 9.99, 10.0, 19.0, 20.0, 1e6])),
                                  [1.0, 1.0, 0.4, 0.4, 1.0, 1.0])


def test_default_episodes_change_within_themselves(mobilenet_like) -> None:
    """The default distribution has throttling periods, load bursts and budget drops inside episodes."""
    sim = Simulator(*mobilenet_like, device="host")
    throttled = bursts = drops = 0
    for seed in range(40):
        ep = sim.episode(markov_trace(seed=seed % 3), seed=seed, requests=200)
        throttled += bool(ep.device_speed.min() < 0.6 * 0.6 - 1e-9)
        bursts += bool(ep.edge_load.max() >= 0.8 and ep.edge_load.min() < 0.7)
        drops += bool(np.unique(ep.power_budget_mw).size > 1)
    assert 5 <= throttled <= 35 and 5 <= bursts <= 35 and 5 <= drops <= 35
    calm = sim.with_scenario(throttle_probability=0.0, load_burst_probability=0.0, budget_drop_probability=0.0)
    ep = calm.episode(markov_trace(seed=0), seed=1, requests=200)
    assert np.unique(ep.power_budget_mw).size == 1 and ep.device_speed.min() >= 0.6 - 1e-9


def test_schedules_drive_the_episode(mobilenet_like) -> None:
    sim = Simulator(*mobilenet_like, device="host").with_scenario(
        schedules=parse_scenario(EXAMPLE), request_interval_s=1.0, rtt_jitter_ms=0.0)
    ep = sim.episode(markov_trace(seed=1), seed=5, requests=40)
    assert ep.t_s[0] == 0.0
    assert ep.device_speed[9] == 1.0 and ep.device_speed[10] == 0.4 and ep.device_speed[20] == 1.0
    assert ep.edge_load[14] == pytest.approx(0.1) and ep.edge_load[15] == pytest.approx(0.9)
    assert ep.power_budget_mw[29] == 3000 and ep.power_budget_mw[30] == 800
    assert np.all(ep.rtt_ms == 40.0)
    # The slow period shows in the true outcome of running everything locally.
    local = sim.outcomes(ep).latency_ms[:, sim.local_action]
    assert local[10] == pytest.approx(local[9] / 0.4)


@pytest.mark.parametrize(("doc", "message"), [
    ([1, 2], "expected a JSON object"),
    ({}, "no schedule"),
    ({"device_sped": [[0, 1]]}, "unknown key 'device_sped'"),
    ({"edge_load": []}, "edge_load must be a non-empty list"),
    ({"edge_load": [[1, 0.5]]}, "edge_load[0]: the first step must start at time 0"),
    ({"edge_load": [[0, 0.5], [0, 0.6]]}, "edge_load[1]: times must increase"),
    ({"edge_load": [[0, 1.5]]}, "edge_load[0]: 1.5 is not a load in [0, 1)"),
    ({"device_speed": [[0, 0]]}, "device_speed[0]: 0 is not a speed > 0"),
    ({"power_budget_mw": [[0, "lots"]]}, "power_budget_mw[0] value must be a finite number"),
    ({"rtt_ms": [[0, True]]}, "rtt_ms[0] value must be a finite number"),
    ({"rtt_ms": [[0]]}, "rtt_ms[0] must be a [time_s, value] pair"),
    ({"description": 3, "rtt_ms": [[0, 1]]}, "description must be text"),
])
def test_bad_scenarios_are_named(doc: object, message: str) -> None:
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(doc, "s.json")
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_scenario_files(tmp_path: Path) -> None:
    good = tmp_path / "good.json"
    good.write_text(json.dumps(EXAMPLE))
    assert set(load_scenario_file(good)) == {"device_speed", "edge_load", "power_budget_mw", "rtt_ms"}
    with pytest.raises(ScenarioError, match="no such scenario file"):
        load_scenario_file(tmp_path / "missing.json")
    broken = tmp_path / "broken.json"
    broken.write_text("{\"edge_load\": [[0, 0.5]")
    with pytest.raises(ScenarioError, match="not valid JSON"):
        load_scenario_file(broken)


def test_cli_refuses_a_bad_scenario_in_one_line(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"edge_load": [[0, 2.0]]}))
    # The scenario is read before the bundle, so a missing bundle does not mask it.
    code = main(["policy", "simulate", "--bundle", str(tmp_path / "no-bundle"), "--synthetic", "1",
                 "--scenario", str(bad)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "edge_load[0]: 2 is not a load in [0, 1)" in err[0]
