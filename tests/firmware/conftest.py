"""Fixtures of the firmware-bridge tests: a simulated MCU behind a real pty."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

pytest.importorskip("tflite_micro", reason="the simulated MCU needs the tflite-micro package")

from tflite_edge.firmware_bridge.simulator import ByteLink, FdLink, SimulatedMcu, open_pty, serve  # noqa: E402


@dataclass
class PtyMcu:
    """A running simulated MCU: its state and the pty path the host opens."""

    mcu: SimulatedMcu
    path: str
    stop: threading.Event
    thread: threading.Thread


@pytest.fixture
def start_mcu() -> Iterator[Callable[..., PtyMcu]]:
    """Start simulated MCUs on fresh ptys: ``start_mcu(link_wrapper=None, baud=None, **mcu_options)``."""
    import os

    running: list[tuple[PtyMcu, int, int]] = []

    def start(link_wrapper: Callable[[ByteLink], ByteLink] | None = None, baud: int | None = None,
              **options: object) -> PtyMcu:
        master, slave, path = open_pty()
        mcu = SimulatedMcu(**options)  # type: ignore[arg-type]
        link: ByteLink = FdLink(master)
        if link_wrapper is not None:
            link = link_wrapper(link)
        stop = threading.Event()
        thread = threading.Thread(target=serve, args=(mcu, link, stop), kwargs={"baud": baud}, daemon=True)
        thread.start()
        handle = PtyMcu(mcu, path, stop, thread)
        running.append((handle, master, slave))
        return handle

    yield start
    for handle, master, slave in running:
        handle.stop.set()
        handle.thread.join(timeout=5)
        os.close(master)
        os.close(slave)
