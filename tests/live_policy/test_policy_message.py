"""Policy messages: the package format, its bounds, signatures, bundle and version checks."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from tflite_edge.agents.policy_message import (
    MAX_POLICY_MESSAGE_BYTES,
    PolicyPackage,
    decode_package,
    encode_package,
    load_policy_message,
    policy_topic,
    sign_policy_message,
)
from tflite_edge.agents.tflite_policy import TFLitePolicy
from tflite_edge.device.policy_loop import PolicyReceiver, PolicySlot
from tflite_edge.errors import MissingSignatureError, PolicyError, SignatureError, TopicError
from tflite_edge.security.signing import load_private_key, load_public_key, sign_message

pytestmark = pytest.mark.slow  # the policy fixture trains one (about 15 s)


@pytest.fixture
def package(trained_policy: Path) -> PolicyPackage:
    return PolicyPackage.from_directory(trained_policy, 3)


def test_package_round_trip(package: PolicyPackage) -> None:
    data = encode_package(package)
    again = decode_package(data)
    assert again.version == 3 and again.tflite == package.tflite and dict(again.metadata) == dict(package.metadata)


@pytest.mark.parametrize("mutate, match", [
    (lambda d: d[:10], "shorter than"),
    (lambda d: b"XXXX" + d[4:], "not a policy message"),
    (lambda d: d + b"\0", "do not match its size"),
    (lambda d: d[:-1], "do not match its size"),
    # Declared lengths far beyond the bounds are refused before anything is allocated.
    (lambda d: d[:13] + struct.pack("<I", 0xFFFFFFFF) + d[17:], "over the limits"),
    (lambda d: d[:17] + struct.pack("<I", 0xFFFFFFFF) + d[21:], "over the limits"),
    (lambda d: d[:5] + struct.pack("<Q", 0) + d[13:], "reserved"),
])
def test_malformed_packages(package: PolicyPackage, mutate, match: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(PolicyError, match=match):
        decode_package(mutate(encode_package(package)))


def test_json_must_be_an_object(package: PolicyPackage) -> None:
    data = bytearray(encode_package(package))
    json_len = struct.unpack_from("<I", data, 13)[0]
    data[21:21 + json_len] = b"[" + b" " * (json_len - 2) + b"]"
    with pytest.raises(PolicyError, match="JSON object"):
        decode_package(bytes(data))


def test_signed_message_loads(package: PolicyPackage, keys: dict[str, Path], digits_bundle) -> None:  # type: ignore[no-untyped-def]
    payload = sign_policy_message(package, load_private_key(keys["private"]))
    policy, version = load_policy_message(payload, load_public_key(keys["public"]), manifest=digits_bundle.manifest)
    assert version == 3 and isinstance(policy, TFLitePolicy) and policy.bundle_id == digits_bundle.manifest.bundle_id


def test_bad_messages_are_refused(package: PolicyPackage, keys: dict[str, Path], digits_bundle) -> None:  # type: ignore[no-untyped-def]
    public = load_public_key(keys["public"])
    manifest = digits_bundle.manifest
    good = sign_policy_message(package, load_private_key(keys["private"]))
    with pytest.raises(MissingSignatureError):
        load_policy_message(encode_package(package), public, manifest=manifest)
    with pytest.raises(SignatureError, match="not trusted"):
        load_policy_message(sign_policy_message(package, load_private_key(keys["other_private"])), public,
                            manifest=manifest)
    tampered = bytearray(good)
    tampered[-100] ^= 0x01  # one bit of the TFLite model
    with pytest.raises(SignatureError, match="changed"):
        load_policy_message(bytes(tampered), public, manifest=manifest)
    with pytest.raises(SignatureError):  # an envelope for another purpose
        load_policy_message(sign_message(encode_package(package), load_private_key(keys["private"]), kind="bundle"),
                            public, manifest=manifest)
    with pytest.raises(PolicyError, match="exceeds the limit"):
        load_policy_message(good + b"\0" * MAX_POLICY_MESSAGE_BYTES, public, manifest=manifest)
    other_bundle = PolicyPackage(4, {**package.metadata, "bundle_id": "0123456789abcdef"}, package.tflite)
    with pytest.raises(PolicyError, match="is for bundle"):
        load_policy_message(sign_policy_message(other_bundle, load_private_key(keys["private"])), public,
                            manifest=manifest)
    actions = [dict(a) for a in package.metadata["actions"]]
    actions[0]["partition"] = 99
    bad_actions = PolicyPackage(5, {**package.metadata, "actions": actions}, package.tflite)
    with pytest.raises(PolicyError, match="does not fit bundle"):
        load_policy_message(sign_policy_message(bad_actions, load_private_key(keys["private"])), public,
                            manifest=manifest)
    # Signed but not a TFLite model: refused by the interpreter, as a PolicyError.
    garbage = PolicyPackage(6, package.metadata, b"\0" * 1000)
    with pytest.raises(PolicyError):
        load_policy_message(sign_policy_message(garbage, load_private_key(keys["private"])), public,
                            manifest=manifest)
    wrong_types = PolicyPackage(7, {**package.metadata, "reference_ms": "fast"}, package.tflite)
    with pytest.raises(PolicyError):
        load_policy_message(sign_policy_message(wrong_types, load_private_key(keys["private"])), public,
                            manifest=manifest)


def test_slot_swaps_between_requests_and_refuses_old_versions(trained_policy: Path) -> None:
    first, second = TFLitePolicy(trained_policy), TFLitePolicy(trained_policy)
    slot = PolicySlot(first)
    assert slot.current() == (first, 0)
    slot.offer(second, 2)
    assert slot.version == 0 and slot.newest_version() == 2  # not swapped until the next request
    with pytest.raises(PolicyError, match="not newer"):
        slot.offer(first, 2)
    assert slot.current() == (second, 2) and slot.swaps == 1
    with pytest.raises(PolicyError, match="not newer"):
        slot.offer(first, 1)  # a replayed old version


def test_receiver_rejects_and_keeps_the_policy(package: PolicyPackage, keys: dict[str, Path], digits_bundle,
                                               trained_policy: Path, caplog) -> None:  # type: ignore[no-untyped-def]
    slot = PolicySlot(TFLitePolicy(trained_policy))
    rejected: list[str] = []
    receiver = PolicyReceiver("mqtt://127.0.0.1:1", "t/policy/x", load_public_key(keys["public"]), slot,
                              digits_bundle.manifest, client_id="unit", on_reject=rejected.append)
    assert not receiver.handle(b"not a policy")
    assert not receiver.handle(sign_policy_message(package, load_private_key(keys["other_private"])))
    assert slot.version == 0 and slot.rejected == 2 and len(rejected) == 2
    assert "rejected, keeping version 0" in caplog.text and "not trusted" in caplog.text
    assert receiver.handle(sign_policy_message(package, load_private_key(keys["private"])))
    assert slot.current()[1] == 3
    assert not receiver.handle(sign_policy_message(package, load_private_key(keys["private"])))  # a replay
    assert "not newer" in (slot.last_rejection or "")


def test_policy_topic() -> None:
    assert policy_topic("tflite-edge/v1", "abc") == "tflite-edge/v1/policy/abc"
    with pytest.raises(TopicError):
        policy_topic("tflite-edge/v1", "a/b")


def test_metadata_is_json(package: PolicyPackage) -> None:
    assert json.loads(json.dumps(dict(package.metadata)))["bundle_id"] == package.bundle_id
