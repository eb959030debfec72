"""The live loop over a real Mosquitto: a device deciding with a learned policy from live
telemetry, the agent publishing signed retained updates, and devices verifying them."""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tflite_edge.agents.policy_message import PolicyPackage, encode_package, policy_topic, sign_policy_message
from tflite_edge.agents.tflite_policy import TFLitePolicy
from tflite_edge.device import DeviceRuntime
from tflite_edge.device.policy_loop import policy_session
from tflite_edge.security.signing import load_private_key, load_public_key, verify_policy
from tflite_edge.telemetry.schema import ExperienceBatch
from tflite_edge.telemetry.subscriber import Received, TelemetrySubscriber
from tflite_edge.transport.mqtt import connect_and_start, make_client

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
DEVICE_PYTHON = REPO / ".venv-device" / "bin" / "python"
DEADLINE_MS = 100.0

# Runs `tflite-edge device --policy` inside .venv-device and reports whether TensorFlow was imported.
DEVICE_SCRIPT = r"""
import sys
from tflite_edge.cli import main
code = main(sys.argv[1:])
print("TENSORFLOW", "tensorflow" in sys.modules, "TF_AGENTS", "tf_agents" in sys.modules, file=sys.stderr)
sys.exit(code)
"""


class Experience:
    """Every experience record published on the broker."""

    def __init__(self, url: str) -> None:
        self.records: list[dict] = []
        self._lock = threading.Lock()
        self.subscriber = TelemetrySubscriber(url, self._on, experience=True)

    def _on(self, received: Received) -> None:
        if isinstance(received.message, ExperienceBatch):
            with self._lock:
                self.records.extend(received.doc["records"])

    def __enter__(self) -> Experience:
        self.subscriber.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.subscriber.stop()


def test_device_command_decides_from_live_context_without_tensorflow(  # type: ignore[no-untyped-def]
    broker, edge, digits_bundle, digits_split, trained_policy: Path, keys: dict[str, Path], publisher, tmp_path: Path
) -> None:
    if not DEVICE_PYTHON.exists():
        pytest.skip("no .venv-device")
    _, _, x_val, _ = digits_split
    inputs = tmp_path / "x.npy"
    np.save(inputs, x_val[:60].astype(np.float32))
    # A signed update waits on the retained topic: the device verifies it with cryptography alone.
    publisher(policy_topic("tflite-edge/v1", digits_bundle.manifest.bundle_id),
              sign_policy_message(PolicyPackage.from_directory(trained_policy, 1), load_private_key(keys["private"])))
    with Experience(broker.url) as experience:
        done = subprocess.run(
            [str(DEVICE_PYTHON), "-c", DEVICE_SCRIPT, "device", "--broker", broker.url, "--bundle",
             str(digits_bundle.path), "--id", "venv-dev", "--input", str(inputs), "--deadline-ms", str(DEADLINE_MS),
             "--policy", str(trained_policy), "--policy-topic", "--public-key", str(keys["public"]),
             "--telemetry-period-s", "0.5", "--interval-ms", "10", "--json"],
            capture_output=True, text=True, timeout=120, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        )
        assert done.returncode == 0, done.stderr[-3000:]
        assert "TENSORFLOW False TF_AGENTS False" in done.stderr
        deadline = time.monotonic() + 10
        while len(experience.records) < 60 and time.monotonic() < deadline:
            time.sleep(0.05)
    results = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(results) == 60
    records = experience.records
    assert len(records) == 60
    policy = TFLitePolicy(trained_policy)
    # After the first offload the context holds the measured uplink and RTT, not the priors.
    measured = [r for r in records if r["context"]["rtt_ms"] != 50.0]
    assert len(measured) >= 30
    agree = 0
    for record, result in zip(records, results, strict=True):
        action = record["action"]
        assert action["label"] == policy.labels[action["index"]] and action["policy_version"] in (0, 1)
        assert record["request_id"] == result["request_id"] and record["deadline_ms"] == DEADLINE_MS
        assert result["partition"] == action["partition"]
        context = {k: record["context"][k] for k in ("throughput_mbps", "throughput_std_mbps", "rtt_ms",
                                                      "deadline_ms", "power_budget_mw", "device_speed", "edge_load")}
        # The same policy, fed the recorded context, makes the same choice (records are rounded
        # to 4 decimals, so a context right on a decision boundary may differ).
        chosen = policy.actions.index(policy.act(**context))
        agree += chosen == action["index"] or bool(action["probe"])
    assert agree >= 57
    assert records[-1]["action"]["policy_version"] == 1  # swapped in between requests


