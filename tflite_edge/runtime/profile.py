"""Measuring a bundle on this machine: per-segment latency and activation sizes.

The JSON form of `BundleProfile` is what ``tflite-edge profile --json`` prints and what the
policy simulator reads.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..bundle import Bundle
from .chain import BundleRunner

__all__ = ["SegmentTiming", "BundleProfile", "profile_bundle", "time_interpreter"]


@dataclass(frozen=True)
class SegmentTiming:
    index: int
    median_ms: float
    p90_ms: float
    output_bytes: int


@dataclass(frozen=True)
class BundleProfile:
    bundle_id: str
    backend: str
    threads: int | None
    repeats: int
    machine: str
    segments: tuple[SegmentTiming, ...]
    chain_median_ms: float
    input_bytes: int
    cuts: tuple[tuple[str, int], ...]
    kernels: str = "default"

    def to_dict(self) -> dict[str, Any]:
        return {
            "bundle_id": self.bundle_id,
            "backend": self.backend,
            "kernels": self.kernels,
            "threads": self.threads,
            "repeats": self.repeats,
            "machine": self.machine,
            "segments": [
                {"index": s.index, "median_ms": s.median_ms, "p90_ms": s.p90_ms, "output_bytes": s.output_bytes}
                for s in self.segments
            ],
            "chain_median_ms": self.chain_median_ms,
            "sum_of_segments_ms": sum(s.median_ms for s in self.segments),
            "input_bytes": self.input_bytes,
            "cuts": [{"layer": layer, "activation_bytes": size} for layer, size in self.cuts],
        }


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def time_interpreter(run: Any, repeats: int, warmup: int) -> list[float]:
    """Wall-clock milliseconds of ``run()`` over ``repeats`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1e3)
    return times


def profile_bundle(
    bundle: Bundle,
    *,
    threads: int | None = None,
    repeats: int = 50,
    warmup: int = 5,
    backend: str | None = None,
    seed: int = 0,
    kernels: str = "default",
) -> BundleProfile:
    """Median latency of each segment and of the whole chain on seeded random input."""
    runner = BundleRunner(bundle, backend=backend, num_threads=threads, kernels=kernels)
    manifest = bundle.manifest
    rng = np.random.default_rng(seed)
    sample = rng.uniform(0.0, 1.0, size=manifest.input.shape).astype(np.float32)
    tensors = runner.run({manifest.input.name: runner.quantize_input(sample)})
    timings = []
    for segment in manifest.segments:
        feeds = {t.name: tensors[t.name] for t in segment.inputs}
        interpreter = runner.interpreter(segment.index)
        times = time_interpreter(lambda i=interpreter, f=feeds: i.run(f), repeats, warmup)
        timings.append(
            SegmentTiming(
                segment.index,
                statistics.median(times),
                _percentile(times, 0.9),
                sum(t.bytes for t in segment.outputs),
            )
        )
    feed = {manifest.input.name: tensors[manifest.input.name]}
    chain_times = time_interpreter(lambda: runner.run(feed), repeats, warmup)
    return BundleProfile(
        bundle_id=manifest.bundle_id,
        backend=runner.backend_name,
        threads=threads,
        repeats=repeats,
        machine=f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        segments=tuple(timings),
        chain_median_ms=statistics.median(chain_times),
        input_bytes=manifest.segments[0].inputs[0].bytes,
        cuts=tuple((c.layer, c.activation_bytes) for c in manifest.cuts),
        kernels=kernels,
    )
