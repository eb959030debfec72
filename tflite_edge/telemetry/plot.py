"""Figures of a telemetry recording: latency, link, power and the exit/partition choices over time.

``plot_recording(path, out_dir)`` writes four PNG files and returns their paths. matplotlib
is imported here only (with the non-interactive Agg backend), so devices never need it.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import TelemetryError
from .schema import TelemetryMessage
from .subscriber import read_recording

__all__ = ["Series", "load_series", "plot_recording"]

_PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")


@dataclass
class Series:
    """One device's telemetry windows, in time order, with times relative to the recording's start."""

    device_id: str
    t_s: list[float] = field(default_factory=list)
    messages: list[TelemetryMessage] = field(default_factory=list)

    def values(self, getter: Any) -> list[float]:
        """``getter(message)`` per window, NaN where it is None (matplotlib leaves a gap)."""
        out = []
        for m in self.messages:
            v = getter(m)
            out.append(float("nan") if v is None else float(v))
        return out


def load_series(path: str | Path) -> dict[str, Series]:
    """Telemetry messages of a recording grouped by device (status and experience are skipped)."""
    per_device: dict[str, list[TelemetryMessage]] = defaultdict(list)
    for received in read_recording(path):
        if isinstance(received.message, TelemetryMessage):
            per_device[received.message.device_id].append(received.message)
    if not per_device:
        raise TelemetryError(f"{path} holds no telemetry messages; record some with `tflite-edge telemetry --record`")
    start = min(m.time_unix_s for ms in per_device.values() for m in ms)
    series = {}
    for device, messages in sorted(per_device.items()):
        messages.sort(key=lambda m: (m.time_unix_s, m.seq))
        series[device] = Series(device, [m.time_unix_s - start for m in messages], messages)
    return series


def _style(plt: Any) -> None:
    plt.rcParams.update(
        {
            "figure.dpi": 110,
            "axes.grid": True,
            "grid.alpha": 0.3,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "axes.titlesize": 11,
            "axes.titleweight": "bold",
            "axes.labelsize": 10,
            "legend.fontsize": 8,
            "legend.frameon": False,
        }
    )


def _headroom(ax: Any) -> None:
    """Start the y axis at 0 and leave the top fifth free for the legend."""
    top = ax.get_ylim()[1]
    ax.set_ylim(0, top * 1.25 if top > 0 else 1.0)
    ax.legend(loc="upper left", ncol=2)


def _finish(fig: Any, axes: Any, title: str, out: Path) -> Path:
    axes[-1].set_xlabel("time since the recording started (s)")
    fig.suptitle(title, fontsize=13)
    # Keep about a third of an inch above the panels for the title, whatever the figure's height.
    fig.tight_layout(rect=(0.0, 0.0, 1.0, 1.0 - 0.35 / fig.get_figheight()))
    fig.savefig(out)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return out


def _plot_latency(plt: Any, series: dict[str, Series], out: Path) -> Path:
    fig, axes = plt.subplots(2, 1, figsize=(10, 6.5), sharex=True)
    for i, s in enumerate(series.values()):
        color = _PALETTE[i % len(_PALETTE)]
        axes[0].plot(s.t_s, s.values(lambda m: m.latency.total_p50_ms), "-o", ms=3, color=color,
                     label=f"{s.device_id} p50")
        axes[0].plot(s.t_s, s.values(lambda m: m.latency.total_p95_ms), "--", color=color, alpha=0.8,
                     label=f"{s.device_id} p95")
    axes[0].set_ylabel("end-to-end latency (ms)")
    observed = [v for s in series.values() for m in s.messages
                for v in (m.latency.total_p50_ms, m.latency.total_p95_ms) if v is not None and v > 0]
    log_scale = bool(observed) and max(observed) / min(observed) > 20
    if log_scale:  # local answers in µs and edge timeouts in tens of ms both stay readable
        axes[0].set_yscale("log")
    else:
        axes[0].set_ylim(bottom=0)
    axes[0].set_title("Latency per window (solid: median, dashed: 95th percentile"
                      + (", log scale)" if log_scale else ")"))
    axes[0].legend(ncol=2, loc="upper left")
    # Where the time goes, for the first device (mean per window): stacked parts.
    first = next(iter(series.values()))
    parts = [
        ("device compute", first.values(lambda m: m.latency.device_compute_mean_ms)),
        ("transfer", first.values(lambda m: m.latency.transfer_mean_ms)),
        ("edge compute", first.values(lambda m: m.latency.edge_compute_mean_ms)),
    ]
    cleaned = [[0.0 if v != v else v for v in values] for _, values in parts]
    axes[1].stackplot(first.t_s, *cleaned, labels=[name for name, _ in parts],
                      colors=("#4c72b0", "#dd8452", "#55a868"), alpha=0.85)
    axes[1].set_ylabel("mean time per request (ms)")
    axes[1].set_title(f"Where the time goes on {first.device_id} (transfer and edge: offloaded requests only)")
    axes[1].set_ylim(bottom=0)
    _headroom(axes[1])
    return _finish(fig, axes, "Latency", out)


def _plot_link(plt: Any, series: dict[str, Series], out: Path) -> Path:
    fig, axes = plt.subplots(3, 1, figsize=(10, 8), sharex=True)
    for i, s in enumerate(series.values()):
        color = _PALETTE[i % len(_PALETTE)]
        axes[0].plot(s.t_s, s.values(lambda m: m.link.uplink_mbps), "-o", ms=3, color=color, label=s.device_id)
        axes[1].plot(s.t_s, s.values(lambda m: m.link.rtt_ms), "-o", ms=3, color=color,
                     label=f"{s.device_id} to the edge")
        axes[1].plot(s.t_s, s.values(lambda m: m.link.broker_rtt_ms), ":", color=color,
                     label=f"{s.device_id} to the broker")
        axes[2].plot(s.t_s, [100 * v for v in s.values(lambda m: m.link.loss_ratio)], "-", color=color,
                     label=s.device_id)
    axes[0].set_ylabel("uplink (Mbit/s)")
    axes[0].set_title("Uplink throughput (harmonic mean of recent transfers)")
    axes[1].set_ylabel("round trip (ms)")
    axes[1].set_title("Round-trip time (solid: request to reply, dotted: publish to broker ack)")
    axes[2].set_ylabel("lost (%)")
    axes[2].set_title("Offloaded requests lost (timeouts and errors, last 100)")
    for ax in axes:
        _headroom(ax)
    axes[2].set_ylim(0, 105)
    return _finish(fig, axes, "Link quality", out)


def _plot_power(plt: Any, series: dict[str, Series], out: Path) -> Path:
    fig, axes = plt.subplots(3, 1, figsize=(10, 8), sharex=True)
    any_estimated = False
    for i, s in enumerate(series.values()):
        color = _PALETTE[i % len(_PALETTE)]
        estimated = any(m.power.estimated for m in s.messages)
        any_estimated |= estimated
        source = s.messages[-1].power.source
        label = f"{s.device_id} ({source}{', estimated' if estimated else ''})"
        style = "--" if estimated else "-"
        axes[0].plot(s.t_s, s.values(lambda m: m.power.power_mw), style, marker="o", ms=3, color=color, label=label)
        axes[1].plot(s.t_s, s.values(lambda m: m.power.energy_per_inference_mj), style, marker="o", ms=3,
                     color=color, label=s.device_id)
        for getter, style, what in (
            (lambda m: m.system.cpu_load_percent, "-", "CPU load (%, whole machine)"),
            (lambda m: m.system.cpu_temperature_c, ":", "CPU temperature (°C)"),
        ):
            values = s.values(getter)
            if any(v == v for v in values):  # leave out what this device does not report
                axes[2].plot(s.t_s, values, style, color=color, label=f"{s.device_id} {what}")
    axes[0].set_ylabel("power (mW)")
    axes[0].set_title("Device power" + (" (dashed: model-based estimate, no sensor)" if any_estimated else ""))
    axes[1].set_ylabel("energy (mJ)")
    axes[1].set_title("Energy per inference")
    axes[2].set_ylabel("% / °C")
    axes[2].set_ylim(0, 105)
    axes[2].set_title("CPU load and temperature")
    _headroom(axes[0])
    _headroom(axes[1])
    axes[2].legend(loc="lower left", ncol=2)
    return _finish(fig, axes, "Power and energy", out)


def _sort_key(name: str) -> tuple[int, str]:
    # Partitions are numbers: 0, 1, ..., 10 (not 0, 1, 10, 2); exit names sort as text.
    return (int(name), "") if name.isdigit() else (1 << 30, name)


def _mix_bars(ax: Any, s: Series, key: str, title: str) -> None:
    names = sorted({k for m in s.messages for k in getattr(m.requests, key)}, key=_sort_key)
    # Each window is one bar spanning the window it summarises (it ends at its timestamp).
    busy = [(t, m) for t, m in zip(s.t_s, s.messages, strict=True) if sum(getattr(m.requests, key).values())]
    lefts = [t - m.window_s for t, m in busy]
    widths = [max(m.window_s, 1e-3) for _, m in busy]
    bottoms = [0.0] * len(busy)
    for j, name in enumerate(names):
        shares = []
        for _, m in busy:
            counts = getattr(m.requests, key)
            shares.append(100.0 * counts.get(name, 0) / sum(counts.values()))
        ax.bar(lefts, shares, width=widths, bottom=bottoms, align="edge", color=_PALETTE[j % len(_PALETTE)],
               label=name, edgecolor="white", linewidth=0.5)
        bottoms = [b + v for b, v in zip(bottoms, shares, strict=True)]
    ax.set_ylim(0, 100)
    ax.set_ylabel("share of requests (%)")
    ax.set_title(title)
    if names:
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), title=key[:-1])


def _plot_decisions(plt: Any, series: dict[str, Series], out: Path) -> Path:
    shown = list(series.values())[:4]  # one row per device; more would be unreadable
    fig, axes = plt.subplots(2 * len(shown), 1, figsize=(10, 3.2 * 2 * len(shown)), sharex=True, squeeze=False)
    flat = [ax for row in axes for ax in row]
    for i, s in enumerate(shown):
        _mix_bars(flat[2 * i], s, "exits", f"{s.device_id}: exit taken")
        _mix_bars(flat[2 * i + 1], s, "partitions", f"{s.device_id}: partition (segments run on the device)")
    return _finish(fig, flat, "Exit and partition choices per window", out)


def plot_recording(path: str | Path, out_dir: str | Path) -> list[Path]:
    """Write latency.png, link.png, power.png and decisions.png for a recording; return their paths."""
    try:
        import matplotlib
    except ImportError as e:
        raise TelemetryError("plotting needs matplotlib: pip install matplotlib") from e
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = load_series(path)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with plt.rc_context():
        _style(plt)
        return [
            _plot_latency(plt, series, out / "latency.png"),
            _plot_link(plt, series, out / "link.png"),
            _plot_power(plt, series, out / "power.png"),
            _plot_decisions(plt, series, out / "decisions.png"),
        ]
