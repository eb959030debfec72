"""The arm64 tier: device-side code in a Debian arm64 userland under QEMU, against the host.

The userland is built once and cached (tests/arm64/userland.py); `make test` and
`make test-arm64` build it before pytest starts. Where the machine cannot (not root, no
qemu-user-static/debootstrap), every test here is skipped with the reason.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import pytest

from .userland import CannotEmulate, Userland, device_command, ready, unavailable_reason

DeviceRun = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture(scope="session")
def arm64() -> Userland:
    reason = unavailable_reason("arm64")
    if reason is not None:
        pytest.skip(f"arm64 tier skipped: {reason}")
    try:
        return ready("arm64", log=False)
    except CannotEmulate as e:
        pytest.skip(f"arm64 tier skipped: {e}")


@pytest.fixture
def on_arm64(arm64: Userland) -> DeviceRun:
    """``on_arm64(argv, binds=[dirs], timeout=s)`` runs argv (``python`` means the device venv's)
    in the arm64 userland with ``binds`` visible at their host paths."""

    def run(argv: Sequence[str], *, binds: Iterable[str | Path] = (), timeout: float = 300.0,
            ) -> subprocess.CompletedProcess[str]:
        argv = [arm64.python if a == "python" else a for a in argv]
        return subprocess.run(device_command(arm64, argv, binds=binds), capture_output=True, text=True,
                              timeout=timeout)

    return run
