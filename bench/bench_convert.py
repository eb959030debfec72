"""Converter benchmarks: split overhead, conversion time, fidelity on digits.

    python bench/bench_convert.py [--repeats N] [--json FILE]

1. Split overhead: MobileNetV2-224 (weights=None) int8, cut at block_5_add and block_12_add;
   the sum of the segments' median latencies over the whole model's median latency, same
   interpreter and thread count, interleaved in one run. Target <= 1.02.
2. Conversion time of that model with 3 segments and 32 calibration images. Target <= 45 s.
3. Fidelity on scikit-learn digits: per-exit top-1 of the int8 bundle vs the float Keras
   model (target within 1 point) and chain vs whole quantized model (target bit-exact).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from tflite_edge.converters import compare_chain_to_model, convert_model  # noqa: E402
from tflite_edge.runtime import BundleRunner, SegmentInterpreter  # noqa: E402


def split_overhead(work: Path, repeats: int) -> dict:
    import keras

    model = keras.applications.MobileNetV2(weights=None, input_shape=(224, 224, 3))
    calibration = np.random.default_rng(0).uniform(-1, 1, size=(32, 224, 224, 3)).astype(np.float32)
    start = time.perf_counter()
    result = convert_model(model, work / "mobilenetv2", cuts=["block_5_add", "block_12_add"], calibration=calibration,
                           verify_samples=4)
    conversion_s = time.perf_counter() - start
    bundle = result.bundle
    figures: dict = {"conversion_s": conversion_s, "bit_exact": bundle.manifest.verification.bit_exact,
                     "cut_bytes": {c.layer: c.activation_bytes for c in bundle.manifest.cuts}}
    for threads in (1, 2):
        runner = BundleRunner(bundle, num_threads=threads)
        whole = SegmentInterpreter(result.whole_model, num_threads=threads, label="whole model")
        name = bundle.manifest.input.name
        tensors = runner.run({name: runner.quantize_input(calibration[0])})
        segment_feeds = [{t.name: tensors[t.name] for t in s.inputs} for s in bundle.manifest.segments]
        whole_feed = {whole.input_names[0]: tensors[name]}
        timings: dict[str, list[float]] = {"whole": [], **{f"segment_{i}": [] for i in range(len(segment_feeds))}}
        for _ in range(5):  # warm-up
            whole.run(whole_feed)
            for i, f in enumerate(segment_feeds):
                runner.interpreter(i).run(f)
        for _ in range(repeats):  # interleaved, so drift hits both sides alike
            t0 = time.perf_counter()
            whole.run(whole_feed)
            timings["whole"].append(time.perf_counter() - t0)
            for i, f in enumerate(segment_feeds):
                t0 = time.perf_counter()
                runner.interpreter(i).run(f)
                timings[f"segment_{i}"].append(time.perf_counter() - t0)
        medians = {k: statistics.median(v) * 1e3 for k, v in timings.items()}
        # Per interleaved round: sum of segment times / whole-model time; robust to drift.
        rounds = [sum(timings[f"segment_{i}"][r] for i in range(len(segment_feeds))) / timings["whole"][r]
                  for r in range(repeats)]
        segments_ms = sum(v for k, v in medians.items() if k.startswith("segment_"))
        figures[f"threads_{threads}"] = {
            "whole_ms": medians["whole"],
            "segments_ms": {k: v for k, v in medians.items() if k != "whole"},
            "sum_of_segments_ms": segments_ms,
            "ratio": segments_ms / medians["whole"],
            "ratio_median_of_rounds": statistics.median(rounds),
        }
    return figures


def digits_fidelity(work: Path) -> dict:
    from tflite_edge import zoo

    x_train, y_train, x_val, y_val = zoo.digits_data()
    model = zoo.train_digits_model(zoo.build_digits_model(), x_train, y_train, epochs=30)
    result = convert_model(model, work / "digits", cuts=["block_1_out", "block_2_out"], calibration=x_train[:200],
                           validation=(x_val, y_val))
    check = compare_chain_to_model(result.bundle, result.whole_model, x_val)
    return {
        "validation_samples": len(x_val),
        "exits": {e.name: {"int8": e.accuracy, "float": e.float_accuracy,
                           "delta_points": 100 * (e.accuracy - e.float_accuracy)}
                  for e in result.bundle.manifest.exits},
        "chain_vs_whole_bit_exact": check.bit_exact,
        "chain_vs_whole_max_abs_diff": check.max_abs_diff,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=100)
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        mobilenet = split_overhead(work, args.repeats)
        digits = digits_fidelity(work)
    print("## Converter")
    print(f"MobileNetV2-224 int8, cuts block_5_add + block_12_add ({mobilenet['cut_bytes']})")
    print(f"  conversion with 32 calibration images, 3 segments: {mobilenet['conversion_s']:.1f} s (target <= 45 s)")
    for threads in (1, 2):
        f = mobilenet[f"threads_{threads}"]
        parts = " + ".join(f"{v:.2f}" for v in f["segments_ms"].values())
        print(f"  {threads} thread(s): whole {f['whole_ms']:.2f} ms, "
              f"segments {parts} = {f['sum_of_segments_ms']:.2f} ms, "
              f"ratio {f['ratio']:.3f}, median per-round ratio {f['ratio_median_of_rounds']:.3f} (target <= 1.02)")
    print(f"  chain vs whole quantized model: {'bit-exact' if mobilenet['bit_exact'] else 'NOT bit-exact'}")
    print(f"Digits (scikit-learn, {digits['validation_samples']} validation images), int8 vs float Keras top-1:")
    for name, e in digits["exits"].items():
        print(f"  {name:<8} int8 {e['int8']:.2%}  float {e['float']:.2%}  delta {e['delta_points']:+.2f} points")
    exact = digits["chain_vs_whole_bit_exact"]
    print(f"  chain vs whole quantized model on all validation images: {'bit-exact' if exact else 'NOT bit-exact'}")
    if args.json:
        Path(args.json).write_text(json.dumps({"mobilenetv2": mobilenet, "digits": digits}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
