from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tflite_edge.telemetry.window import RequestObservation, WindowStats, observation_from_result, percentile


def test_percentile_interpolates():
    assert percentile([], 50) is None
    assert percentile([5.0], 95) == 5.0
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == pytest.approx(50.5)
    assert percentile(values, 95) == pytest.approx(95.05)


def test_window_summary():
    window = WindowStats()
    window.add(RequestObservation("exit_0", 1, 10.0, 10.0, deadline_met=True, segment_ms={"0": 10.0}), 30.0)
    window.add(
        RequestObservation("exit_2", 1, 30.0, 8.0, 12.0, 6.0, bytes_sent=2048, deadline_met=False,
                           segment_ms={"0": 8.0}),
        50.0,
    )
    window.add(RequestObservation("exit_2", 3, 20.0, ok=False, bytes_sent=2048))
    req, lat = window.requests(), window.latency()
    assert (req.count, req.deadline_met, req.deadline_missed, req.failed) == (3, 1, 1, 1)
    assert req.exits == {"exit_0": 1, "exit_2": 1} and req.partitions == {"1": 2}
    assert lat.total_p50_ms == 20.0 and lat.total_max_ms == 30.0
    assert lat.transfer_mean_ms == 12.0 and lat.edge_compute_mean_ms == 6.0  # only offloaded requests
    assert lat.device_segments_mean_ms == {"0": 9.0}
    assert window.energy_per_inference_mj() == 40.0
    assert window.bytes_sent == 4096


def test_observation_from_a_runtime_result_object():
    @dataclass
    class Result:
        exit_name: str
        partition: int
        latency_s: float
        device_s: float
        transfer_s: float
        edge_ms: float
        bytes_sent: int
        deadline_ms: float
        error: str | None = None

    obs = observation_from_result(Result("exit_1", 2, 0.040, 0.010, 0.020, 5.0, 1000, 30.0))
    assert obs.exit == "exit_1" and obs.partition == 2
    assert obs.total_ms == pytest.approx(40.0) and obs.device_compute_ms == pytest.approx(10.0)
    assert obs.transfer_ms == pytest.approx(20.0) and obs.edge_compute_ms == 5.0
    assert obs.deadline_met is False and obs.ok
    failed = observation_from_result({"exit": "e", "partition": 1, "total_ms": 3.0, "error": "timeout"})
    assert not failed.ok


settings_kw = {"max_examples": 60, "deadline": None}


@given(
    st.lists(
        st.builds(
            RequestObservation,
            exit=st.sampled_from(["exit_1", "final", ""]),
            partition=st.integers(-2, 5),
            total_ms=st.floats(allow_nan=True, allow_infinity=True),
            device_compute_ms=st.floats(allow_nan=True, allow_infinity=True),
            transfer_ms=st.floats(-1e3, 1e6),
            edge_compute_ms=st.floats(allow_nan=True),
            rtt_ms=st.none() | st.floats(allow_nan=True, allow_infinity=True),
            bytes_sent=st.integers(-10, 10**9),
            deadline_ms=st.none() | st.floats(allow_nan=True),
            deadline_met=st.none() | st.booleans(),
            ok=st.booleans(),
            timed_out=st.booleans(),
            segment_ms=st.dictionaries(st.sampled_from(["0", "1", ""]), st.floats(allow_nan=True), max_size=2),
        ),
        max_size=30,
    )
)
@settings(**settings_kw)
def test_no_observation_stream_produces_an_invalid_message(stream):
    from tflite_edge.telemetry import EstimatedPowerSensor, TelemetryPublisher
    from tflite_edge.telemetry.schema import decode, encode

    publisher = TelemetryPublisher("prop", broker_url="mqtt://127.0.0.1:9", power_sensor=EstimatedPowerSensor())
    for obs in stream:
        publisher.observe_result(obs)
    message = publisher.build_telemetry()
    assert decode(encode(message)).requests.count == len(stream)
