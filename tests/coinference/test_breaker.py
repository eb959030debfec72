"""The offload circuit breaker and the edge presence tracker (pure logic, a fake clock)."""

from __future__ import annotations

import pytest

from tflite_edge.device.breaker import BreakerConfig, CircuitBreaker
from tflite_edge.errors import ProtocolError
from tflite_edge.transport.presence import EdgePresence, presence_payload


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_opens_after_consecutive_timeouts_only() -> None:
    breaker = CircuitBreaker(BreakerConfig(failures_to_open=3), Clock())
    assert not breaker.record_timeout() and not breaker.record_timeout()
    breaker.record_success()  # a reply in between: the count starts again
    assert not breaker.record_timeout() and not breaker.record_timeout() and breaker.allow()
    assert breaker.record_timeout()  # the third in a row opens it (reported once)
    assert breaker.is_open and not breaker.allow()


def test_back_off_doubles_per_failed_probe_up_to_the_maximum() -> None:
    clock = Clock()
    breaker = CircuitBreaker(BreakerConfig(failures_to_open=1, backoff_s=1.0, max_backoff_s=4.0), clock)
    assert breaker.record_timeout()
    waits = []
    for _ in range(4):
        assert not breaker.allow()
        waits.append(breaker.retry_in_s())
        clock.now += breaker.retry_in_s()
        assert breaker.allow()  # one probe ...
        assert not breaker.allow()  # ... and only one while it is out
        assert not breaker.record_timeout()  # the probe timed out: still open, not reported again
    assert waits == [1.0, 2.0, 4.0, 4.0]
    clock.now += breaker.retry_in_s()
    assert breaker.allow()
    assert breaker.record_success()  # the probe was answered: closed, reported once
    assert not breaker.is_open and breaker.allow() and breaker.backoff_s == 1.0


def test_a_probe_not_sent_lets_the_next_request_probe() -> None:
    clock = Clock()
    breaker = CircuitBreaker(BreakerConfig(failures_to_open=1), clock)
    breaker.record_timeout()
    clock.now += 1.0
    assert breaker.allow()
    breaker.release_probe()
    assert breaker.allow()


def test_reset_closes_it() -> None:
    breaker = CircuitBreaker(BreakerConfig(failures_to_open=1), Clock())
    breaker.record_timeout()
    breaker.reset()
    assert breaker.allow() and breaker.failures == 0


def test_a_disabled_breaker_never_opens() -> None:
    breaker = CircuitBreaker(BreakerConfig(failures_to_open=1, enabled=False), Clock())
    assert not any(breaker.record_timeout() for _ in range(10))
    assert breaker.allow() and not breaker.is_open


def test_config_is_checked() -> None:
    with pytest.raises(ValueError):
        BreakerConfig(failures_to_open=0)
    with pytest.raises(ValueError):
        BreakerConfig(backoff_s=10.0, max_backoff_s=1.0)


def test_presence_follows_workers_coming_and_going() -> None:
    presence = EdgePresence("p")
    assert presence.online("b1") == 0
    presence.update("p/edge/w1", presence_payload(["b1", "b2"], "g"))
    presence.update("p/edge/w2", presence_payload(["b2"], "g"))
    assert (presence.online("b1"), presence.online("b2"), presence.online("b3")) == (1, 2, 0)
    presence.update("p/edge/w1", b"")  # last will or clean stop: the retained message is cleared
    assert (presence.online("b1"), presence.online("b2")) == (0, 1)
    for bad in (b"{", b'{"bundles": "b1"}', b"[1]", b"x" * 70_000):
        with pytest.raises(ProtocolError):
            presence.update("p/edge/w3", bad)
    with pytest.raises(ProtocolError):
        presence.update("q/edge/w3", presence_payload(["b1"], "g"))
    assert presence.online("b1") == 0  # nothing malformed counted
