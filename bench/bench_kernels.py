"""Which kernels, which speed, which numbers: LiteRT with its default delegate (XNNPACK),
LiteRT with the builtin kernels (`--kernels builtin`) and tflite-runtime 2.14 (.venv-device).

MobileNetV2-224 (weights=None) int8, cut at block_5_add and block_12_add. Each runtime runs
`tflite-edge profile` in its own process, in alternating rounds, so that load on the machine
hits all three alike; the figures are the median over rounds of each run's chain median.
Then the final exit on seeded inputs: int8 steps between runtimes and top-1 agreement.

    python bench/bench_kernels.py [--rounds 3] [--repeats 20] [--threads 1] [--bundle DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEVICE_PYTHON = REPO / ".venv-device" / "bin" / "python"


def mobilenet_bundle(work: Path) -> Path:
    import keras

    from tflite_edge.converters import convert_model

    model = keras.applications.MobileNetV2(weights=None, input_shape=(224, 224, 3))
    calibration = np.random.default_rng(0).uniform(-1, 1, size=(16, 224, 224, 3)).astype(np.float32)
    convert_model(model, work / "mobilenetv2", cuts=["block_5_add", "block_12_add"], calibration=calibration,
                  verify_samples=2)
    return work / "mobilenetv2"


def tfe(python: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(REPO)}
    done = subprocess.run([python, "-m", "tflite_edge", *args], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"tflite-edge {' '.join(args)} failed: {done.stderr[-2000:]}")
    return done


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--samples", type=int, default=8, help="seeded inputs for the agreement check")
    parser.add_argument("--bundle", help="an existing bundle instead of MobileNetV2")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-kernels-") as scratch:
        work = Path(scratch)
        bundle = Path(args.bundle) if args.bundle else mobilenet_bundle(work)
        runtimes = {
            "LiteRT, default (XNNPACK)": (sys.executable, ["--kernels", "default"]),
            "LiteRT, builtin kernels": (sys.executable, ["--kernels", "builtin"]),
        }
        if DEVICE_PYTHON.exists():
            runtimes["tflite-runtime 2.14"] = (str(DEVICE_PYTHON), ["--backend", "tflite-runtime"])
        times: dict[str, list[float]] = {name: [] for name in runtimes}
        for _ in range(args.rounds):
            for name, (python, extra) in runtimes.items():
                done = tfe(python, "profile", str(bundle), "--json", "--repeats", str(args.repeats),
                           "--threads", str(args.threads), *extra)
                times[name].append(json.loads(done.stdout)["chain_median_ms"])
        manifest = json.loads((bundle / "bundle.json").read_text())
        shape = manifest["input"]["shape"][1:]
        x = np.random.default_rng(1).uniform(-1, 1, size=(args.samples, *shape)).astype(np.float32)
        np.save(work / "x.npy", x)
        outputs = {}
        for name, (python, extra) in runtimes.items():
            out = work / f"{len(outputs)}.npz"
            tfe(python, "run", str(bundle), "--input", str(work / "x.npy"), "-o", str(out), *extra)
            with np.load(out) as data:
                outputs[name] = {k: data[k] for k in data.files}
        final = manifest["exits"][-1]["name"]
        segment = manifest["segments"][manifest["exits"][-1]["segment"]]
        scale = next(t["scale"] for t in segment["outputs"] if t["name"] == final)
        print(f"{Path(bundle).name}, {args.threads} thread(s), chain median over {args.rounds} alternating rounds "
              f"of {args.repeats} runs:")
        base = statistics.median(times["LiteRT, default (XNNPACK)"])
        for name, values in times.items():
            median = statistics.median(values)
            print(f"  {name:<28} {median:8.2f} ms  ({median / base:5.2f}x the default)")
        reference = outputs["LiteRT, builtin kernels"][final]
        print(f"final exit on {args.samples} seeded inputs, against LiteRT builtin kernels:")
        for name, result in outputs.items():
            value = result[final]
            steps = int(round(float(np.abs(value - reference).max()) / scale)) if scale else 0
            agree = float(np.mean(value.argmax(-1) == reference.argmax(-1)))
            print(f"  {name:<28} bit-identical: {np.array_equal(value, reference)!s:<5}  max {steps} int8 steps  "
                  f"top-1 agreement {agree:.0%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
