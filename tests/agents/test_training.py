"""TF-Agents training and the exported TFLite policy (training runs in a fresh process:
TF-Agents needs tf.keras to resolve to tf-keras, which other tests' TensorFlow use prevents)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tflite_edge.agents import Objective, compare, markov_trace
from tflite_edge.agents.from_bundle import simulator_for_bundle
from tflite_edge.agents.simulator import OBSERVATION_FEATURES, Action
from tflite_edge.agents.tflite_policy import TFLitePolicy
from tflite_edge.cli import main
from tflite_edge.errors import PolicyError

pytestmark = pytest.mark.slow

SLOWDOWN = "20000"  # makes the digits model's device compute comparable to the 3G uplink


@pytest.fixture(scope="module")
def trained(digits_bundle, tmp_path_factory) -> tuple[Path, Path]:  # type: ignore[no-untyped-def]
    from tflite_edge.runtime.profile import profile_bundle

    root = tmp_path_factory.mktemp("policy")
    profile = root / "profile.json"
    profile.write_text(json.dumps(profile_bundle(digits_bundle, repeats=5, warmup=1).to_dict()))
    command = [sys.executable, "-m", "tflite_edge", "policy", "train", "--bundle", str(digits_bundle.path),
               "--profile", str(profile), "--synthetic", "8", "--device-slowdown", SLOWDOWN,
               "--steps", "300", "--batch-size", "128", "-o", str(root / "policy")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "step 300/300" in done.stderr and "policy.tflite" in done.stdout
    # Only progress lines: TensorFlow's, absl's, Gym's and AutoGraph's notes go to the log (-v).
    assert all(line.startswith("… ") for line in done.stderr.splitlines()), done.stderr
    (root / "train.stdout").write_text(done.stdout)
    return root / "policy", profile


def test_policy_directory(trained: tuple[Path, Path]) -> None:
    policy_dir, _ = trained
    assert (policy_dir / "checkpoints").is_dir() and (policy_dir / "saved_policy").is_dir()
    metadata = json.loads((policy_dir / "policy.json").read_text())
    assert metadata["features"][:8] == list(OBSERVATION_FEATURES)
    assert len(metadata["features"]) == 8 + len(metadata["actions"]) == 8 + len(metadata["planning_model"]["edge_ms"])
    assert metadata["trained_steps"] == 300 and metadata["config"]["seed"] == 0
    assert len(metadata["training_traces"]) == 6 and len(metadata["record"]["held_out_traces"]) == 2
    assert (policy_dir / "policy.tflite").stat().st_size < 64 * 1024


def test_tflite_policy_runs_without_tensorflow(trained: tuple[Path, Path]) -> None:
    policy_dir, _ = trained
    script = (
        "import sys, time; from tflite_edge.agents.tflite_policy import TFLitePolicy\n"
        f"p = TFLitePolicy({str(policy_dir)!r})\n"
        "a = p.act(throughput_mbps=1.0, throughput_std_mbps=0.2, rtt_ms=50, deadline_ms=200, "
        "power_budget_mw=2000, device_speed=1.0, edge_load=0.2)\n"
        "assert 'tensorflow' not in sys.modules, 'TensorFlow was imported'\n"
        "print(a.exit, a.partition)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    exit_index, partition = map(int, done.stdout.split())
    assert 0 <= exit_index < 3 and 0 <= partition <= 3


def test_decision_time_and_actions(trained: tuple[Path, Path]) -> None:
    policy = TFLitePolicy(trained[0])
    x = policy.features(throughput_mbps=1.0, throughput_std_mbps=0.2, rtt_ms=50, deadline_ms=200,
                        power_budget_mw=2000, device_speed=1.0, edge_load=0.2)[0]
    assert x.shape == (policy.num_features,)
    policy.decide_index(x)
    start = time.perf_counter()
    for _ in range(500):
        index = policy.decide_index(x)
    per_decision_us = (time.perf_counter() - start) / 500 * 1e6
    assert per_decision_us < 500  # the target is 50 µs on an idle machine; tests share two cores
    assert isinstance(policy.actions[index], Action)


def test_policy_evaluate_command(trained: tuple[Path, Path], digits_bundle, capsys) -> None:  # type: ignore[no-untyped-def]
    policy_dir, profile = trained
    code = main(["policy", "evaluate", "--bundle", str(digits_bundle.path), "--profile", str(profile),
                 "--synthetic", "8", "--device-slowdown", SLOWDOWN, "--policy", str(policy_dir), "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["held_out_only"] and len(report["traces"]) == 2
    names = [r["policy"] for r in report["results"]]
    assert names[0] == "learned" and "oracle" in names and "edgent" in names
    rewards = {r["policy"]: r["mean_reward"] for r in report["results"]}
    assert rewards["learned"] <= rewards["oracle"] + 1e-9
    # Even briefly trained, the policy beats the fixed placements on traces it never saw.
    assert rewards["learned"] > min(rewards["device-only"], rewards["edge-only"])


def test_policy_must_match_the_simulator(trained: tuple[Path, Path], digits_bundle, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    policy = TFLitePolicy(trained[0])
    sim = simulator_for_bundle(digits_bundle, json.loads(trained[1].read_text()), device="host")
    results = compare(sim, [markov_trace(seed=1, duration_s=30)], Objective("accuracy"), [policy, "oracle"])
    assert results[0].policy == "learned"
    broken = tmp_path / "broken"
    shutil.copytree(trained[0], broken)
    metadata = json.loads((broken / "policy.json").read_text())
    metadata["features"] = ["something_else"]
    (broken / "policy.json").write_text(json.dumps(metadata))
    with pytest.raises(PolicyError, match="train it again"):
        TFLitePolicy(broken)
    with pytest.raises(PolicyError, match="not a policy directory"):
        TFLitePolicy(tmp_path / "absent")


def test_tf_agents_py_environment() -> None:
    script = f"""
