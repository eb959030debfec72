"""Ed25519 signatures over bundles, policy directories and messages."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tflite_edge.bundle import Bundle
from tflite_edge.errors import MissingSignatureError, SignatureError, SigningKeyError
from tflite_edge.security.signing import (
    BUNDLE_SIGNATURE,
    generate_key_pair,
    key_id,
    load_private_key,
    load_public_key,
    open_message,
    sign_bundle,
    sign_message,
    sign_policy,
    verify_bundle,
    verify_policy,
)

from .conftest import Pki


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("keys")
    generate_key_pair(root / "release.key")
    generate_key_pair(root / "other.key")
    generate_key_pair(root / "locked.key", password="hunter2")
    return {"private": root / "release.key", "public": root / "release.key.pub",
            "other_private": root / "other.key", "other_public": root / "other.key.pub",
            "locked": root / "locked.key"}


@pytest.fixture
def signed_bundle(digits_bundle: Bundle, keys: dict[str, Path], tmp_path: Path) -> Path:
    copy = tmp_path / "bundle"
    shutil.copytree(digits_bundle.path, copy)
    sign_bundle(copy, load_private_key(keys["private"]))
    return copy


def test_key_files(keys: dict[str, Path], tmp_path: Path, pki: Pki) -> None:
    assert oct(keys["private"].stat().st_mode & 0o777) == "0o600"
    public = load_public_key(keys["public"])
    assert key_id(public) == key_id(load_private_key(keys["private"]).public_key())
    with pytest.raises(SigningKeyError, match="already exists"):
        generate_key_pair(keys["private"])
    with pytest.raises(SigningKeyError, match="password"):
        load_private_key(keys["locked"])
    with pytest.raises(SigningKeyError):
        load_private_key(keys["locked"], password="wrong")
    assert load_private_key(keys["locked"], password="hunter2")
    with pytest.raises(SigningKeyError, match="does not exist"):
        load_public_key(tmp_path / "missing.pub")
    (tmp_path / "junk.pub").write_text("not a key")
    with pytest.raises(SigningKeyError):
        load_public_key(tmp_path / "junk.pub")
    with pytest.raises(SigningKeyError, match="not a PEM public key"):
        load_public_key(keys["private"])  # a private key where a public one belongs
    with pytest.raises(SigningKeyError, match="not an Ed25519"):
        load_private_key(pki.client_key)  # an ECDSA TLS key is not a signing key


def test_signed_bundle_verifies(signed_bundle: Path, keys: dict[str, Path]) -> None:
    bundle = verify_bundle(signed_bundle, load_public_key(keys["public"]))
    assert bundle.manifest.num_segments == 3
    # Several trusted keys (a key rotation): any one that signed is enough.
    verify_bundle(signed_bundle, [load_public_key(keys["other_public"]), load_public_key(keys["public"])])
    # Re-indenting bundle.json changes no value, so the signature still holds.
    manifest = signed_bundle / "bundle.json"
    manifest.write_text(json.dumps(json.loads(manifest.read_text()), indent=7))
    verify_bundle(signed_bundle, load_public_key(keys["public"]))


def test_unsigned_bundle_is_refused(digits_bundle: Bundle, keys: dict[str, Path]) -> None:
    with pytest.raises(MissingSignatureError, match="tflite-edge sign"):
        verify_bundle(digits_bundle.path, load_public_key(keys["public"]))


def test_wrong_key_is_refused(signed_bundle: Path, keys: dict[str, Path]) -> None:
    with pytest.raises(SignatureError, match="not trusted"):
        verify_bundle(signed_bundle, load_public_key(keys["other_public"]))


def test_tampered_manifest_is_refused(signed_bundle: Path, keys: dict[str, Path]) -> None:
    manifest = signed_bundle / "bundle.json"
    doc = json.loads(manifest.read_text())
    doc["exits"][0]["accuracy"] = 0.999  # a harmless-looking edit is still an edit
    manifest.write_text(json.dumps(doc, indent=2))
    with pytest.raises(SignatureError, match="changed after the bundle was signed"):
        verify_bundle(signed_bundle, load_public_key(keys["public"]))


def test_tampered_segment_is_refused(signed_bundle: Path, keys: dict[str, Path]) -> None:
    segment = signed_bundle / "segment_1.tflite"
    data = bytearray(segment.read_bytes())
    data[len(data) // 2] ^= 0x01
    segment.write_bytes(bytes(data))
    with pytest.raises(SignatureError, match="segment 1"):
        verify_bundle(signed_bundle, load_public_key(keys["public"]))


def test_swapped_signature_fields_are_refused(signed_bundle: Path, keys: dict[str, Path]) -> None:
    path = signed_bundle / BUNDLE_SIGNATURE
    original = json.loads(path.read_text())
    forged = dict(original, files={"bundle.json": "0" * 64})
    path.write_text(json.dumps(forged))
    with pytest.raises(SignatureError, match="does not verify"):
        verify_bundle(signed_bundle, load_public_key(keys["public"]))
    for broken in ("{", "[]", json.dumps(dict(original, signature="AAAA")), json.dumps(dict(original, kind="policy")),
                   json.dumps(dict(original, extra=1))):
        path.write_text(broken)
        with pytest.raises(SignatureError):
            verify_bundle(signed_bundle, load_public_key(keys["public"]))


def test_policy_directory(tmp_path: Path, keys: dict[str, Path]) -> None:
    policy = tmp_path / "policy"
    policy.mkdir()
    (policy / "policy.tflite").write_bytes(b"TFL3" + bytes(100))
    (policy / "policy.json").write_text('{"format": 1}')
    sign_policy(policy, load_private_key(keys["private"]))
    public = load_public_key(keys["public"])
    assert verify_policy(policy, public) == policy
    (policy / "policy.tflite").write_bytes(b"TFL3" + bytes(99) + b"\x01")
    with pytest.raises(SignatureError, match="changed"):
        verify_policy(policy, public)
    sign_policy(policy, load_private_key(keys["private"]))
    (policy / "extra.tflite").write_bytes(b"sneaked in")
    with pytest.raises(SignatureError, match="unsigned"):
        verify_policy(policy, public)
    (policy / "extra.tflite").unlink()
    (policy / "policy.json").unlink()
    with pytest.raises(SignatureError, match="missing"):
        verify_policy(policy, public)
    with pytest.raises(MissingSignatureError):
        verify_policy(tmp_path, public)


def test_bundle_signature_is_not_a_policy_signature(signed_bundle: Path, keys: dict[str, Path]) -> None:
    shutil.copy(signed_bundle / BUNDLE_SIGNATURE, signed_bundle / "policy.sig")
    with pytest.raises(SignatureError, match="signs a bundle"):
        verify_policy(signed_bundle, load_public_key(keys["public"]))


def test_signed_messages(keys: dict[str, Path]) -> None:
    private, public = load_private_key(keys["private"]), load_public_key(keys["public"])
    envelope = sign_message(b"policy bytes", private, kind="policy")
    assert open_message(envelope, public, kind="policy") == b"policy bytes"
    with pytest.raises(SignatureError):
        open_message(envelope, public, kind="bundle")  # made for another purpose
    with pytest.raises(SignatureError, match="changed"):
        open_message(envelope[:-1] + b"X", public, kind="policy")
    with pytest.raises(SignatureError, match="not trusted"):
        open_message(envelope, load_public_key(keys["other_public"]), kind="policy")
    with pytest.raises(MissingSignatureError):
        open_message(b"policy bytes", public, kind="policy")
    with pytest.raises(SignatureError, match="exceeds"):
        open_message(envelope, public, kind="policy", max_payload_bytes=4)
