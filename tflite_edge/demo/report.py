"""Demo step 7: the summary table, the markdown report and the plots."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..bundle import Bundle

__all__ = ["live_lines", "summarize", "write_report"]


def _percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if values else float("nan")


def summarize(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Overall figures and one row per (exit taken, partition) of the live session."""
    latencies = [r["total_ms"] for r in records]
    rows: dict[tuple[str, int, str], list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        rows[(r["exit"], r["partition"], r["ran_on"])].append(r)
    table = []
    for (exit_name, partition, ran_on), group in sorted(rows.items(), key=lambda kv: -len(kv[1])):
        lat = [g["total_ms"] for g in group]
        table.append({
            "exit": exit_name, "partition": partition, "ran_on": ran_on, "requests": len(group),
            "share": len(group) / len(records), "accuracy": float(np.mean([g["correct"] for g in group])),
            "p50_ms": _percentile(lat, 50), "p95_ms": _percentile(lat, 95),
            "deadline_met": float(np.mean([g["met_deadline"] for g in group])),
            "fell_back": sum(g["fell_back"] for g in group),
        })
    return {
        "requests": len(records),
        "answered": sum(1 for r in records if r.get("top1_class") is not None),
        "accuracy": float(np.mean([r["correct"] for r in records])),
        "deadline_met": float(np.mean([r["met_deadline"] for r in records])),
        "deadline_met_planned": float(np.mean([r["met_deadline"] for r in records if not r.get("probe")] or [0.0])),
        "fell_back": sum(r["fell_back"] for r in records),
        "offloaded": sum(r["ran_on"] != "device" for r in records),
        "probes": sum(r.get("probe", False) for r in records),
        "p50_ms": _percentile(latencies, 50),
        "p95_ms": _percentile(latencies, 95),
        "rows": table,
    }


def live_lines(results: dict[str, Any], changes: Sequence[str]) -> list[str]:
    """Markdown: every contender's live figures, and the learned policy's actions per world change."""
    def reactions(r: dict[str, Any]) -> str:
        return ", ".join("–" if x["requests_until_change"] is None else str(x["requests_until_change"])
                         for x in r["reactions"])

    lines = [
        "| run | deadline met | accuracy within the deadline | mean reward | energy per inference (mJ) | offloaded "
        "| requests until the action changed, per change |",
        "|---|---|---|---|---|---|---|",
        *(f"| {name} | {r['deadline_hit_rate']:.1%} | {r['accuracy_in_time']:.1%} | {r['mean_reward']:.3f} | "
          f"{r['energy_per_inference_mj']:.1f} | {r['offloaded']:.0%} | {reactions(r)} |"
          for name, r in results.items()),
        "",
    ]
    learned = results.get("learned")
    if learned is not None:
        lines += ["The learned policy's most frequent actions in each stretch of the world:", "",
                  "| stretch | world | requests | accuracy within the deadline | actions |", "|---|---|---|---|---|"]
        for phase, figures in learned["phases"].items():
            world = changes[int(phase)] if int(phase) < len(changes) else ""
            actions = ", ".join(f"{k} {v}" for k, v in figures["actions"].items())
            lines.append(f"| {phase} | {world} | {figures['requests']} | {figures['accuracy_in_time']:.1%} "
                         f"| {actions} |")
        lines.append("")
    first = next(iter(results.values()), None)
    if first is not None:
        lines += ["Emulated device latency per segment, median over each run, relative to the profile "
                  "(1.000 = exact; wall clock includes this host's late wake-ups, which are kept off the "
                  "device's clock):", "",
                  "| run | emulated / profile | wall clock / profile | host overruns |", "|---|---|---|---|"]
        for name, r in results.items():
            segments = r["emulation"]["segments"]
            emulated = ", ".join(format(s["median_ratio_to_target"], ".3f") for s in segments)
            wall = ", ".join(format(s["median_wall_ratio_to_target"], ".3f") for s in segments)
            lines.append(f"| {name} | {emulated} | {wall} | {r['emulation']['overruns']} |")
        lines.append("")
    return lines


def _plot_accuracy_vs_latency(plt: Any, summary: dict[str, Any], bundle: Bundle, out: Path) -> Path:
    fig, ax = plt.subplots(figsize=(8, 5))
    colors = {"device": "#1f77b4", "edge": "#d62728", "split": "#2ca02c"}
    for row in summary["rows"]:
        ax.scatter(row["p50_ms"], row["accuracy"] * 100, s=40 + 600 * row["share"], color=colors[row["ran_on"]],
                   alpha=0.75, edgecolor="black", linewidth=0.5)
        point = (row["p50_ms"], row["accuracy"] * 100)
        ax.annotate(f"{row['exit']} K={row['partition']}\n{row['requests']} req", point,
                    textcoords="offset points", xytext=(8, -4), fontsize=8)
    for e in bundle.manifest.exits:
        if e.accuracy is not None:
            ax.axhline(e.accuracy * 100, color="grey", linestyle=":", linewidth=0.8)
            ax.annotate(f"{e.name} validation {e.accuracy:.1%}", (ax.get_xlim()[1], e.accuracy * 100),
                        ha="right", va="bottom", fontsize=7, color="grey")
    for name, color in colors.items():
        ax.scatter([], [], color=color, label=f"ran on {name}")
    ax.set_xlabel("median end-to-end latency (ms)")
    ax.set_ylabel("top-1 accuracy of the answers (%)")
    ax.set_title("Accuracy vs latency per exit and partition (marker size: share of requests)")
    ax.legend(loc="center right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = out / "accuracy_vs_latency.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _plot_decisions(plt: Any, records: Sequence[dict[str, Any]], deadline_ms: float, out: Path) -> Path:
    t = np.array([r["t_s"] for r in records])
    fig, (ax_bw, ax_act, ax_lat) = plt.subplots(3, 1, figsize=(10, 8), sharex=True,
                                                gridspec_kw={"height_ratios": [2, 2, 2]})
    ax_bw.plot(t, [r["bandwidth_mbps"] for r in records], color="black", linewidth=1, label="trace (true)")
    est = [np.nan if r["estimate_mbps"] is None else r["estimate_mbps"] for r in records]
    ax_bw.plot(t, est, color="#ff7f0e", linewidth=1, label="device's estimate")
    ax_bw.set_ylabel("uplink (Mbit/s)")
    ax_bw.legend(loc="upper right", fontsize=8)
    ax_bw.grid(alpha=0.3)

    labels = sorted({r["action"] for r in records})
    index = {label: i for i, label in enumerate(labels)}
    colors = plt.cm.tab10(np.linspace(0, 1, 10))
    for label in labels:
        chosen = [r for r in records if r["action"] == label]
        ax_act.scatter([r["t_s"] for r in chosen], [index[label]] * len(chosen), s=8,
                       color=colors[index[label] % 10], label=label)
    fell = [r for r in records if r["fell_back"]]
    ax_act.scatter([r["t_s"] for r in fell], [index[r["action"]] for r in fell], s=30, facecolors="none",
                   edgecolors="red", linewidth=0.8, label="fell back locally")
    ax_act.set_yticks(range(len(labels)), labels, fontsize=8)
    ax_act.set_ylabel("policy's choice")
    ax_act.legend(loc="upper right", fontsize=7)
    ax_act.grid(alpha=0.3, axis="x")

    ax_lat.scatter(t, [r["total_ms"] for r in records], s=6, c=["#2ca02c" if r["met_deadline"] else "#d62728"
                                                                   for r in records])
    ax_lat.axhline(deadline_ms, color="#d62728", linestyle="--", linewidth=1, label=f"deadline {deadline_ms:g} ms")
    ax_lat.set_ylabel("latency (ms)")
    ax_lat.set_xlabel("time since the first request (s)")
    ax_lat.legend(loc="upper right", fontsize=8)
    ax_lat.grid(alpha=0.3)
    fig.suptitle("The policy's decisions against the uplink throughput")
    fig.tight_layout()
    path = out / "policy_decisions.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_report(
    out: Path, bundle: Bundle, records: Sequence[dict[str, Any]], *, setup: dict[str, Any],
    simulated: str | None = None, live: Sequence[str] = (),
) -> tuple[Path, dict[str, Any], list[Path]]:
    """Write report.md and the PNG plots into ``out``; return (report path, summary, plot paths)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..telemetry.plot import plot_recording

    summary = summarize(records)
    plots = [
        _plot_accuracy_vs_latency(plt, summary, bundle, out),
        _plot_decisions(plt, records, setup["deadline_ms"], out),
        *plot_recording(out / "telemetry.jsonl", out / "telemetry"),
    ]
    m = bundle.manifest
    lines = [
        "# tflite-edge demo report",
        "",
        "## Set-up",
        "",
        *(f"- {key}: {value}" for key, value in setup.items()),
        "",
        "## The bundle",
        "",
        f"`{bundle.path}` ({m.bundle_id}), {m.quantization}, {m.num_segments} segments; chain vs whole model: "
        f"{'bit-exact' if m.verification and m.verification.bit_exact else 'see bundle.json'}.",
        "",
        "| exit | segment | top-1 int8 | top-1 float Keras |",
        "|---|---|---|---|",
        *(f"| {e.name} | {e.segment} | {e.accuracy:.2%} | {e.float_accuracy:.2%} |" for e in m.exits),
        "",
        "| partition K | device runs | bytes sent |",
        "|---|---|---|",
        f"| 0 | nothing | {m.segments[0].inputs[0].bytes:,} (input) |",
        *(f"| {c.segment + 1} | segments 0..{c.segment} | {c.activation_bytes:,} ({c.layer}) |" for c in m.cuts),
        f"| {m.num_segments} | everything | 0 |",
        "",
        "## Live runs: the same requests, the same trace and the same world for every policy",
        "",
        *live,
        "## Live session of the learned policy",
        "",
        f"{summary['requests']} requests, {summary['answered']} answered (lost: "
        f"{summary['requests'] - summary['answered']}); accuracy {summary['accuracy']:.2%}; deadline met "
        f"{summary['deadline_met']:.1%} ({summary['deadline_met_planned']:.1%} of the requests that were not "
        f"probes); offloaded {summary['offloaded']}; uplink probes (relaxed deadline) "
        f"{summary['probes']}; fell back locally "
        f"{summary['fell_back']}; latency p50 {summary['p50_ms']:.1f} ms, p95 {summary['p95_ms']:.1f} ms.",
        "",
        "| exit | K | ran on | requests | share | accuracy | p50 ms | p95 ms | deadline met | fell back |",
        "|---|---|---|---|---|---|---|---|---|---|",
        *(f"| {r['exit']} | {r['partition']} | {r['ran_on']} | {r['requests']} | {r['share']:.0%} | "
          f"{r['accuracy']:.1%} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} | {r['deadline_met']:.0%} | {r['fell_back']} |"
          for r in summary["rows"]),
        "",
    ]
    if simulated:
        lines += ["## The same trace in the simulator, all baselines", "", "```", simulated.rstrip(), "```", ""]
    lines += ["## Plots", "", *(f"![{p.stem}]({p.relative_to(out)})" for p in plots), ""]
    report = out / "report.md"
    report.write_text("\n".join(lines))
    return report, summary, plots
