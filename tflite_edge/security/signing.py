"""Ed25519 signatures for bundles, policies and messages delivered over the network.

A bundle is signed by a detached file ``bundle.sig`` beside ``bundle.json``. The signature
covers the sha256 of bundle.json's *canonical* bytes (keys sorted, no whitespace), and
bundle.json pins the sha256 of every segment, so one signature protects the whole bundle
while the file stays readable. A policy directory (``policy.json``, ``policy.tflite``) is
signed by ``policy.sig`` over the sha256 of each of its files. The signature file::

    {"format": "tflite-edge-signature/1", "algorithm": "ed25519", "kind": "bundle",
     "key_id": "9b1c…", "files": {"bundle.json": "<sha256>"}, "signature": "<base64>"}

What is signed is ``format \\n kind \\n canonical JSON of files``, so a bundle signature is
never accepted for a policy and vice versa. Verification needs the signer's public key
(``tflite-edge keys generate`` writes the pair); anything that does not verify raises a
``SignatureError`` and nothing is loaded.

``sign_message``/``open_message`` wrap a payload (a policy pushed over MQTT, say) in a
small binary envelope with the same guarantees.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import json
import os
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ..bundle.store import (
    MANIFEST_NAME,
    MAX_MANIFEST_BYTES,
    Bundle,
    bundle_from_manifest_bytes,
    load_bundle,
    read_fused_file,
    read_manifest_bytes,
    read_segment_file,
    sha256_hex,
)
from ..errors import BundleError, MissingSignatureError, SignatureError, SigningKeyError, TfliteEdgeError
from ..files import read_regular

__all__ = [
    "SIGNATURE_FORMAT",
    "BUNDLE_SIGNATURE",
    "POLICY_SIGNATURE",
    "Signature",
    "generate_key_pair",
    "load_private_key",
    "load_public_key",
    "load_public_keys",
    "trusted_keys",
    "key_id",
    "canonical_json_bytes",
    "sign_bundle",
    "verify_bundle",
    "sign_policy",
    "verify_policy",
    "sign_message",
    "open_message",
]

SIGNATURE_FORMAT = "tflite-edge-signature/1"
BUNDLE_SIGNATURE = "bundle.sig"
POLICY_SIGNATURE = "policy.sig"
MAX_SIGNATURE_FILE_BYTES = 64 * 1024
MAX_KEY_FILE_BYTES = 64 * 1024
MAX_SIGNED_FILES = 64
MAX_POLICY_FILE_BYTES = 64 << 20  # policy.json and policy.tflite are KBs; a bound, not a budget
_MESSAGE_MAGIC = b"TFES"
_MESSAGE_HEADER = struct.Struct("<4sB8s64s")  # magic, version, key id (8 bytes), signature
_KINDS = ("bundle", "policy")

PublicKeys = Ed25519PublicKey | Sequence[Ed25519PublicKey]


# -- keys ----------------------------------------------------------------------------------

def key_id(public_key: Ed25519PublicKey) -> str:
    """A short fingerprint of a public key: the first 16 hex digits of sha256(raw key)."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def generate_key_pair(
    private_path: str | os.PathLike[str],
    public_path: str | os.PathLike[str] | None = None,
    *,
    password: str | None = None,
    overwrite: bool = False,
) -> str:
    """Write a new Ed25519 key pair as PEM files and return its key id.

    The private key (PKCS#8, encrypted when ``password`` is given) is created with mode
    0600; the public key (SubjectPublicKeyInfo) defaults to ``<private>.pub``. Existing
    files are kept unless ``overwrite``, so a signing key is never lost by accident.
    """
    private = Path(private_path)
    public = Path(public_path) if public_path is not None else private.with_name(private.name + ".pub")
    for path in (private, public):
        if path.exists() and not overwrite:
            raise SigningKeyError(f"{path} already exists; choose another path or pass overwrite (--force)")
    key = Ed25519PrivateKey.generate()
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password.encode()) if password else serialization.NoEncryption()
    )
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    try:
        private.parent.mkdir(parents=True, exist_ok=True)
        public.parent.mkdir(parents=True, exist_ok=True)
        if private.exists():
            private.unlink()
        # Created 0600 from the start: the key never exists with wider permissions.
        fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
        public.write_bytes(
            key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        )
    except OSError as e:
        raise SigningKeyError(f"cannot write the key pair: {e}") from e
    return key_id(key.public_key())


