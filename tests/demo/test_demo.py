"""The demo end to end, shortened: one training epoch and a few dozen live requests."""

import json

import pytest

from tflite_edge.demo import DemoOptions, run_demo
from tflite_edge.demo.run import Progress


@pytest.mark.slow
def test_demo_runs_end_to_end_and_writes_its_report(tmp_path, capsys):
    import sys

    out = tmp_path / "demo"
    report = run_demo(DemoOptions(out=out, requests=40, interval_ms=20.0, epochs=1), Progress(sys.stderr))
    text = report.read_text()
    assert "## Live session" in text and "40 requests, 40 answered (lost: 0)" in text
    assert "## The same trace in the simulator" in text and "oracle" in text
    for name in ("accuracy_vs_latency.png", "policy_decisions.png", "telemetry/latency.png",
                 "telemetry/decisions.png"):
        assert (out / name).stat().st_size > 10_000, name
    records = [json.loads(line) for line in (out / "requests.jsonl").read_text().splitlines()]
    assert len(records) == 40 and all(r["top1_class"] is not None for r in records)
    telemetry = [json.loads(line) for line in (out / "telemetry.jsonl").read_text().splitlines()]
    assert any(t["topic"].endswith("/telemetry") for t in telemetry)
    err = capsys.readouterr().err
    assert "[7/7] done" in err and "0 lost" in err
    # A second run reuses the trained model.
    run_demo(DemoOptions(out=out, requests=5, interval_ms=10.0, epochs=1), Progress(sys.stderr))
    assert "reusing the trained model" in capsys.readouterr().err
