"""Option checks of `tflite-edge device --policy` and `tflite-edge agent` (no broker needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tflite_edge.cli import main


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    path = tmp_path / "x.npy"
    np.save(path, np.zeros((2, 8, 8, 1), np.float32))
    return path


@pytest.mark.parametrize("extra, message", [
    (["--policy", "p"], "need --broker"),
    (["--telemetry"], "need --broker"),
    (["--broker", "mqtt://127.0.0.1:1", "--policy", "p", "--deadline-ms", "50", "--no-telemetry"],
     "drop --no-telemetry"),
    (["--homeassistant"], "give --broker"),
    (["--broker", "mqtt://127.0.0.1:1", "--homeassistant", "bad/+"], "--homeassistant 'bad/+'"),
    (["--broker", "mqtt://127.0.0.1:1", "--policy", "p", "--exit", "final"], "drop --exit"),
    (["--broker", "mqtt://127.0.0.1:1", "--policy", "p"], "needs --deadline-ms"),
])
def test_device_policy_options(digits_bundle, inputs: Path, capsys, extra: list[str], message: str) -> None:  # type: ignore[no-untyped-def]
    code = main(["device", "--bundle", str(digits_bundle.path), "--input", str(inputs), *extra])
    assert code == 2 and message in capsys.readouterr().err


def test_policy_topic_needs_a_public_key(digits_bundle, inputs: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    from tflite_edge.transport.broker import MosquittoBroker

    with MosquittoBroker() as broker:
        code = main(["device", "--bundle", str(digits_bundle.path), "--input", str(inputs), "--broker", broker.url,
                     "--deadline-ms", "50", "--policy-topic"])
    assert code == 2 and "needs the signer's public key" in capsys.readouterr().err


def test_agent_reports_a_missing_key(digits_bundle, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    code = main(["agent", "--broker", "mqtt://127.0.0.1:1", "--bundle", str(digits_bundle.path), "--policy-dir",
                 str(tmp_path), "--key", str(tmp_path / "absent.key")])
    assert code == 2 and "tflite-edge keys generate" in capsys.readouterr().err


@pytest.mark.slow  # trains the policy fixture
def test_device_with_a_policy_starts_without_broker(digits_bundle, trained_policy: Path, inputs: Path,  # type: ignore[no-untyped-def]
                                                   capsys) -> None:
    import json
    import socket

    with socket.socket() as s:  # a loopback port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = main(["device", "--bundle", str(digits_bundle.path), "--input", str(inputs), "--broker",
                 f"mqtt://127.0.0.1:{port}", "--start-without-broker", "--deadline-ms", "500", "--policy",
                 str(trained_policy), "--connect-timeout-s", "1", "--json"])
    assert code == 0
    results = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(results) == 2 and all(r["ran_on"] == "device" for r in results)
