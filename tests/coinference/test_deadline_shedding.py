"""Absolute deadlines: the clock-offset estimate, and an edge that drops work nobody waits for."""

from __future__ import annotations

import random
import threading
from typing import Any

import numpy as np
import pytest

from tflite_edge.bundle import Bundle
from tflite_edge.device import DeviceRuntime
from tflite_edge.edge.handler import EdgeHandler
from tflite_edge.edge.worker import EdgeWorker
from tflite_edge.errors import ProtocolError
from tflite_edge.transport.broker import MosquittoBroker
from tflite_edge.transport.clock import ClockOffset
from tflite_edge.transport.mqtt import connect_and_start, make_client
from tflite_edge.transport.protocol import (
    ReplyHeader,
    RequestHeader,
    Topics,
    now_us,
    request_properties,
    user_properties,
)
from tflite_edge.transport.wire import encode_tensor


def test_offset_from_one_symmetric_round_trip_is_exact() -> None:
    clock = ClockOffset()
    # Edge clock 5 s ahead; 10 ms each way; 3 ms of compute.
    sample = clock.add(sent_s=100.0, received_s=100.023, edge_rx_s=105.010, edge_compute_s=0.003)
    assert sample.offset_s == pytest.approx(5.0)
    assert sample.delay_s == pytest.approx(0.020)
    assert clock.edge_time_s(200.0) == pytest.approx(205.0)
    assert clock.one_way_s() == pytest.approx(0.010)
    # Waiting until 200 s here: the edge must answer by 205 s of its clock less the 10 ms back.
    assert clock.edge_deadline_us(200.0) == round(204.990 * 1e6)


def test_no_deadline_is_sent_before_the_offset_is_known() -> None:
    assert ClockOffset().edge_deadline_us(200.0) is None


def test_offset_error_stays_within_half_the_delay_and_the_least_delayed_sample_wins() -> None:
    clock = ClockOffset(window=4)
    assert clock.edge_time_s(1.0) is None and clock.one_way_s() == 0.0
    # All 40 ms of delay on the way out (a queue): the estimate is off by at most 20 ms.
    queued = clock.add(sent_s=0.0, received_s=0.040, edge_rx_s=-2.0 + 0.040, edge_compute_s=0.0)
    assert abs(queued.offset_s - (-2.0)) <= queued.delay_s / 2 + 1e-9
    clock.add(sent_s=1.0, received_s=1.002, edge_rx_s=-2.0 + 1.001, edge_compute_s=0.0)
    assert clock.best is not None and clock.best.delay_s == pytest.approx(0.002)
    assert clock.edge_time_s(10.0) == pytest.approx(8.0)
    for i in range(4):  # the good sample ages out of the window
        clock.add(sent_s=2.0 + i, received_s=2.030 + i, edge_rx_s=0.015 + i, edge_compute_s=0.0)
    assert clock.best is not None and clock.best.delay_s == pytest.approx(0.030)


def test_the_best_sample_is_the_least_delayed_of_the_window_after_every_round_trip() -> None:
    # The best sample is kept up to date as samples come and go, not searched per request.
    rng = random.Random(3)
    clock, window = ClockOffset(window=5), []
    for i in range(200):
        sent = float(i)
        sample = clock.add(sent_s=sent, received_s=sent + rng.choice([0.002, 0.004, 0.004, 0.010, 0.030]),
                           edge_rx_s=sent + 1.0, edge_compute_s=0.0)
        window = (window + [sample])[-5:]
        assert clock.best is min(window, key=lambda s: s.delay_s)


def test_the_compute_estimate_bounds_the_usual_time_and_follows_a_change() -> None:
    from tflite_edge.edge.handler import ComputeEstimate

    estimate = ComputeEstimate()
    assert estimate.bound_us == 0.0  # nothing known: nothing is shed for its compute time
    for sample in [1000, 1100, 900, 1050, 950] * 4:
        estimate.add(sample)
    assert estimate.bound_us == 1100  # the slowest recent time
    for _ in range(40):  # the edge slows down (e.g. another tenant): the bound follows
        estimate.add(3000)
    assert estimate.bound_us == 3000
    for _ in range(16):  # and back: the slow spell is forgotten after 16 answers
        estimate.add(1000)
    assert estimate.bound_us == 1000


