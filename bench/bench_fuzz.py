"""Fuzz every parser that reads untrusted bytes with at least 10,000 hypothesis cases each.

Targets (bench/fuzz_targets.py): the activation decoder, the edge's MQTT request handler
(with real interpreters of the digits bundle), the manifest loader, the telemetry parser,
the serial codec, signed policy messages, the array loader (file types and sizes: FIFOs,
/dev/zero, sparse multi-GiB files; .npy header shapes and dtypes; NaN/Inf values) and bundle
directories with one file replaced (loaded plainly and with signature verification). Each
case must be accepted or refused with
the module's typed error; anything else is a crash, and a case using more than 1 s of CPU
time is a hang. Prints, per target: cases tried, accepted, refused, crashes, hangs and
the slowest case.

    .venv/bin/python bench/bench_fuzz.py                 # 10,000 cases per target
    .venv/bin/python bench/bench_fuzz.py --cases 50000 --seed 7
    .venv/bin/python bench/bench_fuzz.py --json out/fuzz.json

Exit status 1 when any target crashed or hung. The seed makes a run reproducible.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from hypothesis import HealthCheck, given, seed, settings  # noqa: E402

from bench.fuzz_targets import Target, make_targets  # noqa: E402


def digits_bundle(directory: Path) -> Any:
    """The digits bundle every co-inference test uses (trained here, ~15 s)."""
    from tflite_edge import zoo
    from tflite_edge.converters import convert

    x_train, y_train, x_val, y_val = zoo.digits_data()
    model = zoo.train_digits_model(zoo.build_digits_model(), x_train, y_train, epochs=5)
    return convert(model, directory / "digits-int8", cuts=["block_1_out", "block_2_out"], quantize="int8",
                   calibration=x_train[:200], validation=(x_val, y_val))


def fuzz(target: Target, cases: int, run_seed: int) -> float:
    """Run ``cases`` hypothesis examples against ``target``; crashes are recorded, not raised."""

    @seed(run_seed)
    @settings(max_examples=cases, database=None, deadline=None, suppress_health_check=list(HealthCheck))
    @given(target.strategy)
    def one(case: Any) -> None:
        target.check(case)

    start = time.perf_counter()
    one()
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=10_000, help="hypothesis examples per target (default 10000)")
    parser.add_argument("--seed", type=int, default=20261126, help="random seed (default fixed)")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    parser.add_argument("--only", action="append", default=[], metavar="WORD",
                        help="run only the targets whose name contains WORD (repeatable)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        targets = [t for t in make_targets(digits_bundle(Path(tmp)))
                   if not args.only or any(word in t.name for word in args.only)]
        # TensorFlow and Keras leave millions of objects behind; without this a full garbage
        # collection (about a second here) lands inside whichever case happens to trigger it.
        gc.collect()
        gc.freeze()
        rows = []
        print(f"{'target':58} {'cases':>7} {'accepted':>9} {'refused':>8} {'crashes':>8} {'hangs':>6} "
              f"{'slowest':>9} {'cpu':>9} {'time':>7}")
        for target in targets:
            took = fuzz(target, args.cases, args.seed)
            o = target.outcome
            rows.append({"target": target.name, "cases": o.cases, "accepted": o.accepted, "refused": o.rejected,
                         "crashes": len(o.crashes), "hangs": o.hangs, "slowest_ms": round(o.slowest_s * 1e3, 2),
                         "slowest_cpu_ms": round(o.slowest_cpu_s * 1e3, 2),
                         "seconds": round(took, 1), "first_crashes": o.crashes[:3],
                         "first_hangs": o.hang_inputs[:3]})
            print(f"{target.name:58} {o.cases:7d} {o.accepted:9d} {o.rejected:8d} {len(o.crashes):8d} {o.hangs:6d} "
                  f"{o.slowest_s * 1e3:7.1f}ms {o.slowest_cpu_s * 1e3:7.1f}ms {took:6.0f}s", flush=True)
            for crash in o.crashes[:3]:
                print(f"    crash: {crash}")
            for hang in o.hang_inputs[:3]:
                print(f"    hang: {hang}")
    print(f"seed {args.seed}; a crash is any exception other than the module's typed error; "
          "a hang is > 1 s of CPU time")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"seed": args.seed, "targets": rows}, indent=2))
    return 1 if any(r["crashes"] or r["hangs"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
