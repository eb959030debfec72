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
    out = capsys.readouterr().out
    assert out.count("fell back: no broker configured") == 4


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--id", "a/b"], "device id 'a/b' must not contain '/'"),
        (["--broker", "http://x"], "scheme 'http' is not supported"),
        (["--partition", "9"], "partition 9 is outside 0..3"),
        (["--exit", "nope"], "unknown exit 'nope'"),
        (["--threshold", "exit_1"], "expected EXIT=VALUE"),
        (["--delegate", "edgetpu"], "libedgetpu"),
    ],
)
def test_device_errors_are_clear(
    digits_bundle: Bundle, inputs: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    assert main(["device", "--bundle", str(digits_bundle.path), "--input", str(inputs), *extra]) == 1
    assert message in capsys.readouterr().err


def test_edge_refuses_a_missing_bundle(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with MosquittoBroker() as broker:
        assert main(["edge", "--broker", broker.url, "--bundle", str(tmp_path / "missing")]) == 1
    assert "is not a bundle directory" in capsys.readouterr().err
