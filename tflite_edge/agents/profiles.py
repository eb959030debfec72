"""Compute and power profiles: how long each segment takes on the device and on the edge.

The simulator starts from a *latency profile* measured on the profiling machine (what
``tflite-edge profile BUNDLE --json`` prints: at least ``segments[].median_ms``) and
scales it per platform. A :class:`Platform` says how much slower than the profiling
machine it computes and how much power it draws while computing.

Built-in platforms:

``host``
    The profiling machine itself (slowdown 1). The default edge server.
``rpi3-edgent``
    A Raspberry Pi 3 as measured by Edgent (Li, Zhou, Chen, "Edge Intelligence: On-Demand
    Deep Learning Model Co-Inference with Device-Edge Synergy", MECOMM 2018; extended in
    IEEE TWC 2019). Edgent fits per-layer latency regressions on a Pi 3 and on a desktop
    PC; for convolutions, device ``y = 6.13e-3·x1 + 2.67e-2·x2 − 9.909`` ms and desktop
    ``y = 6.03e-5·x1 + 1.24e-4·x2 + 0.189`` ms, with ``x1`` the input feature-map size and
    ``x2 = (filter/stride)² × filters``. Their ratio at a representative layer (the
    first convolution of MobileNetV2 on a 224×224×3 input: x1 = 150,528, x2 = (3/2)²×32)
    is the slowdown (≈ 99). Edgent ran a Python framework without NEON kernels, so this
    is pessimistic for TFLite int8; measure your device when you can.
    Compute power 2,000 mW is a nominal figure for a Pi 3 under CPU load above idle;
    replace it with telemetry measurements of your device.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..bundle.manifest import Manifest
from ..errors import ProfileError

__all__ = [
    "PLATFORMS",
    "LatencyProfile",
    "Platform",
    "edgent_conv_ms",
    "edgent_fc_ms",
    "edgent_rpi3_slowdown",
    "get_platform",
    "load_profile",
]


def edgent_conv_ms(x1: float, x2: float, *, device: bool) -> float:
    """Edgent's convolution-layer latency regression (ms) for the Pi 3 or the desktop edge."""
    if device:
        return 6.13e-3 * x1 + 2.67e-2 * x2 - 9.909
    return 6.03e-5 * x1 + 1.24e-4 * x2 + 0.189


def edgent_fc_ms(x1: float, x2: float, *, device: bool) -> float:
    """Edgent's fully-connected-layer latency regression (ms): ``x1`` inputs, ``x2`` outputs."""
    if device:
        return 9.18e-4 * x1 + 3.99e-3 * x2 + 1.169
    return 1.07e-4 * x1 - 1.83e-4 * x2 + 0.164


def edgent_rpi3_slowdown(x1: float = 224 * 224 * 3, x2: float = (3 / 2) ** 2 * 32) -> float:
    """Pi 3 / desktop latency ratio from Edgent's convolution regressions at one layer size."""
    edge = edgent_conv_ms(x1, x2, device=False)
    device = edgent_conv_ms(x1, x2, device=True)
    if edge <= 0 or device <= 0:
        raise ProfileError(f"Edgent's regressions are not positive at x1={x1}, x2={x2}; use a larger layer")
    return device / edge


@dataclass(frozen=True)
class Platform:
    """A compute platform relative to the profiling machine."""

    name: str
    slowdown: float  # latency on this platform / latency on the profiling machine
    compute_power_mw: float  # power drawn while computing, above idle
    description: str = ""

    def __post_init__(self) -> None:
        if not (math.isfinite(self.slowdown) and self.slowdown > 0):
            raise ProfileError(f"platform {self.name!r}: slowdown must be a positive number")
        if not (math.isfinite(self.compute_power_mw) and self.compute_power_mw >= 0):
            raise ProfileError(f"platform {self.name!r}: compute_power_mw must be a non-negative number")


