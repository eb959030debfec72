"""The device runtime and a real edge handler on real interpreters, joined by an in-memory link.

The tiny shipped bundle (tests/data) runs on both sides; no broker, no trained model.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.support.fakes import announce_worker, edge_responder
from tflite_edge.bundle import Bundle
from tflite_edge.device import DeviceRuntime, Plan
from tflite_edge.edge.handler import EdgeHandler
from tflite_edge.runtime import BundleRunner
from tflite_edge.transport.memory import MemoryLink


@pytest.fixture(scope="module")
def samples() -> np.ndarray:
    return np.random.default_rng(3).uniform(0.0, 1.0, size=(4, 8, 8, 1)).astype(np.float32)


def test_split_through_a_real_edge_equals_the_local_chain(tiny_bundle: Bundle, samples: np.ndarray) -> None:
    link = MemoryLink(edge_responder(EdgeHandler([tiny_bundle])))
    announce_worker(link, [tiny_bundle.bundle_id])
    expected = BundleRunner(tiny_bundle).predict(samples)["final"]
    with DeviceRuntime(tiny_bundle, link=link, device_id="mem-1") as device:
        for partition in (0, 1, 2):
            for sample, want in zip(samples, expected, strict=True):
                result = device.run(sample, Plan("final", partition, 10_000.0))
                assert result.ran_on == ("edge" if partition == 0 else "split") and not result.fell_back
                np.testing.assert_array_equal(result.probabilities, want)
    assert len(link.published) == 3 * len(samples)


def test_an_edge_without_the_bundle_makes_the_device_answer_itself(tiny_bundle: Bundle, samples: np.ndarray,
                                                                   tmp_path_factory: pytest.TempPathFactory) -> None:
    from tests.support.fakes import fake_bundle

    other = fake_bundle(tmp_path_factory.mktemp("other") / "fake")
    link = MemoryLink(edge_responder(EdgeHandler([other])))
    announce_worker(link, [tiny_bundle.bundle_id])  # a stale presence: it claims the bundle
    with DeviceRuntime(tiny_bundle, link=link) as device:
        result = device.run(samples[0], Plan("final", 1, 300.0))
    # unknown_bundle does not end the wait (another edge may answer); nothing else comes.
    assert result.fell_back and "unknown_bundle" in (result.error or "")
