"""Device and edge workers through a real Mosquitto on loopback, with real TFLite interpreters."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

import numpy as np
import pytest

from tflite_edge.bundle import Bundle
from tflite_edge.device import DeviceRuntime, ExitRule, InferenceResult
from tflite_edge.edge import EdgeHandler, EdgeWorker
from tflite_edge.errors import BrokerConnectionError
from tflite_edge.runtime import BundleRunner
from tflite_edge.transport.broker import MosquittoBroker
from tflite_edge.transport.protocol import ErrorCode, RequestHeader
from tflite_edge.transport.wire import encode_tensor

pytestmark = pytest.mark.slow

DEADLINE_SLACK_MS = 100.0  # scheduling noise on a shared, busy 2-core machine


@pytest.fixture(scope="module")
def samples(digits_split) -> np.ndarray:
    return digits_split[2][:6].astype(np.float32)


@pytest.fixture(scope="module")
def reference(digits_bundle: Bundle, samples: np.ndarray) -> dict[str, np.ndarray]:
    """Every exit's probabilities from running the whole chain locally."""
    return BundleRunner(digits_bundle).predict(samples)


def test_every_partition_and_exit_equals_the_local_chain(
    broker: MosquittoBroker, digits_bundle: Bundle, samples: np.ndarray, reference: dict[str, np.ndarray]
) -> None:
    seen: list[InferenceResult] = []
    manifest = digits_bundle.manifest
    with (
        EdgeWorker(broker.url, [digits_bundle], group="g") as w1,
        EdgeWorker(broker.url, [digits_bundle], group="g") as w2,
    ):
        with DeviceRuntime(digits_bundle, broker_url=broker.url, device_id="pi-1", on_result=seen.append) as device:
            for partition in range(manifest.num_segments + 1):
                for exit_spec in manifest.exits:
                    for i, x in enumerate(samples):
                        r = device.infer(x, exit=exit_spec.name, partition=partition, deadline_ms=5000)
                        assert not r.fell_back, r.error
                        assert r.exit == exit_spec.name and r.partition == partition
                        # int8 end to end: bit-exact with the local chain.
                        assert np.array_equal(r.probabilities, reference[exit_spec.name][i])
                        assert r.top1_class == int(np.argmax(reference[exit_spec.name][i]))
                        offloaded = partition <= exit_spec.segment
                        assert r.ran_on == ("device" if not offloaded else "edge" if partition == 0 else "split")
                        if offloaded:
                            assert r.request_bytes > 0 and r.reply_bytes > 0 and r.edge_ms > 0
                        else:
                            assert r.request_bytes == r.reply_bytes == 0 and r.transfer_ms == 0
                        assert r.total_ms >= r.device_ms
    assert len(seen) == (manifest.num_segments + 1) * len(manifest.exits) * len(samples)
    # Both workers of the shared group took requests, and none failed.
    assert w1.served > 0 and w2.served > 0 and w1.failed == w2.failed == 0


def test_early_exit_rule_gives_the_same_answer_on_device_and_edge(
    broker: MosquittoBroker, digits_bundle: Bundle, samples: np.ndarray, reference: dict[str, np.ndarray]
) -> None:
    # A threshold between the samples' exit_1 confidences, so some stop early and some do not.
    confidences = reference["exit_1"].max(axis=1)
    threshold = float(np.median(confidences))
    rule = ExitRule({"exit_1": threshold})
    expected = ["exit_1" if c >= threshold else "final" for c in confidences]
    assert len(set(expected)) == 2
    with EdgeWorker(broker.url, [digits_bundle]), DeviceRuntime(digits_bundle, broker_url=broker.url) as device:
        for partition in (0, 1, 3):  # rule applied by the edge, by the edge after the cut, by the device
            for i, x in enumerate(samples):
                r = device.infer(x, exit="final", partition=partition, rule=rule, deadline_ms=5000)
                assert not r.fell_back and r.exit == expected[i]
                assert r.early_exit == (expected[i] == "exit_1")
                assert np.array_equal(r.probabilities, reference[expected[i]][i])


def test_requests_reach_only_edges_that_serve_their_bundle(
    broker: MosquittoBroker, digits_bundle: Bundle, other_bundle: Bundle, samples: np.ndarray,
    silent_edge: Callable[..., None],
) -> None:
    with EdgeWorker(broker.url, [other_bundle]) as worker:
        with DeviceRuntime(digits_bundle, broker_url=broker.url) as device:
            # The only worker online announces another bundle: the device does not even ask.
            r = device.infer(samples[0], partition=1, deadline_ms=5000)
            assert r.fell_back and r.request_bytes == 0
            assert f"no edge worker serving bundle {digits_bundle.bundle_id} is online" in (r.error or "")
        # A presence that claims the bundle with nothing behind it: the request is sent, but a
        # worker subscribes per bundle it serves, so it never sees it (no unknown_bundle reply
        # to take for an answer); the device answers locally at its deadline.
        silent_edge(broker.url, [digits_bundle.bundle_id])
        with DeviceRuntime(digits_bundle, broker_url=broker.url) as device:
            r = device.infer(samples[0], partition=1, deadline_ms=600)
            assert r.fell_back and r.ran_on == "device" and r.request_bytes > 0
            assert r.error is not None and "no reply" in r.error
    assert worker.served == 0 and worker.failed == 0


