import json
import threading
import time
from collections.abc import Callable

import pytest


class Collector:
    """A real MQTT 5 subscriber that keeps every message it receives."""

    def __init__(self, url: str, topic: str, client_id: str) -> None:
        from tflite_edge.transport.mqtt import connect_and_start, make_client

        self.messages: list[tuple[str, bytes, bool]] = []
        self._cond = threading.Condition()
        self.client = make_client(url, client_id)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        self.client.on_message = self._on_message
        connect_and_start(self.client)

    def _on_message(self, client, userdata, msg) -> None:
        with self._cond:
            self.messages.append((msg.topic, msg.payload, bool(msg.retain)))
            self._cond.notify_all()

    def docs(self, suffix: str = "") -> list[dict]:
        with self._cond:
            return [json.loads(p) for t, p, _ in self.messages if t.endswith(suffix)]

    def wait_for(self, predicate: Callable[["Collector"], bool], timeout_s: float = 10.0) -> None:
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while not predicate(self):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"timed out; got {[(t, p[:80]) for t, p, _ in self.messages]}")
                self._cond.wait(remaining)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def collector_factory(broker):
    made: list[Collector] = []
    counter = iter(range(1000))

    def make(topic: str = "tflite-edge/v1/dev/#") -> Collector:
        c = Collector(broker.url, topic, f"collector-{next(counter)}-{time.monotonic_ns()}")
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()
