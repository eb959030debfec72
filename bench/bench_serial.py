"""The serial bridge: frame overhead, effective throughput by baud rate, invoke round trips.

1. Frame overhead (header 6 + CRC 4 + COBS codes + 2 delimiters, plus 5 bytes per
   fragment when a message spans several 1 KB frames) and the INVOKE message's own tensor
   header, for activations from 64 bytes (the digits input) to 25,088 bytes (MobileNetV2's
   block_5 cut, int8 28x28x32).
2. Effective throughput at 115200 and 921600 baud (8N1: 10 bits on the wire per byte):
   computed from the frame sizes, and measured by loading segment 0 of the digits bundle
   into the simulated MCU over a real pty with the link speed modelled.
3. Per-invoke round trip through the pty (no link model, so the pty and the two codecs are
   what is measured) versus the TFLite Micro invoke time the MCU reports.

    .venv/bin/python bench/bench_serial.py                  # trains the digits bundle (~15 s)
    .venv/bin/python bench/bench_serial.py --bundle B
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from tflite_edge.bundle import Bundle, load_bundle  # noqa: E402
from tflite_edge.firmware_bridge.client import BridgeClient  # noqa: E402
from tflite_edge.firmware_bridge.fragments import split_payload  # noqa: E402
from tflite_edge.firmware_bridge.framing import encode_frame, frame_overhead_bytes  # noqa: E402
from tflite_edge.firmware_bridge.messages import Invoke, Tensor, encode_message  # noqa: E402
from tflite_edge.firmware_bridge.simulator import FdLink, SimulatedMcu, open_pty, serve  # noqa: E402

BAUDS = (115200, 921600)
FRAME_PAYLOAD = 1024
ACTIVATIONS = {  # name: int8 shape
    "digits input 8x8x1": (1, 8, 8, 1),
    "digits block_1 4x4x16": (1, 4, 4, 16),
    "1 KB": (1, 1024),
    "MobileNetV2 block_12 14x14x96": (1, 14, 14, 96),
    "MobileNetV2 block_5 28x28x32": (1, 28, 28, 32),
}


def digits_bundle(directory: Path) -> Bundle:
    from tflite_edge import zoo
    from tflite_edge.converters import convert

    x_train, y_train, _, _ = zoo.digits_data()
    model = zoo.train_digits_model(zoo.build_digits_model(), x_train, y_train, epochs=5)
    return convert(model, directory / "digits", cuts=["block_1_out", "block_2_out"], calibration=x_train[:200])


def overhead_table() -> None:
    print("## Overhead and effective throughput of one INVOKE in 1 KB frames (computed)\n")
    print(f"frames carry at most {FRAME_PAYLOAD} payload bytes (a typical MCU buffer); "
          "larger messages are fragmented\n")
    head = "| activation | payload B | frames | wire B | overhead B | overhead % |"
    head += "".join(f" goodput @ {b} B/s | transfer @ {b} ms |" for b in BAUDS)
    print(head)
    print("|" + "---|" * (6 + 2 * len(BAUDS)))
    rng = np.random.default_rng(0)
    for name, shape in ACTIVATIONS.items():
        # Random int8 values hold few zeros: close to COBS's worst case of one code byte per 254.
        tensor = Tensor.from_array(0, rng.integers(-128, 128, size=shape).astype(np.int8), 0.02, -128)
        msg_type, payload = encode_message(Invoke(0, (tensor,)))
        parts = split_payload(msg_type, payload, FRAME_PAYLOAD)
        wire = sum(len(encode_frame(t, 1, p)) for t, p in parts)
        data = tensor.desc.nbytes
        row = f"| {name} | {data} | {len(parts)} | {wire} | {wire - data} | {100 * (wire - data) / data:.1f} |"
        for baud in BAUDS:
            seconds = wire * 10 / baud
            row += f" {data / seconds:,.0f} | {seconds * 1e3:.1f} |"
        print(row)
    print(f"\nframing alone (header, CRC, COBS, delimiters): {frame_overhead_bytes(64)} B at 64 B payload, "
          f"{frame_overhead_bytes(1024)} B at 1 KB, {frame_overhead_bytes(25088)} B at 25,088 B")
    print("raw link ceiling (8N1): " + ", ".join(f"{b} baud = {b // 10:,} B/s" for b in BAUDS) + "\n")


def start_sim(baud: int | None, **options: object) -> tuple[str, threading.Event, threading.Thread, list[int]]:
    master, slave, path = open_pty()
    stop = threading.Event()
    thread = threading.Thread(target=serve, args=(SimulatedMcu(**options), FdLink(master), stop),  # type: ignore[arg-type]
                              kwargs={"baud": baud}, daemon=True)
    thread.start()
    return path, stop, thread, [master, slave]


def stop_sim(stop: threading.Event, thread: threading.Thread, fds: list[int]) -> None:
    stop.set()
    thread.join(timeout=5)
    for fd in fds:
        os.close(fd)


def measured_load(bundle: Bundle) -> None:
    model = bundle.read_segment(0)
    print("## Model load over a pty with the link speed modelled (measured)\n")
    print("median of 3 loads; the host is shared, so scheduling delays add to the modelled link time\n")
    print("| baud | max payload B | model B | load s | goodput B/s | % of 8N1 ceiling |")
    print("|---|---|---|---|---|---|")
    for baud in BAUDS:
        for max_payload in (256, 1024):
            path, stop, thread, fds = start_sim(baud, max_payload_bytes=max_payload)
            times = []
            try:
                with BridgeClient(path, baud=baud, timeout_s=5.0) as client:
                    client.hello()
                    for _ in range(3):
                        start = time.perf_counter()
                        client.load(model)
                        times.append(time.perf_counter() - start)
            finally:
                stop_sim(stop, thread, fds)
            seconds = statistics.median(times)
            goodput = len(model) / seconds
            print(f"| {baud} | {max_payload} | {len(model)} | {seconds:.3f} | {goodput:,.0f} | "
                  f"{100 * goodput / (baud / 10):.0f} |")
    print()


def round_trips(bundle: Bundle, rounds: int) -> None:
    path, stop, thread, fds = start_sim(None)
    try:
        with BridgeClient(path, timeout_s=5.0) as client:
            client.load(bundle.read_segment(0))
            x = np.random.default_rng(0).integers(-128, 128, size=(1, 8, 8, 1)).astype(np.int8)
            for _ in range(10):
                client.invoke([x])
            results = [client.invoke([x]) for _ in range(rounds)]
    finally:
        stop_sim(stop, thread, fds)
    rtt = sorted(r.round_trip_ms for r in results)
    chip = sorted(r.latency_us / 1000 for r in results)
    p99 = rtt[min(len(rtt) - 1, int(0.99 * len(rtt)))]
    print("## INVOKE round trip through a pty vs the TFLM invoke it contains (measured, no link model)\n")
    print(f"rounds: {rounds}; segment 0 of the digits bundle, input int8[1,8,8,1]")
    print(f"round trip median {statistics.median(rtt):.3f} ms, p99 {p99:.3f} ms")
    print(f"TFLM invoke median {statistics.median(chip):.3f} ms (host CPU)")
    print(f"link + codec + scheduling: {statistics.median(rtt) - statistics.median(chip):.3f} ms per invoke\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", help="bundle directory (default: train and convert the digits model)")
    parser.add_argument("--rounds", type=int, default=500, help="invokes for the round-trip figure (default 500)")
    args = parser.parse_args()
    overhead_table()
    with tempfile.TemporaryDirectory() as tmp:
        bundle = load_bundle(args.bundle) if args.bundle else digits_bundle(Path(tmp))
        measured_load(bundle)
        round_trips(bundle, args.rounds)


if __name__ == "__main__":
    main()
