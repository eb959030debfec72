"""Policy rollback across a restart: the version floor is kept in the device's state file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tflite_edge.agents.policy_message import PolicyPackage, sign_policy_message
from tflite_edge.agents.tflite_policy import TFLitePolicy
from tflite_edge.device.policy_loop import PolicyReceiver, PolicySlot
from tflite_edge.errors import RollbackError, StateFileError
from tflite_edge.security.floors import STATE_FORMAT, VersionFloors
from tflite_edge.security.signing import load_private_key, load_public_key

pytestmark = pytest.mark.slow  # the policy fixture trains one (about 15 s)


def boot(state_file: Path | None, keys, digits_bundle, trained_policy) -> tuple[PolicyReceiver, PolicySlot]:
    """A freshly started device: a new slot (and floors read from ``state_file``)."""
    floors = VersionFloors(state_file) if state_file is not None else None
    slot = PolicySlot(TFLitePolicy(trained_policy), floors=floors, floor_key=digits_bundle.bundle_id)
    receiver = PolicyReceiver("mqtt://127.0.0.1:1", "t/policy/x", load_public_key(keys["public"]), slot,
                              digits_bundle.manifest, client_id="unit")
    return receiver, slot


def test_a_restarted_device_refuses_an_older_signed_policy(keys, digits_bundle, trained_policy, tmp_path):
    signer = load_private_key(keys["private"])
    old = sign_policy_message(PolicyPackage.from_directory(trained_policy, 4), signer)
    new = sign_policy_message(PolicyPackage.from_directory(trained_policy, 9), signer)
    state = tmp_path / "state" / "device.json"

    receiver, slot = boot(state, keys, digits_bundle, trained_policy)
    assert receiver.handle(new) and slot.current()[1] == 9
    assert json.loads(state.read_text()) == {"format": STATE_FORMAT, "bundle": {},
                                             "policy": {digits_bundle.bundle_id: 9}}

    receiver, slot = boot(state, keys, digits_bundle, trained_policy)  # restart
    assert not receiver.handle(old)
    assert "RollbackError" in (slot.last_rejection or "") and slot.version == 0
    assert receiver.handle(new)  # the retained current version is taken again after a restart
    assert slot.current()[1] == 9

    # Without a state file the old version is taken: the defect the floor removes.
    receiver, slot = boot(None, keys, digits_bundle, trained_policy)
    assert receiver.handle(old)


def test_the_floor_is_per_bundle(keys, digits_bundle, trained_policy, tmp_path):
    floors = VersionFloors(tmp_path / "s.json")
    floors.raise_to("policy", "another-bundle", 50)
    receiver, slot = boot(tmp_path / "s.json", keys, digits_bundle, trained_policy)
    signer = load_private_key(keys["private"])
    assert receiver.handle(sign_policy_message(PolicyPackage.from_directory(trained_policy, 2), signer))


@pytest.mark.parametrize("content", [
    "{",
    '{"format": "other"}',
    json.dumps({"format": STATE_FORMAT, "policy": {"b": -1}}),
    json.dumps({"format": STATE_FORMAT, "policy": {"b": 1.5}}),
])
def test_a_corrupt_state_file_is_an_error_not_an_empty_state(tmp_path, content):
    (tmp_path / "s.json").write_text(content)
    with pytest.raises(StateFileError, match="corrupt"):
        VersionFloors(tmp_path / "s.json")


def test_floors_unit(tmp_path):
    floors = VersionFloors(tmp_path / "s.json")
    floors.raise_to("policy", "b", 3)
    floors.raise_to("policy", "b", 2)  # never lowered
    assert VersionFloors(tmp_path / "s.json").floor("policy", "b") == 3
    with pytest.raises(RollbackError, match="older than version 3"):
        VersionFloors(tmp_path / "s.json").check("policy", "b", 2, "policy version 2")
