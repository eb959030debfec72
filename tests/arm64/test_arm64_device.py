"""The device side on a Debian arm64 userland (a Raspberry Pi OS stand-in) under QEMU, with the
real aarch64 wheels, against the host: no TensorFlow, the same numbers as x86-64,
co-inference with a host edge worker over a real Mosquitto, the MCU gateway over a pty."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tflite_edge.bundle import Bundle
from tflite_edge.runtime import BundleRunner
from tflite_edge.transport.broker import MosquittoBroker

from ..coinference.conftest import start_edge_process, stop_process
from ..conftest import DEVICE_PYTHON
from .conftest import DeviceRun

pytestmark = [pytest.mark.slow, pytest.mark.arm64]

# Runs in the arm64 userland: every partition through `tflite-edge device`, then what ran it.
DEVICE_SCRIPT = r"""
import contextlib, io, json, platform, sys
from tflite_edge.cli import main
broker, bundle, inputs, deadline_ms = sys.argv[1:5]
partitions = [int(k) for k in sys.argv[5].split(",")]
lines, codes = [], []
for k in partitions:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        codes.append(main(["device", "--broker", broker, "--bundle", bundle, "--id", "arm64-device", "--input",
                           inputs, "--partition", str(k), "--deadline-ms", deadline_ms, "--json"]))
    lines += out.getvalue().splitlines()
from tflite_edge.runtime import available_backends
print(json.dumps({"results": [json.loads(l) for l in lines], "codes": codes, "machine": platform.machine(),
                  "tensorflow": "tensorflow" in sys.modules, "backends": available_backends()}))