def test_deadline_and_receipt_time_travel_in_the_headers() -> None:
    header = RequestHeader("r", "final", deadline_us=1_700_000_000_123_456)
    assert RequestHeader.from_message(dict(header.to_pairs()), b"r").deadline_us == 1_700_000_000_123_456
    assert RequestHeader.from_message({"exit": "final"}, b"r").deadline_us is None
    reply = ReplyHeader.success("r", 1500, rx_us=42)
    assert ReplyHeader.from_message(dict(reply.to_pairs()), b"r").rx_us == 42
    for bad in ("soon", "-5", str(2**63)):
        with pytest.raises(ProtocolError, match="dl_us"):
            RequestHeader.from_message({"exit": "final", "dl_us": bad}, b"r")


class FakeClock:
    def __init__(self, start_us: int) -> None:
        self.now = start_us

    def __call__(self) -> int:
        return self.now


def _request(bundle: Bundle, deadline_us: int | None) -> tuple[bytes, dict[str, str]]:
    manifest = bundle.manifest
    cut = manifest.segments[1].inputs[0]
    frame = encode_tensor(np.zeros(cut.shape, np.int8), cut, bundle_id=manifest.bundle_id, segment=1)
    return frame, dict(RequestHeader("r1", "final", deadline_us=deadline_us).to_pairs())