def _read_key_file(path: str | os.PathLike[str], what: str) -> bytes:
    file = Path(path)
    if not file.exists():
        raise SigningKeyError(f"{what} {file} does not exist; create a pair with `tflite-edge keys generate`")
    return read_regular(file, what=what, max_bytes=MAX_KEY_FILE_BYTES, error=SigningKeyError)


def load_private_key(path: str | os.PathLike[str], password: str | None = None) -> Ed25519PrivateKey:
    """The Ed25519 private key in PEM file ``path`` (``password`` if it is encrypted)."""
    data = _read_key_file(path, "private key")
    try:
        key = serialization.load_pem_private_key(data, password.encode() if password else None)
    except TypeError as e:  # encrypted without a password, or a password for a plain key
        raise SigningKeyError(f"private key {path}: {e}; pass the right --password (or none)") from e
    except (ValueError, UnsupportedAlgorithm) as e:
        raise SigningKeyError(f"private key {path} is not a PEM private key, or the password is wrong: {e}") from e
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError(f"private key {path} is a {type(key).__name__}, not an Ed25519 key")
    return key


def load_public_key(path: str | os.PathLike[str]) -> Ed25519PublicKey:
    """The Ed25519 public key in PEM file ``path``."""
    data = _read_key_file(path, "public key")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm) as e:
        raise SigningKeyError(f"public key {path} is not a PEM public key: {e}") from e
    if not isinstance(key, Ed25519PublicKey):
        raise SigningKeyError(f"public key {path} is a {type(key).__name__}, not an Ed25519 key")
    return key


def load_public_keys(paths: Iterable[str | os.PathLike[str]]) -> list[Ed25519PublicKey]:
    """Several trusted public keys (e.g. the current and the next signing key during a rotation)."""
    keys = [load_public_key(p) for p in paths]
    if not keys:
        raise SigningKeyError("no trusted public key given; pass --public-key FILE")
    return keys


def trusted_keys(public_keys: PublicKeys) -> list[Ed25519PublicKey]:
    """One key or several as a non-empty list; ``SigningKeyError`` when none is given."""
    keys = [public_keys] if isinstance(public_keys, Ed25519PublicKey) else list(public_keys)
    if not keys:
        raise SigningKeyError("no trusted public key given")
    return keys


_key_list = trusted_keys  # the earlier private name, still imported elsewhere


# -- the signature file -----------------------------------------------------------------------

def canonical_json_bytes(data: bytes) -> bytes:
    """The canonical form of a JSON document: sorted keys, no whitespace, ASCII only.

    Re-indenting bundle.json does not change it; changing any value does.
    """
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError) as e:
        raise SignatureError(f"the signed JSON file is not valid JSON: {e}") from e
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=True).encode()


