"""Bandwidth traces: parsing, exact transfer integration, synthetic generators."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tflite_edge.agents.traces import (
    MIN_MBPS,
    Trace,
    load_trace,
    load_traces,
    markov_trace,
    split_traces,
    step_trace,
)
from tflite_edge.errors import TraceError


def write(tmp_path: Path, text: str, name: str = "trace.log") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_parse_common_format(tmp_path: Path) -> None:
    trace = load_trace(write(tmp_path, "# comment\n10.0\t2.0\n11.0 4.0\n\n13.0\t1.0\n"))
    assert trace.name == "trace.log"
    np.testing.assert_allclose(trace.times_s, [0.0, 1.0, 3.0])  # shifted to start at 0
    np.testing.assert_allclose(trace.mbps, [2.0, 4.0, 1.0])
    assert trace.duration_s == pytest.approx(4.5)  # last sample holds for the median step (1.5 s)
    assert trace.mean_mbps == pytest.approx((2.0 * 1 + 4.0 * 2 + 1.0 * 1.5) / 4.5)


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "at least two samples"),
        ("0 1\n", "at least two samples"),
        ("0 1\n1\n", "expected `time_s Mbit/s`"),
        ("0 1\n1 fast\n", "not a number"),
        ("0 1\n1 -2\n", "must not be negative"),
        ("0 1\n1 2\n1 3\n", "increase strictly"),
        ("0 1\n1 nan\n", "finite"),
    ],
)
def test_malformed_traces_are_rejected(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(TraceError, match=message):
        load_trace(write(tmp_path, text))


def test_missing_file_and_empty_directory(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="no such trace file"):
        load_trace(tmp_path / "absent")
    write(tmp_path, "licence text", "LICENSE")
    with pytest.raises(TraceError, match="no trace files"):
        load_traces(tmp_path)


def test_transfer_integrates_piecewise_bandwidth() -> None:
    trace = Trace("t", np.array([0.0, 1.0]), np.array([2.0, 8.0]), 2.0)
    # 1 Mbit from t=0.5: 1 Mbit at 2 Mbit/s would need 0.5 s, exactly reaching t=1.0.
    assert trace.transfer_end_s(0.5, 1.0) == pytest.approx(1.0)
    # 5 Mbit from 0.5: 1 Mbit by t=1, then 4 Mbit at 8 Mbit/s: 0.5 s more.
    assert trace.transfer_end_s(0.5, 5.0) == pytest.approx(1.5)
    # Wrap-around: 10 Mbit (one period) later is exactly one duration later.
    assert trace.transfer_end_s(0.25, 10.0) == pytest.approx(2.25)
    # Vectorised and consistent with megabits_until.
    starts = np.array([0.1, 1.7, 5.3])
    ends = trace.transfer_end_s(starts, np.array([0.3, 2.0, 7.0]))
    np.testing.assert_allclose(trace.megabits_until(ends) - trace.megabits_until(starts), [0.3, 2.0, 7.0])
    np.testing.assert_allclose(trace.bandwidth_at([0.5, 1.5, 2.5]), [2.0, 8.0, 2.0])


def test_window_stats_match_the_samples() -> None:
    trace = Trace("t", np.array([0.0, 1.0]), np.array([2.0, 8.0]), 2.0)
    mean, std = trace.window_stats(np.array([2.0, 1.0]), 2.0)
    np.testing.assert_allclose(mean, [5.0, 5.0])
    np.testing.assert_allclose(std, [3.0, 3.0])
    mean, std = trace.window_stats(np.array([1.0]), 0.5)
    assert mean[0] == pytest.approx(2.0) and std[0] == pytest.approx(0.0, abs=1e-6)


def test_zero_bandwidth_is_an_almost_dead_link() -> None:
    trace = Trace("t", np.array([0.0, 1.0]), np.array([0.0, 1.0]), 2.0)
    assert trace.mbps[0] == MIN_MBPS
    assert np.isfinite(trace.transfer_end_s(0.0, 0.5))


def test_synthetic_generators_are_seeded() -> None:
    a, b, c = markov_trace(seed=3), markov_trace(seed=3), markov_trace(seed=4)
    np.testing.assert_array_equal(a.mbps, b.mbps)
    assert not np.array_equal(a.mbps, c.mbps)
    assert a.duration_s == pytest.approx(300.0) and np.all(a.mbps > 0)
    # Regimes persist: most consecutive samples stay near the same level.
    ratio = a.mbps[1:] / a.mbps[:-1]
    assert np.mean((ratio > 0.4) & (ratio < 2.5)) > 0.8
    steps = step_trace(levels_mbps=(4.0, 0.5), hold_s=10, duration_s=40)
    np.testing.assert_allclose(steps.bandwidth_at([5, 15, 25, 35]), [4.0, 0.5, 4.0, 0.5])
    with pytest.raises(TraceError):
        markov_trace(seed=0, levels_mbps=(1.0, -1.0))


def test_split_is_reproducible_and_disjoint() -> None:
    traces = [markov_trace(seed=i, duration_s=10) for i in range(8)]
    train, test = split_traces(traces, held_out=0.25, seed=1)
    again = split_traces(traces, held_out=0.25, seed=1)
    assert [t.name for t in train] == [t.name for t in again[0]]
    assert len(test) == 2 and not {t.name for t in train} & {t.name for t in test}


def test_real_norway_traces(norway_dir: Path) -> None:
    traces = load_traces(norway_dir)
    assert len(traces) == 80
    assert all(len(t) >= 2 and t.duration_s > 0 for t in traces)
    means = np.array([t.mean_mbps for t in traces])
    assert 0.2 < np.median(means) < 6.0  # 3G/HSDPA uplink-scale rates
