"""The device runtime's decisions, step by step: no broker, no TFLite, simulated time.

Segments take 5, 10 and 20 ms on a ``ManualClock``; the edge is a scripted responder on a
``MemoryLink``. Every time below is exact, so each test pins down one rule of the
deadline, fallback and early-exit logic (the real-broker tests in tests/coinference are
the integration tier).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import pytest

from tests.support.fakes import TOP_CLASS, ScriptedEdge, ScriptedSegments, announce_worker, fake_bundle
from tflite_edge.bundle import Bundle
from tflite_edge.device import DeviceRuntime, ExitRule, Plan
from tflite_edge.device.config import DeviceConfig
from tflite_edge.device.link import EmulatedLink
from tflite_edge.errors import BrokerConnectionError, UnknownBundleError
from tflite_edge.transport.link import MessageLink
from tflite_edge.transport.memory import ManualClock, MemoryLink
from tflite_edge.transport.wire import decode_frame

SEGMENT_MS = (5.0, 10.0, 20.0)
X = np.zeros((4, 4, 1), np.float32)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    return fake_bundle(tmp_path_factory.mktemp("fake") / "bundle")


class Rig:
    """A runtime on a manual clock with scripted segments and a scripted edge."""

    def __init__(self, bundle: Bundle, *, wrap: Callable[[MessageLink], MessageLink] | None = None,
                 **options: object) -> None:
        self.clock = ManualClock()
        self.segments = ScriptedSegments(bundle.manifest, self.clock, SEGMENT_MS)
        self.edge = ScriptedEdge(bundle.manifest)
        self.link = MemoryLink(self.edge, clock=self.clock)
        self.edge.link = self.link
        announce_worker(self.link, [bundle.bundle_id])
        link: MessageLink = wrap(self.link) if wrap is not None else self.link
        config = DeviceConfig.from_options(device_id="dev-1", **options)
        self.runtime = DeviceRuntime(bundle, config, link=link, interpreters=self.segments, clock=self.clock)
        self.segments.runs.clear()  # forget the warm-up

    def run(self, exit: str = "final", partition: int | None = None, deadline_ms: float | None = None,
            rule: ExitRule | None = None):  # noqa: ANN201
        return self.runtime.run(X, Plan(exit, partition, deadline_ms, rule or ExitRule()))


@pytest.fixture
def rig(bundle: Bundle) -> Rig:
    return Rig(bundle)


def test_warmup_measures_every_segment_on_the_runtime_clock(rig: Rig) -> None:
    assert rig.runtime.segment_ms == pytest.approx(list(SEGMENT_MS))
    assert rig.runtime.runner.backend_name == "scripted"


def test_local_plan_runs_up_to_the_target_exit_only(rig: Rig) -> None:
    result = rig.run("exit_2")
    assert rig.segments.runs == [0, 1]
    assert (result.exit, result.ran_on, result.fell_back, result.early_exit) == ("exit_2", "device", False, False)
    assert result.device_ms == pytest.approx(15.0) and result.total_ms == pytest.approx(15.0)
    assert result.top1_class == TOP_CLASS and rig.link.published == []


def test_confident_early_exit_stops_on_the_device(rig: Rig) -> None:
    rig.segments.top1["exit_1"] = 0.95
    result = rig.run("final", rule=ExitRule({"exit_1": 0.9}))
    assert rig.segments.runs == [0]
    assert (result.exit, result.early_exit, result.ran_on) == ("exit_1", True, "device")
    assert result.top1_score == pytest.approx(0.95, abs=1 / 256)


def test_unconfident_exit_does_not_stop_the_request(rig: Rig) -> None:
    rig.segments.top1["exit_1"] = 0.85
    result = rig.run("final", rule=ExitRule({"exit_1": 0.9}))
    assert rig.segments.runs == [0, 1, 2] and result.exit == "final" and not result.early_exit


def test_split_request_carries_the_cut_tensor_and_the_plan(rig: Rig, bundle: Bundle) -> None:
    rig.edge.delay_s = 0.010
    result = rig.run("final", partition=1, deadline_ms=50.0, rule=ExitRule({"exit_2": 0.8}))
    assert (result.ran_on, result.exit, result.fell_back) == ("split", "final", False)
    assert rig.segments.runs == [0]
    assert result.device_ms == pytest.approx(5.0)
    assert result.total_ms == pytest.approx(15.0)  # 5 ms head, reply 10 ms after the request
    assert result.edge_ms == pytest.approx(1.0) and result.transfer_ms == pytest.approx(9.0)
    (request,) = rig.link.published
    assert request.topic == f"tflite-edge/v1/req/{bundle.bundle_id}"
    assert request.response_topic == "tflite-edge/v1/dev/dev-1/res"
    assert request.user_properties == {"exit": "final", "thr": "exit_2=0.8", "thr_kind": "top1"}
    assert request.expiry_s == 1
    header, tensor = decode_frame(request.payload)
    assert (header.tensor, header.segment, tensor.shape) == ("cut_1", 1, (1, 2, 3, 4))
    assert result.request_bytes == len(request.payload) and result.reply_bytes > 0


def test_raw_input_offload_runs_nothing_locally(rig: Rig) -> None:
    result = rig.run("final", partition=0)
    assert result.ran_on == "edge" and rig.segments.runs == [] and result.device_ms == 0.0


def test_edge_may_answer_with_an_earlier_exit_inside_the_plan(rig: Rig) -> None:
    rig.edge.answer = "exit_2"
    result = rig.run("final", partition=1, deadline_ms=50.0)
    assert (result.exit, result.early_exit, result.ran_on) == ("exit_2", True, "split")


def test_reply_with_an_exit_before_the_cut_is_refused(rig: Rig) -> None:
    rig.edge.answer = "exit_1"
    result = rig.run("final", partition=1, deadline_ms=50.0)
    assert result.fell_back and result.ran_on == "device"
    assert "unusable" in (result.error or "") and "outside the plan" in (result.error or "")


def test_silent_edge_falls_back_in_time_to_the_last_computed_exit(rig: Rig) -> None:
    rig.edge.silent = True
    result = rig.run("final", partition=1, deadline_ms=40.0)
    # An exit lies before the cut, so only the 2 ms margin is kept back: 40 - 5 - 2 = 33 ms of waiting.
    assert rig.runtime.fallback_reserve_ms(1) == pytest.approx(2.0)
    assert result.error == "no reply from the edge within 33.0 ms"
    assert (result.exit, result.fell_back, result.ran_on) == ("exit_1", True, "device")
    assert result.total_ms == pytest.approx(38.0) and result.total_ms <= 40.0
    assert rig.segments.runs == [0]  # nothing fitted in the 2 ms left


def test_silent_edge_with_room_left_runs_the_deepest_affordable_exit(rig: Rig) -> None:
    rig.edge.silent = True
    result = rig.run("final", partition=0, deadline_ms=40.0)
    # No exit before the cut: the reserve also holds segment 0 (5 ms), so the wait is 33 ms.
    assert rig.runtime.fallback_reserve_ms(0) == pytest.approx(7.0)
    assert result.exit == "exit_1" and result.fell_back
    assert result.total_ms == pytest.approx(38.0)
    assert rig.segments.runs == [0]


def test_fallback_stops_early_when_a_local_exit_is_confident(rig: Rig) -> None:
    rig.link.online = False  # fails at once, so the whole budget is left for the local tail
    rig.segments.top1["exit_2"] = 0.99
    result = rig.run("final", partition=1, deadline_ms=1000.0, rule=ExitRule({"exit_2": 0.9}))
    assert (result.exit, result.fell_back, result.early_exit) == ("exit_2", True, True)
    assert rig.segments.runs == [0, 1]


def test_reply_after_the_wait_is_dropped(rig: Rig) -> None:
    rig.edge.delay_s = 0.034  # one millisecond too late
    result = rig.run("final", partition=1, deadline_ms=40.0)
    assert result.fell_back and result.total_ms == pytest.approx(38.0)
    rig.clock.advance(1.0)  # the late reply arrives now and must be ignored
    assert rig.runtime.offload is not None and not rig.runtime.offload._pending


def test_reply_just_in_time_is_used(rig: Rig) -> None:
    rig.edge.delay_s = 0.033
    result = rig.run("final", partition=1, deadline_ms=40.0)
    assert not result.fell_back and result.ran_on == "split" and result.total_ms == pytest.approx(38.0)


def test_deadline_too_short_to_offload_sends_nothing(rig: Rig) -> None:
    result = rig.run("final", partition=1, deadline_ms=6.0)
    assert rig.link.published == []
    assert result.error == "the deadline leaves no time to offload (1.0 ms left)"
    assert result.request_bytes == 0 and result.exit == "exit_1" and result.total_ms == pytest.approx(5.0)


def test_lost_broker_falls_back_at_once(rig: Rig) -> None:
    rig.link.online = False
    result = rig.run("final", partition=1)
    assert result.fell_back and "not connected" in (result.error or "")
    # No time spent waiting: 5 ms head, then the rest locally (10 s default budget).
    assert result.exit == "final" and result.total_ms == pytest.approx(35.0)


def test_no_worker_online_means_no_offload(rig: Rig, bundle: Bundle) -> None:
    announce_worker(rig.link, [])  # the worker's presence is cleared (it left)
    result = rig.run("final", partition=1, deadline_ms=100.0)
    assert rig.link.published == [] and result.fell_back
    assert result.error == f"no edge worker serving bundle {bundle.bundle_id} is online"
    announce_worker(rig.link, ["another-bundle"], worker_id="edge-2")
    assert rig.run("final", partition=1, deadline_ms=100.0).fell_back
    announce_worker(rig.link, [bundle.bundle_id], worker_id="edge-3")
    assert rig.run("final", partition=1, deadline_ms=100.0).ran_on == "split"


def test_presence_is_rebuilt_after_a_reconnect(rig: Rig) -> None:
    assert rig.runtime.offload is not None and rig.runtime.offload.workers_online(rig.runtime.manifest.bundle_id) == 1
    rig.link.online = False
    rig.link.retained.clear()  # the worker left while the device was away
    rig.link.online = True
    assert rig.runtime.offload.workers_online(rig.runtime.manifest.bundle_id) == 0


def test_breaker_opens_after_consecutive_timeouts_and_probes_later(rig: Rig) -> None:
    rig.edge.silent = True
    for _ in range(3):
        assert rig.run("final", partition=1, deadline_ms=40.0).error == "no reply from the edge within 33.0 ms"
    assert len(rig.link.published) == 3
    paused = rig.run("final", partition=1, deadline_ms=40.0)
    assert len(rig.link.published) == 3 and (paused.error or "").startswith("offloading paused after 3 timeouts")
    assert paused.exit == "final" and paused.total_ms == pytest.approx(35.0)  # no waiting: the tail runs locally
    rig.clock.advance(1.0)  # the first back-off has passed: one request probes the edge
    rig.edge.silent = False
    probe = rig.run("final", partition=1, deadline_ms=40.0)
    assert probe.ran_on == "split" and len(rig.link.published) == 4


def test_edge_error_reply_falls_back_or_raises(bundle: Bundle) -> None:
    rig = Rig(bundle)
    rig.edge.error = "unknown_bundle"
    result = rig.run("final", partition=1, deadline_ms=100.0)
    assert result.fell_back and "unknown_bundle" in (result.error or "")
    strict = Rig(bundle, raise_remote_errors=True)
    strict.edge.error = "unknown_bundle"
    with pytest.raises(UnknownBundleError):
        strict.run("final", partition=1, deadline_ms=100.0)


def test_each_request_waits_for_its_own_reply(rig: Rig) -> None:
    # Requests from one thread share a reply slot: nothing of one request's wait may reach
    # the next, neither a kept unknown_bundle reply nor a late reply to the earlier request.
    rig.edge.error = "unknown_bundle"
    first = rig.run("final", partition=1, deadline_ms=40.0)
    assert first.fell_back and "unknown_bundle" in (first.error or "")
    rig.edge.error, rig.edge.silent = None, True
    second = rig.run("final", partition=1, deadline_ms=40.0)
    assert second.fell_back and second.error == "no reply from the edge within 33.0 ms"
    rig.edge.silent, rig.edge.delay_s, rig.edge.top1 = False, 0.045, 0.6  # arrives during the next request
    rig.run("final", partition=1, deadline_ms=40.0)
    rig.edge.delay_s, rig.edge.top1 = 0.020, 0.8
    fourth = rig.run("final", partition=1, deadline_ms=100.0)
    assert fourth.ran_on == "split" and fourth.top1_score == pytest.approx(0.8, abs=0.01)
    assert fourth.transfer_ms == pytest.approx(20.0 - rig.edge.edge_ms)


def test_malformed_reply_is_a_fallback_not_a_crash(rig: Rig) -> None:
    def broken(request):  # noqa: ANN001, ANN202
        from tflite_edge.transport.link import Message

        return Message(request.response_topic, b"junk", correlation=request.correlation)

    rig.link.responder = broken
    result = rig.run("final", partition=1, deadline_ms=100.0)
    assert result.fell_back and "malformed reply" in (result.error or "")


def test_required_broker_that_is_down_is_an_error(bundle: Bundle) -> None:
    link = MemoryLink(online=False)
    with pytest.raises(BrokerConnectionError):
        DeviceRuntime(bundle, link=link, interpreters=ScriptedSegments(bundle.manifest, ManualClock(), SEGMENT_MS))
    runtime = DeviceRuntime(bundle, link=link, require_broker=False,
                            interpreters=ScriptedSegments(bundle.manifest, ManualClock(), SEGMENT_MS))
    assert runtime.run(X, Plan("final", 1)).fell_back


def test_emulated_uplink_longer_than_the_wait_sends_nothing(bundle: Bundle) -> None:
    clock_box: list[ManualClock] = []

    def slow_uplink(inner: MessageLink) -> MessageLink:
        return EmulatedLink(inner, uplink_delay_s=lambda n: 0.050, clock=clock_box[0])

    clock = ManualClock()
    clock_box.append(clock)
    segments = ScriptedSegments(bundle.manifest, clock, SEGMENT_MS)
    link = MemoryLink(ScriptedEdge(bundle.manifest), clock=clock)
    announce_worker(link, [bundle.bundle_id])
    runtime = DeviceRuntime(bundle, link=slow_uplink(link), interpreters=segments, clock=clock)
    result = runtime.run(X, Plan("final", 1, 40.0))
    assert link.published == [] and result.fell_back and result.total_ms == pytest.approx(38.0)
    fast = DeviceRuntime(bundle, link=EmulatedLink(link, uplink_delay_s=lambda n: 0.004, clock=clock),
                         interpreters=segments, clock=clock)
    result = fast.run(X, Plan("final", 1, 40.0))
    assert len(link.published) == 1 and result.ran_on == "split" and result.total_ms == pytest.approx(9.0)


def test_emulated_downlink_delays_the_reply(bundle: Bundle) -> None:
    clock = ManualClock()
    link = MemoryLink(ScriptedEdge(bundle.manifest), clock=clock)
    announce_worker(link, [bundle.bundle_id])
    runtime = DeviceRuntime(bundle, link=EmulatedLink(link, downlink_delay_s=lambda n: 0.007, clock=clock),
                            interpreters=ScriptedSegments(bundle.manifest, clock, SEGMENT_MS), clock=clock)
    result = runtime.run(X, Plan("final", 1, 40.0))
    assert result.ran_on == "split" and result.total_ms == pytest.approx(12.0)


def test_a_failing_result_hook_never_breaks_a_request(bundle: Bundle, caplog: pytest.LogCaptureFixture) -> None:
    def hook(result: object) -> None:
        raise RuntimeError("telemetry down")

    clock = ManualClock()
    runtime = DeviceRuntime(bundle, on_result=hook, clock=clock,
                            interpreters=ScriptedSegments(bundle.manifest, clock, SEGMENT_MS))
    with caplog.at_level(logging.ERROR):
        assert runtime.run(X, Plan("exit_1")).exit == "exit_1"
    assert "on_result hook failed" in caplog.text


def test_local_only_runtime_falls_back_for_offload_plans(bundle: Bundle) -> None:
    clock = ManualClock()
    runtime = DeviceRuntime(bundle, clock=clock, interpreters=ScriptedSegments(bundle.manifest, clock, SEGMENT_MS))
    result = runtime.run(X, Plan("final", 1))
    assert result.fell_back and result.error == "no broker configured: the device answered locally"


def test_flat_options_and_config_agree() -> None:
    config = DeviceConfig.from_options(device_id="a", codec="zlib", backend="litert", qos=1, warmup=False)
    assert (config.device_id, config.codec, config.interpreter.backend) == ("a", "zlib", "litert")
    assert config.offload.qos == 1 and not config.warmup
    with pytest.raises(TypeError, match="colour"):
        DeviceConfig.from_options(colour="blue")
