"""Training the demo's (and the live benchmark's) TF-Agents policy for an emulated device.

``python -m tflite_edge.demo.train_policy SETTINGS.json`` trains in a fresh process (TF-Agents
needs tf.keras = tf-keras, which a process that trained the Keras 3 model cannot give) and
writes ``policy.tflite`` + ``policy.json`` into ``settings["policy_dir"]``, and the training
time and steps into ``training.json`` beside SETTINGS.json. The simulated
world matches the live one: the device profile, this host as the edge, the deadline and the
pacing, loopback round trips, and a device speed, edge load and power budget that wander
over the ranges the live world visits. :func:`train_or_reuse` skips training when the
directory holds a policy made from the same settings.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from ..errors import PolicyError

__all__ = ["train_or_reuse"]


def scenario_for(settings: dict[str, Any]) -> Any:
    from ..agents import Scenario

    return Scenario(request_interval_s=settings["interval_ms"] / 1e3 * settings["trace_speedup"],
                    rtt_ms=(1.0, 4.0), rtt_jitter_ms=1.0, deadline_ms=(settings["deadline_ms"],),
                    device_speed=tuple(settings["device_speed"]), edge_load=tuple(settings["edge_load"]),
                    power_budget_mw=tuple(settings["power_budget_mw"]), drift=0.05)


def _train(settings: dict[str, Any]) -> dict[str, Any]:
    from ..agents import Objective, load_traces
    from ..agents.training import TrainConfig, train_policy
    from ..bundle import load_bundle
    from ..device.emulation import DeviceProfile
    from .world import simulator_for_device

    bundle = load_bundle(settings["bundle"])
    simulator = simulator_for_device(bundle, settings["host_profile"], DeviceProfile.from_dict(settings["device"]),
                                     scenario=scenario_for(settings))
    result = train_policy(simulator, load_traces(settings["traces"]), Objective(settings["objective"]),
                          settings["policy_dir"], TrainConfig(steps=settings["steps"], episodes_per_trace=2),
                          record={"settings": settings})
    return {"seconds": result.seconds, "steps": result.steps}


def _same(trained: Any, settings: dict[str, Any]) -> bool:
    """Same settings, except this host's own profile: it only sets the edge's compute time
    (microseconds here), and it is measured anew, with its noise, by every run."""
    if not isinstance(trained, dict):
        return False
    return {k: v for k, v in trained.items() if k != "host_profile"} == {
        k: v for k, v in settings.items() if k != "host_profile"}


def train_or_reuse(settings: dict[str, Any]) -> tuple[Path, float | None]:
    """The policy directory for ``settings`` and the training time (None: reused)."""
    policy_dir = Path(settings["policy_dir"])
    meta = policy_dir / "policy.json"
    if meta.is_file() and (policy_dir / "policy.tflite").is_file():
        try:
            trained = json.loads(meta.read_text())
            # A policy whose planning model lacks the per-segment latencies cannot have its
            # device speed measured (PolicyRunner then assumes nominal speed): train anew.
            measurable = "device_segment_ms" in trained.get("planning_model", {})
            if measurable and _same(trained.get("record", {}).get("settings"), settings):
                return policy_dir, None
        except (OSError, json.JSONDecodeError):
            pass
    for stale in ("checkpoints", "saved_policy"):  # never resume from another setting's checkpoints
        target = policy_dir / stale
        if target.is_dir():
            import shutil

            shutil.rmtree(target)
    policy_dir.mkdir(parents=True, exist_ok=True)
    settings_path = policy_dir / "settings.json"
    settings_path.write_text(json.dumps(settings))
    done = subprocess.run([sys.executable, "-m", "tflite_edge.demo.train_policy", str(settings_path)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise PolicyError(f"training the policy failed: {done.stderr.strip().splitlines()[-1:]}")
    return policy_dir, float(json.loads(_result_path(settings_path).read_text())["seconds"])


def _result_path(settings_path: Path) -> Path:
    return settings_path.with_name("training.json")


if __name__ == "__main__":
    settings_file = Path(sys.argv[1])
    _result_path(settings_file).write_text(json.dumps(_train(json.loads(settings_file.read_text()))))
