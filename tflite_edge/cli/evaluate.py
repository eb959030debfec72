"""tflite-edge evaluate: per-exit accuracy of a bundle on labelled data."""

from __future__ import annotations

import argparse

import numpy as np

from ..arrays import load_labeled
from ..bundle import load_bundle
from ..errors import InputError
from ..runtime import BundleRunner
from .common import add_backend_options, print_json


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate", help="per-exit top-1 accuracy of a bundle on labelled data",
        description="Per-exit top-1 accuracy on D.npz (arrays x and y), measured with this machine's "
                    "interpreter (--backend, --kernels) next to what the manifest recorded at conversion, and "
                    "with --model the agreement of each exit's top-1 class with the float Keras model "
                    "(needs TensorFlow).",
    )
    parser.add_argument("bundle", help="bundle directory")
    parser.add_argument("--data", required=True, metavar="D.npz", help=".npz with x (inputs) and y (labels)")
    parser.add_argument("--model", metavar="MODEL.keras", help="also compare with this Keras model")
    parser.add_argument("--json", action="store_true", help="print JSON")
    add_backend_options(parser, kernels=True)
    parser.set_defaults(func=run)


def _load(path: str) -> tuple[np.ndarray, np.ndarray]:
    x, y = load_labeled(path, what="--data")
    return x, (y.argmax(axis=-1) if y.ndim > 1 else y).astype(np.int64)


def run(args: argparse.Namespace) -> int:
    from ..converters.verify import top1_accuracies, top1_agreement

    x, y = _load(args.data)
    bundle = load_bundle(args.bundle)
    runner = BundleRunner(bundle, backend=args.backend, num_threads=args.threads, kernels=args.kernels)
    predictions = runner.predict(x)
    report: dict[str, dict[str, float]] = {
        name: {"accuracy": accuracy} for name, accuracy in top1_accuracies(predictions, y).items()
    }
    manifest = bundle.manifest
    for name in report:
        recorded = manifest.exit(name).accuracy
        if recorded is not None:
            report[name]["manifest_accuracy"] = recorded
    measured_on = runner.measured_on()
    recorded_on = manifest.accuracy_measured_on
    if args.model:
        from ..converters import load_keras_model
        from ..converters.verify import keras_predictions
        from ..errors import VerificationError

        reference = keras_predictions(load_keras_model(args.model), x)
        try:
            agreement = top1_agreement(predictions, reference)
        except VerificationError as e:
            raise InputError(f"the Keras model does not match the bundle: {e}") from e
        keras_accuracy = top1_accuracies({name: reference[name] for name in predictions}, y)
        for name in predictions:
            report[name]["keras_accuracy"] = keras_accuracy[name]
            report[name]["agreement"] = agreement[name]
    if args.json:
        print_json({"bundle_id": bundle.bundle_id, "samples": len(x), "measured_on": measured_on.to_dict(),
                    "manifest_measured_on": None if recorded_on is None else recorded_on.to_dict(),
                    "exits": report})
        return 0
    print(f"bundle {bundle.bundle_id} on {len(x)} samples, measured here with {measured_on.describe()}")
    if recorded_on is not None:
        print(f"  (the manifest's accuracy was measured with {recorded_on.describe()}, on its validation data)")
    for name, figures in report.items():
        line = f"  {name:<16} top-1 {figures['accuracy']:.2%}"
        if "manifest_accuracy" in figures:
            line += f"   manifest {figures['manifest_accuracy']:.2%}"
        if "agreement" in figures:
            line += f"   Keras top-1 {figures['keras_accuracy']:.2%}   agreement {figures['agreement']:.2%}"
        print(line)
    return 0
