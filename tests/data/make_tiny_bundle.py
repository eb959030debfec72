"""Regenerate tests/data/tiny-bundle: a small real int8 bundle for the fast unit tier.

The untrained 3-exit digits CNN (seeded), cut at block_1_out and block_2_out, calibrated on
32 digits images. Unit tests load it with the TFLite interpreter, without TensorFlow;
regenerate it (and commit the result) when the converter's output format changes:

    PYTHONPATH=. .venv/bin/python tests/data/make_tiny_bundle.py
"""

from __future__ import annotations

import shutil
from pathlib import Path

HERE = Path(__file__).resolve().parent
TARGET = HERE / "tiny-bundle"


def main() -> None:
    from tflite_edge import zoo
    from tflite_edge.converters import convert

    x_train, _, x_val, y_val = zoo.digits_data()
    shutil.rmtree(TARGET, ignore_errors=True)
    bundle = convert(zoo.build_digits_model(seed=7), TARGET, cuts=["block_1_out", "block_2_out"], quantize="int8",
                     calibration=x_train[:32], validation=(x_val[:64], y_val[:64]), verify_samples=4)
    size = sum(p.stat().st_size for p in TARGET.iterdir())
    print(f"wrote {TARGET} (bundle {bundle.bundle_id}, {size} bytes)")


if __name__ == "__main__":
    main()