def _start_agent(url: str, bundle: Path, policy_dir: Path, key: Path, *extra: str) -> tuple[subprocess.Popen[str],
                                                                                               queue.Queue[str]]:
    process = subprocess.Popen(
        [sys.executable, "-m", "tflite_edge", "agent", "--broker", url, "--bundle", str(bundle), "--policy-dir",
         str(policy_dir), "--key", str(key), *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    lines: queue.Queue[str] = queue.Queue()
    stderr = process.stderr
    assert stderr is not None

    def pump() -> None:
        with stderr:
            for line in stderr:
                lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    return process, lines


def _wait_line(lines: queue.Queue[str], text: str, timeout_s: float, seen: list[str]) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.2)
        except queue.Empty:
            continue
        seen.append(line)
        if text in line:
            return
    raise AssertionError(f"no {text!r} from the agent within {timeout_s} s; it said:\n{''.join(seen)[-4000:]}")


@pytest.fixture
def agent_policy(trained_policy: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "policy"
    shutil.copytree(trained_policy, copy)
    return copy


def _stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def _run_until(runner, xs: np.ndarray, condition, timeout_s: float) -> int:  # type: ignore[no-untyped-def]
    deadline, count = time.monotonic() + timeout_s, 0
    while time.monotonic() < deadline:
        runner.run(xs[count % len(xs)])
        count += 1
        if condition():
            return count
        time.sleep(0.01)
    raise AssertionError(f"condition not met after {count} requests in {timeout_s} s")


def test_agent_publishes_signed_updates_that_a_running_device_swaps_in(  # type: ignore[no-untyped-def]
    broker, edge, digits_bundle, digits_split, agent_policy: Path, keys: dict[str, Path]
) -> None:
    _, _, x_val, _ = digits_split
    process, lines = _start_agent(broker.url, digits_bundle.path, agent_policy, keys["private"],
                                  "--update-every-s", "1", "--min-records", "40", "--steps", "20",
                                  "--max-updates", "1")
    seen: list[str] = []
    try:
        _wait_line(lines, "agent: ready", 120, seen)
        with DeviceRuntime(digits_bundle, broker_url=broker.url, device_id="live-1") as runtime, policy_session(
            runtime, broker_url=broker.url, deadline_ms=DEADLINE_MS, policy_dir=str(agent_policy), policy_topic="",
            public_key_paths=[str(keys["public"])], telemetry_period_s=0.5,
        ) as runner:
            assert runner.slot.version == 0  # the local policy until the first request after an update
            _run_until(runner, x_val, lambda: runner.slot.version == 1, 20)  # the retained initial version
            _run_until(runner, x_val, lambda: runner.slot.version == 2, 120)  # learned from this device's records
            assert runner.slot.swaps == 2 and runner.slot.rejected == 0
        _wait_line(lines, "stopped after 1 update(s); last version 2", 30, seen)
    finally:
        _stop(process)
    exported = agent_policy / "online" / "v2"
    verify_policy(exported, [load_public_key(keys["public"])])
    metadata = json.loads((exported / "policy.json").read_text())
    assert metadata["online"]["version"] == 2 and metadata["online"]["records_total"] >= 40
    assert json.loads((agent_policy / "online" / "state.json").read_text())["version"] == 2
    # Retained: a device that starts now, without a local policy, gets version 2 at once.
    with DeviceRuntime(digits_bundle, broker_url=broker.url, device_id="late") as runtime, policy_session(
        runtime, broker_url=broker.url, deadline_ms=DEADLINE_MS, policy_topic="",
        public_key_paths=[str(keys["public"])], telemetry_period_s=0.5,
    ) as runner:
        result = runner.run(x_val[0])
        assert runner.slot.version == 2 and result.exit in digits_bundle.manifest.exit_names


@pytest.fixture
def publisher(broker) -> Iterator:  # type: ignore[no-untyped-def]
    client = make_client(broker.url, "test-policy-publisher")
    connect_and_start(client, 10)

    def publish(topic: str, payload: bytes) -> None:
        info = client.publish(topic, payload, qos=1, retain=True)
        info.wait_for_publish(timeout=5)

    yield publish
    client.disconnect()
    client.loop_stop()


def test_tampered_or_wrongly_signed_policies_are_rejected_and_reported(  # type: ignore[no-untyped-def]
    broker, edge, digits_bundle, digits_split, trained_policy: Path, keys: dict[str, Path], publisher, caplog
) -> None:
    _, _, x_val, _ = digits_split
    topic = policy_topic("tflite-edge/v1", digits_bundle.manifest.bundle_id)
    signer, stranger = load_private_key(keys["private"]), load_private_key(keys["other_private"])
    package = PolicyPackage.from_directory(trained_policy, 1)
    publisher(topic, sign_policy_message(package, signer))
    with Experience(broker.url) as experience, DeviceRuntime(
        digits_bundle, broker_url=broker.url, device_id="guarded"
    ) as runtime, policy_session(
        runtime, broker_url=broker.url, deadline_ms=DEADLINE_MS, policy_topic="",
        public_key_paths=[str(keys["public"])], telemetry_period_s=0.5,
    ) as runner:
        runner.run(x_val[0])
        assert runner.slot.version == 1
        tampered = bytearray(sign_policy_message(PolicyPackage.from_directory(trained_policy, 2), signer))
        tampered[-50] ^= 0x40
        bad = [
            sign_policy_message(PolicyPackage.from_directory(trained_policy, 3), stranger),  # untrusted key
            bytes(tampered),  # changed after signing
            encode_package(PolicyPackage.from_directory(trained_policy, 4)),  # unsigned
            b"\x00" * 64,  # not even an envelope
        ]
        for payload in bad:
            publisher(topic, payload)
        _run_until(runner, x_val, lambda: runner.slot.rejected == 4, 20)
        for i in range(5):
            runner.run(x_val[i])
        assert runner.slot.version == 1 and runner.slot.swaps == 1  # the verified policy stays
        runtime_policy, _ = runner.slot.current()
        assert isinstance(runtime_policy, TFLitePolicy)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and sum(
            r["context"].get("policy_rejections") or 0 for r in experience.records
        ) < 4:
            time.sleep(0.05)
    assert sum(r["context"].get("policy_rejections") or 0 for r in experience.records) == 4
    text = caplog.text
    assert text.count("rejected, keeping version 1") == 4
    assert "not trusted" in text and "was changed" in text and "not a signed envelope" in text
