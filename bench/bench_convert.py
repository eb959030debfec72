"""Converter benchmarks: split overhead, conversion time, fidelity on digits.

    python bench/bench_convert.py [--repeats N] [--json FILE]

1. Split overhead: MobileNetV2-224 (weights=None) int8, cut at block_5_add and block_12_add;
   the sum of the segments' median latencies over the whole model's median latency, same
   interpreter and thread count, measured in one run (blocks of each measure in turn).
   Target <= 1.02. Also the chain run back to back (segment interpreters handing over to
   each other), which adds the cost of switching between interpreters, and what a device
   runs instead: the fused file of all three segments through ``BundleRunner.run``, and
   ``DeviceRuntime.infer`` with every segment local against the whole model with the same
   quantize/dequantize (target <= 1.03 at 1, 2 and 4 threads).
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
from tflite_edge.device import DeviceRuntime  # noqa: E402
from tflite_edge.runtime import BundleRunner, SegmentInterpreter, dequantize  # noqa: E402

THREADS = (1, 2, 4)


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
    last = bundle.manifest.num_segments
    final = bundle.manifest.exits[-1]
    final_spec = bundle.manifest.segments[final.segment].output(final.name)
    for threads in THREADS:
        runner = BundleRunner(bundle, num_threads=threads, use_fused=False)
        fused = BundleRunner(bundle, num_threads=threads)
        device = DeviceRuntime(bundle, num_threads=threads)
        whole = SegmentInterpreter(result.whole_model, num_threads=threads, label="whole model")
        name = bundle.manifest.input.name
        tensors = runner.run({name: runner.quantize_input(calibration[0])})
        segment_feeds = [{t.name: tensors[t.name] for t in s.inputs} for s in bundle.manifest.segments]
        whole_feed = {whole.input_names[0]: tensors[name]}
        interpreters = [runner.interpreter(i) for i in range(len(segment_feeds))]
        pairs = list(zip(interpreters, segment_feeds, strict=True))
        head = {name: tensors[name]}

        def whole_end_to_end(w: SegmentInterpreter = whole, r: BundleRunner = runner) -> None:
            # What the device runtime does around the model: quantize in, dequantize the exit out.
            out = w.run({w.input_names[0]: r.quantize_input(calibration[0])})
            dequantize(out[final.name], final_spec)

        calls = {"whole": lambda w=whole, f=whole_feed: w.run(f),
                 "chain": lambda p=pairs: [it.run(f) for it, f in p],
                 "fused": lambda r=fused, f=head: r.run(f, stop=last),
                 "whole_end_to_end": whole_end_to_end,
                 "device": lambda d=device: d.infer(calibration[0], exit=final.name, partition=last)}
        for i, (it, f) in enumerate(pairs):
            calls[f"segment_{i}"] = lambda it=it, f=f: it.run(f)
        timings: dict[str, list[float]] = {k: [] for k in calls}
        block = 20
        for _ in range(max(repeats // block, 1)):
            # Blocks of each measure in turn: every interpreter runs warm within its block, and
            # drift over the run hits all measures alike.
            for key, call in calls.items():
                call()
                for _ in range(block):
                    t0 = time.perf_counter()
                    call()
                    timings[key].append(time.perf_counter() - t0)
        medians = {k: statistics.median(v) * 1e3 for k, v in timings.items()}
        segments = {k: v for k, v in medians.items() if k.startswith("segment_")}
        figures[f"threads_{threads}"] = {
            "whole_ms": medians["whole"],
            "segments_ms": segments,
            "sum_of_segments_ms": sum(segments.values()),
            "ratio": sum(segments.values()) / medians["whole"],
            "chain_ms": medians["chain"],
            "chain_ratio": medians["chain"] / medians["whole"],
            "fused_ms": medians["fused"],
            "fused_ratio": medians["fused"] / medians["whole"],
            "device_ms": medians["device"],
            "device_ratio": medians["device"] / medians["whole_end_to_end"],
        }
        device.close()
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
    for threads in THREADS:
        f = mobilenet[f"threads_{threads}"]
        parts = " + ".join(f"{v:.3f}" for v in f["segments_ms"].values())
        print(f"  {threads} thread(s): whole {f['whole_ms']:.3f} ms, "
              f"segments {parts} = {f['sum_of_segments_ms']:.3f} ms, ratio {f['ratio']:.3f} (target <= 1.02); "
              f"chain back to back {f['chain_ms']:.3f} ms, ratio {f['chain_ratio']:.3f}; "
              f"fused {f['fused_ms']:.3f} ms, ratio {f['fused_ratio']:.3f}; "
              f"DeviceRuntime all local / whole end to end {f['device_ratio']:.3f} (target <= 1.03)")
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
