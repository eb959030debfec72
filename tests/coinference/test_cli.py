"""`tflite-edge device` and `tflite-edge edge` as a user runs them (in process, real interpreters)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tflite_edge.bundle import Bundle
from tflite_edge.cli import main
from tflite_edge.runtime import BundleRunner
from tflite_edge.transport.broker import MosquittoBroker


@pytest.fixture
def inputs(digits_split, tmp_path: Path) -> Path:
    path = tmp_path / "x.npy"
    np.save(path, digits_split[2][:4].astype(np.float32))
    return path


def test_device_local_json_lines(digits_bundle: Bundle, inputs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["device", "--bundle", str(digits_bundle.path), "--input", str(inputs), "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    expected = BundleRunner(digits_bundle).predict(np.load(inputs))["final"]
    assert [r["top1_class"] for r in lines] == [int(np.argmax(p)) for p in expected]
    assert all(r["ran_on"] == "device" and not r["fell_back"] for r in lines)
    assert {"request_id", "device_ms", "transfer_ms", "edge_ms", "total_ms"} <= lines[0].keys()


def test_device_without_broker_falls_back_and_says_why(
    digits_bundle: Bundle, inputs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["device", "--bundle", str(digits_bundle.path), "--input", str(inputs), "--partition", "1"]) == 0
    captured = capsys.readouterr()
    assert captured.out.count("on device (fell back)") == 4
    assert captured.err.count("without --broker every request runs on this device") == 1


def test_broker_without_partition_says_once_that_everything_runs_locally(
    broker: MosquittoBroker, digits_bundle: Bundle, inputs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["device", "--broker", broker.url, "--bundle", str(digits_bundle.path), "--input", str(inputs)]) == 0
    captured = capsys.readouterr()
    assert captured.err.count("without --partition every request runs on this device") == 1
    assert "--partition K (0..2)" in captured.err and captured.out.count("on device") == 4


def test_when_nothing_is_offloaded_it_is_said_once_and_the_exit_status_says_so(
    broker: MosquittoBroker, digits_bundle: Bundle, other_bundle: Bundle, inputs: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from tflite_edge.edge import EdgeWorker

    with EdgeWorker(broker.url, [other_bundle]):  # an edge, but for another bundle
        code = main(["device", "--broker", broker.url, "--bundle", str(digits_bundle.path), "--input", str(inputs),
                     "--partition", "1", "--deadline-ms", "3000"])
    captured = capsys.readouterr()
    assert code == 1
    assert captured.out.count("on device (fell back)") == 4 and "no edge worker" not in captured.out
    summary = [line for line in captured.err.splitlines() if "requests were answered on the device" in line]
    assert len(summary) == 1 and summary[0].startswith("4 of 4 requests")
    assert f"no edge worker serving bundle {digits_bundle.bundle_id} is online (4)" in summary[0]
    assert captured.err.count("error: no request was offloaded") == 1
    assert "Traceback" not in captured.err


def test_inputs_far_outside_the_calibrated_range_are_reported_once(
    digits_bundle: Bundle, digits_split, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pixels = tmp_path / "pixels.npy"
    np.save(pixels, (digits_split[2][:5] * 255).astype(np.uint8))  # 0..255, calibrated on 0..1
    assert main(["device", "--bundle", str(digits_bundle.path), "--input", str(pixels)]) == 0
    warned = [r.getMessage() for r in caplog.records if "calibrated on about" in r.getMessage()]
    assert len(warned) == 1 and "inputs range over 0..255" in warned[0] and "0..1:" in warned[0]
    caplog.clear()
    scaled = tmp_path / "scaled.npy"
    np.save(scaled, digits_split[2][:5].astype(np.float32))  # as calibrated: no warning
    assert main(["device", "--bundle", str(digits_bundle.path), "--input", str(scaled)]) == 0
    assert not [r for r in caplog.records if "calibrated on about" in r.getMessage()]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--id", "a/b"], "device id 'a/b' must not contain '/'"),
        (["--broker", "http://x"], "scheme 'http' is not supported"),
        (["--partition", "9"], "partition 9 is outside 0..3"),
        (["--exit", "nope"], "unknown exit 'nope'"),
        (["--threshold", "exit_1"], "expected EXIT=VALUE"),
        (["--threshold", "exit_1=1.5"], "top-1 probability is at most 1, so it would never stop a request"),
        (["--delegate", "edgetpu"], "libedgetpu"),
    ],
)
def test_device_errors_are_clear(
    digits_bundle: Bundle, inputs: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    assert main(["device", "--bundle", str(digits_bundle.path), "--input", str(inputs), *extra]) == 2
    assert message in capsys.readouterr().err


def test_edge_refuses_a_missing_bundle(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with MosquittoBroker() as broker:
        assert main(["edge", "--broker", broker.url, "--bundle", str(tmp_path / "missing")]) == 2
    assert "is not a bundle directory" in capsys.readouterr().err
