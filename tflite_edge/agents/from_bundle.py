"""Building a simulator for a real bundle: its profile, its per-sample exit results."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..bundle.store import Bundle
from ..errors import PolicyError
from .profiles import LatencyProfile, Platform
from .radio import RadioPowerModel
from .simulator import ExitSamples, Scenario, Simulator

__all__ = ["collect_exit_samples", "profile_for_bundle", "simulator_for_bundle"]


def collect_exit_samples(
    bundle: Bundle, x: np.ndarray, y: np.ndarray, *, backend: str | None = None, limit: int | None = 500
) -> ExitSamples:
    """Run the bundle on ``x`` and record, per sample and exit, top-1 correctness and confidence.

    Confidence is the top-1 probability, the quantity an early-exit threshold is compared
    with on the device. ``limit`` caps the number of samples (they are run one by one).
    """
    from ..runtime.chain import BundleRunner

    x, y = np.asarray(x), np.asarray(y)
    labels = (y.argmax(axis=-1) if y.ndim > 1 else y).astype(np.int64)
    if len(x) == 0 or len(x) != len(labels):
        raise PolicyError(f"need as many labels as samples, got {len(x)} samples and {len(labels)} labels")
    if limit is not None:
        x, labels = x[:limit], labels[:limit]
    runner = BundleRunner(bundle, backend=backend)
    names = list(bundle.manifest.exit_names)
    probabilities = runner.predict(x, names)
    correct = np.stack([probabilities[n].argmax(axis=-1) == labels for n in names], axis=1)
    confidence = np.stack([probabilities[n].max(axis=-1) for n in names], axis=1).astype(np.float64)
    return ExitSamples(correct, confidence)


def profile_for_bundle(
    bundle: Bundle, profile: Mapping[str, Any] | LatencyProfile | None = None, *, repeats: int = 20,
    backend: str | None = None,
) -> LatencyProfile:
    """The bundle's latency profile: the one given (a ``tflite-edge profile --json`` document), or measured now."""
    if isinstance(profile, LatencyProfile):
        profile.check(bundle.manifest)
        return profile
    if profile is None:
        from ..runtime.profile import profile_bundle

        profile = profile_bundle(bundle, repeats=repeats, warmup=2, backend=backend).to_dict()
    return LatencyProfile.from_dict(profile, bundle.manifest, source=f"profile of {bundle.path}")


def simulator_for_bundle(
    bundle: Bundle,
    profile: Mapping[str, Any] | LatencyProfile | None = None,
    *,
    device: Platform | str = "rpi3-edgent",
    edge: Platform | str = "host",
    radio: RadioPowerModel | str = "3g",
    scenario: Scenario | None = None,
    samples: ExitSamples | None = None,
    thresholds: Sequence[float] = (),
) -> Simulator:
    """A simulator for ``bundle`` (measuring its profile on this machine when none is given)."""
    return Simulator(
        bundle.manifest, profile_for_bundle(bundle, profile), device=device, edge=edge, radio=radio,
        scenario=scenario, samples=samples, thresholds=thresholds,
    )
