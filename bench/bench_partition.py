"""End-to-end latency per partition of MobileNetV2-224 int8 (3 segments), and the best
partition at emulated link speeds.

Converts MobileNetV2 (weights=None, synthetic calibration images) into three int8
segments cut at block_5_add and block_12_add, starts a private Mosquitto and one edge
worker process (1 interpreter thread), and runs the device runtime in this process
(1 thread) for every partition K = 0..3:

* on loopback, and through a token-bucket link of 100, 20, 5 and 1 Mbit/s in both
  directions (``DeviceRuntime(link_mbps=...)``);
* with the device at this host's speed, and emulating a device ``--slowdown`` times
  slower (segment times stretched, ``device.emulation.Emulation``).

Both ends share this 2-core host, so edge compute is not faster than device compute; the
slowdown rows show the trade-off a real, slower device faces.

    .venv/bin/python bench/bench_partition.py [--requests 10] [--slowdown 10]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from tflite_edge.bundle import Bundle  # noqa: E402
from tflite_edge.device import DeviceRuntime  # noqa: E402
from tflite_edge.transport.broker import MosquittoBroker  # noqa: E402

LINKS: tuple[float | None, ...] = (None, 100.0, 20.0, 5.0, 1.0)


def mobilenet(directory: Path) -> tuple[Bundle, np.ndarray]:
    import keras

    from tflite_edge.converters import convert

    rng = np.random.default_rng(0)
    grid = np.linspace(0, 1, 224, dtype=np.float32)
    yy, xx = np.meshgrid(grid, grid, indexing="ij")
    images = []
    for _ in range(12):  # smooth gradients and waves plus 3 % noise, in [-1, 1]
        a, b, c, f = rng.uniform(-1, 1, size=(4, 3))
        image = (a * xx[..., None] + b * yy[..., None] + c * np.sin(6 * np.pi * f * (xx + yy)[..., None])
                 + rng.normal(0, 0.03, size=(224, 224, 3)))
        images.append(np.clip(image, -1, 1).astype(np.float32))
    x = np.stack(images)
    model = keras.applications.MobileNetV2(weights=None, input_shape=(224, 224, 3))
    bundle = convert(model, directory / "mobilenet", cuts=["block_5_add", "block_12_add"], calibration=x[:8],
                     verify_samples=2)
    return bundle, x[8:]


def start_edge(broker_url: str, bundle: Bundle) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "tflite_edge", "edge", "--broker", broker_url, "--bundle", str(bundle.path),
         "--threads", "1"],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
    )
    assert process.stderr is not None
    for line in process.stderr:
        if line.startswith("edge: ready"):
            threading.Thread(target=process.stderr.read, daemon=True).start()
            return process
    raise RuntimeError(f"edge did not start (exit code {process.wait()})")


def measure(broker: MosquittoBroker, bundle: Bundle, x: np.ndarray, requests: int, slowdown: float) -> None:
    emulation = None
    if slowdown > 1:
        from tflite_edge.device.emulation import Emulation

        emulation = Emulation(compute_slowdown=slowdown)
    segments = bundle.manifest.num_segments
    print(f"\ndevice compute x{slowdown:g} of this host; median total ms per partition "
          f"(K segments on the device), {requests} requests each")
    print(f"{'link':>10} " + " ".join(f"{f'K={k}':>9}" for k in range(segments + 1)) + "   best")
    for link in LINKS:
        with DeviceRuntime(bundle, broker_url=broker.url, device_id="bench-part", num_threads=1, link_mbps=link,
                           emulation=emulation) as device:
            medians = []
            for k in range(segments + 1):
                device.infer(x[0], partition=k)  # warm the path (and the edge's interpreters)
                results = [device.infer(x[i % len(x)], partition=k) for i in range(requests)]
                assert not any(r.fell_back for r in results), [r.error for r in results if r.fell_back][:1]
                medians.append(statistics.median(r.total_ms for r in results))
        label = "loopback" if link is None else f"{link:g} Mbit/s"
        best = int(np.argmin(medians))
        print(f"{label:>10} " + " ".join(f"{m:>9.1f}" for m in medians) + f"   K={best}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=10, help="requests per partition and link (default 10)")
    parser.add_argument("--slowdown", type=float, default=10.0, help="emulated device slowdown (default 10)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        bundle, x = mobilenet(Path(tmp))
        manifest = bundle.manifest
        sizes = [manifest.segments[k].inputs[0].bytes for k in range(manifest.num_segments)]
        print(f"MobileNetV2-224 int8, {manifest.num_segments} segments; bytes sent at K=0..2: {sizes}")
        with MosquittoBroker() as broker:
            edge = start_edge(broker.url, bundle)
            try:
                for slowdown in (1.0, args.slowdown):
                    measure(broker, bundle, x, args.requests, slowdown)
            finally:
                edge.terminate()
                edge.wait(10)


if __name__ == "__main__":
    main()
