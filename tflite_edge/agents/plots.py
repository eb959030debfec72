"""Evaluation plots: reward over time, and the actions a policy takes against throughput."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import PolicyError
from .baselines import Policy, make_policy
from .evaluate import episodes_for
from .objectives import Objective
from .simulator import Simulator
from .traces import Trace

__all__ = ["plot_evaluation"]


def _rolling(values: np.ndarray, window: int) -> np.ndarray:
    window = max(1, min(window, values.size))
    return np.convolve(values, np.ones(window) / window, mode="valid")


def plot_evaluation(
    simulator: Simulator,
    traces: Sequence[Trace],
    objective: Objective,
    policy: Policy,
    output_dir: str | os.PathLike[str],
    *,
    seed: int = 0,
    compare_with: Sequence[str] = ("edgent", "best-static", "oracle"),
    window: int = 50,
) -> list[Path]:
    """Write ``reward_over_time.png`` and ``actions_vs_throughput.png``; returns their paths."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise PolicyError("plots need matplotlib: pip install matplotlib") from e
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    episodes = episodes_for(simulator, traces, seed=seed)
    others = [make_policy(name) for name in compare_with]
    for other in others:
        other.prepare(simulator, episodes, objective)

    figure, axis = plt.subplots(figsize=(8, 4))
    for p in [policy, *others]:
        rewards = np.concatenate([
            simulator.rewards(e, simulator.outcomes(e, p.decide(simulator, e, objective)), objective) for e in episodes
        ])
        axis.plot(_rolling(rewards, window), label=p.name, linewidth=1)
    axis.set_xlabel("request (held-out traces, concatenated)")
    axis.set_ylabel(f"reward ({objective.name}), rolling mean of {window}")
    axis.legend(loc="lower right", fontsize="small")
    figure.tight_layout()
    reward_path = out / "reward_over_time.png"
    figure.savefig(reward_path, dpi=120)
    plt.close(figure)

    figure, axis = plt.subplots(figsize=(8, 4))
    throughput = np.concatenate([e.est_mbps for e in episodes])
    chosen = np.concatenate([policy.decide(simulator, e, objective) for e in episodes])
    jitter = np.random.default_rng(seed).uniform(-0.2, 0.2, chosen.size)
    axis.scatter(throughput, chosen + jitter, s=4, alpha=0.4)
    axis.set_xscale("log")
    axis.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    axis.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    axis.set_yticks(range(len(simulator.actions)), simulator.action_labels(), fontsize="small")
    axis.set_xlabel("estimated uplink throughput (Mbit/s)")
    axis.set_title(f"actions of {policy.name}")
    figure.tight_layout()
    actions_path = out / "actions_vs_throughput.png"
    figure.savefig(actions_path, dpi=120)
    plt.close(figure)
    return [reward_path, actions_path]