def test_bad_frames_get_typed_error_replies(digits_bundle: Bundle, other_bundle: Bundle) -> None:
    handler = EdgeHandler([digits_bundle, other_bundle])
    manifest = digits_bundle.manifest
    props = dict(RequestHeader("r1", "final").to_pairs())
    cut = manifest.segments[1].inputs[0]
    frame = encode_tensor(np.zeros(cut.shape, np.int8), cut, bundle_id=manifest.bundle_id, segment=1)
    assert handler.handle(manifest.bundle_id, frame, props, b"r1").header.ok
    cases = {
        "truncated": (manifest.bundle_id, frame[:-3], props, b"r1"),
        "bad_header": (manifest.bundle_id, b"JUNK" + frame[4:], props, b"r1"),
        "mismatch": (other_bundle.bundle_id, frame, props, b"r1"),  # frame for another bundle
        ErrorCode.UNKNOWN_BUNDLE: ("0123456789abcdef", frame, props, b"r1"),
        ErrorCode.BAD_REQUEST: (manifest.bundle_id, frame, {}, b"r1"),
    }
    for code, (bundle_id, payload, properties, correlation) in cases.items():
        reply = handler.handle(bundle_id, payload, properties, correlation)
        assert not reply.header.ok and reply.header.code == code and reply.payload == b"", code
    assert handler.handle(manifest.bundle_id, frame, props, None).header.code == ErrorCode.BAD_REQUEST
    early = dict(RequestHeader("r1", "exit_1").to_pairs())
    frame2 = encode_tensor(np.zeros((1, 2, 2, 32), np.int8), manifest.segments[2].inputs[0],
                           bundle_id=manifest.bundle_id, segment=2)
    assert handler.handle(manifest.bundle_id, frame2, early, b"r1").header.code == ErrorCode.BAD_REQUEST


def test_deadline_without_edge_falls_back_locally(
    broker: MosquittoBroker, digits_bundle: Bundle, samples: np.ndarray, reference: dict[str, np.ndarray],
    silent_edge: Callable[..., None],
) -> None:
    silent_edge(broker.url, [digits_bundle.bundle_id])  # online, but it never answers
    with DeviceRuntime(digits_bundle, broker_url=broker.url) as device:
        for deadline_ms in (30.0, 120.0):
            start = time.perf_counter()
            r = device.infer(samples[0], exit="final", partition=0, deadline_ms=deadline_ms)
            wall_ms = (time.perf_counter() - start) * 1e3
            assert r.fell_back and r.ran_on == "device" and "no reply" in (r.error or "")
            assert r.total_ms <= deadline_ms + DEADLINE_SLACK_MS and wall_ms <= deadline_ms + DEADLINE_SLACK_MS
            # It waited for the edge for most of the deadline before giving up.
            assert r.total_ms >= deadline_ms * 0.5
            assert np.array_equal(r.probabilities, reference[r.exit][0])
        # With an exit already computed on the device (K=2), the whole deadline goes to
        # waiting, and when the edge stays silent the answer is the last computed exit.
        computed = [e.name for e in digits_bundle.manifest.exits if e.segment < 2]
        assert computed, "the digits bundle has an exit before segment 2"
        r = device.infer(samples[1], exit="final", partition=2, deadline_ms=60.0)
        assert r.fell_back and not r.early_exit
        assert 50.0 <= r.total_ms <= 60.0 + DEADLINE_SLACK_MS
        # The last computed exit, or a later one when its segments still fit in the time left.
        assert r.exit in (computed[-1], *[e.name for e in digits_bundle.manifest.exits if e.segment >= 2])
        assert np.array_equal(r.probabilities, reference[r.exit][1])