from tflite_edge.agents import CoInferenceEnv, LatencyProfile, Objective, Simulator, markov_trace
from tflite_edge.agents.tf_env import make_py_environment
import sys; sys.path.insert(0, {str(Path(__file__).parent)!r})
from conftest import make_manifest
manifest = make_manifest([1, 224, 224, 3], [[1, 28, 28, 32], [1, 14, 14, 96]], [0.62, 0.78, 0.90])
sim = Simulator(manifest, LatencyProfile((4.0, 3.5, 2.3)))
env = CoInferenceEnv(sim, [markov_trace(seed=1, duration_s=20)], Objective("accuracy"), requests_per_episode=15)
py = make_py_environment(env)
from tf_agents.environments import utils
utils.validate_py_environment(py, episodes=3)
step, count = py.reset(), 0
while not step.is_last():
    step = py.step(sim.local_action)
    count += 1
assert py.step(0).is_first()  # a step after the last starts a new episode
print(count, py.observation_spec().shape, py.action_spec().maximum)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["15", "(8,)", "8"]


def test_fast_scalar_path_matches_the_vectorised_features(trained: tuple[Path, Path]) -> None:
    policy = TFLitePolicy(trained[0])
    rng = np.random.default_rng(0)
    for _ in range(100):
        context = dict(throughput_mbps=rng.uniform(0.05, 8), throughput_std_mbps=rng.uniform(0, 2),
                       rtt_ms=rng.uniform(20, 150), deadline_ms=float(rng.choice([0.05, 0.2, 1.0])),
                       power_budget_mw=rng.uniform(1000, 4000), device_speed=rng.uniform(0.6, 1.0),
                       edge_load=rng.uniform(0, 0.99))
        action = policy.act(**context)
        features = policy.features(**context)
        np.testing.assert_allclose(policy._feed, features, rtol=1e-5, atol=1e-6)
        assert action == policy.actions[policy.decide_index(features[0])]


def test_training_resumes_from_checkpoints(trained: tuple[Path, Path], digits_bundle, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    policy_dir, profile = trained
    resumed = tmp_path / "resumed"
    shutil.copytree(policy_dir, resumed)
    command = [sys.executable, "-m", "tflite_edge", "policy", "train", "--bundle", str(digits_bundle.path),
               "--profile", str(profile), "--synthetic", "8", "--device-slowdown", SLOWDOWN,
               "--steps", "350", "--batch-size", "128", "-o", str(resumed)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    # Only steps 301..350 ran: no progress line for step 250, the final one for 350.
    assert "step 350/350" in done.stderr and "step 250/350" not in done.stderr
    assert "resuming from step 300" in done.stderr and "50 steps in" in done.stdout
    assert json.loads((resumed / "policy.json").read_text())["trained_steps"] == 350


def test_training_ends_with_a_runnable_evaluate_command(trained: tuple[Path, Path], capsys) -> None:  # type: ignore[no-untyped-def]
    import shlex

    policy_dir, _ = trained
    last = (policy_dir.parent / "train.stdout").read_text().strip().splitlines()[-1]
    assert last.startswith("evaluate it: tflite-edge policy evaluate ")
    words = shlex.split(last.removeprefix("evaluate it: "))
    assert words[words.index("--device-slowdown") + 1] == "20000.0" and "--steps" not in words
    assert main(words[1:] + ["--json"]) == 0
    assert json.loads(capsys.readouterr().out)["results"][0]["policy"] == "learned"


def test_checkpoints_of_other_options_are_not_resumed(trained: tuple[Path, Path], digits_bundle,  # type: ignore[no-untyped-def]
                                                      tmp_path: Path) -> None:
    policy_dir, profile = trained
    other = tmp_path / "other"
    shutil.copytree(policy_dir, other)
    command = [sys.executable, "-m", "tflite_edge", "policy", "train", "--bundle", str(digits_bundle.path),
               "--profile", str(profile), "--synthetic", "8", "--device-slowdown", SLOWDOWN, "--objective", "energy",
               "--steps", "40", "--batch-size", "128", "-o", str(other)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.returncode == 2 and len(errors) == 1 and "Traceback" not in done.stderr
    assert "another objective" in errors[0] and "--restart" in errors[0]
    assert json.loads((other / "policy.json").read_text())["objective"]["name"] == "accuracy"  # untouched

    done = subprocess.run(command + ["--restart"], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resuming" not in done.stderr and "step 40/40" in done.stderr
    metadata = json.loads((other / "policy.json").read_text())
    assert metadata["trained_steps"] == 40 and metadata["objective"]["name"] == "energy"
