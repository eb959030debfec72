"""tflite-edge zoo: ready multi-exit example models."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "zoo", help="write a ready multi-exit example model (trained on scikit-learn digits)",
        description="Build and train a 3-exit CNN on scikit-learn's 8x8 digits (no download) and save it "
                    "as .keras; --data also writes the calibration/validation split as .npz (x, y).",
    )
    parser.add_argument("name", choices=["digits", "digits-residual"], help="which model")
    parser.add_argument("-o", "--output", required=True, metavar="MODEL.keras", help="where to save the model")
    parser.add_argument("--data", metavar="D.npz", help="also write the validation split (x, y) here")
    parser.add_argument("--calibration", metavar="X.npy", help="also write 200 training inputs here")
    parser.add_argument("--epochs", type=int, default=30, help="training epochs (default 30)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from .. import zoo
    from .common import progress

    x_train, y_train, x_val, y_val = zoo.digits_data()
    progress(f"training {args.name} on {len(x_train)} digits for {args.epochs} epochs")
    model = zoo.train_digits_model(
        zoo.build_digits_model(residual=args.name == "digits-residual"), x_train, y_train, epochs=args.epochs
    )
    model.save(args.output)
    print(f"wrote {args.output} (exits: {', '.join(t._keras_history.operation.name for t in model.outputs)})")
    if args.data:
        np.savez(args.data, x=x_val, y=y_val)
        print(f"wrote {args.data} ({len(x_val)} validation samples)")
    if args.calibration:
        np.save(args.calibration, x_train[:200])
        print(f"wrote {args.calibration} (200 calibration inputs)")
    return 0
