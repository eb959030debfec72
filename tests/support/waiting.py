"""Waiting on conditions instead of sleeping: a polling wait, a subscriber that knows when it is
subscribed, and reading a child process's output until a line shows up."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any

from tflite_edge.transport.mqtt import connect_and_start, make_client


def wait_until(condition: Callable[[], object], timeout_s: float = 10.0, what: str = "condition") -> None:
    """Return as soon as ``condition()`` is true; ``AssertionError`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout_s:g} s")
        time.sleep(0.01)


class Subscriber:
    """An MQTT 5 client that records every message on ``topics``; ready once the broker
    acknowledged the subscription (so nothing published after the constructor is missed)."""

    def __init__(self, url: str, *topics: str, client_id: str | None = None, timeout_s: float = 10.0) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self._cond = threading.Condition()
        self._subscribed = threading.Event()
        self.client = make_client(url, client_id or f"test-sub-{time.monotonic_ns()}")
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe([(t, 1) for t in topics])
        self.client.on_subscribe = lambda c, u, mid, codes, p: self._subscribed.set()
        self.client.on_message = self._on_message
        connect_and_start(self.client, timeout_s)
        if not self._subscribed.wait(timeout_s):
            self.close()
            raise AssertionError(f"the broker did not acknowledge the subscription to {topics}")

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        with self._cond:
            self.messages.append((message.topic, bytes(message.payload)))
            self._cond.notify_all()

    def wait_for(self, count: int = 1, timeout_s: float = 20.0) -> list[tuple[str, bytes]]:
        """Block until at least ``count`` messages arrived; returns them all."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.messages) >= count, timeout_s):
                raise AssertionError(f"{len(self.messages)} of {count} message(s) within {timeout_s:g} s")
            return list(self.messages)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def __enter__(self) -> Subscriber:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_until(process: subprocess.Popen[str], done: Callable[[str], bool], timeout_s: float = 30.0) -> str:
    """Read ``process``'s stdout until a line satisfies ``done``; returns everything read.

    Reads the pipe's file descriptor directly (no buffered reader keeps data back), so a
    later ``process.communicate()`` returns exactly the rest. The process is killed when no
    such line arrives within ``timeout_s``.
    """
    assert process.stdout is not None
    fd = process.stdout.fileno()
    watchdog = threading.Timer(timeout_s, process.kill)
    watchdog.start()
    data = b""
    try:
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            data += chunk
            *complete, _ = data.decode("utf-8", errors="replace").split("\n")
            if any(done(line) for line in complete):
                return data.decode("utf-8", errors="replace")
    finally:
        watchdog.cancel()
    raise AssertionError(f"the expected line never came within {timeout_s:g} s; got {data[-400:]!r}")
