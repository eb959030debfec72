"""A second device that floods the edge with real offload requests while switched on.

``python -m tflite_edge.demo.flood BROKER_URL BUNDLE_DIR READY_FILE [--threads N]`` creates
READY_FILE once connected, then floods (every request sends the raw input to the edge,
K = 0, from N devices at once) after a line ``on`` on its standard input and pauses after
``off``; it ends when its input closes. The demo and the live benchmark use it for a burst
of edge load.
"""

from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    from ..device import DeviceRuntime, Plan

    parser = argparse.ArgumentParser(prog="python -m tflite_edge.demo.flood")
    parser.add_argument("broker")
    parser.add_argument("bundle")
    parser.add_argument("ready_file", type=Path)
    parser.add_argument("--threads", type=int, default=4)
    args = parser.parse_args(argv)
    on = threading.Event()
    stop = threading.Event()
    runtimes = [DeviceRuntime(args.bundle, broker_url=args.broker, device_id=f"flood-{i}", warmup=False)
                for i in range(args.threads)]
    x = np.random.default_rng(0).uniform(0.0, 1.0, runtimes[0].manifest.input.shape).astype(np.float32)

    def flood(runtime: DeviceRuntime) -> None:
        plan = Plan(exit=runtime.manifest.exits[-1].name, partition=0, deadline_ms=1000.0)
        while not stop.is_set():
            if on.wait(0.1):
                runtime.run(x, plan)

    threads = [threading.Thread(target=flood, args=(r,), daemon=True) for r in runtimes]
    for thread in threads:
        thread.start()
    args.ready_file.touch()
    for line in sys.stdin:
        (on.set if line.strip() == "on" else on.clear)()
    stop.set()
    on.set()
    for thread in threads:
        thread.join(timeout=5)
    for runtime in runtimes:
        runtime.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
