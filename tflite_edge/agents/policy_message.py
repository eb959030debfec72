"""A trained policy as one signed MQTT message, and loading such a message on a device.

The edge's online agent publishes every new policy version as a **retained** message on
``{prefix}/policy/{bundle_id}`` (QoS 1), so a device that connects later still receives
the newest one. The payload is a signed envelope (``security.signing.sign_message`` with
``kind="policy"``) around this package, little-endian::

    magic  b"TFEP"  4 bytes
    format          u8   (1)
    version         u64  the policy version, strictly increasing per bundle
    json_bytes      u32  length of policy.json
    tflite_bytes    u32  length of policy.tflite
    policy.json     json_bytes of UTF-8 JSON
    policy.tflite   tflite_bytes

Every length is checked against its bound and against the message size before anything
is allocated, the envelope's signature before anything is parsed, and the policy before it
is offered to the device: it must be for the device's bundle, name only exits and
partitions that bundle has, and run in the TFLite interpreter. Numpy, the TFLite
interpreter and ``cryptography`` only: devices import this module.
"""

from __future__ import annotations

import json
import struct
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import PolicyError, SignatureError, TfliteEdgeError
from .tflite_policy import MAX_POLICY_BYTES, TFLitePolicy

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

    from ..bundle.manifest import Manifest

__all__ = [
    "MAX_POLICY_JSON_BYTES",
    "MAX_POLICY_MESSAGE_BYTES",
    "PolicyPackage",
    "decode_package",
    "encode_package",
    "load_policy_message",
    "policy_topic",
    "sign_policy_message",
]

_MAGIC = b"TFEP"
_FORMAT = 1
_HEADER = struct.Struct("<4sBQII")
MAX_POLICY_JSON_BYTES = 1 << 20  # policy.json holds a few action rows and constants: KBs, not MBs
# The signed envelope adds 77 bytes (magic, version, key id, signature); 1 KiB of slack.
MAX_POLICY_MESSAGE_BYTES = _HEADER.size + MAX_POLICY_JSON_BYTES + MAX_POLICY_BYTES + 1024


def policy_topic(prefix: str, bundle_id: str) -> str:
    """The retained topic that carries the live policy of ``bundle_id``: ``{prefix}/policy/{bundle_id}``."""
    from ..transport.protocol import validate_prefix, validate_topic_level

    validate_prefix(prefix)
    return f"{prefix}/policy/{validate_topic_level(bundle_id, 'bundle id')}"


@dataclass(frozen=True)
class PolicyPackage:
    """A policy version as it travels: its number, policy.json (parsed) and policy.tflite."""

    version: int
    metadata: Mapping[str, Any]
    tflite: bytes

    @property
    def bundle_id(self) -> str:
        return str(self.metadata.get("bundle_id", ""))

    @classmethod
    def from_directory(cls, policy_dir: str | Path, version: int) -> PolicyPackage:
        """The package of a policy directory (``policy.json`` + ``policy.tflite``)."""
        root = Path(policy_dir)
        try:
            metadata = json.loads((root / "policy.json").read_text(encoding="utf-8"))
            tflite = (root / "policy.tflite").read_bytes()
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise PolicyError(f"cannot read the policy in {root}: {e}") from e
        return cls(version, metadata, tflite)


def encode_package(package: PolicyPackage) -> bytes:
    """The package's bytes (unsigned; see ``sign_policy_message``)."""
    doc = json.dumps(dict(package.metadata), separators=(",", ":"), allow_nan=False).encode()
    if len(doc) > MAX_POLICY_JSON_BYTES or len(package.tflite) > MAX_POLICY_BYTES:
        raise PolicyError(f"the policy is too large to publish (json {len(doc)} B, tflite {len(package.tflite)} B)")
    if not 0 < package.version < 1 << 63:
        raise PolicyError(f"policy version must be a positive integer, got {package.version}")
    return _HEADER.pack(_MAGIC, _FORMAT, package.version, len(doc), len(package.tflite)) + doc + package.tflite