@dataclass(frozen=True)
class Signature:
    """A parsed signature file: what kind of content, by which key, over which file digests."""

    kind: str
    key_id: str
    files: Mapping[str, str]
    signature: bytes

    def signed_bytes(self) -> bytes:
        return _signed_bytes(self.kind, self.files)

    def to_json(self) -> str:
        doc = {
            "format": SIGNATURE_FORMAT,
            "algorithm": "ed25519",
            "kind": self.kind,
            "key_id": self.key_id,
            "files": dict(sorted(self.files.items())),
            "signature": base64.b64encode(self.signature).decode(),
        }
        return json.dumps(doc, indent=2) + "\n"

    @classmethod
    def from_json(cls, data: bytes, where: str) -> Signature:
        """Parse a signature file strictly; anything odd is a ``SignatureError``."""
        if len(data) > MAX_SIGNATURE_FILE_BYTES:
            raise SignatureError(f"{where} is larger than any signature file")
        try:
            doc = json.loads(data)
        except (ValueError, RecursionError) as e:
            raise SignatureError(f"{where} is not valid JSON: {e}") from e
        expected = {"format", "algorithm", "kind", "key_id", "files", "signature"}
        if not isinstance(doc, dict) or set(doc) != expected:
            raise SignatureError(f"{where} must be an object with exactly the fields {', '.join(sorted(expected))}")
        if doc["format"] != SIGNATURE_FORMAT or doc["algorithm"] != "ed25519":
            raise SignatureError(f"{where}: format {doc['format']!r} / algorithm {doc['algorithm']!r} not supported")
        files = doc["files"]
        if (
            doc["kind"] not in _KINDS
            or not isinstance(doc["key_id"], str)
            or not isinstance(files, dict)
            or not 0 < len(files) <= MAX_SIGNED_FILES
            or not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items())
            or not isinstance(doc["signature"], str)
        ):
            raise SignatureError(f"{where}: malformed kind, key_id, files or signature field")
        try:
            signature = base64.b64decode(doc["signature"], validate=True)
        except (binascii.Error, ValueError) as e:
            raise SignatureError(f"{where}: the signature is not base64") from e
        if len(signature) != 64:
            raise SignatureError(f"{where}: an Ed25519 signature has 64 bytes, this one {len(signature)}")
        return cls(doc["kind"], doc["key_id"], dict(files), signature)


def _signed_bytes(kind: str, files: Mapping[str, str]) -> bytes:
    body = json.dumps(dict(sorted(files.items())), sort_keys=True, separators=(",", ":"))
    return f"{SIGNATURE_FORMAT}\n{kind}\n{body}".encode()


def _verify(signature: Signature, public_keys: PublicKeys, where: str) -> None:
    keys = _key_list(public_keys)
    matching = [k for k in keys if key_id(k) == signature.key_id]
    if not matching:
        trusted = ", ".join(key_id(k) for k in keys)
        raise SignatureError(
            f"{where} was made by key {signature.key_id}, which is not trusted here (trusted: {trusted})"
        )
    for key in matching:
        try:
            key.verify(signature.signature, signature.signed_bytes())
            return
        except InvalidSignature:
            continue
    raise SignatureError(f"{where} does not verify with key {signature.key_id}: the signed content was changed")


def _read_signature(directory: Path, name: str, kind: str) -> Signature:
    path = directory / name
    if not path.exists() and not path.is_symlink():
        raise MissingSignatureError(f"{directory} has no {name}; sign it with `tflite-edge sign {directory} --key KEY`")
    # Bounded before reading: a signature file larger than any signature is refused unread.
    data = read_regular(path, what="signature", max_bytes=MAX_SIGNATURE_FILE_BYTES, error=SignatureError)
    signature = Signature.from_json(data, str(path))
    if signature.kind != kind:
        raise SignatureError(f"{path} signs a {signature.kind}, not a {kind}")
    return signature


def _write_signature(directory: Path, name: str, signature: Signature) -> Path:
    path = directory / name
    tmp = directory / f".{name}.tmp"
    try:
        tmp.write_text(signature.to_json())
        tmp.replace(path)
    except OSError as e:
        raise SignatureError(f"cannot write {path}: {e.strerror}") from e
    return path


def _sign(kind: str, files: Mapping[str, str], private_key: Ed25519PrivateKey) -> Signature:
    public = private_key.public_key()
    return Signature(kind, key_id(public), dict(files), private_key.sign(_signed_bytes(kind, files)))


def _read(path: Path) -> bytes:
    return read_regular(path, what="signed file", max_bytes=MAX_POLICY_FILE_BYTES, error=SignatureError)


# -- bundles -------------------------------------------------------------------------------

