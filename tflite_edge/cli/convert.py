"""tflite-edge convert: Keras multi-exit model -> segment bundle."""

from __future__ import annotations

import argparse

from ..bundle import QUANTIZATION_MODES
from .common import progress
from .inspect import print_summary

HELP = """\
Convert a Keras 3 functional model whose outputs are its exits (in order, the last being the
final classifier) into a segment bundle: one TFLite file per segment plus bundle.json.

The whole model is quantized once (one calibration pass), each segment is cut out of that
one flatbuffer, and the chain of segments is verified against the whole model.

examples:
  tflite-edge convert model.keras -o bundle --auto-cuts 2 --calibration calib.npy
  tflite-edge convert model.keras -o bundle --cut block_5_add --cut block_12_add \\
      --calibration calib.npy --validation val.npz
  tflite-edge convert model.keras -o bundle --quantize float16
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "convert", help="convert a Keras multi-exit model into a segment bundle", description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model", help="the Keras model file (.keras)")
    parser.add_argument("-o", "--output", required=True, metavar="BUNDLE_DIR", help="bundle directory to create")
    parser.add_argument("--cut", action="append", default=[], metavar="LAYER",
                        help="cut after this layer (repeatable); the layer's output must separate the graph")
    parser.add_argument("--auto-cuts", type=int, default=None, metavar="N",
                        help="choose N cuts automatically (balanced compute, small activations)")
    parser.add_argument("--list-cuts", action="store_true", help="print the valid cut layers and exit")
    parser.add_argument("--quantize", choices=QUANTIZATION_MODES, default="int8",
                        help="int8 = full integer with int8 input/output (needs --calibration); default int8")
    parser.add_argument("--calibration", metavar="FILE", help="representative inputs: .npy, or .npz with array x")
    parser.add_argument("--validation", metavar="FILE", help=".npz with x and y: measure per-exit accuracy")
    parser.add_argument("--max-calibration", type=int, default=500, metavar="N",
                        help="use at most N calibration samples (default 500)")
    parser.add_argument("--force", action="store_true", help="replace BUNDLE_DIR if it exists")
    parser.add_argument("--no-fused", dest="fuse", action="store_false",
                        help="leave out the fused files of segments [0, K) (a smaller bundle; a device then "
                             "hands over between segment interpreters)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..arrays import load_array, load_labeled
    from ..converters import convert, graph_from_keras, load_keras_model
    from ..converters.convert import check_options
    from ..errors import InputError, ModelLoadError

    # Everything that can be checked without the model is checked before loading it (seconds)
    # and converting (minutes): the options, the output, and the data files.
    if not Path(args.model).is_file():
        raise ModelLoadError(f"{args.model} does not exist or is not a file")
    if args.list_cuts:
        extra = [o for o, given in (("--cut", args.cut), ("--auto-cuts", args.auto_cuts is not None)) if given]
        if extra:
            raise InputError(f"--list-cuts only lists the valid cuts; drop {' and '.join(extra)}")
    else:
        check_options(args.output, cuts=args.cut, auto_cuts=args.auto_cuts, quantize=args.quantize,
                      has_calibration=args.calibration is not None, overwrite=args.force)
    calibration = None
    if args.calibration:
        calibration = load_array(args.calibration, what="--calibration")[: args.max_calibration]
    validation = load_labeled(args.validation, what="--validation") if args.validation else None
    progress(f"loading {args.model}")
    model = load_keras_model(args.model)
    if args.list_cuts:
        graph = graph_from_keras(model)
        sizes = {layer.name: layer.output_shape for layer in graph.layers}
        for name in graph.valid_cuts():
            print(f"{name}\t{'x'.join(map(str, sizes[name] or ()))}")
        return 0
    bundle = convert(
        model, args.output, cuts=args.cut, auto_cuts=args.auto_cuts, quantize=args.quantize,
        calibration=calibration, validation=validation, overwrite=args.force, progress=progress, fuse=args.fuse,
    )
    print_summary(bundle)
    return 0
