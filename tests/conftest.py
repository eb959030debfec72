"""Shared fixtures: a trained digits model and its bundles (built once per test session) and a broker.

Tiers (docs/contributing.md): a test that uses the trained model, directly or through
another fixture, is marked ``slow`` here; ``make test-fast`` runs everything else.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tflite_edge.transport.broker import MosquittoBroker

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
TRACES = SHARED / "data" / "bandwidth-traces"
DEVICE_PYTHON = REPO / ".venv-device" / "bin" / "python"


# Fixtures that train or convert a Keras model (TensorFlow, tens of seconds on first use).
MODEL_FIXTURES = frozenset({"digits_model", "digits_residual_model", "other_bundle"})
# Directories whose tests build and convert Keras models themselves.
TENSORFLOW_DIRS = frozenset({"converters"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        path = Path(str(item.fspath)).resolve()
        in_tf_dir = path.parent.parent == REPO / "tests" and path.parent.name in TENSORFLOW_DIRS
        if in_tf_dir or MODEL_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """scikit-learn digits as (x_train, y_train, x_val, y_val), x of shape (N, 8, 8, 1) in [0, 1]."""
    from tflite_edge import zoo

    return zoo.digits_data()


@pytest.fixture(scope="session")
def digits_model(digits_split):
    """The 3-exit digits CNN (exits exit_1, exit_2, final), trained."""
    from tflite_edge import zoo

    x_train, y_train, _, _ = digits_split
    return zoo.train_digits_model(zoo.build_digits_model(), x_train, y_train, epochs=20)


@pytest.fixture(scope="session")
def digits_model_file(digits_model, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("model") / "digits.keras"
    digits_model.save(path)
    return path


@pytest.fixture(scope="session")
def digits_residual_model(digits_split):
    """The residual variant (skip connections inside each block), trained briefly."""
    from tflite_edge import zoo

    x_train, y_train, _, _ = digits_split
    return zoo.train_digits_model(zoo.build_digits_model(residual=True), x_train, y_train, epochs=10)


@pytest.fixture(scope="session")
def digits_bundle(digits_model, digits_split, tmp_path_factory):
    """An int8 bundle of the digits model: 3 exits, cuts at block_1_out and block_2_out, 3 segments."""
    from tflite_edge.converters import convert

    x_train, _, x_val, y_val = digits_split
    return convert(
        digits_model,
        tmp_path_factory.mktemp("bundles") / "digits-int8",
        cuts=["block_1_out", "block_2_out"],
        quantize="int8",
        calibration=x_train[:200],
        validation=(x_val, y_val),
    )


@pytest.fixture(scope="session")
def digits_npz(digits_split, tmp_path_factory) -> Path:
    """The validation split as an .npz with arrays x and y."""
    _, _, x_val, y_val = digits_split
    path = tmp_path_factory.mktemp("data") / "digits_val.npz"
    np.savez(path, x=x_val, y=y_val)
    return path


# For the live policy tests and the Prometheus test: makes the digits model's device compute
# (microseconds per segment here) comparable to 3G transfers, so that the policy has real
# choices to make. Training runs in a fresh process (`tflite-edge policy train`): TF-Agents
# needs tf.keras to resolve to tf-keras, which the Keras 3 models of other tests prevent.
POLICY_SLOWDOWN = "20000"


@pytest.fixture(scope="session")
def trained_policy(digits_bundle, tmp_path_factory) -> Path:  # type: ignore[no-untyped-def]
    """A policy directory (policy.tflite, policy.json, checkpoints/) for ``digits_bundle``."""
    from tflite_edge.runtime.profile import profile_bundle

    root = tmp_path_factory.mktemp("live-policy")
    profile = root / "profile.json"
    profile.write_text(json.dumps(profile_bundle(digits_bundle, repeats=5, warmup=1).to_dict()))
    command = [sys.executable, "-m", "tflite_edge", "policy", "train", "--bundle", str(digits_bundle.path),
               "--profile", str(profile), "--synthetic", "6", "--device-slowdown", POLICY_SLOWDOWN,
               "--steps", "200", "--batch-size", "128", "-o", str(root / "policy")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return root / "policy"
@pytest.fixture
def broker() -> Iterator[MosquittoBroker]:
    """A Mosquitto of the test's own on a free loopback port, stopped after the test."""
    with MosquittoBroker() as running:
        yield running
