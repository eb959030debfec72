"""Small helpers shared by the command modules."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..runtime.backends import BACKEND_ORDER, KERNELS
from ..transport.protocol import DEFAULT_PREFIX
from ..transport.wire import CODECS

__all__ = [
    "add_backend_options",
    "add_bundle_key_option",
    "add_codec_option",
    "add_homeassistant_option",
    "add_prefix_option",
    "add_state_file_option",
    "homeassistant_of",
    "open_bundle",
    "print_json",
    "progress",
]


def add_backend_options(parser: argparse.ArgumentParser, *, threads: bool = True, kernels: bool = False) -> None:
    parser.add_argument(
        "--backend",
        choices=BACKEND_ORDER,
        help="TFLite interpreter to use (default: the first installed of " + ", ".join(BACKEND_ORDER) + ")",
    )
    if threads:
        parser.add_argument("--threads", type=int, default=None, metavar="N", help="interpreter threads")
    if kernels:
        parser.add_argument(
            "--kernels", choices=KERNELS, default="default",
            help="default: the runtime's default delegate (LiteRT: XNNPACK, fastest); builtin: TFLite's "
                 "builtin kernels only, whose int8 results are the same on every runtime and CPU",
        )


def add_prefix_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--prefix", default=DEFAULT_PREFIX, help=f"MQTT topic prefix (default: {DEFAULT_PREFIX})")


def add_request_options(parser: argparse.ArgumentParser) -> None:
    """--deadline-ms, --threshold and --entropy: what each request asks, on any device."""
    parser.add_argument("--deadline-ms", type=float, metavar="D",
                        help="answer within D ms, falling back locally if the edge is late (default: no deadline; "
                             "an offload waits at most 10 s for the edge)")
    parser.add_argument("--threshold", action="append", default=[], metavar="EXIT=VALUE",
                        help="early exit: stop at EXIT when its top-1 probability >= VALUE (repeatable)")
    parser.add_argument("--entropy", action="store_true",
                        help="thresholds are maximum entropies (nats) instead of minimum top-1 probabilities")


def exit_rule(args: argparse.Namespace) -> Any:
    """The early-exit rule of --threshold/--entropy (``InputError`` for a malformed threshold)."""
    from ..device import ExitRule
    from ..errors import InputError
    from ..transport.protocol import ThresholdKind, parse_threshold

    thresholds: dict[str, float] = {}
    for item in args.threshold:
        parsed = parse_threshold(item)
        if parsed is None:
            raise InputError(f"--threshold {item!r}: expected EXIT=VALUE, e.g. exit_1=0.9")
        thresholds[parsed[0]] = parsed[1]
    return ExitRule(thresholds, ThresholdKind.ENTROPY if args.entropy else ThresholdKind.TOP1)


def add_codec_option(parser: argparse.ArgumentParser, help: str) -> None:
    parser.add_argument("--codec", default="none", choices=tuple(CODECS), help=help)


def print_json(document: Any) -> None:
    json.dump(document, sys.stdout, indent=2)
    sys.stdout.write("\n")


def progress(message: str) -> None:
    """Progress lines go to stderr so that stdout stays machine-readable."""
    print(f"… {message}", file=sys.stderr, flush=True)


def add_bundle_key_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--bundle-key", action="append", default=[], metavar="PUB.pem",
        help="use a bundle only if `tflite-edge sign` signed it with the key matching this Ed25519 public "
             "key (repeatable, for key rotation)",
    )


def add_state_file_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--state-file", metavar="FILE",
        help="keep the highest signed bundle version (with --bundle-key) and policy version used here in FILE, "
             "and refuse older ones after a restart (rollback protection; see docs/security.md)",
    )


def open_bundle(path: str, key_paths: list[str], state_file: str | None = None) -> Any:
    """The bundle at ``path``: checksum-verified, and signature-verified when keys are given.

    With keys and ``state_file``, a signed bundle whose ``bundle_version`` is below the
    highest one used here for the same model is refused, and a higher one raises the floor.
    """
    if key_paths:
        from ..security.signing import load_public_keys, verify_bundle

        bundle = verify_bundle(path, load_public_keys(key_paths))
        if state_file is not None:
            from ..security.floors import VersionFloors

            floors = VersionFloors(state_file)
            manifest = bundle.manifest
            floors.check("bundle", manifest.model_name, manifest.bundle_version,
                         f"signed bundle {path} ({manifest.model_name})")
            floors.raise_to("bundle", manifest.model_name, manifest.bundle_version)
        return bundle
    from ..bundle import load_bundle

    return load_bundle(path)


def add_homeassistant_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--homeassistant", nargs="?", const="homeassistant", metavar="DISCOVERY_PREFIX",
        help="announce this device's sensors to Home Assistant (MQTT discovery, retained, under DISCOVERY_PREFIX, "
             "default homeassistant); without it, an earlier announcement is removed",
    )


def homeassistant_of(args: argparse.Namespace) -> Any:
    """The ``HomeAssistant`` discovery setting the command line asks for."""
    from ..errors import InputError, TopicError
    from ..telemetry.homeassistant import DEFAULT_DISCOVERY_PREFIX, HomeAssistant
    from ..transport.protocol import validate_prefix

    prefix = args.homeassistant or DEFAULT_DISCOVERY_PREFIX
    try:
        validate_prefix(prefix)
    except TopicError as e:
        raise InputError(f"--homeassistant {prefix!r}: {e}") from e
    return HomeAssistant(enabled=args.homeassistant is not None, discovery_prefix=prefix)