def sign_bundle(
    bundle_dir: str | os.PathLike[str], private_key: Ed25519PrivateKey, *, bundle_version: int | None = None
) -> Path:
    """Sign the bundle in ``bundle_dir`` (loaded and checksum-verified first); returns ``bundle.sig``.

    ``bundle_version`` first records that release number in bundle.json (rewritten
    atomically), so the signature covers it: devices with a state file never go back to a
    lower one.
    """
    bundle = load_bundle(bundle_dir)
    manifest_path = bundle.path / MANIFEST_NAME
    if bundle_version is not None and bundle_version != bundle.manifest.bundle_version:
        if not 0 < bundle_version < 1 << 63:
            raise SignatureError(f"a bundle version is a positive integer, got {bundle_version}")
        versioned = dataclasses.replace(bundle.manifest, bundle_version=bundle_version)
        tmp = bundle.path / f".{MANIFEST_NAME}.tmp"
        try:
            tmp.write_text(versioned.to_json())
            tmp.replace(manifest_path)
        except OSError as e:
            raise SignatureError(f"cannot write {manifest_path}: {e.strerror}") from e
    manifest_bytes = read_manifest_bytes(bundle.path)
    digest = hashlib.sha256(canonical_json_bytes(manifest_bytes)).hexdigest()
    return _write_signature(bundle.path, BUNDLE_SIGNATURE, _sign("bundle", {MANIFEST_NAME: digest}, private_key))


def verify_bundle(bundle_dir: str | os.PathLike[str], public_keys: PublicKeys) -> Bundle:
    """Load the bundle only if ``bundle.sig`` verifies with one of ``public_keys``.

    Every file is read once, and what was verified is what is returned: the signature is
    checked over the bytes of bundle.json that are then parsed, and each segment's bytes are
    hashed against the signed manifest and kept in the returned ``Bundle``, so swapping files
    in the directory afterwards changes nothing that runs. Raises ``MissingSignatureError``
    without a signature, ``SignatureError`` for anything changed or signed by an untrusted key.
    """
    root = Path(bundle_dir)
    if not root.is_dir():
        raise SignatureError(f"{root} is not a bundle directory")
    signature = _read_signature(root, BUNDLE_SIGNATURE, "bundle")
    where = str(root / BUNDLE_SIGNATURE)
    _verify(signature, public_keys, where)
    if set(signature.files) != {MANIFEST_NAME}:
        raise SignatureError(f"{where} must sign exactly {MANIFEST_NAME}")
    try:
        manifest_bytes = read_regular(root / MANIFEST_NAME, what="manifest", max_bytes=MAX_MANIFEST_BYTES,
                                      error=SignatureError)
    except SignatureError as e:
        raise SignatureError(f"the signed bundle {root} cannot be read: {e}") from e
    if hashlib.sha256(canonical_json_bytes(manifest_bytes)).hexdigest() != signature.files[MANIFEST_NAME]:
        raise SignatureError(f"{root / MANIFEST_NAME} was changed after the bundle was signed")
    try:
        bundle = bundle_from_manifest_bytes(root, manifest_bytes, verify_checksums=False)
    except TfliteEdgeError as e:  # a signed manifest that does not load: still not usable
        raise SignatureError(f"the signed bundle {root} does not load: {e}") from e
    segments = []
    for index, spec in enumerate(bundle.manifest.segments):
        try:
            data = read_segment_file(root, spec)
        except BundleError as e:
            raise SignatureError(f"the signed bundle {root} cannot be used: {e}") from e
        if sha256_hex(data) != spec.sha256:
            raise SignatureError(
                f"segment {index} ({spec.file}) does not match the sha256 pinned by the signed {MANIFEST_NAME}: "
                "it was changed after signing"
            )
        segments.append(data)
    fused = []
    for fused_spec in bundle.manifest.fused:
        try:
            fused.append(read_fused_file(root, fused_spec))
        except BundleError as e:  # a checksum error too: the sha256 is pinned by the signed manifest
            raise SignatureError(f"the signed bundle {root} cannot be used: {e}; it was changed after signing") from e
    return dataclasses.replace(bundle, segment_data=tuple(segments), fused_data=tuple(fused))


