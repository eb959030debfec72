"""Which checkpoints a training run may resume from (pure logic, no TensorFlow)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tflite_edge.agents import Objective
from tflite_edge.agents.simulator import Simulator
from tflite_edge.agents.training import TrainConfig, _prepare_checkpoints, training_fingerprint
from tflite_edge.errors import PolicyError


def _fingerprint(tiny, objective: str = "accuracy", data_seed: int = 0, **config: object) -> dict:  # type: ignore[no-untyped-def]
    simulator = Simulator(*tiny)
    rng = np.random.default_rng(data_seed)
    observations, rewards = rng.random((50, 17)), rng.random((50, 9))
    return training_fingerprint(simulator, Objective(objective), TrainConfig(**config), observations, rewards)  # type: ignore[arg-type]


def _checkpoints(tmp_path: Path, fingerprint: dict) -> Path:  # type: ignore[type-arg]
    directory = tmp_path / "checkpoints"
    _prepare_checkpoints(directory, fingerprint, restart=False)
    (directory / "ckpt-300.index").write_bytes(b"x")  # what TF-Agents leaves behind
    return directory


def test_same_options_resume(tiny, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    directory = _checkpoints(tmp_path, _fingerprint(tiny))
    # More steps, or another checkpoint interval, continue the same run.
    _prepare_checkpoints(directory, _fingerprint(tiny, steps=20000, checkpoint_every=50), restart=False)
    assert (directory / "ckpt-300.index").exists()


@pytest.mark.parametrize(("change", "named"), [
    ({"objective": "energy"}, "objective"),
    ({"data_seed": 1}, "scenario"),
    ({"agent": "linucb"}, "agent settings"),
    ({"batch_size": 64}, "agent settings"),
])
def test_other_options_are_refused(tiny, tmp_path: Path, change: dict, named: str) -> None:  # type: ignore[no-untyped-def,type-arg]
    directory = _checkpoints(tmp_path, _fingerprint(tiny))
    with pytest.raises(PolicyError, match=f"another {named}.*--restart") as raised:
        _prepare_checkpoints(directory, _fingerprint(tiny, **change), restart=False)
    assert "\n" not in str(raised.value)
    assert (directory / "ckpt-300.index").exists()  # nothing is deleted without --restart


def test_checkpoints_without_a_record_are_refused(tiny, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    directory = _checkpoints(tmp_path, _fingerprint(tiny))
    (directory / "fingerprint.json").unlink()
    with pytest.raises(PolicyError, match="without a record"):
        _prepare_checkpoints(directory, _fingerprint(tiny), restart=False)


def test_restart_discards_and_records_the_new_run(tiny, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    directory = _checkpoints(tmp_path, _fingerprint(tiny))
    new = _fingerprint(tiny, objective="latency")
    _prepare_checkpoints(directory, new, restart=True)
    assert not (directory / "ckpt-300.index").exists()
    assert json.loads((directory / "fingerprint.json").read_text())["objective"]["name"] == "latency"
