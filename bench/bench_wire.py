"""Which activation compression pays off at which link speed.

For every cut of a bundle (and the quantized model input, partition 0) this runs the
bundle on real inputs, takes the activations the device would send, and measures for each
codec (none, zlib 1/6, lz4, zstd 1/3, when installed) the frame size and the time to
encode+compress and to decompress+decode a frame. Compression saves
8 x (raw - compressed) bits on the link and costs (compress + decompress) seconds, so it
pays on links slower than

    break-even Mbit/s = 8 * (raw_bytes - frame_bytes) / (encode_s + decode_s) / 1e6

Also printed: for links of 1, 5, 20 and 100 Mbit/s, the codec with the lowest
(encode + transfer + decode) time per cut.

    .venv/bin/python bench/bench_wire.py                      # digits bundle (trains it, ~15 s)
    .venv/bin/python bench/bench_wire.py --bundle B --data X.npy
    .venv/bin/python bench/bench_wire.py --mobilenet          # MobileNetV2-224 int8, 3 segments

Times are on this host; a device CPU is typically several times slower, which moves the
break-even speed down by the same factor.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from tflite_edge.arrays import load_array  # noqa: E402
from tflite_edge.bundle import Bundle, load_bundle  # noqa: E402
from tflite_edge.runtime import BundleRunner  # noqa: E402
from tflite_edge.transport import wire  # noqa: E402

LINK_MBPS = (1.0, 5.0, 20.0, 100.0)


def digits_bundle(directory: Path) -> tuple[Bundle, np.ndarray]:
    from tflite_edge import zoo
    from tflite_edge.converters import convert

    x_train, y_train, x_val, y_val = zoo.digits_data()
    model = zoo.train_digits_model(zoo.build_digits_model(), x_train, y_train, epochs=20)
    bundle = convert(model, directory / "digits", cuts=["block_1_out", "block_2_out"], calibration=x_train[:200],
                     validation=(x_val, y_val))
    return bundle, x_val[:64].astype(np.float32)


def mobilenet_bundle(directory: Path) -> tuple[Bundle, np.ndarray]:
    import keras

    from tflite_edge.converters import convert

    model = keras.applications.MobileNetV2(weights=None, input_shape=(224, 224, 3))
    # No ImageNet here, and the weights are untrained: synthetic "photographs" (random
    # smooth gradients and blobs plus 3 % sensor noise, in MobileNet's [-1, 1] range).
    # Figures for real photographs and trained weights will differ; the digits bundle
    # gives real data through a trained network.
    rng = np.random.default_rng(0)
    grid = np.linspace(0, 1, 224, dtype=np.float32)
    yy, xx = np.meshgrid(grid, grid, indexing="ij")
    images = []
    for _ in range(24):
        channels = []
        for _ in range(3):
            a, b, c, f = rng.uniform(-1, 1, 4)
            channels.append(a * xx + b * yy + c * np.sin(2 * np.pi * f * 3 * (xx + yy)))
        image = np.stack(channels, axis=-1) + rng.normal(0, 0.03, size=(224, 224, 3))
        images.append(np.clip(image, -1, 1).astype(np.float32))
    images = np.stack(images)
    bundle = convert(model, directory / "mobilenet", cuts=["block_5_add", "block_12_add"], calibration=images[:8],
                     verify_samples=2)
    return bundle, images[8:]


def activations(bundle: Bundle, x: np.ndarray) -> dict[int, list[np.ndarray]]:
    """The tensor each partition K would send, for every sample: {K: [array, ...]}."""
    runner = BundleRunner(bundle)
    manifest = bundle.manifest
    found: dict[int, list[np.ndarray]] = {k: [] for k in range(manifest.num_segments)}
    for sample in x:
        seen = runner.run({manifest.input.name: runner.quantize_input(sample)})
        for k in range(manifest.num_segments):
            found[k].append(np.array(seen[manifest.segments[k].inputs[0].name]))
    return found


def per_call_s(fn: Callable[[], object], min_time_s: float = 0.02) -> float:
    """Median seconds per call, repeating short calls so the clock resolution does not matter."""
    reps = 1
    while True:
        start = time.perf_counter()
        for _ in range(reps):
            fn()
        elapsed = time.perf_counter() - start
        if elapsed >= min_time_s or reps >= 1 << 16:
            break
        reps *= 4
    runs = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(reps):
            fn()
        runs.append((time.perf_counter() - start) / reps)
    return statistics.median(runs)


def codecs() -> list[tuple[str, str, int | None]]:
    available = wire.available_codecs()
    options = [("none", "none", None), ("zlib-1", "zlib", 1), ("zlib-6", "zlib", 6)]
    if "lz4" in available:
        options.append(("lz4", "lz4", None))
    if "zstd" in available:
        options += [("zstd-1", "zstd", 1), ("zstd-3", "zstd", 3)]
    return options


def measure(bundle: Bundle, tensors: dict[int, list[np.ndarray]], samples: int) -> None:
    manifest = bundle.manifest
    print(f"bundle {manifest.model_name} ({manifest.bundle_id}), {manifest.num_segments} segments, "
          f"codecs available: {', '.join(wire.available_codecs())}")
    header = (f"{'K':>2} {'tensor':<16} {'raw B':>8} {'codec':<7} {'frame B':>8} {'ratio':>6} "
              f"{'enc us':>8} {'dec us':>8} {'break-even Mbit/s':>18}")
    for k, arrays in tensors.items():
        spec = manifest.segments[k].inputs[0]
        print()
        print(header)
        rows = []
        for label, codec, level in codecs():
            sizes, enc, dec = [], [], []
            for array in arrays[:samples]:
                frame = wire.encode_tensor(array, spec, bundle_id=manifest.bundle_id, segment=k, codec=codec,
                                           level=level)
                sizes.append(len(frame))
                enc.append(per_call_s(functools.partial(
                    wire.encode_tensor, array, spec, bundle_id=manifest.bundle_id, segment=k, codec=codec,
                    level=level)))
                dec.append(per_call_s(functools.partial(wire.decode_activation, frame, manifest)))
            rows.append((label, float(np.mean(sizes)), statistics.median(enc), statistics.median(dec)))
        base_bytes, base_enc, base_dec = rows[0][1], rows[0][2], rows[0][3]
        for label, size, enc_s, dec_s in rows:
            extra_s = (enc_s + dec_s) - (base_enc + base_dec)
            saved_bits = 8 * (base_bytes - size)
            if label == "none":
                verdict = "-"
            elif saved_bits <= 0:
                verdict = "never"
            elif extra_s <= 0:
                verdict = "always"  # no slower than none within timing noise
            else:
                verdict = f"{saved_bits / max(extra_s, 1e-9) / 1e6:.1f}"
            print(f"{k:>2} {spec.name[:16]:<16} {spec.bytes:>8} {label:<7} {size:>8.0f} {base_bytes / size:>6.2f} "
                  f"{enc_s * 1e6:>8.1f} {dec_s * 1e6:>8.1f} {verdict:>18}")
        best = []
        for mbps in LINK_MBPS:
            cost = {label: enc_s + dec_s + size * 8 / (mbps * 1e6) for label, size, enc_s, dec_s in rows}
            choice = min(cost, key=cost.__getitem__)
            best.append(f"{mbps:g} Mbit/s: {choice} ({cost[choice] * 1e3:.3f} ms vs none {cost['none'] * 1e3:.3f} ms)")
        print("   best: " + "; ".join(best))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, help="bundle directory (default: build the digits bundle)")
    parser.add_argument("--data", type=Path, help="float32 inputs for --bundle, .npy (N, ...) or .npz with x")
    parser.add_argument("--mobilenet", action="store_true", help="convert MobileNetV2-224 (weights=None) instead")
    parser.add_argument("--samples", type=int, default=16, help="inputs to measure (default 16)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.bundle:
            bundle = load_bundle(args.bundle)
            if args.data is None:
                parser.error("--bundle needs --data")
            x = load_array(args.data, what="--data")
        elif args.mobilenet:
            bundle, x = mobilenet_bundle(Path(tmp))
        else:
            bundle, x = digits_bundle(Path(tmp))
        measure(bundle, activations(bundle, x[: args.samples]), args.samples)


if __name__ == "__main__":
    main()