def test_broker_outage_falls_back_at_once_and_recovers(
    broker: MosquittoBroker, digits_bundle: Bundle, samples: np.ndarray, reference: dict[str, np.ndarray]
) -> None:
    with EdgeWorker(broker.url, [digits_bundle]), DeviceRuntime(digits_bundle, broker_url=broker.url) as device:
        assert not device.infer(samples[0], partition=1, deadline_ms=2000).fell_back
        broker.stop()
        _wait_for(lambda: device.offload is not None and not device.offload.connected, 5.0)
        start = time.perf_counter()
        r = device.infer(samples[1], partition=1, deadline_ms=2000)
        assert r.fell_back and "not connected" in (r.error or "")
        assert (time.perf_counter() - start) < 0.5  # did not sit out the deadline
        assert np.array_equal(r.probabilities, reference["final"][1])
        broker.start()
        _wait_for(lambda: device.offload is not None and device.offload.connected, 15.0)
        # The worker reconnects on its own as well; requests offload again.
        _wait_for(lambda: not device.infer(samples[2], partition=1, deadline_ms=500).fell_back, 15.0)


def test_killing_a_worker_mid_stream_loses_no_request(
    broker: MosquittoBroker, digits_bundle: Bundle, samples: np.ndarray, reference: dict[str, np.ndarray],
    edge_processes: Callable[..., object],
) -> None:
    doomed = edge_processes(broker.url, digits_bundle.path)
    survivor = edge_processes(broker.url, digits_bundle.path)
    deadline_ms = 250.0
    results: list[InferenceResult] = []
    with DeviceRuntime(digits_bundle, broker_url=broker.url) as device:
        for n in range(120):
            if n == 30:
                os.kill(doomed.pid, signal.SIGKILL)  # type: ignore[attr-defined]
            results.append(device.infer(samples[n % len(samples)], partition=1, deadline_ms=deadline_ms))
    assert len(results) == 120
    for n, r in enumerate(results):
        assert np.array_equal(r.probabilities, reference[r.exit][n % len(samples)])
        assert r.total_ms <= deadline_ms + DEADLINE_SLACK_MS
    fell_back = [n for n, r in enumerate(results) if r.fell_back]
    # Only requests the killed worker held can be lost; the survivor takes the rest.
    assert len(fell_back) <= 3, fell_back
    assert sum(not r.offloaded for r in results[40:]) <= 1  # the survivor serves the rest
    assert survivor.poll() is None  # type: ignore[attr-defined]


def _wait_for(condition: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s")
        time.sleep(0.05)


def test_compute_emulation_stretches_device_time(digits_bundle: Bundle, samples: np.ndarray) -> None:
    from tflite_edge.device.emulation import Emulation

    sleeps: list[float] = []
    emulation = Emulation(compute_slowdown=10.0, spin_s=0.0, _sleep=sleeps.append)
    with DeviceRuntime(digits_bundle, emulation=emulation) as device:
        assert sleeps == []  # the warm-up estimates the emulated speed without sleeping through it
        assert min(device.segment_ms) > 0
        r = device.infer(samples[0])
    # Each segment's measured time t became 10 t (most of it slept), and device_ms reports them.
    assert len(sleeps) == digits_bundle.manifest.num_segments
    stats = [emulation.stats[i] for i in range(digits_bundle.manifest.num_segments)]
    for s in stats:
        assert s.target_ms == pytest.approx(10 * s.host_ms[-1]) and s.emulated_ms[-1] >= s.target_ms
    assert r.device_ms == pytest.approx(sum(s.emulated_ms[-1] for s in stats), rel=1e-6)


def test_device_started_during_a_broker_outage_answers_and_then_offloads(
    digits_bundle: Bundle, samples: np.ndarray, reference: dict[str, np.ndarray]
) -> None:
    broker = MosquittoBroker()  # its port is chosen but nothing listens yet
    try:
        with DeviceRuntime(digits_bundle, broker_url=broker.url, require_broker=False, connect_timeout_s=0.2) as device:
            r = device.infer(samples[0], partition=1, deadline_ms=500)
            assert r.fell_back and "not connected" in (r.error or "")
            assert np.array_equal(r.probabilities, reference["final"][0])
            broker.start()
            with EdgeWorker(broker.url, [digits_bundle]):
                _wait_for(lambda: not device.infer(samples[1], partition=1, deadline_ms=500).fell_back, 20.0)
    finally:
        broker.stop()
    with pytest.raises(BrokerConnectionError):  # the default: an unreachable broker is an error
        DeviceRuntime(digits_bundle, broker_url=broker.url, connect_timeout_s=0.2)


def test_a_deadline_too_short_to_offload_is_not_sent(broker: MosquittoBroker, digits_bundle: Bundle,
                                                     samples: np.ndarray) -> None:
    with (
        EdgeWorker(broker.url, [digits_bundle]) as worker,
        DeviceRuntime(digits_bundle, broker_url=broker.url) as device,
    ):
        device.segment_ms = [50.0] * len(device.segment_ms)  # pretend the device is slow: no time to wait
        r = device.infer(samples[0], partition=0, deadline_ms=20)
        assert r.fell_back and "no time to offload" in (r.error or "") and r.request_bytes == 0
        time.sleep(0.2)
        assert worker.served == 0
