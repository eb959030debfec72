"""The demo end to end, shortened: one training epoch, a briefly trained policy, a few live requests per run."""

import json
import subprocess
import sys

import pytest

from tflite_edge.demo import DemoOptions, run_demo
from tflite_edge.demo.run import Progress
from tflite_edge.demo.world import World, load_world, summarize_run
from tflite_edge.errors import ScenarioError


@pytest.mark.slow
def test_demo_runs_the_shipped_loop_for_every_contender_and_writes_its_report(tmp_path, capsys):
    out = tmp_path / "demo"
    options = DemoOptions(out=out, requests=10, interval_ms=20.0, epochs=1, policy_steps=60)
    result = run_demo(options, Progress(sys.stderr))
    text = result.report.read_text()
    assert "## Live runs" in text and "## Live session of the learned policy" in text
    for name in ("learned", "planner-link-only", "planner-measured", "static final/local", "static exit_1/K0"):
        assert f"| {name} |" in text, name
    assert "## The same trace in the simulator" in text and "oracle" in text
    assert "Edgent" in text and (out / "device_profile.json").is_file()
    results = json.loads((out / "live_results.json").read_text())
    assert results["learned"]["requests"] == 10 and "emulation" in results["learned"]
    records = [json.loads(line) for line in (out / "requests.jsonl").read_text().splitlines()]
    assert len(records) == 10 and all(r["top1_class"] is not None for r in records)
    telemetry = [json.loads(line) for line in (out / "telemetry.jsonl").read_text().splitlines()]
    assert any(t["topic"].endswith("/experience") for t in telemetry)  # PolicyRunner records experience
    assert any(line.startswith("report: ") for line in result.lines)
    assert "[7/7] done" in capsys.readouterr().err
    # A second run reuses the trained model and the trained policy.
    run_demo(DemoOptions(out=out, requests=10, interval_ms=20.0, epochs=1, policy_steps=60), Progress(sys.stderr))
    err = capsys.readouterr().err
    assert "reusing the trained model" in err and "reusing the policy" in err


def test_demo_cli_writes_results_to_stdout_and_refuses_bad_options(tmp_path):
    done = subprocess.run([sys.executable, "-m", "tflite_edge", "demo", "--out", str(tmp_path), "--requests", "0"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and done.stdout == "" and len(done.stderr.strip().splitlines()) == 1


def test_a_scenario_file_is_read_and_checked(tmp_path):
    path = tmp_path / "world.json"
    path.write_text(json.dumps({"device_speed": [[0, 1.0], [10, 0.5]], "power_budget_mw": [[0, 2000], [20, 800]]}))
    world = load_world(path)
    assert world.value("device_speed", 5.0, 1.0) == 1.0 and world.value("device_speed", 12.0, 1.0) == 0.5
    assert world.value("power_budget_mw", 25.0, 2000.0) == 800.0
    assert world.change_times() == [10.0, 20.0] and world.phase(15.0) == 1 and world.phase(30.0) == 2
    path.write_text(json.dumps({"cpu_temperature": [[0, 1]]}))
    with pytest.raises(ScenarioError, match="unknown key"):
        load_world(path)
    path.write_text("{")
    with pytest.raises(ScenarioError, match="not valid JSON"):
        load_world(path)


def test_reaction_counts_requests_from_a_world_change_until_the_action_changed():
    world = World.from_steps({"device_speed": ((0.0, 1.0), (10.0, 0.4))})
    actions = ["local"] * 5 + ["local", "local", "offload", "offload", "offload"]
    records = [{"phase": 0 if i < 5 else 1, "action": a, "probe": False, "met_deadline": True, "correct": True,
                "total_ms": 10.0, "reward": 1.0, "energy_mj": 1.0, "ran_on": "device", "fell_back": False}
               for i, a in enumerate(actions)]
    figures = summarize_run(records, world)
    assert figures["reactions"][0]["requests_until_change"] == 2
    assert figures["reactions"][0]["action_before"] == "local"
    assert figures["phases"]["1"]["actions"] == {"offload": 3, "local": 2}
