"""tflite-edge edgetpu: pre-check and compile a bundle's segments for the Edge TPU."""

from __future__ import annotations

import argparse

from .common import print_json


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "edgetpu", help="pre-check and compile a bundle's segments for the Coral Edge TPU",
        description="check: report per segment what would keep it off the Edge TPU (non-int8 tensors, dynamic "
                    "shapes, operations outside the Edge TPU list). compile: run the pre-check, then Coral's "
                    "edgetpu_compiler on each segment, and record the compiled files in bundle.json beside the "
                    "CPU ones (own sha256, compiler version, operators mapped). `tflite-edge device --delegate "
                    "edgetpu` then runs the compiled segments.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  tflite-edge edgetpu check bundle\n  tflite-edge edgetpu compile bundle --segment 0 "
               "--segment 1",
    )
    sub = parser.add_subparsers(dest="edgetpu_command", metavar="ACTION", required=True)
    for name, text in (("check", "report what would keep each segment off the Edge TPU"),
                       ("compile", "compile segments with edgetpu_compiler and record them in the bundle")):
        action = sub.add_parser(name, help=text, description=text)
        action.add_argument("bundle", help="bundle directory")
        action.add_argument("--segment", type=int, action="append", metavar="N",
                            help="segment index (repeatable; default: every segment)")
        action.add_argument("--json", action="store_true", help="print the report as JSON")
        action.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..bundle import load_bundle
    from ..edgetpu import check_bundle, compile_bundle, compiler_version

    bundle = load_bundle(args.bundle)
    if args.edgetpu_command == "compile":
        compiler_version()  # fails first, with what to install, when the compiler is absent
    checks = check_bundle(bundle, args.segment)
    if args.edgetpu_command == "check":
        if args.json:
            print_json({"bundle_id": bundle.bundle_id, "segments": [c.to_dict() for c in checks]})
        else:
            _print_checks(checks)
        return 0 if all(c.ok for c in checks) else 1
    if not args.json:
        _print_checks(checks)
    compiled = compile_bundle(bundle, args.segment)
    variants = [(s.index, s.variant("edgetpu")) for s in compiled.manifest.segments]
    rows = [(i, v) for i, v in variants if v is not None and (args.segment is None or i in args.segment)]
    if args.json:
        print_json({"bundle_id": compiled.bundle_id,
                    "variants": [{"segment": i, **v.to_dict()} for i, v in rows]})
        return 0
    for index, variant in rows:
        left = f"; on the CPU: {', '.join(variant.cpu_ops)}" if variant.cpu_ops else ""
        print(f"segment {index}: {variant.file} ({variant.size_bytes:,} B, compiler {variant.compiler_version}), "
              f"{variant.mapped_ops} operators on the Edge TPU{left}")
    return 0


def _print_checks(checks: list) -> None:  # type: ignore[type-arg]
    for check in checks:
        if check.ok:
            print(f"{check.label}: every operator can run on the Edge TPU ({', '.join(check.operators)})")
            continue
        print(f"{check.label}: would not run entirely on the Edge TPU:")
        for problem in check.problems:
            print(f"  - {problem}")
        if check.first_cpu_op is not None:
            print(f"  operators from index {check.first_cpu_op} on would stay on the CPU")