# -- policies ------------------------------------------------------------------------------

def _policy_files(root: Path) -> list[Path]:
    if not root.is_dir():
        raise SignatureError(f"{root} is not a policy directory")
    return sorted(
        p for p in root.iterdir() if p.is_file() and p.name != POLICY_SIGNATURE and not p.name.startswith(".")
    )


def sign_policy(policy_dir: str | os.PathLike[str], private_key: Ed25519PrivateKey) -> Path:
    """Sign every file of a policy directory; returns ``policy.sig``."""
    root = Path(policy_dir)
    files = {p.name: sha256_hex(_read(p)) for p in _policy_files(root)}
    if not files:
        raise SignatureError(f"{root} holds no files to sign")
    if len(files) > MAX_SIGNED_FILES:
        raise SignatureError(f"{root} holds more than {MAX_SIGNED_FILES} files")
    return _write_signature(root, POLICY_SIGNATURE, _sign("policy", files, private_key))


def verify_policy(policy_dir: str | os.PathLike[str], public_keys: PublicKeys) -> Path:
    """Check ``policy.sig``: every file signed, unchanged, and no unsigned file added. Returns the directory."""
    root = Path(policy_dir)
    signature = _read_signature(root, POLICY_SIGNATURE, "policy")
    where = str(root / POLICY_SIGNATURE)
    _verify(signature, public_keys, where)
    present = {p.name: p for p in _policy_files(root)}
    extra = sorted(set(present) - set(signature.files))
    missing = sorted(set(signature.files) - set(present))
    if extra or missing:
        raise SignatureError(
            f"{root}: files differ from the signed set (unsigned: {extra or 'none'}, missing: {missing or 'none'})"
        )
    for name, digest in signature.files.items():
        if sha256_hex(_read(present[name])) != digest:
            raise SignatureError(f"{root / name} was changed after the policy was signed")
    return root


# -- messages ------------------------------------------------------------------------------

def sign_message(payload: bytes, private_key: Ed25519PrivateKey, *, kind: str) -> bytes:
    """``payload`` in a signed envelope: magic, version, key id, Ed25519 signature, payload.

    ``kind`` (e.g. ``"policy"``) is signed too, so an envelope made for one purpose is
    refused for another.
    """
    signature = private_key.sign(_message_bytes(kind, payload))
    fingerprint = bytes.fromhex(key_id(private_key.public_key()))
    return _MESSAGE_HEADER.pack(_MESSAGE_MAGIC, 1, fingerprint, signature) + payload


def open_message(envelope: bytes, public_keys: PublicKeys, *, kind: str, max_payload_bytes: int = 16 << 20) -> bytes:
    """The payload of a signed envelope, or ``SignatureError`` (``MissingSignatureError`` for an unsigned one)."""
    view = memoryview(envelope)
    if len(view) < _MESSAGE_HEADER.size or bytes(view[:4]) != _MESSAGE_MAGIC:
        raise MissingSignatureError("the message is not a signed envelope")
    magic, version, fingerprint, signature = _MESSAGE_HEADER.unpack_from(view)
    if version != 1:
        raise SignatureError(f"signed envelope version {version} is not supported")
    if len(view) - _MESSAGE_HEADER.size > max_payload_bytes:
        raise SignatureError(f"signed payload exceeds {max_payload_bytes} bytes")
    payload = bytes(view[_MESSAGE_HEADER.size:])
    claimed = fingerprint.hex()
    for key in _key_list(public_keys):
        if key_id(key) != claimed:
            continue
        try:
            key.verify(signature, _message_bytes(kind, payload))
            return payload
        except InvalidSignature as e:
            raise SignatureError(f"the {kind} message does not verify with key {claimed}: it was changed") from e
    raise SignatureError(f"the {kind} message was signed by key {claimed}, which is not trusted here")


def _message_bytes(kind: str, payload: bytes) -> bytes:
    return f"{SIGNATURE_FORMAT}\nmessage:{kind}\n".encode() + payload