def test_handler_sheds_requests_past_their_deadline_without_computing(digits_bundle: Bundle) -> None:
    clock = FakeClock(1_000_000_000)
    handler = EdgeHandler([digits_bundle], clock_us=clock)
    bundle_id = digits_bundle.bundle_id
    frame, late = _request(digits_bundle, deadline_us=clock.now - 1)
    assert handler.handle(bundle_id, frame, late, b"r1") is None
    assert handler.shed == 1 and handler._compute_us == {}  # nothing was computed
    frame, fresh = _request(digits_bundle, deadline_us=clock.now + 10_000_000)
    reply = handler.handle(bundle_id, frame, fresh, b"r1")
    assert reply is not None and reply.header.ok and reply.header.rx_us == clock.now
    usual = handler._compute_us[(bundle_id, 1, "final")].bound_us
    # Still ahead of its deadline, but not by the time an answer usually takes: shed too.
    frame, tight = _request(digits_bundle, deadline_us=clock.now + int(usual // 2))
    assert handler.handle(bundle_id, frame, tight, b"r1") is None and handler.shed == 2
    # No deadline: always answered.
    frame, untimed = _request(digits_bundle, deadline_us=None)
    reply = handler.handle(bundle_id, frame, untimed, b"r1")
    assert reply is not None and reply.header.ok


def test_a_high_estimate_is_measured_again_rather_than_shedding_forever(digits_bundle: Bundle) -> None:
    from tflite_edge.edge.handler import PROBE_AFTER_US, ComputeEstimate

    clock = FakeClock(1_000_000_000)
    handler = EdgeHandler([digits_bundle], clock_us=clock)
    work = (digits_bundle.bundle_id, 1, "final")
    slow = ComputeEstimate()
    slow.add(10_000_000, clock.now)  # one 10 s spell: every 1 s deadline now looks hopeless
    handler._compute_us[work] = slow
    frame, alive = _request(digits_bundle, deadline_us=clock.now + 1_000_000)
    assert [handler.handle(digits_bundle.bundle_id, frame, alive, b"r1") for _ in range(50)] == [None] * 50
    clock.now += PROBE_AFTER_US + 1  # nothing computed for that long: the next one is, to measure again
    frame, alive = _request(digits_bundle, deadline_us=clock.now + 1_000_000)
    assert handler.handle(digits_bundle.bundle_id, frame, alive, b"r1") is not None
    assert handler.handle(digits_bundle.bundle_id, frame, alive, b"r1") is not None  # the estimate is sane again
    assert handler._compute_us[work].bound_us < 1_000_000


class Prober:
    """A raw MQTT client that publishes requests and records what comes back or goes out."""

    def __init__(self, url: str, topics: Topics) -> None:
        self.topics = topics
        self.seen: list[tuple[str, dict[str, str], bytes | None]] = []
        self.changed = threading.Condition()
        self.client = make_client(url, "prober")
        self.client.on_message = self._on_message
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *a: subscribed.set()
        connect_and_start(self.client)
        self.client.subscribe([(topics.reply("prober"), 0), (f"{topics.prefix}/req/+", 0)])
        assert subscribed.wait(5)

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        with self.changed:
            self.seen.append((message.topic, user_properties(message.properties),
                              getattr(message.properties, "CorrelationData", None)))
            self.changed.notify_all()

    def wait_for(self, predicate: Any, timeout_s: float = 10.0) -> None:
        with self.changed:
            assert self.changed.wait_for(lambda: predicate(self.seen), timeout_s), self.seen

    def send(self, bundle: Bundle, rid: str, deadline_us: int | None) -> None:
        frame, _ = _request(bundle, deadline_us)
        props = request_properties(RequestHeader(rid, "final", deadline_us=deadline_us),
                                   response_topic=self.topics.reply("prober"))
        self.client.publish(self.topics.request(bundle.bundle_id), frame, properties=props).wait_for_publish(5)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.mark.slow
def test_live_edge_drops_overdue_requests_and_devices_date_theirs(
    broker: MosquittoBroker, digits_bundle: Bundle, digits_split: Any
) -> None:
    topics = Topics()
    prober = Prober(broker.url, topics)
    try:
        with EdgeWorker(broker.url, [digits_bundle]) as worker:
            overdue = now_us() - 1_000
            for i in range(5):
                prober.send(digits_bundle, f"late-{i}", overdue)
            prober.send(digits_bundle, "fresh", now_us() + 30_000_000)
            # One worker answers in order: once "fresh" is answered, the late ones were seen.
            prober.wait_for(lambda seen: any(c == b"fresh" and t.endswith("/res") for t, _, c in seen))
            assert worker.shed == 5 and worker.served == 1
            assert not [c for t, _, c in prober.seen if t.endswith("/res") and c != b"fresh"]

            sample = digits_split[2][0]
            with DeviceRuntime(digits_bundle, broker_url=broker.url, device_id="dated") as device:
                first = device.infer(sample, partition=1, deadline_ms=5_000)
                assert not first.fell_back and device.clock.best is not None
                # Same machine, same clock: the estimate is within its own error bound.
                best = device.clock.best
                assert abs(best.offset_s) <= best.delay_s / 2 + 0.002
                second = device.infer(sample, partition=1, deadline_ms=5_000)
                assert not second.fell_back
            prober.wait_for(lambda seen: len(_device_requests(seen)) == 2)
            undated, dated = _device_requests(prober.seen)
            # The first request went undated (no offset yet), the second carried its deadline.
            assert "dl_us" not in undated
            assert now_us() - 10_000_000 < int(dated["dl_us"]) < now_us() + 5_000_000
    finally:
        prober.close()


def _device_requests(seen: list[tuple[str, dict[str, str], bytes | None]]) -> list[dict[str, str]]:
    return [p for t, p, c in seen if "/req/" in t and c is not None and not c.startswith((b"late-", b"fresh"))]


def test_an_idle_worker_measures_again_after_one_expected_compute_time(digits_bundle: Bundle) -> None:
    from tflite_edge.edge.handler import ComputeEstimate

    clock = FakeClock(1_000_000_000)
    handler = EdgeHandler([digits_bundle], clock_us=clock)
    work = (digits_bundle.bundle_id, 1, "final")
    spell = ComputeEstimate()
    spell.add(50_000, clock.now)  # one slow answer: 50 ms expected from now on
    handler._compute_us[work] = spell
    frame, tight = _request(digits_bundle, deadline_us=clock.now + 30_000)
    assert handler.handle(digits_bundle.bundle_id, frame, tight, b"r1") is None  # 30 ms left < 50 ms
    clock.now += 50_001  # nothing computed for one expected compute time
    frame, tight = _request(digits_bundle, deadline_us=clock.now + 30_000)
    assert handler.handle(digits_bundle.bundle_id, frame, tight, b"r1") is not None  # computed, to measure
    assert handler._compute_us[work].bound_us < 30_000  # the spell is forgotten: tight requests are answered
    assert handler.handle(digits_bundle.bundle_id, frame, tight, b"r1") is not None
