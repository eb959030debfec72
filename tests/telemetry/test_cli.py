"""tflite-edge telemetry and tflite-edge plot, run as a user runs them."""

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.waiting import read_until, wait_until
from tflite_edge.telemetry import EstimatedPowerSensor, RequestObservation, TelemetryPublisher, validate
from tflite_edge.telemetry.schema import decode
from tflite_edge.telemetry.subscriber import FleetView, Received, read_recording, render_table


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tflite_edge", *args], capture_output=True, text=True,
                          timeout=timeout)


def start_watcher(*args: str) -> subprocess.Popen:
    """``tflite-edge telemetry ...`` in a subprocess, returned once it is subscribed."""
    watcher = subprocess.Popen([sys.executable, "-m", "tflite_edge", "telemetry", *args],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert watcher.stderr is not None
    line = watcher.stderr.readline()  # printed after the broker confirmed the subscriptions
    assert line.startswith("listening on "), line
    return watcher


def interrupt(watcher: subprocess.Popen, until: Callable[[str], bool]) -> tuple[str, str]:
    """Ctrl-C, as a user stops the live view, once it printed a line for which ``until`` holds
    (the last message it must show); it must exit cleanly."""
    seen = read_until(watcher, until)
    watcher.send_signal(signal.SIGINT)
    out, err = watcher.communicate(timeout=30)
    assert watcher.returncode == 0, err
    return seen + out, err


def went_offline(device_id: str) -> Callable[[str], bool]:
    """A JSON line of the watcher that is ``device_id``'s offline status (published last, on stop)."""
    def check(line: str) -> bool:
        if not line.strip():
            return False
        doc = json.loads(line)
        return doc["topic"].endswith(f"/{device_id}/status") and doc["message"]["state"] == "offline"

    return check


def run_device(publisher: TelemetryPublisher, n: int, *, partition_of=lambda i: 1 + i % 2) -> None:
    for i in range(n):
        offloaded = partition_of(i) < 3
        publisher.observe_result(
            RequestObservation(
                "exit_1" if i % 3 else "final", partition_of(i), 5.0 + i % 7, 2.0,
                transfer_ms=2.0 if offloaded else 0.0, edge_compute_ms=1.0 if offloaded else 0.0,
                rtt_ms=3.0 if offloaded else None, bytes_sent=1000 if offloaded else 0,
                deadline_ms=10.0, deadline_met=5.0 + i % 7 <= 10.0,
            )
        )
        publisher.record_experience(context={"i": i}, action={"exit": "final", "partition": 1}, reward=1.0,
                                    latency_ms=5.0)


def test_telemetry_json_and_record_then_plot(broker, tmp_path):
    recording = tmp_path / "session.jsonl"
    watcher = start_watcher("--broker", broker.url, "--json", "--record", str(recording))
    with TelemetryPublisher("cli-a", broker_url=broker.url, period_s=0.2, power_sensor=EstimatedPowerSensor()) as pub:
        for _ in range(5):
            run_device(pub, 20)
            pub.flush()  # one telemetry window per batch
    out, _ = interrupt(watcher, went_offline("cli-a"))
    lines = [json.loads(line) for line in out.splitlines()]
    kinds = {validate(line["message"]) for line in lines}
    assert kinds == {"tflite-edge/status/1", "tflite-edge/telemetry/1", "tflite-edge/experience/1"}
    assert sum(line["message"]["requests"]["count"] for line in lines if line["topic"].endswith("/telemetry")) == 100
    recorded = list(read_recording(recording))
    assert [r.doc for r in recorded] == [line["message"] for line in lines]

    plots = cli("plot", str(recording), "-o", str(tmp_path / "plots"))
    assert plots.returncode == 0, plots.stderr
    paths = [Path(p) for p in plots.stdout.split()]
    assert [p.name for p in paths] == ["latency.png", "link.png", "power.png", "decisions.png"]
    for path in paths:
        data = path.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000


def test_table_mode_prints_a_table_when_piped(broker):
    watcher = start_watcher("--broker", broker.url, "--device", "cli-b", "--refresh-s", "0.2")
    with TelemetryPublisher("cli-b", broker_url=broker.url, period_s=0.2, power_sensor=EstimatedPowerSensor()) as pub:
        run_device(pub, 30)
    out, _ = interrupt(watcher, lambda line: line.split()[:3] == ["cli-b", "offline", "30"])
    last_table = out.strip().split("\n\n")[-1]
    header, rule, row, *notes = last_table.splitlines()
    assert header.split()[:3] == ["device", "status", "req"]
    assert row.split()[:3] == ["cli-b", "offline", "30"]
    assert notes == ["~ power is a model-based estimate (no sensor on that device)"]


def test_cli_errors_are_clear(tmp_path):
    bad = cli("telemetry", "--broker", "http://x")
    assert bad.returncode == 2 and "error:" in bad.stderr and "mqtt://" in bad.stderr
    junk = tmp_path / "junk.jsonl"
    junk.write_text('{"topic": "x", "received_unix_s": 1, "message": {"schema": "nope"}}\n')
    plotted = cli("plot", str(junk), "-o", str(tmp_path / "p"))
    assert plotted.returncode == 2 and "junk.jsonl:1" in plotted.stderr
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert "no telemetry messages" in cli("plot", str(empty), "-o", str(tmp_path / "p")).stderr


def test_fleet_table_marks_estimates_and_mixes():
    pub = TelemetryPublisher("pi-7", broker_url="mqtt://127.0.0.1:9", power_sensor=EstimatedPowerSensor())
    run_device(pub, 10, partition_of=lambda i: 3 if i < 7 else 1)
    message = pub.build_telemetry()
    fleet = FleetView()
    from tflite_edge.telemetry.schema import encode

    payload = encode(message)
    fleet.update(Received("tflite-edge/v1/dev/pi-7/telemetry", time.time(), decode(payload), json.loads(payload)))
    table = render_table(fleet.snapshot())
    row = table.splitlines()[2]
    assert "3:70% 1:30%" in row and "exit_1:60% final:40%" in row
    assert row.split()[11].startswith("~")  # the power column, marked as an estimate
    assert row.split()[:3] == ["pi-7", "online", "10"]


def test_live_table_redraws_in_place_in_a_terminal(broker, tmp_path):
    tmux = pytest.importorskip("shutil").which("tmux")
    if tmux is None:
        pytest.skip("tmux is not installed")
    session = f"tfe-{time.monotonic_ns()}"
    command = f"{sys.executable} -m tflite_edge telemetry --broker {broker.url} --duration 20 --refresh-s 0.2"
    subprocess.run([tmux, "new-session", "-d", "-s", session, "-x", "150", "-y", "30", command], check=True)
    try:
        def screen() -> str:
            return subprocess.run([tmux, "capture-pane", "-p", "-t", session], capture_output=True, text=True).stdout

        wait_until(lambda: "listening on" in screen(), 20, "the live view subscribed")
        with TelemetryPublisher("tty-1", broker_url=broker.url, period_s=0.2,
                                power_sensor=EstimatedPowerSensor()) as pub:
            for _ in range(4):
                run_device(pub, 10)
                pub.flush()
            wait_until(lambda: "tty-1" in screen() and " 40 " in screen(), 20, "the table showed all 40 requests")
            shown = screen()
    finally:
        subprocess.run([tmux, "kill-session", "-t", session], capture_output=True)
    assert shown.count("device  status") == 1  # one table, redrawn in place, not a scrolling log
    assert "tty-1" in shown and "online" in shown