"""


def _last_json(done: subprocess.CompletedProcess[str]) -> dict:
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_device_environment_is_aarch64_without_tensorflow(on_arm64: DeviceRun) -> None:
    done = on_arm64(["python", "-c",
                     "import json, platform, sys, numpy, serial, cobs, paho.mqtt, cryptography; "
                     "import tflite_edge, tflite_edge.runtime, tflite_edge.device, tflite_edge.firmware_bridge; "
                     "from tflite_edge.runtime import available_backends; "
                     "print(json.dumps({'machine': platform.machine(), 'numpy': numpy.__version__, "
                     "'tensorflow': 'tensorflow' in sys.modules, 'backends': available_backends()}))"])
    info = _last_json(done)
    assert info["machine"] == "aarch64"
    assert info["tensorflow"] is False and info["numpy"].startswith("1.")
    assert info["backends"] == ["tflite-runtime"]


def test_run_equals_x86_64_tflite_runtime(on_arm64: DeviceRun, digits_bundle: Bundle, digits_split,
                                          tmp_path: Path) -> None:
    x = digits_split[2]  # all 540 validation images
    np.save(tmp_path / "x.npy", x)
    done = on_arm64(["python", "-m", "tflite_edge", "run", str(digits_bundle.path), "--input", str(tmp_path / "x.npy"),
                     "-o", str(tmp_path / "arm64.npz")], binds=[tmp_path, digits_bundle.path])
    assert done.returncode == 0, done.stderr[-3000:]
    assert "backend tflite-runtime" in done.stdout
    # The reference kernels give the same int8 results on every runtime and CPU: LiteRT on this
    # host with --kernels builtin, and tflite-runtime in .venv-device where it exists.
    references = {"x86-64 LiteRT builtin kernels": BundleRunner(digits_bundle, kernels="builtin").predict(x)}
    if DEVICE_PYTHON.exists():
        x86 = subprocess.run([str(DEVICE_PYTHON), "-m", "tflite_edge", "run", str(digits_bundle.path), "--input",
                              str(tmp_path / "x.npy"), "-o", str(tmp_path / "x86.npz")],
                             capture_output=True, text=True, timeout=300)
        assert x86.returncode == 0, x86.stderr
        with np.load(tmp_path / "x86.npz") as data:
            references["x86-64 tflite-runtime"] = {name: data[name] for name in data.files}
    with np.load(tmp_path / "arm64.npz") as on_device:
        assert set(on_device.files) == set(digits_bundle.manifest.exit_names)
        for label, reference in references.items():
            for name, value in reference.items():
                np.testing.assert_array_equal(on_device[name], value, err_msg=f"{name} vs {label}")


def test_co_inference_with_a_host_edge_at_every_partition_then_fallback(
    on_arm64: DeviceRun, digits_bundle: Bundle, digits_split, tmp_path: Path,
) -> None:
    x = digits_split[2][:4]
    inputs = tmp_path / "x.npy"
    np.save(inputs, x)
    final = digits_bundle.manifest.exits[-1].name
    local = BundleRunner(digits_bundle, kernels="builtin").predict(x)[final]
    segments = digits_bundle.manifest.num_segments
    with MosquittoBroker() as broker:
        edge = start_edge_process(broker.url, digits_bundle.path)
        try:
            report = _last_json(on_arm64(
                ["python", "-c", DEVICE_SCRIPT, broker.url, str(digits_bundle.path), str(inputs), "20000",
                 ",".join(str(k) for k in range(segments + 1))],
                binds=[tmp_path, digits_bundle.path],
            ))
            assert report["machine"] == "aarch64" and report["tensorflow"] is False
            assert report["backends"] == ["tflite-runtime"]
            assert report["codes"] == [0] * (segments + 1)
            results = report["results"]
            assert len(results) == (segments + 1) * len(x)
            for n, r in enumerate(results):
                k, i = divmod(n, len(x))
                assert r["partition"] == k and not r["fell_back"], r
                assert r["ran_on"] == ("edge" if k == 0 else "device" if k == segments else "split")
                assert r["top1_class"] == int(np.argmax(local[i])), r
        finally:
            edge.kill()
            edge.wait(10)
            stop_process(edge)
        # The edge is gone: the device answers by itself once the deadline leaves no more time.
        report = _last_json(on_arm64(
            ["python", "-c", DEVICE_SCRIPT, broker.url, str(digits_bundle.path), str(inputs), "4000", "1"],
            binds=[tmp_path, digits_bundle.path],
        ))
    results = report["results"]
    # Every answer came from the device; the command says so with exit code 1.
    assert len(results) == len(x) and report["codes"] == [1]
    for i, r in enumerate(results):
        assert r["fell_back"] and r["ran_on"] == "device", r
        assert r["top1_class"] == int(np.argmax(local[i])), r


def test_firmware_gateway_talks_to_the_simulated_mcu_over_a_pty(
    on_arm64: DeviceRun, digits_bundle: Bundle, digits_split, tmp_path: Path,
) -> None:
    pytest.importorskip("tflite_micro", reason="the simulated MCU needs the tflite-micro package")
    import threading

    from tflite_edge.firmware_bridge.simulator import FdLink, SimulatedMcu, open_pty, serve

    xs = digits_split[2][:3]
    np.save(tmp_path / "x.npy", xs)
    master, slave, path = open_pty()
    mcu = SimulatedMcu()
    stop = threading.Event()
    thread = threading.Thread(target=serve, args=(mcu, FdLink(master), stop), daemon=True)
    thread.start()
    try:
        done = on_arm64(["python", "-m", "tflite_edge", "firmware", "bridge", "--port", path, "--bundle",
                         str(digits_bundle.path), "--input", str(tmp_path / "x.npy"), "--timeout-s", "20", "--json"],
                        binds=[tmp_path, digits_bundle.path])
    finally:
        stop.set()
        thread.join(timeout=10)
        os.close(master)
        os.close(slave)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [json.loads(row) for row in done.stdout.splitlines()]
    final = digits_bundle.manifest.exits[-1].name
    expected = BundleRunner(digits_bundle).predict(xs)[final].argmax(axis=1)
    assert [r["top1_class"] for r in rows] == list(expected)
    assert all(r["ran_on"] == "device" and r["mcu_latency_us"] > 0 for r in rows)
    assert mcu.invokes > 0
