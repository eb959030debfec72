"""tflite-edge keys / sign / verify: Ed25519 signing of bundles and policies."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ..errors import InputError, SigningKeyError
from .common import print_json

PASSWORD_HELP = ("name of an environment variable holding the private key's password "
                 "(never put a password on the command line)")


def register(subparsers: argparse._SubParsersAction) -> None:
    keys = subparsers.add_parser(
        "keys", help="create Ed25519 signing keys for bundles and policies",
        description="Manage the Ed25519 key pair that signs bundles and policies. Keep the private key "
                    "on the build machine; copy only the .pub file to devices and edges.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  tflite-edge keys generate -o keys/release.key   # writes release.key and release.key.pub",
    )
    actions = keys.add_subparsers(dest="keys_action", metavar="ACTION", required=True)
    generate = actions.add_parser("generate", help="write a new key pair as PEM files")
    generate.add_argument("-o", "--output", required=True, metavar="FILE",
                          help="private key file (mode 0600); the public key goes to FILE.pub")
    generate.add_argument("--public", metavar="FILE", help="public key file (default: OUTPUT.pub)")
    generate.add_argument("--password-env", metavar="VAR", help="encrypt the private key; " + PASSWORD_HELP)
    generate.add_argument("--force", action="store_true", help="replace existing key files")
    generate.set_defaults(func=run_generate)

    sign = subparsers.add_parser(
        "sign", help="sign a bundle or a policy directory (Ed25519)",
        description="Write a detached signature: bundle.sig beside bundle.json for a bundle (it covers "
                    "bundle.json, which pins every segment's sha256), policy.sig for a policy directory "
                    "(it covers every file in it).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  tflite-edge sign bundle --key keys/release.key --bundle-version 3",
    )
    sign.add_argument("path", help="bundle directory or policy directory")
    sign.add_argument("--key", required=True, metavar="FILE", help="Ed25519 private key (PEM)")
    sign.add_argument("--password-env", metavar="VAR", help=PASSWORD_HELP)
    sign.add_argument("--bundle-version", type=int, metavar="N",
                      help="record release number N in bundle.json before signing; devices and edges with "
                           "--state-file never go back to a lower one")
    sign.set_defaults(func=run_sign)

    verify = subparsers.add_parser(
        "verify", help="verify a bundle's or policy's signature",
        description="Check the signature of a bundle or policy directory against trusted public keys. "
                    "Exit status 0 only when it verifies; every segment or file is hashed as well.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  tflite-edge verify bundle --public-key keys/release.key.pub",
    )
    verify.add_argument("path", help="bundle directory or policy directory")
    verify.add_argument("--public-key", required=True, action="append", metavar="FILE",
                        help="trusted Ed25519 public key (PEM); repeat to trust several (key rotation)")
    verify.add_argument("--json", action="store_true", help="print the result as JSON")
    verify.set_defaults(func=run_verify)


def _password(variable: str | None) -> str | None:
    if not variable:
        return None
    value = os.environ.get(variable)
    if not value:
        raise SigningKeyError(f"environment variable {variable} is not set or empty")
    return value


def _is_bundle(path: Path) -> bool:
    from ..bundle.store import MANIFEST_NAME

    return (path / MANIFEST_NAME).is_file()


def run_generate(args: argparse.Namespace) -> int:
    from ..security.signing import generate_key_pair

    private = Path(args.output)
    public = Path(args.public) if args.public else private.with_name(private.name + ".pub")
    kid = generate_key_pair(private, public, password=_password(args.password_env), overwrite=args.force)
    print(f"key {kid}: private key {private} (keep it secret), public key {public} (copy it to devices)")
    return 0


def run_sign(args: argparse.Namespace) -> int:
    from ..security.signing import key_id, load_private_key, sign_bundle, sign_policy

    key = load_private_key(args.key, _password(args.password_env))
    path = Path(args.path)
    if args.bundle_version is not None and not _is_bundle(path):
        raise InputError("--bundle-version applies to bundles; policies carry their version in their message")
    signature = (sign_bundle(path, key, bundle_version=args.bundle_version) if _is_bundle(path)
                 else sign_policy(path, key))
    print(f"signed {path} with key {key_id(key.public_key())}: {signature}")
    return 0


def run_verify(args: argparse.Namespace) -> int:
    from ..errors import SignatureError
    from ..files import read_regular
    from ..security.signing import (
        BUNDLE_SIGNATURE,
        MAX_SIGNATURE_FILE_BYTES,
        POLICY_SIGNATURE,
        Signature,
        load_public_keys,
        verify_bundle,
        verify_policy,
    )

    keys = load_public_keys(args.public_key)
    path = Path(args.path)
    if _is_bundle(path):
        bundle = verify_bundle(path, keys)
        detail = f"bundle {bundle.bundle_id}, {bundle.manifest.num_segments} segments"
        kind, name = "bundle", BUNDLE_SIGNATURE
    else:
        verify_policy(path, keys)
        kind, name, detail = "policy", POLICY_SIGNATURE, "every file matches"
    signature_bytes = read_regular(path / name, what="signature", max_bytes=MAX_SIGNATURE_FILE_BYTES,
                                   error=SignatureError)
    signer = Signature.from_json(signature_bytes, str(path / name)).key_id
    if args.json:
        print_json({"path": str(path), "kind": kind, "verified": True, "key_id": signer})
    else:
        print(f"OK: {path} ({detail}) is signed by trusted key {signer}")
    return 0
