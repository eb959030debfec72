"""The measured context over a real Mosquitto: edge workers' load reports and the operator's budget topic."""

from __future__ import annotations

import time
from collections.abc import Callable

from tflite_edge.device.context import ContextSubscriber, EdgeLoadTracker, PowerBudget, budget_topic
from tflite_edge.edge import EdgeWorker
from tflite_edge.transport.mqtt import connect_and_start, make_client

PREFIX = "tflite-edge/v1"


def wait_for(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s")
        time.sleep(0.02)


def publish(url: str, topic: str, payload: bytes, *, retain: bool) -> None:
    client = make_client(url, "operator")
    connect_and_start(client, 10.0)
    try:
        client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5.0)
    finally:
        client.disconnect()
        client.loop_stop()


def test_edge_load_reports_arrive_and_go_stale(broker, digits_bundle) -> None:  # type: ignore[no-untyped-def]
    tracker = EdgeLoadTracker(stale_after_s=0.5)
    with ContextSubscriber(broker.url, device_id="dev-load", prefix=PREFIX, edge_load=tracker, budget=None):
        assert tracker.load() == (None, None)
        with EdgeWorker(broker.url, [digits_bundle], load_period_s=0.1) as worker:
            wait_for(lambda: tracker.load()[0] is not None)
            load, age = tracker.load()
            assert load is not None and 0.0 <= load < 1.0 and age is not None and age < 0.5
            assert worker.load_topic == f"{PREFIX}/edge/{worker.worker_id}/load"
        # The worker stopped: its last report ages past the limit and is ignored.
        wait_for(lambda: tracker.load()[0] is None)
        assert tracker.load()[1] is not None and tracker.load()[1] > 0.5  # type: ignore[operator]


def test_the_budget_topic_changes_the_budget(broker) -> None:  # type: ignore[no-untyped-def]
    topic = budget_topic(PREFIX, "dev-budget")
    assert topic == f"{PREFIX}/dev/dev-budget/budget"
    publish(broker.url, topic, b'{"power_budget_mw": 750}', retain=True)  # set before the device starts
    budget = PowerBudget(2000.0, battery_root=None)
    with ContextSubscriber(broker.url, device_id="dev-budget", prefix=PREFIX, edge_load=None, budget=budget):
        wait_for(lambda: budget.current() == (750.0, "operator"))
        publish(broker.url, topic, b"1200", retain=True)
        wait_for(lambda: budget.current()[0] == 1200.0)
        publish(broker.url, topic, b"", retain=True)  # the operator clears it: the configured budget again
        wait_for(lambda: budget.current() == (2000.0, "configured"))
        publish(broker.url, topic, b"not a budget", retain=False)
        wait_for(lambda: budget.rejected == 1)
        assert budget.current() == (2000.0, "configured")
