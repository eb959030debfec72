"""tflite-edge inspect: show a bundle's structure."""

from __future__ import annotations

import argparse
from typing import Any

from ..bundle import Bundle, TensorSpec, load_bundle
from .common import print_json


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "inspect", help="show a bundle's segments, exits, cuts and checks",
        description="Show a bundle's structure. --json mirrors bundle.json plus derived totals.",
    )
    parser.add_argument("bundle", help="bundle directory")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(func=run)


def derived_totals(bundle: Bundle) -> dict[str, Any]:
    """Figures computed from the manifest: sizes and the bytes sent at each partition point."""
    m = bundle.manifest
    sent = m.partition_bytes()
    return {
        "num_segments": m.num_segments,
        "num_exits": len(m.exits),
        "total_size_bytes": sum(s.size_bytes for s in m.segments),
        "partitions": [
            {"partition": k, "device_segments": k, "edge_segments": m.num_segments - k, "bytes_sent": sent[k]}
            for k in range(m.num_segments + 1)
        ],
    }


def _tensor(spec: TensorSpec) -> str:
    quant = f" q(scale={spec.scale:.6g}, zp={spec.zero_point})" if spec.is_quantized else ""
    return f"{spec.name} {spec.dtype}{list(spec.shape)} {spec.bytes:,} B{quant}"


def print_summary(bundle: Bundle) -> None:
    m = bundle.manifest
    totals = derived_totals(bundle)
    print(f"bundle {m.bundle_id}  model {m.model_name}  quantization {m.quantization}  ({bundle.path})")
    print(f"converter {m.converter_version}, TensorFlow {m.tensorflow_version}, schema {m.schema_version}")
    print(f"input: {_tensor(m.input)}")
    print(f"segments: {m.num_segments}, {totals['total_size_bytes']:,} bytes in all")
    for s in m.segments:
        print(f"  [{s.index}] {s.file}  {s.size_bytes:,} B  sha256 {s.sha256[:12]}…")
        for t in s.inputs:
            print(f"      in : {_tensor(t)}")
        for t in s.outputs:
            print(f"      out: {_tensor(t)}")
    print("exits:")
    for e in m.exits:
        acc = "" if e.accuracy is None else f"  top-1 {e.accuracy:.2%}"
        ref = "" if e.float_accuracy is None else f" (float Keras {e.float_accuracy:.2%})"
        print(f"  {e.name}: segment {e.segment}, {e.num_classes} classes{acc}{ref}")
    print("cuts:" if m.cuts else "cuts: none (one segment)")
    for c in m.cuts:
        print(f"  after {c.layer}: segment {c.segment} -> {c.segment + 1}, {c.activation_bytes:,} B")
    print("bytes sent to the edge per partition: " + ", ".join(
        f"K={p['partition']}: {p['bytes_sent']:,}" for p in totals["partitions"]))
    if m.verification:
        v = m.verification
        exact = "bit-exact" if v.bit_exact else f"max |diff| {v.max_abs_diff:.3g}"
        print(f"verified: segment chain vs whole model on {v.samples} samples: {exact}")


def run(args: argparse.Namespace) -> int:
    bundle = load_bundle(args.bundle)
    if args.json:
        print_json({**bundle.manifest.to_dict(), "derived": derived_totals(bundle)})
    else:
        print_summary(bundle)
    return 0
