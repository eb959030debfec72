"""tflite-edge run: run a bundle's segment chain locally."""

from __future__ import annotations

import argparse

import numpy as np

from ..arrays import load_array
from ..bundle import load_bundle
from ..errors import InputError
from ..runtime import BundleRunner
from .common import add_backend_options


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "run", help="run a bundle locally on inputs from an .npy file",
        description="Run the segment chain on every sample of X.npy (or one sample without the batch "
                    "axis) and write each requested exit's float32 output under the exit's name.",
    )
    parser.add_argument("bundle", help="bundle directory")
    parser.add_argument("--input", required=True, metavar="X.npy",
                        help="float32 inputs, (N, ...) or one sample: .npy, or .npz with array x")
    parser.add_argument("--exit", default="all", metavar="NAME|all", help="exit to write (default: all)")
    parser.add_argument("-o", "--output", required=True, metavar="OUT.npz", help="output file")
    add_backend_options(parser, kernels=True)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    x = load_array(args.input, what="--input")
    bundle = load_bundle(args.bundle)
    exits = None if args.exit == "all" else [args.exit]
    if exits:
        try:
            bundle.manifest.exit(args.exit)
        except KeyError as e:
            raise InputError(str(e.args[0])) from e
    runner = BundleRunner(bundle, backend=args.backend, num_threads=args.threads, kernels=args.kernels)
    outputs = runner.predict(x, exits)
    np.savez(args.output, **outputs)  # type: ignore[arg-type]  # numpy stubs type **kwds poorly
    shapes = ", ".join(f"{k} {list(v.shape)}" for k, v in outputs.items())
    print(f"wrote {args.output}: {shapes} (backend {runner.backend_name})")
    return 0
