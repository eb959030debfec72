"""A split after an exit answers with that exit before the deadline when the edge is silent."""

from tflite_edge.device import DeviceRuntime, Plan
from tflite_edge.device.emulation import Emulation


def test_split_after_an_exit_answers_on_time_without_an_edge(broker, digits_bundle, digits_split):
    # A slow device (10 ms per segment): after the wait there is no time to compute more,
    # so the answer is exit_1, computed before the offload, and it must not be late.
    slow = Emulation(compute_slowdown=1000.0, segment_ms=(0.01, 0.01, 0.01))
    with DeviceRuntime(digits_bundle, broker_url=broker.url, device_id="reserve-test", emulation=slow) as runtime:
        for sample in digits_split[2][:4]:
            result = runtime.run(sample, Plan(exit="final", partition=1, deadline_ms=40.0))
            assert result.fell_back and result.exit == "exit_1"
            assert result.total_ms <= 40.0, result