PLATFORMS: dict[str, Platform] = {
    "host": Platform("host", 1.0, 15_000.0, "the profiling machine (a desktop-class CPU)"),
    "rpi3-edgent": Platform(
        "rpi3-edgent", edgent_rpi3_slowdown(), 2_000.0, "Raspberry Pi 3, slowdown from Edgent's regressions"
    ),
}


def get_platform(name: str) -> Platform:
    """A built-in platform by name (see :data:`PLATFORMS`)."""
    try:
        return PLATFORMS[name]
    except KeyError:
        raise ProfileError(f"unknown platform {name!r}; choose one of {', '.join(PLATFORMS)}") from None


@dataclass(frozen=True)
class LatencyProfile:
    """Median latency of every segment on the profiling machine."""

    segment_ms: tuple[float, ...]
    source: str = "profile"

    def __post_init__(self) -> None:
        if not self.segment_ms:
            raise ProfileError(f"{self.source}: a profile needs at least one segment")
        for i, ms in enumerate(self.segment_ms):
            if not (isinstance(ms, (int, float)) and math.isfinite(ms) and ms >= 0):
                raise ProfileError(f"{self.source}: segments[{i}].median_ms must be a non-negative number, got {ms!r}")

    @classmethod
    def from_dict(
        cls, doc: Mapping[str, Any], manifest: Manifest | None = None, *, source: str = "profile"
    ) -> LatencyProfile:
        """Parse ``{"segments": [{"index": i, "median_ms": x}, ...], ...}``; extra keys are ignored.

        With a manifest, the profile must cover exactly its segments, and any
        ``cuts[].activation_bytes`` it states must agree with the manifest.
        """
        if not isinstance(doc, Mapping) or not isinstance(doc.get("segments"), list):
            raise ProfileError(
                f"{source}: expected an object with a `segments` list (from `tflite-edge profile --json`)"
            )
        by_index: dict[int, float] = {}
        for i, entry in enumerate(doc["segments"]):
            if not isinstance(entry, Mapping) or "median_ms" not in entry:
                raise ProfileError(f"{source}: segments[{i}] needs `median_ms`")
            index = entry.get("index", i)
            ms = entry["median_ms"]
            if isinstance(index, bool) or not isinstance(index, int) or isinstance(ms, bool):
                raise ProfileError(f"{source}: segments[{i}] has a malformed index or median_ms")
            by_index[index] = ms
        if sorted(by_index) != list(range(len(by_index))):
            raise ProfileError(f"{source}: segment indices must be 0..{len(by_index) - 1}, got {sorted(by_index)}")
        profile = cls(tuple(by_index[i] for i in range(len(by_index))), source)
        if manifest is not None:
            profile.check(manifest)
            cuts = doc.get("cuts")
            if isinstance(cuts, list):
                for i, (cut, spec) in enumerate(zip(cuts, manifest.cuts, strict=False)):
                    stated = cut.get("activation_bytes") if isinstance(cut, Mapping) else None
                    if stated is not None and stated != spec.activation_bytes:
                        raise ProfileError(
                            f"{source}: cuts[{i}].activation_bytes is {stated} but the bundle says "
                            f"{spec.activation_bytes}; the profile belongs to another bundle"
                        )
        return profile

    def check(self, manifest: Manifest) -> None:
        """Raise ``ProfileError`` unless the profile has one entry per segment of ``manifest``."""
        if len(self.segment_ms) != manifest.num_segments:
            raise ProfileError(
                f"{self.source}: {len(self.segment_ms)} segment latencies for a bundle with "
                f"{manifest.num_segments} segments; profile this bundle with `tflite-edge profile`"
            )


def load_profile(path: str | os.PathLike[str], manifest: Manifest | None = None) -> LatencyProfile:
    """Read a profile JSON file as written by ``tflite-edge profile BUNDLE --json``."""
    p = Path(path)
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise ProfileError(f"{p}: no such profile file; create it with `tflite-edge profile BUNDLE --json`") from e
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ProfileError(f"{p}: cannot read the profile: {e}") from e
    return LatencyProfile.from_dict(doc, manifest, source=str(p))