def decode_package(data: bytes) -> PolicyPackage:
    """Parse a package strictly: every length bounded and consistent before anything is copied."""
    view = memoryview(data)
    if len(view) < _HEADER.size:
        raise PolicyError(f"the policy message is {len(view)} bytes, shorter than its {_HEADER.size}-byte header")
    magic, fmt, version, json_len, tflite_len = _HEADER.unpack_from(view)
    if magic != _MAGIC or fmt != _FORMAT:
        raise PolicyError(f"not a policy message of format {_FORMAT} (magic {bytes(magic)!r}, format {fmt})")
    if version == 0:
        raise PolicyError("policy version 0 is reserved for a policy loaded from a local directory")
    if json_len > MAX_POLICY_JSON_BYTES or tflite_len > MAX_POLICY_BYTES:
        raise PolicyError(f"policy message declares json {json_len} B / tflite {tflite_len} B, over the limits "
                          f"({MAX_POLICY_JSON_BYTES} / {MAX_POLICY_BYTES})")
    if _HEADER.size + json_len + tflite_len != len(view):
        raise PolicyError(f"policy message lengths ({json_len} + {tflite_len}) do not match its size {len(view)}")
    start = _HEADER.size
    try:
        metadata = json.loads(bytes(view[start:start + json_len]).decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise PolicyError(f"policy.json in the message is not valid JSON: {e}") from e
    if not isinstance(metadata, dict):
        raise PolicyError("policy.json in the message must be a JSON object")
    return PolicyPackage(int(version), metadata, bytes(view[start + json_len:]))


def sign_policy_message(package: PolicyPackage, private_key: Ed25519PrivateKey) -> bytes:
    """The MQTT payload for ``package``: the package inside a signed ``policy`` envelope."""
    from ..security.signing import sign_message

    return sign_message(encode_package(package), private_key, kind="policy")


def _check_actions(policy: TFLitePolicy, manifest: Manifest) -> None:
    exits, segments = len(manifest.exits), manifest.num_segments
    for action in policy.actions:
        if not 0 <= action.exit < exits or not 0 <= action.partition <= segments:
            raise PolicyError(f"the policy's action {action} does not fit bundle {manifest.bundle_id} "
                              f"({exits} exits, {segments} segments)")
        if action.threshold is not None and not 0.0 <= action.threshold <= 1.0:
            raise PolicyError(f"the policy's action {action} has a threshold outside [0, 1]")


def load_policy_message(
    payload: bytes,
    public_keys: Ed25519PublicKey | list[Ed25519PublicKey],
    *,
    manifest: Manifest,
    backend: str | None = None,
) -> tuple[TFLitePolicy, int]:
    """Verify, parse and load a policy message for ``manifest``'s bundle; returns (policy, version).

    Raises ``SignatureError`` (``MissingSignatureError`` when unsigned) if the envelope does
    not verify with a trusted key, ``PolicyError`` for anything else wrong with it. The size
    is checked before the signature, the signature before any parsing.
    """
    from ..security.signing import open_message

    if len(payload) > MAX_POLICY_MESSAGE_BYTES:
        raise PolicyError(f"policy message of {len(payload)} bytes exceeds the limit of {MAX_POLICY_MESSAGE_BYTES}")
    body = open_message(payload, public_keys, kind="policy", max_payload_bytes=MAX_POLICY_MESSAGE_BYTES)
    package = decode_package(body)
    if package.bundle_id != manifest.bundle_id:
        raise PolicyError(f"policy version {package.version} is for bundle {package.bundle_id!r}, "
                          f"this device runs {manifest.bundle_id!r}")
    # TFLitePolicy reads a directory; the files live only while it loads (the model is then in memory).
    with tempfile.TemporaryDirectory(prefix="tflite-edge-policy-") as tmp:
        root = Path(tmp)
        (root / "policy.json").write_text(json.dumps(dict(package.metadata)), encoding="utf-8")
        (root / "policy.tflite").write_bytes(package.tflite)
        try:
            policy = TFLitePolicy(root, backend=backend)
        except (SignatureError, PolicyError):
            raise
        except TfliteEdgeError as e:  # the interpreter refused the model
            raise PolicyError(f"policy version {package.version} does not load: {e}") from e
        except (KeyError, TypeError, ValueError) as e:  # well-formed JSON with wrong types inside
            raise PolicyError(f"policy version {package.version} has a malformed policy.json: {e}") from e
    _check_actions(policy, manifest)
    return policy, package.version
