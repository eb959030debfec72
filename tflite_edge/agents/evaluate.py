"""Comparing policies on a set of traces: one row per policy, as a table or JSON."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .baselines import BASELINES, Policy, make_policy
from .objectives import Objective
from .simulator import Episode, Simulator
from .traces import Trace

__all__ = ["PolicyResult", "compare", "episodes_for", "format_table", "summarize"]


@dataclass(frozen=True)
class PolicyResult:
    """How one policy did over every request of the evaluation episodes."""

    policy: str
    requests: int
    mean_reward: float
    accuracy: float  # mean correctness of the answers (late ones included)
    deadline_miss_rate: float
    mean_latency_ms: float
    p95_latency_ms: float
    mean_energy_mj: float
    offload_rate: float
    action_mix: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def episodes_for(simulator: Simulator, traces: Sequence[Trace], *, seed: int = 0,
                 requests: int | None = None) -> list[Episode]:
    """One episode per trace; episode ``i`` is seeded with ``(seed, i)`` so runs are reproducible."""
    return [
        simulator.episode(trace, seed=int(np.random.SeedSequence([seed, i]).generate_state(1)[0]), requests=requests)
        for i, trace in enumerate(traces)
    ]


def summarize(
    name: str, simulator: Simulator, episodes: Sequence[Episode], actions: Sequence[np.ndarray], objective: Objective
) -> PolicyResult:
    """Aggregate the outcomes of ``actions[i]`` on ``episodes[i]``."""
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("reward", "correct", "miss", "latency", "energy", "off")}
    counts = np.zeros(len(simulator.actions))
    for episode, chosen in zip(episodes, actions, strict=False):
        outcomes = simulator.outcomes(episode, chosen)
        parts["reward"].append(simulator.rewards(episode, outcomes, objective))
        parts["correct"].append(outcomes.correct)
        parts["miss"].append(outcomes.latency_ms > episode.deadline_ms)
        parts["latency"].append(outcomes.latency_ms)
        parts["energy"].append(outcomes.energy_mj)
        parts["off"].append(outcomes.offloaded)
        counts += np.bincount(chosen, minlength=len(simulator.actions))
    joined = {k: np.concatenate(v) for k, v in parts.items()}
    labels = simulator.action_labels()
    total = max(counts.sum(), 1)
    return PolicyResult(
        policy=name,
        requests=int(joined["reward"].size),
        mean_reward=float(joined["reward"].mean()),
        accuracy=float(joined["correct"].mean()),
        deadline_miss_rate=float(joined["miss"].mean()),
        mean_latency_ms=float(joined["latency"].mean()),
        p95_latency_ms=float(np.percentile(joined["latency"], 95)),
        mean_energy_mj=float(joined["energy"].mean()),
        offload_rate=float(joined["off"].mean()),
        action_mix={labels[i]: round(float(c / total), 4) for i, c in enumerate(counts) if c},
    )


def compare(
    simulator: Simulator,
    traces: Sequence[Trace],
    objective: Objective,
    policies: Sequence[Policy | str] | None = None,
    *,
    seed: int = 0,
    requests: int | None = None,
) -> list[PolicyResult]:
    """Evaluate ``policies`` (default: every baseline and the oracle) on the same episodes."""
    episodes = episodes_for(simulator, traces, seed=seed, requests=requests)
    chosen = [make_policy(p) if isinstance(p, str) else p for p in (policies or list(BASELINES))]
    results = []
    for policy in chosen:
        policy.prepare(simulator, episodes, objective)
        actions = [policy.decide(simulator, episode, objective) for episode in episodes]
        results.append(summarize(policy.name, simulator, episodes, actions, objective))
    return results


def format_table(results: Sequence[PolicyResult]) -> str:
    """A fixed-width text table of ``results`` (one row per policy)."""
    header = ("policy", "reward", "accuracy", "miss rate", "latency ms", "p95 ms", "energy mJ", "offload", "top action")
    rows = [header]
    for r in results:
        top = max(r.action_mix.items(), key=lambda kv: kv[1]) if r.action_mix else ("-", 0.0)
        rows.append((
            r.policy, f"{r.mean_reward:.4f}", f"{r.accuracy:.4f}", f"{r.deadline_miss_rate:.3f}",
            f"{r.mean_latency_ms:.1f}", f"{r.p95_latency_ms:.1f}", f"{r.mean_energy_mj:.1f}",
            f"{r.offload_rate:.2f}", f"{top[0]} ({top[1]:.0%})",
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    def render(row: tuple[str, ...]) -> str:
        cells = (c.ljust(w) if i in (0, 8) else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))
        return "  ".join(cells)

    lines = [render(row) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)
