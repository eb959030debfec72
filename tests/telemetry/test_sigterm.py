"""SIGTERM (systemd's stop) shuts a device down as cleanly as Ctrl-C: a real process, a real signal."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

pytestmark = pytest.mark.slow


def test_sigterm_publishes_the_last_window_and_a_clean_offline_status(broker, collector_factory, digits_bundle,
                                                                      digits_split, tmp_path) -> None:
    samples = tmp_path / "x.npy"
    np.save(samples, digits_split[2][:300].astype(np.float32))
    collector = collector_factory("tflite-edge/v1/dev/term-1/#")
    device = subprocess.Popen(
        [sys.executable, "-m", "tflite_edge", "device", "--broker", broker.url, "--bundle", str(digits_bundle.path),
         "--id", "term-1", "--input", str(samples), "--telemetry", "--telemetry-period-s", "600",
         "--interval-ms", "100", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    try:
        assert device.stdout is not None
        for _ in range(3):  # a few results, well before the 300 samples are done
            assert json.loads(device.stdout.readline())["exit"] == "final"
        collector.wait_for(lambda c: any(d.get("state") == "online" for d in c.docs("/status")))
        device.send_signal(signal.SIGTERM)
        out, err = device.communicate(timeout=60)
    finally:
        if device.poll() is None:
            device.kill()
    assert device.returncode == 128 + signal.SIGTERM, err
    assert "Traceback" not in err and "terminated (SIGTERM)" in err
    assert len(out.splitlines()) < 297  # stopped early, not after the whole input
    # The last telemetry window (the period is 10 minutes, so only the one sent at shutdown)
    # and a retained status that says the device shut down, not that its connection was lost.
    collector.wait_for(lambda c: len(c.docs("/telemetry")) == 1 and c.docs("/status")[-1].get("state") == "offline")
    window = collector.docs("/telemetry")[0]
    assert window["requests"]["count"] >= 3
    assert collector.docs("/status")[-1]["reason"] == "shutdown"
