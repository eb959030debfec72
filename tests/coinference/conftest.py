"""Fixtures of the co-inference tests: a tiny manifest, a private broker, edge processes."""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from tflite_edge.bundle.manifest import CutSpec, ExitSpec, Manifest, SegmentSpec, TensorSpec


def _spec(name: str, shape: tuple[int, ...], scale: float | None = 0.5, zp: int | None = -3) -> TensorSpec:
    return TensorSpec(name, shape, "int8", scale, zp)


@pytest.fixture
def tiny_manifest() -> Manifest:
    """Two segments, exits ``early`` (segment 0) and ``logits`` (segment 1), cut tensor ``cut``."""
    image = _spec("image", (1, 4, 4, 1), 0.0039, -128)
    cut = _spec("cut", (1, 2, 3))
    early = _spec("early", (1, 10), 0.00390625, -128)
    out = _spec("logits", (1, 10), 0.00390625, -128)
    return Manifest(
        model_name="tiny",
        quantization="int8",
        input=TensorSpec("image", (1, 4, 4, 1), "float32"),
        segments=(
            SegmentSpec(0, "segment_0.tflite", "0" * 64, 10, (image,), (early, cut)),
            SegmentSpec(1, "segment_1.tflite", "1" * 64, 10, (cut,), (out,)),
        ),
        exits=(ExitSpec("early", 0, 10), ExitSpec("logits", 1, 10)),
        cuts=(CutSpec("cut", 0, 6),),
        converter_version="0",
        tensorflow_version="0",
    )


@pytest.fixture(scope="session")
def other_bundle(tmp_path_factory: pytest.TempPathFactory):
    """A second, different bundle (untrained digits model, one cut) for unknown-bundle tests."""
    from tflite_edge import zoo
    from tflite_edge.converters import convert

    x = zoo.digits_data()[0][:32]
    return convert(zoo.build_digits_model(seed=1), tmp_path_factory.mktemp("other") / "other", cuts=["block_1_out"],
                   calibration=x, verify_samples=4)


def start_edge_process(
    broker_url: str, bundle_path: Path, *, python: str = sys.executable, extra: Sequence[str] = (),
    timeout_s: float = 60.0,
) -> subprocess.Popen[str]:
    """Start `tflite-edge edge` in a child process and return once it reports ready."""
    process = subprocess.Popen(
        [python, "-m", "tflite_edge", "edge", "--broker", broker_url, "--bundle", str(bundle_path), *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert process.stderr is not None
    lines: queue.Queue[str] = queue.Queue()
    stderr = process.stderr

    def pump() -> None:
        # Drains the pipe for the process's whole life (a full pipe would block it), then closes it.
        with stderr:
            for line in stderr:
                lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + timeout_s
    seen = []
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.2)
        except queue.Empty:
            if process.poll() is not None:
                break
            continue
        seen.append(line)
        if line.startswith("edge: ready"):
            return process
    process.kill()
    raise AssertionError(f"edge process did not become ready; its stderr:\n{''.join(seen)}")


def stop_process(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
    deadline = time.monotonic() + 5
    while process.stderr is not None and not process.stderr.closed and time.monotonic() < deadline:
        time.sleep(0.01)  # the pump thread closes the pipe at end of file


@pytest.fixture
def edge_processes() -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """A factory ``start(broker_url, bundle_path, python=..., extra=...)`` of edge processes, all
    stopped after the test."""
    started: list[subprocess.Popen[str]] = []

    def start(broker_url: str, bundle_path: Path, **kwargs: object) -> subprocess.Popen[str]:
        process = start_edge_process(broker_url, bundle_path, **kwargs)  # type: ignore[arg-type]
        started.append(process)
        return process

    yield start
    for process in started:
        stop_process(process)


def announce_silent_edge(broker_url: str, bundle_ids: Sequence[str], worker_id: str = "silent-edge") -> None:
    """Publish a retained edge presence for ``bundle_ids`` with no worker behind it: devices
    then offload and wait for replies that never come (a hung or overloaded edge)."""
    import paho.mqtt.client as paho

    from tflite_edge.transport.mqtt import connect_and_start, make_client
    from tflite_edge.transport.presence import presence_payload, presence_topic
    from tflite_edge.transport.protocol import DEFAULT_PREFIX

    client = make_client(broker_url, f"announce-{worker_id}")
    connect_and_start(client, 10.0)
    try:
        info = client.publish(presence_topic(DEFAULT_PREFIX, worker_id), presence_payload(list(bundle_ids), "g"),
                              qos=1, retain=True)
        info.wait_for_publish(10.0)
        assert info.rc == paho.MQTT_ERR_SUCCESS
    finally:
        client.disconnect()
        client.loop_stop()


@pytest.fixture
def silent_edge() -> Callable[..., None]:
    """``announce_silent_edge`` as a fixture: ``silent_edge(broker_url, [bundle_id])``."""
    return announce_silent_edge
