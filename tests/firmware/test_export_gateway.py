"""firmware export (C array checked in TFLM), the gateway MCU -> gateway -> edge, and the CLI."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.support.waiting import Subscriber
from tflite_edge.cli import main
from tflite_edge.errors import InputError, MicroModelError
from tflite_edge.firmware_bridge.export import export_segment
from tflite_edge.firmware_bridge.gateway import Gateway
from tflite_edge.firmware_bridge.micro import check_micro
from tflite_edge.runtime import BundleRunner

CHECK_C = r"""
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include "model_data.h"
int main(void) {
  printf("%u %d %.4s %d\n", g_model_len, (int)((uintptr_t)g_model % G_MODEL_ALIGNMENT),
         (const char *)g_model + 4, G_MODEL_ARENA_BYTES);
  return 0;
}
"""


def test_export_writes_an_aligned_array_that_compiles(digits_bundle, tmp_path: Path) -> None:
    report = export_segment(digits_bundle, 0, tmp_path / "model_data.cc")
    model = digits_bundle.read_segment(0)
    assert report.model_bytes == len(model) and 0 < report.arena_used_bytes <= report.arena_bytes
    assert report.arena_bytes % 1024 == 0 and "CONV_2D" in report.operators
    header = report.header.read_text()
    assert "input 0: image" in header and "output" in header
    assert "resolver.AddConv2D();" in header and "resolver.AddFullyConnected();" in header
    assert f"G_MODEL_OPERATOR_COUNT {len(report.operators)}" in header
    compiler = shutil.which("cc")
    if compiler is None:
        pytest.skip("no C compiler to build the exported array")
    (tmp_path / "check.c").write_text(CHECK_C)
    exe = tmp_path / "check"
    # The .cc is plain C apart from alignas, which C11 has in <stdalign.h>.
    subprocess.run([compiler, "-std=c11", "-Wall", "-Werror", "-x", "c", str(report.source), str(tmp_path / "check.c"),
                    "-I", str(tmp_path), "-o", str(exe)], check=True, capture_output=True)
    length, misalignment, ident, arena = subprocess.run([str(exe)], capture_output=True, text=True,
                                                        check=True).stdout.split()
    assert (int(length), int(misalignment), ident, int(arena)) == (len(model), 0, "TFL3", report.arena_bytes)


def test_export_rejects_operators_tflm_lacks(tmp_path: Path) -> None:
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec([1, 8], tf.float32)])
    def sort(x):  # type: ignore[no-untyped-def]
        return {"sorted": tf.sort(x, axis=1) * 2.0}

    model = tf.lite.TFLiteConverter.from_concrete_functions([sort.get_concrete_function()], sort).convert()
    with pytest.raises(MicroModelError, match="operators TFLite Micro does not have: TOPK_V2"):
        check_micro(model, label="segment 0")


def test_export_cli(digits_bundle, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "fw" / "seg1.cc"
    assert main(["firmware", "export", str(digits_bundle.path), "--segment", "1", "-o", str(out), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["source"] == str(out) and Path(doc["header"]).exists() and doc["arena_used_bytes"] > 0
    assert main(["firmware", "export", str(digits_bundle.path), "--segment", "9", "-o", str(out)]) == 2
    assert "segment 9 does not exist" in capsys.readouterr().err
    with pytest.raises(InputError):
        export_segment(digits_bundle, 0, out, array_name="not a name")


def _local(digits_bundle, xs: np.ndarray, exit_name: str) -> np.ndarray:
    return BundleRunner(digits_bundle).predict(xs, [exit_name])[exit_name]


@pytest.mark.skipif(shutil.which("mosquitto") is None, reason="mosquitto is not installed")
def test_mcu_gateway_edge_pipeline_equals_local_run(broker, digits_bundle, digits_split, start_mcu) -> None:
    from tflite_edge.edge.worker import EdgeWorker
    from tflite_edge.telemetry.schema import TelemetryMessage, decode

    xs = digits_split[2][:12]
    final = digits_bundle.manifest.exits[-1].name
    sim = start_mcu()
    with Subscriber(broker.url, "tflite-edge/v1/dev/mcu-1/telemetry") as sub:
        with EdgeWorker(broker.url, [digits_bundle]), Gateway(
            digits_bundle, sim.path, device_id="mcu-1", broker_url=broker.url, telemetry_period_s=0.2,
        ) as gateway:
            results = list(gateway.run_many(xs, exit=final, partition=1, deadline_ms=5000))
            [(_, telemetry_line)] = sub.wait_for(1)[:1]
    assert all(r.ran_on == "split" and not r.fell_back for r in results), [r.error for r in results]
    got = np.stack([r.probabilities for r in results])
    expected = _local(digits_bundle, xs, final)
    # Segment 0 runs TFLM's reference kernels, the rest LiteRT's default XNNPACK kernels, which
    # round int8 differently by a few steps (docs/converter.md): runtimes agree on the class.
    np.testing.assert_array_equal(got.argmax(axis=1), expected.argmax(axis=1))
    message = decode(telemetry_line)
    assert isinstance(message, TelemetryMessage)
    assert message.power.source == "mcu:sim-cortex-m4" and not message.power.estimated
    assert message.power.power_mw is not None and message.power.power_mw > 0


def test_cli_simulate_and_bridge(digits_bundle, digits_split, tmp_path: Path, capsys) -> None:
    xs = digits_split[2][:5]
    np.save(tmp_path / "x.npy", xs)
    with subprocess.Popen(
        [sys.executable, "-m", "tflite_edge", "firmware", "simulate", "--pty", "--arena-bytes", "32768"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    ) as sim:
        try:
            assert sim.stdout is not None and sim.stderr is not None
            line = sim.stdout.readline()
            assert line.startswith("pty: "), line + (sim.stderr.read() if sim.poll() is not None else "")
            path = line.split(": ", 1)[1].strip()
            code = main(["firmware", "bridge", "--port", path, "--bundle", str(digits_bundle.path),
                         "--input", str(tmp_path / "x.npy"), "--json"])
            assert code == 0
            rows = [json.loads(row) for row in capsys.readouterr().out.splitlines()]
            final = digits_bundle.manifest.exits[-1].name
            assert [r["top1_class"] for r in rows] == list(_local(digits_bundle, xs, final).argmax(axis=1))
            assert all(r["ran_on"] == "device" and r["mcu_latency_us"] > 0 for r in rows)
        finally:
            sim.send_signal(signal.SIGTERM)
            assert sim.wait(timeout=10) == 0


DEVICE_PYTHON = Path(__file__).resolve().parents[2] / ".venv-device" / "bin" / "python"


@pytest.mark.skipif(not DEVICE_PYTHON.exists(), reason="the device environment .venv-device is not set up")
def test_gateway_runs_in_the_device_environment(digits_bundle, digits_split, start_mcu, tmp_path: Path) -> None:
    # The gateway on a Raspberry Pi: tflite-runtime, numpy<2, pyserial, no TensorFlow.
    xs = digits_split[2][:5]
    np.save(tmp_path / "x.npy", xs)
    sim = start_mcu()
    done = subprocess.run(
        [str(DEVICE_PYTHON), "-m", "tflite_edge", "firmware", "bridge", "--port", sim.path, "--bundle",
         str(digits_bundle.path), "--input", str(tmp_path / "x.npy"), "--json"],
        capture_output=True, text=True, timeout=120, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert done.returncode == 0, done.stderr
    rows = [json.loads(row) for row in done.stdout.splitlines()]
    final = digits_bundle.manifest.exits[-1].name
    assert [r["top1_class"] for r in rows] == list(_local(digits_bundle, xs, final).argmax(axis=1))
    assert sim.mcu.invokes >= len(xs)


def test_cli_simulate_on_tcp(digits_bundle) -> None:
    from tflite_edge.firmware_bridge.client import BridgeClient

    with subprocess.Popen(
        [sys.executable, "-m", "tflite_edge", "firmware", "simulate", "--tcp", "0", "--baud", "921600"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    ) as sim:
        try:
            assert sim.stdout is not None
            line = sim.stdout.readline()
            assert line.startswith("listening: socket://127.0.0.1:"), line
            url = line.split(": ", 1)[1].strip()
            for _ in range(2):  # the simulator takes the next connection after the host leaves
                with BridgeClient(url, timeout_s=2.0) as client:
                    info = client.load(digits_bundle.read_segment(0))
                    result = client.invoke([np.zeros(info.inputs[0].shape, np.int8)])
                    assert result.latency_us > 0 and len(result.outputs) == len(info.outputs)
        finally:
            sim.send_signal(signal.SIGTERM)
            assert sim.wait(timeout=10) == 0


@pytest.mark.skipif(shutil.which("mosquitto") is None, reason="mosquitto is not installed")
def test_cli_bridge_publishes_mcu_telemetry(broker, digits_bundle, start_mcu) -> None:
    from tflite_edge.telemetry.schema import TelemetryMessage, decode

    sim = start_mcu()
    with Subscriber(broker.url, "tflite-edge/v1/dev/mcu-2/telemetry") as sub:
        code = main(["firmware", "bridge", "--port", sim.path, "--bundle", str(digits_bundle.path), "--broker",
                     broker.url, "--id", "mcu-2", "--telemetry-period-s", "0.2", "--duration-s", "1.0"])
        payloads = [payload for _, payload in sub.wait_for(2)]
    assert code == 0
    messages = [decode(payload) for payload in payloads]
    assert len(messages) >= 2 and all(isinstance(m, TelemetryMessage) for m in messages)
    assert all(m.power.source == "mcu:sim-cortex-m4" and m.power.power_mw > 0 for m in messages)  # type: ignore[union-attr]


def test_gateway_reloads_the_segment_after_an_mcu_reset(digits_bundle, digits_split, start_mcu) -> None:
    sim = start_mcu()
    x = digits_split[2][0]
    with Gateway(digits_bundle, sim.path, device_id="mcu-3") as gateway:
        before = gateway.run(x)
        sim.mcu.__init__()  # power cycle: the MCU forgets its model and the host's limits
        after = gateway.run(x)
    assert (after.top1_class, after.top1_score) == (before.top1_class, before.top1_score)
    assert sim.mcu.slots[0].model is not None and sim.mcu.invokes >= 1


def test_cli_bridge_early_exit_thresholds(digits_bundle, digits_split, start_mcu, tmp_path: Path, capsys) -> None:
    xs = digits_split[2][:5]
    np.save(tmp_path / "x.npy", xs)
    sim = start_mcu()
    common = ["firmware", "bridge", "--port", sim.path, "--bundle", str(digits_bundle.path),
              "--input", str(tmp_path / "x.npy"), "--json"]
    # A threshold every exit_1 answer clears: each request stops at the exit computed on the MCU.
    assert main([*common, "--threshold", "exit_1=0.05"]) == 0
    rows = [json.loads(row) for row in capsys.readouterr().out.splitlines()]
    assert len(rows) == 5 and all(r["exit"] == "exit_1" and r["early_exit"] for r in rows)
    # A top-1 threshold above 1 could never stop anything: refused in one line, before any request.
    assert main([*common, "--threshold", "exit_1=1.5"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "never stop a request" in captured.err


def test_cli_bridge_telemetry_is_on_by_default_and_off_with_no_telemetry(broker, digits_bundle, start_mcu) -> None:  # type: ignore[no-untyped-def]
    from tflite_edge.telemetry.homeassistant import SENSORS

    sim = start_mcu()
    with Subscriber(broker.url, "homeassistant/#") as sub:
        # No --telemetry flag, --homeassistant: the gateway announces its sensors.
        code = main(["firmware", "bridge", "--port", sim.path, "--bundle", str(digits_bundle.path), "--broker",
                     broker.url, "--id", "mcu-ha", "--homeassistant", "--duration-s", "0.5"])
        seen = sub.wait_for(len(SENSORS))
    assert code == 0
    assert {t for t, _ in seen} == {f"homeassistant/sensor/mcu-ha/{s.object_id}/config" for s in SENSORS}
    assert all(json.loads(p)["state_topic"] == "tflite-edge/v1/dev/mcu-ha/telemetry" for _, p in seen)
    with Gateway(digits_bundle, sim.path, device_id="mcu-off", broker_url=broker.url, telemetry=False) as gateway:
        assert gateway.publisher is None
    assert main(["firmware", "bridge", "--port", sim.path, "--bundle", str(digits_bundle.path), "--id", "x",
                 "--homeassistant"]) == 2  # needs --broker
