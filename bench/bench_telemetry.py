"""What telemetry costs a device, and a recorded session of a real device to plot.

Figures printed:

* ``observe_result`` per call (the only telemetry work on the inference path);
* building + encoding one telemetry message, and its size in bytes;
* device inference p50 with and without the publisher attached (digits bundle, all local);
* a recorded session: a real device runtime, an edge worker and a private Mosquitto on
  loopback, recorded by ``tflite-edge telemetry --record`` in a separate process while the
  device goes through five phases (local with early exits; split after segment 1; raw
  input to the edge; split with the edge worker stopped, so requests time out and fall
  back; split again). Then ``tflite-edge plot`` draws the recording.

    .venv/bin/python bench/bench_telemetry.py --out out/bench/telemetry      # ~60 s
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from tflite_edge.telemetry import EstimatedPowerSensor, RequestObservation, TelemetryPublisher  # noqa: E402
from tflite_edge.telemetry.schema import encode  # noqa: E402


def digits_bundle(directory: Path) -> tuple[object, np.ndarray]:
    from tflite_edge import zoo
    from tflite_edge.converters import convert

    x_train, y_train, x_val, y_val = zoo.digits_data()
    model = zoo.train_digits_model(zoo.build_digits_model(), x_train, y_train, epochs=20)
    bundle = convert(model, directory / "digits", cuts=["block_1_out", "block_2_out"], calibration=x_train[:200],
                     validation=(x_val, y_val))
    return bundle, x_val.astype(np.float32)


def bench_publisher_calls() -> None:
    publisher = TelemetryPublisher("bench", broker_url="mqtt://127.0.0.1:9", power_sensor=EstimatedPowerSensor(),
                                   max_pending_observations=1_000_000)
    obs = RequestObservation("exit_1", 1, 12.0, 4.0, 6.0, 2.0, rtt_ms=8.0, bytes_sent=2048, deadline_ms=20.0,
                             deadline_met=True, segment_ms={"0": 4.0})
    n = 100_000
    start = time.perf_counter()
    for _ in range(n):
        publisher.observe_result(obs)
    per_call_us = (time.perf_counter() - start) / n * 1e6
    start = time.perf_counter()
    message = publisher.build_telemetry()
    payload = encode(message)
    build_ms = (time.perf_counter() - start) * 1e3
    rounds = 200
    start = time.perf_counter()
    for _ in range(rounds):
        publisher.observe_result(obs)
        encode(publisher.build_telemetry())
    steady_us = (time.perf_counter() - start) / rounds * 1e6
    print(f"observe_result:                 {per_call_us:.2f} us per call ({n} calls)")
    print(f"telemetry window of {n} requests: built and encoded in {build_ms:.1f} ms, {len(payload)} bytes")
    print(f"telemetry message (1 request):  built and encoded in {steady_us:.0f} us")


def bench_inference_overhead(bundle: object, x: np.ndarray) -> None:
    from tflite_edge.device import DeviceRuntime, Plan

    publisher = TelemetryPublisher("bench", broker_url="mqtt://127.0.0.1:9", power_sensor=EstimatedPowerSensor())
    results = {}
    with DeviceRuntime(bundle) as device:  # type: ignore[arg-type]
        for label, hook in (("without telemetry", None), ("with telemetry", publisher.observe_result),
                            ("without telemetry (again)", None)):
            device.on_result = hook
            times = []
            for i in range(2000):
                start = time.perf_counter()
                device.run(x[i % len(x): i % len(x) + 1], Plan())
                times.append((time.perf_counter() - start) * 1e6)
            results[label] = statistics.median(times)
    for label, p50 in results.items():
        print(f"device.run p50 {label:26s} {p50:.1f} us")


def recorded_session(bundle: object, x: np.ndarray, out: Path, phase_s: float) -> None:
    from tflite_edge.device import DeviceRuntime, ExitRule, Plan
    from tflite_edge.edge.worker import EdgeWorker
    from tflite_edge.transport.broker import MosquittoBroker

    out.mkdir(parents=True, exist_ok=True)
    recording = out / "session.jsonl"
    recording.unlink(missing_ok=True)
    rule = ExitRule({"exit_1": 0.95, "exit_2": 0.9})
    phases = [
        ("local, early exits", Plan(deadline_ms=50.0, rule=rule), True),
        ("split after segment 1", Plan(partition=1, deadline_ms=50.0, rule=rule), True),
        ("raw input to the edge", Plan(partition=0, deadline_ms=50.0), True),
        ("split, edge worker down", Plan(partition=1, deadline_ms=30.0, rule=rule), False),
        ("split, edge back", Plan(partition=1, deadline_ms=50.0, rule=rule), True),
    ]
    with MosquittoBroker() as broker:
        recorder = subprocess.Popen(
            [sys.executable, "-m", "tflite_edge", "telemetry", "--broker", broker.url, "--record", str(recording),
             "--experience", "--duration", str(phase_s * len(phases) + 6)],
            stdout=subprocess.DEVNULL,
        )
        time.sleep(2.0)  # the recorder subscribes before the device starts
        worker = EdgeWorker(broker.url, [bundle]).start()  # type: ignore[list-item]
        counts = []
        with TelemetryPublisher("pi-bench", broker_url=broker.url, period_s=1.0) as publisher, DeviceRuntime(
            bundle, broker_url=broker.url, device_id="pi-bench", on_result=publisher.observe_result  # type: ignore[arg-type]
        ) as device:
            for name, plan, edge_up in phases:
                if not edge_up and worker is not None:
                    worker.stop()
                    worker = None
                elif edge_up and worker is None:
                    worker = EdgeWorker(broker.url, [bundle]).start()  # type: ignore[list-item]
                end = time.monotonic() + phase_s
                n = 0
                while time.monotonic() < end:
                    device.run(x[n % len(x): n % len(x) + 1], plan)
                    n += 1
                    time.sleep(0.01)  # about 50 requests/s: a camera-like load, not a stress test
                counts.append((name, n))
        if worker is not None:
            worker.stop()
        recorder.wait(timeout=phase_s * len(phases) + 30)
    for name, n in counts:
        print(f"phase {name:26s} {n} requests")
    lines = recording.read_text().splitlines()
    print(f"recorded {len(lines)} messages to {recording}")
    plots = subprocess.run([sys.executable, "-m", "tflite_edge", "plot", str(recording), "-o", str(out)],
                           check=True, capture_output=True, text=True).stdout.split()
    print("plots:", " ".join(plots))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("out/bench/telemetry"), help="where the recording and PNGs go")
    parser.add_argument("--phase-s", type=float, default=8.0, help="seconds per session phase (default 8)")
    args = parser.parse_args()
    bench_publisher_calls()
    with tempfile.TemporaryDirectory() as tmp:
        bundle, x = digits_bundle(Path(tmp))
        bench_inference_overhead(bundle, x)
        recorded_session(bundle, x, args.out, args.phase_s)


if __name__ == "__main__":
    main()
