"""The simulator on the real digits bundle, and the `policy simulate` command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tflite_edge.agents import Objective, compare, markov_trace
from tflite_edge.agents.from_bundle import collect_exit_samples, profile_for_bundle, simulator_for_bundle
from tflite_edge.cli import main
from tflite_edge.errors import ProfileError


@pytest.fixture(scope="module")
def digits_profile(digits_bundle, tmp_path_factory) -> Path:  # type: ignore[no-untyped-def]
    from tflite_edge.runtime.profile import profile_bundle

    path = tmp_path_factory.mktemp("profile") / "profile.json"
    path.write_text(json.dumps(profile_bundle(digits_bundle, repeats=5, warmup=1).to_dict()))
    return path


def test_simulator_on_digits_bundle(digits_bundle, digits_split, digits_profile: Path) -> None:  # type: ignore[no-untyped-def]
    _, _, x_val, y_val = digits_split
    samples = collect_exit_samples(digits_bundle, x_val, y_val, limit=200)
    assert samples.correct.shape == (200, 3)
    # Per-sample correctness agrees with the accuracy the converter recorded (same data, first 200).
    recorded = np.array([e.accuracy for e in digits_bundle.manifest.exits])
    assert np.all(np.abs(samples.correct.mean(axis=0) - recorded) < 0.08)
    assert np.all((samples.confidence > 0) & (samples.confidence <= 1.0 + 1e-6))
    sim = simulator_for_bundle(digits_bundle, json.loads(digits_profile.read_text()), samples=samples,
                               thresholds=(0.9,), device="host")
    assert any(a.threshold == 0.9 for a in sim.actions)
    results = {r.policy: r for r in compare(sim, [markov_trace(seed=0, duration_s=60)], Objective("accuracy"))}
    assert results["oracle"].mean_reward >= max(r.mean_reward for r in results.values()) - 1e-9
    with pytest.raises(ProfileError, match="segment latencies"):
        profile_for_bundle(digits_bundle, {"segments": [{"index": 0, "median_ms": 1.0}]})


def test_policy_simulate_command(digits_bundle, digits_profile: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    args = ["policy", "simulate", "--bundle", str(digits_bundle.path), "--profile", str(digits_profile),
            "--synthetic", "2", "--requests", "50", "--device-slowdown", "2000"]
    assert main([*args, "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["device"]["slowdown"] == 2000 and document["traces"] == 2
    assert {r["policy"] for r in document["results"]} >= {"oracle", "edgent", "neurosurgeon", "linucb"}
    assert all(r["requests"] == 100 for r in document["results"])
    assert main([*args, "--policy", "edgent", "--policy", "oracle", "--objective", "energy"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[1].split()[0] == "policy" and [line.split()[0] for line in table[3:]] == ["edgent", "oracle"]
    assert main([*args, "--policy", "nonsense"]) == 2
    assert "unknown policy" in capsys.readouterr().err


def test_policy_simulate_missing_traces(digits_bundle, digits_profile: Path, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    code = main(["policy", "simulate", "--bundle", str(digits_bundle.path), "--profile", str(digits_profile),
                 "--traces", str(tmp_path)])
    assert code == 2 and "no trace files" in capsys.readouterr().err


def test_policy_simulate_with_a_scenario_file(digits_bundle, digits_profile: Path, tmp_path: Path,  # type: ignore[no-untyped-def]
                                              capsys) -> None:
    scenario = tmp_path / "scenario.json"
    scenario.write_text(json.dumps({"device_speed": [[0, 1.0], [10, 0.2]], "edge_load": [[0, 0.0], [15, 0.9]]}))
    args = ["policy", "simulate", "--bundle", str(digits_bundle.path), "--profile", str(digits_profile),
            "--synthetic", "2", "--requests", "60", "--device-slowdown", "2000", "--scenario", str(scenario),
            "--policy", "device-only", "--json"]
    assert main(args) == 0
    slow = json.loads(capsys.readouterr().out)["results"][0]
    scenario.write_text(json.dumps({"device_speed": [[0, 1.0]], "edge_load": [[0, 0.0]]}))
    assert main(args) == 0
    steady = json.loads(capsys.readouterr().out)["results"][0]
    # Device-only pays for the throttling period the scenario file puts in.
    assert slow["mean_latency_ms"] > 2 * steady["mean_latency_ms"]
