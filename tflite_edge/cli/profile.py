"""tflite-edge profile: per-segment latency and activation bytes on this machine."""

from __future__ import annotations

import argparse

from ..bundle import load_bundle
from ..errors import InputError
from ..runtime.profile import profile_bundle
from .common import add_backend_options, print_json


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "profile", help="per-segment median latency and activation bytes on this machine",
        description="Time every segment and the whole chain on this machine (median over --repeats runs). "
                    "--json output is what `tflite-edge policy simulate` reads as a profile.",
    )
    parser.add_argument("bundle", help="bundle directory")
    parser.add_argument("--repeats", type=int, default=50, metavar="N", help="timed runs per segment (default 50)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("-o", "--output", metavar="FILE",
                        help="also write the JSON profile to FILE (run on a device: its device profile, which "
                             "the demo and the live benchmark emulate with --device-profile)")
    parser.add_argument("--power-mw", type=float, metavar="MW",
                        help="record this device's power while computing (mW, measured) in the JSON profile")
    add_backend_options(parser, kernels=True)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    bundle = load_bundle(args.bundle)
    profile = profile_bundle(bundle, threads=args.threads, repeats=args.repeats, backend=args.backend,
                             kernels=args.kernels)
    document = profile.to_dict()
    if args.power_mw is not None:
        if not args.power_mw >= 0:
            raise InputError(f"--power-mw must be a non-negative number of milliwatts, got {args.power_mw}")
        document["compute_power_mw"] = args.power_mw
    if args.output:
        with open(args.output, "w") as f:
            json.dump(document, f, indent=2)
    if args.json:
        print_json(document)
        return 0
    threads = profile.threads or "default"
    print(f"bundle {profile.bundle_id} on {profile.machine}, backend {profile.backend} ({profile.kernels} kernels), "
          f"threads {threads}")
    for s in profile.segments:
        print(f"  segment {s.index}: median {s.median_ms:.3f} ms, p90 {s.p90_ms:.3f} ms, outputs {s.output_bytes:,} B")
    total = document["sum_of_segments_ms"]
    print(f"  chain: median {profile.chain_median_ms:.3f} ms (sum of segments {total:.3f} ms)")
    print(f"  input {profile.input_bytes:,} B; cuts: " + (", ".join(f"{c} {b:,} B" for c, b in profile.cuts) or "none"))
    return 0
