"""Edge presence and the offload circuit breaker on a real Mosquitto: a device stops waiting for
an edge that is gone or silent, says so once, and offloads again when an edge is back."""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable

import numpy as np
import pytest

from tflite_edge.bundle import Bundle
from tflite_edge.device import DeviceRuntime
from tflite_edge.device.breaker import BreakerConfig, CircuitBreaker
from tflite_edge.edge import EdgeWorker
from tflite_edge.transport.broker import MosquittoBroker

pytestmark = pytest.mark.slow


def _wait_for(condition: Callable[[], bool], timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s")
        time.sleep(0.02)


def _warnings(caplog: pytest.LogCaptureFixture, text: str) -> int:
    return sum(text in r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)


def test_a_killed_edge_stops_offloading_at_once_until_an_edge_is_back(
    broker: MosquittoBroker, digits_bundle: Bundle, digits_split, edge_processes, caplog: pytest.LogCaptureFixture,
) -> None:
    sample = digits_split[2][0].astype(np.float32)
    edge = edge_processes(broker.url, digits_bundle.path)
    caplog.set_level(logging.WARNING, logger="tflite_edge")
    with DeviceRuntime(digits_bundle, broker_url=broker.url, device_id="presence-1") as device:
        assert device.offload is not None
        _wait_for(lambda: device.offload.workers_online(digits_bundle.bundle_id) == 1)
        assert device.infer(sample, partition=1).offloaded  # no deadline: the 10 s default
        os.kill(edge.pid, signal.SIGKILL)  # no clean stop: the broker publishes its last will
        _wait_for(lambda: device.offload.workers_online(digits_bundle.bundle_id) == 0)
        results = [device.infer(sample, partition=1) for _ in range(5)]
        for r in results:
            # Not sent at all (so nothing waited for the 10 s default deadline).
            assert r.fell_back and r.request_bytes == 0 and "no edge worker serving bundle" in (r.error or "")
        assert _warnings(caplog, "answering locally until one is") == 1  # said once, not per request
        edge_processes(broker.url, digits_bundle.path)
        _wait_for(lambda: device.offload.workers_online(digits_bundle.bundle_id) == 1)
        r = device.infer(sample, partition=1)
        assert r.offloaded and not r.fell_back, r.error
        assert _warnings(caplog, "offloading resumes") == 1


def test_a_clean_stop_clears_the_presence(broker: MosquittoBroker, digits_bundle: Bundle) -> None:
    with DeviceRuntime(digits_bundle, broker_url=broker.url, device_id="presence-2") as device:
        assert device.offload is not None
        with EdgeWorker(broker.url, [digits_bundle]):
            _wait_for(lambda: device.offload.workers_online(digits_bundle.bundle_id) == 1)
        _wait_for(lambda: device.offload.workers_online(digits_bundle.bundle_id) == 0)
    # A device that connects later sees the retained state: nobody.
    with DeviceRuntime(digits_bundle, broker_url=broker.url, device_id="presence-3") as late:
        assert late.offload is not None and late.offload.workers_online(digits_bundle.bundle_id) == 0


def test_a_silent_edge_opens_the_circuit_breaker(
    broker: MosquittoBroker, digits_bundle: Bundle, digits_split, silent_edge, caplog: pytest.LogCaptureFixture,
) -> None:
    sample = digits_split[2][0].astype(np.float32)
    silent_edge(broker.url, [digits_bundle.bundle_id])
    caplog.set_level(logging.WARNING, logger="tflite_edge")
    with DeviceRuntime(digits_bundle, broker_url=broker.url, device_id="breaker-1") as device:
        # The default back-off (1 s) with a margin a busy machine cannot exceed between requests.
        device.breaker = CircuitBreaker(BreakerConfig(failures_to_open=3, backoff_s=30.0, max_backoff_s=60.0))
        results = [device.infer(sample, partition=1, deadline_ms=150) for _ in range(6)]
    errors = [r.error or "" for r in results]
    assert all(r.fell_back for r in results)
    assert all("no reply from the edge" in e for e in errors[:3]), errors
    # After three timeouts in a row the next requests are not sent during the back-off.
    assert all("offloading paused after 3 timeouts" in e for e in errors[3:]), errors
    assert all(r.request_bytes == 0 for r in results[3:])
    assert _warnings(caplog, "3 offloads in a row got no reply") == 1
