"""A split after an exit answers with that exit before the deadline when the edge is silent."""

import re

from tflite_edge.device import DeviceRuntime, Plan
from tflite_edge.device.breaker import BreakerConfig, CircuitBreaker
from tflite_edge.device.emulation import DeviceProfile, Emulation
from tflite_edge.device.runtime import FALLBACK_MARGIN_MS


def test_split_after_an_exit_keeps_time_to_answer_without_an_edge(broker, digits_bundle, digits_split, silent_edge):
    # A slow device (10 ms per segment): after the wait there is no time to compute more,
    # so the answer is exit_1, computed before the offload. The wait must leave the margin
    # for answering, instead of running to the deadline and answering late.
    slow = Emulation(device=DeviceProfile((10.0, 10.0, 10.0), 0.0, "a slow test device"))
    silent_edge(broker.url, [digits_bundle.bundle_id])  # online, but it never answers
    with DeviceRuntime(digits_bundle, broker_url=broker.url, device_id="reserve-test", emulation=slow) as runtime:
        runtime.breaker = CircuitBreaker(BreakerConfig(failures_to_open=10))  # every request waits here
        for sample in digits_split[2][:4]:
            result = runtime.run(sample, Plan(exit="final", partition=1, deadline_ms=40.0))
            assert result.fell_back and result.exit == "exit_1"
            waited_ms = float(re.search(r"within ([0-9.]+) ms", result.error or "").group(1))
            assert waited_ms <= 40.0 - result.device_ms - FALLBACK_MARGIN_MS + 0.1, result
