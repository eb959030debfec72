"""Fixtures of the live policy loop: a briefly trained policy for the digits bundle, a signing
key pair, a private broker and an edge worker.

Training runs in a fresh process (`tflite-edge policy train`), as in tests/agents: TF-Agents
needs tf.keras to resolve to tf-keras, which the Keras 3 models of other tests prevent.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tflite_edge.security.signing import generate_key_pair

# Makes the digits model's device compute (microseconds per segment here) comparable to
# 3G transfers, so that the policy has real choices to make.
SLOWDOWN = "20000"


@pytest.fixture(scope="session")
def trained_policy(digits_bundle, tmp_path_factory) -> Path:  # type: ignore[no-untyped-def]
    """A policy directory (policy.tflite, policy.json, checkpoints/) for ``digits_bundle``."""
    from tflite_edge.runtime.profile import profile_bundle

    root = tmp_path_factory.mktemp("live-policy")
    profile = root / "profile.json"
    profile.write_text(json.dumps(profile_bundle(digits_bundle, repeats=5, warmup=1).to_dict()))
    command = [sys.executable, "-m", "tflite_edge", "policy", "train", "--bundle", str(digits_bundle.path),
               "--profile", str(profile), "--synthetic", "6", "--device-slowdown", SLOWDOWN,
               "--steps", "200", "--batch-size", "128", "-o", str(root / "policy")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return root / "policy"


@pytest.fixture(scope="session")
def keys(tmp_path_factory) -> dict[str, Path]:  # type: ignore[no-untyped-def]
    """The signer's key pair and an unrelated one: ``private``, ``public``, ``other_private``, ``other_public``."""
    root = tmp_path_factory.mktemp("keys")
    generate_key_pair(root / "signer.key", root / "signer.pub")
    generate_key_pair(root / "other.key", root / "other.pub")
    return {"private": root / "signer.key", "public": root / "signer.pub",
            "other_private": root / "other.key", "other_public": root / "other.pub"}


@pytest.fixture
def edge(broker, digits_bundle) -> Iterator[None]:  # type: ignore[no-untyped-def]
    """An edge worker serving ``digits_bundle`` on ``broker`` (in this process)."""
    from tflite_edge.edge import EdgeWorker

    with EdgeWorker(broker.url, [digits_bundle]):
        yield
