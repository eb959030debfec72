"""The trace-driven co-inference simulator (pure numpy).

Per request the device knows a *context* (recent throughput estimate and its variability,
RTT estimate, power budget, its own compute speed, the edge's load, the deadline) and a
policy picks an :class:`Action`: an exit, a partition ``K`` (segments ``[0, K)`` on the
device, the rest on the edge; ``K = 0`` sends the raw input, ``K = num_segments`` runs
everything locally) and optionally an early-exit confidence threshold.

The outcome of an action is:

* latency = device compute of segments ``[0, min(K, exit segment + 1))`` / device speed
  + (when offloading) the transfer of the activation at cut ``K`` over the trace's *true*
  bandwidth during the transfer + RTT + edge compute of segments ``[K, exit segment]``
  inflated by the edge load (``1 / (1 - load)``, an M/M/1 waiting factor);
* energy = device compute power × device busy time + radio energy
  (``P = α·throughput + β`` during the transfer, Huang et al., MobiSys 2012);
* correctness = the exit's validation accuracy (its expectation), or, given per-sample
  results (:class:`ExitSamples`), whether the sample drawn for the request is classified
  correctly at the exit actually taken (with a threshold, the first exit whose confidence
  reaches it).

Requests arrive every ``request_interval_s`` regardless of earlier decisions (an open
loop), so the contexts of an episode do not depend on the actions; the simulator
therefore evaluates whole episodes, for one action per request or for every action at once
(which the oracle and the best static choice in hindsight need), with vectorised numpy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from ..bundle.manifest import Manifest
from ..errors import PolicyError, ProfileError
from .cost import action_cost
from .objectives import Objective
from .planning import PlanningModel
from .profiles import LatencyProfile, Platform, get_platform
from .radio import RadioPowerModel, get_radio
from .scenario import SCHEDULED_QUANTITIES, Schedule
from .traces import Trace

__all__ = [
    "OBSERVATION_FEATURES",
    "Action",
    "Episode",
    "ExitSamples",
    "Outcomes",
    "Scenario",
    "Simulator",
    "observation_from_context",
]

OBSERVATION_FEATURES = (
    "log2_throughput_mbps",
    "throughput_cv",
    "rtt_100ms",
    "log2_deadline_rel",
    "power_budget_w",
    "device_speed",
    "edge_load",
    "bias",
)


def observation_from_context(
    *,
    throughput_mbps: np.ndarray | float,
    throughput_std_mbps: np.ndarray | float,
    rtt_ms: np.ndarray | float,
    deadline_ms: np.ndarray | float,
    power_budget_mw: np.ndarray | float,
    device_speed: np.ndarray | float,
    edge_load: np.ndarray | float,
    reference_ms: float,
) -> np.ndarray:
    """The policy's input features (:data:`OBSERVATION_FEATURES`) from a device's measured context.

    The simulator and a device running a learned policy both call this, so a policy sees
    the same features in training and in the field. ``reference_ms`` is the device-only
    latency of the final exit at nominal speed (``Simulator.reference_ms``, stored with a
    trained policy). Scalars give one row; arrays give one row per request.
    """
    throughput = np.maximum(np.asarray(throughput_mbps, dtype=np.float64), 1e-6)
    columns = [
        np.log2(throughput),
        np.asarray(throughput_std_mbps, dtype=np.float64) / throughput,
        np.asarray(rtt_ms, dtype=np.float64) / 100.0,
        np.log2(np.asarray(deadline_ms, dtype=np.float64) / reference_ms),
        np.asarray(power_budget_mw, dtype=np.float64) / 1000.0,
        np.asarray(device_speed, dtype=np.float64),
        np.asarray(edge_load, dtype=np.float64),
    ]
    rows = np.broadcast_arrays(*columns)
    return np.stack([*rows, np.ones_like(rows[0])], axis=-1).astype(np.float32).reshape(-1, len(OBSERVATION_FEATURES))


@dataclass(frozen=True)
class Action:
    """Run up to exit ``exit`` (an index into the manifest's exits) with partition ``partition``."""

    exit: int
    partition: int
    threshold: float | None = None

    def label(self, manifest: Manifest) -> str:
        where = "local" if self.partition >= manifest.num_segments else f"K{self.partition}"
        tail = "" if self.threshold is None else f"@{self.threshold:g}"
        return f"{manifest.exits[self.exit].name}/{where}{tail}"


@dataclass(frozen=True)
class ExitSamples:
    """Per-sample validation results: ``correct[i, e]`` and ``confidence[i, e]`` for exit ``e``."""

    correct: np.ndarray
    confidence: np.ndarray

    def __post_init__(self) -> None:
        if self.correct.ndim != 2 or self.correct.shape != self.confidence.shape or self.correct.shape[0] == 0:
            raise PolicyError("ExitSamples: correct and confidence must be equal (samples, exits) arrays")


@dataclass(frozen=True)
class Scenario:
    """How contexts vary. Ranges are (low, high) and drawn uniformly.

    Deadlines are drawn per request from ``deadline_ms`` when given, else from
    ``deadline_factors`` × the device-only latency of the final exit at nominal speed (so
    one scenario suits bundles of any size).

    The world changes within an episode: device speed and edge load drift (a random walk
    of step ``drift``), and with the given probabilities an episode has a throttling period
    (device speed × ``throttle_factor``), a burst of edge load from other tenants (load at
    least ``load_burst``) and a drop of the power budget (× ``budget_drop_factor`` from a
    random request on). Periods last ``event_share`` of the episode. ``schedules`` (from a
    scenario file, :mod:`.scenario`) replace the random draws of the quantities they name,
    and episodes then start at the beginning of their trace.
    """

    request_interval_s: float = 0.5
    rtt_ms: tuple[float, float] = (20.0, 100.0)  # per-episode base round-trip time
    rtt_jitter_ms: float = 10.0  # mean of the per-request exponential jitter
    deadline_ms: tuple[float, ...] | None = None
    deadline_factors: tuple[float, ...] = (0.5, 1.0, 2.0)
    power_budget_mw: tuple[float, float] = (1_000.0, 4_000.0)  # per episode
    device_speed: tuple[float, float] = (0.6, 1.0)  # 1 = as profiled for the platform
    edge_load: tuple[float, float] = (0.0, 0.8)
    drift: float = 0.03  # per-request random-walk step of device speed and edge load
    estimate_window_s: float = 2.0  # how far back the throughput estimate looks
    throttle_probability: float = 0.5
    throttle_factor: tuple[float, float] = (0.25, 0.6)
    load_burst_probability: float = 0.5
    load_burst: tuple[float, float] = (0.7, 0.95)
    budget_drop_probability: float = 0.5
    budget_drop_factor: tuple[float, float] = (0.2, 0.5)
    event_share: tuple[float, float] = (0.1, 0.4)
    schedules: Mapping[str, Schedule] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = set(self.schedules) - set(SCHEDULED_QUANTITIES)
        if unknown:
            raise PolicyError(f"scenario schedules for unknown quantities: {', '.join(sorted(unknown))}")


@dataclass(frozen=True, eq=False)
class Episode:
    """The contexts of one run of requests over a trace (true and observed)."""

    trace: Trace
    seed: int
    t_s: np.ndarray
    est_mbps: np.ndarray
    std_mbps: np.ndarray
    rtt_ms: np.ndarray  # true round trip of each request
    rtt_est_ms: np.ndarray  # what the device saw last time
    deadline_ms: np.ndarray
    power_budget_mw: np.ndarray
    device_speed: np.ndarray
    edge_load: np.ndarray
    sample_index: np.ndarray | None
    reference_ms: float
    _cache: dict[str, object] = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return int(self.t_s.size)

    @property
    def energy_budget_mj(self) -> np.ndarray:
        return self.power_budget_mw * self.deadline_ms / 1000.0

    def observations(self) -> np.ndarray:
        """Normalised features (see :data:`OBSERVATION_FEATURES`), float32 (requests, features)."""
        cached = self._cache.get("obs")
        if isinstance(cached, np.ndarray):
            return cached
        obs = observation_from_context(
            throughput_mbps=self.est_mbps,
            throughput_std_mbps=self.std_mbps,
            rtt_ms=self.rtt_est_ms,
            deadline_ms=self.deadline_ms,
            power_budget_mw=self.power_budget_mw,
            device_speed=self.device_speed,
            edge_load=self.edge_load,
            reference_ms=self.reference_ms,
        )
        self._cache["obs"] = obs
        return obs


@dataclass(frozen=True, eq=False)
class Outcomes:
    """Outcomes of actions; every array has the same shape (requests,) or (requests, actions)."""

    latency_ms: np.ndarray
    energy_mj: np.ndarray
    correct: np.ndarray
    exit_accuracy: np.ndarray
    offloaded: np.ndarray
    exit_taken: np.ndarray

    def take(self, actions: np.ndarray) -> Outcomes:
        """From a (requests, actions) matrix, the outcome of one action per request."""
        rows = np.arange(actions.size)
        return Outcomes(*(a[rows, actions] for a in self._arrays()))

    def _arrays(self) -> tuple[np.ndarray, ...]:
        return (self.latency_ms, self.energy_mj, self.correct, self.exit_accuracy, self.offloaded, self.exit_taken)


class Simulator:
    """Evaluates actions over episodes for one bundle, latency profile and pair of platforms."""

    def __init__(
        self,
        manifest: Manifest,
        profile: LatencyProfile,
        *,
        device: Platform | str = "rpi3-edgent",
        edge: Platform | str = "host",
        radio: RadioPowerModel | str = "3g",
        scenario: Scenario | None = None,
        samples: ExitSamples | None = None,
        thresholds: Sequence[float] = (),
    ) -> None:
        profile.check(manifest)
        self.manifest = manifest
        self.profile = profile
        self.device = get_platform(device) if isinstance(device, str) else device
        self.edge = get_platform(edge) if isinstance(edge, str) else edge
        self.radio = get_radio(radio) if isinstance(radio, str) else radio
        self.scenario = scenario or Scenario()
        self.samples = samples
        n = manifest.num_segments
        accuracies = [e.accuracy for e in manifest.exits]
        if any(a is None for a in accuracies) and samples is None:
            raise ProfileError(
                "the bundle records no per-exit accuracy; convert it with validation data, or pass ExitSamples"
            )
        if samples is not None and samples.correct.shape[1] != len(manifest.exits):
            raise PolicyError(f"ExitSamples has {samples.correct.shape[1]} exits, the bundle {len(manifest.exits)}")
        if thresholds and samples is None:
            raise PolicyError("early-exit thresholds need per-sample confidences (ExitSamples)")
        self._exit_accuracy = np.array(
            [a if a is not None else float(np.mean(samples.correct[:, i])) for i, a in enumerate(accuracies)]  # type: ignore[union-attr]
        )
        self._exit_segment = np.array([e.segment for e in manifest.exits])
        seg = np.asarray(profile.segment_ms, dtype=np.float64)
        self.device_cum_ms = np.concatenate((np.zeros(1), np.cumsum(seg * self.device.slowdown)))
        self.edge_cum_ms = np.concatenate((np.zeros(1), np.cumsum(seg * self.edge.slowdown)))
        self.partition_megabits = np.array(manifest.partition_bytes(), dtype=np.float64) * 8e-6
        self.actions = self._enumerate_actions(tuple(thresholds))
        self._action_exit = np.array([a.exit for a in self.actions])
        self._action_partition = np.array([a.partition for a in self.actions])
        final = int(np.argmax(self._exit_segment))
        self.reference_ms = float(self.device_cum_ms[self._exit_segment[final] + 1])
        if self.reference_ms <= 0:
            raise ProfileError("the profile's segment latencies are all zero")
        self._planning_model: PlanningModel | None = None
        self.local_action = self.actions.index(Action(final, n))
        self.remote_action = self.actions.index(Action(final, 0))

    # -- the action set ------------------------------------------------------------------
    def _enumerate_actions(self, thresholds: tuple[float, ...]) -> tuple[Action, ...]:
        """Distinct actions: per exit, partitions 0..exit segment and 'all local'."""
        n = self.manifest.num_segments
        actions: list[Action] = []
        for index, spec in enumerate(self.manifest.exits):
            for partition in [*range(spec.segment + 1), n]:
                actions.append(Action(index, partition))
                for threshold in thresholds:
                    # A threshold only matters if an earlier (or equal-segment) exit can fire first.
                    if any(o.segment <= spec.segment and o is not spec for o in self.manifest.exits):
                        actions.append(Action(index, partition, float(threshold)))
        return tuple(actions)

    @property
    def exit_accuracy(self) -> tuple[float, ...]:
        """Validation accuracy of every exit (from the manifest, else from the samples)."""
        return tuple(float(a) for a in self._exit_accuracy)

    def action_labels(self) -> list[str]:
        return [a.label(self.manifest) for a in self.actions]

    # -- episodes --------------------------------------------------------------------------
    def episode(self, trace: Trace, *, seed: int, requests: int | None = None) -> Episode:
        """Draw the contexts of one episode over ``trace`` (deterministic in ``seed``)."""
        sc = self.scenario
        rng = np.random.default_rng(seed)
        count = requests if requests is not None else max(1, int(trace.duration_s / sc.request_interval_s))
        if count < 1:
            raise PolicyError("an episode needs at least one request")
        start_s = 0.0 if sc.schedules else rng.uniform(0.0, trace.duration_s)
        elapsed_s = np.arange(count) * sc.request_interval_s
        t_s = start_s + elapsed_s
        est, std = trace.window_stats(t_s, sc.estimate_window_s)
        rtt = np.full(count, rng.uniform(*sc.rtt_ms))
        if "rtt_ms" in sc.schedules:
            rtt = sc.schedules["rtt_ms"].at(elapsed_s)
        if sc.rtt_jitter_ms > 0:
            rtt = rtt + rng.exponential(sc.rtt_jitter_ms, count)
        rtt_est = np.concatenate((rtt[:1], rtt[:-1]))
        choices = np.asarray(
            sc.deadline_ms if sc.deadline_ms else [f * self.reference_ms for f in sc.deadline_factors]
        )
        deadline = choices[rng.integers(choices.size, size=count)]
        budget = np.full(count, rng.uniform(*sc.power_budget_mw))
        if rng.random() < sc.budget_drop_probability:
            budget[rng.integers(count):] *= rng.uniform(*sc.budget_drop_factor)
        speed = self._walk(rng, sc.device_speed, count)
        if rng.random() < sc.throttle_probability:
            speed[self._period(rng, count)] *= rng.uniform(*sc.throttle_factor)
        load = self._walk(rng, sc.edge_load, count)
        if rng.random() < sc.load_burst_probability:
            period = self._period(rng, count)
            load[period] = np.maximum(load[period], rng.uniform(*sc.load_burst))
        if "power_budget_mw" in sc.schedules:
            budget = sc.schedules["power_budget_mw"].at(elapsed_s)
        if "device_speed" in sc.schedules:
            speed = sc.schedules["device_speed"].at(elapsed_s)
        if "edge_load" in sc.schedules:
            load = sc.schedules["edge_load"].at(elapsed_s)
        sample_index = None if self.samples is None else rng.integers(self.samples.correct.shape[0], size=count)
        return Episode(trace, seed, t_s, est, std, rtt, rtt_est, deadline, budget, speed, load, sample_index,
                       self.reference_ms)

    def _period(self, rng: np.random.Generator, count: int) -> slice:
        """A random stretch of requests lasting ``event_share`` of the episode."""
        length = max(1, int(round(rng.uniform(*self.scenario.event_share) * count)))
        start = int(rng.integers(max(count - length, 0) + 1))
        return slice(start, start + length)

    def _walk(self, rng: np.random.Generator, bounds: tuple[float, float], count: int) -> np.ndarray:
        low, high = bounds
        if high <= low:
            return np.full(count, low)
        steps = rng.normal(0.0, self.scenario.drift * (high - low), count)
        steps[0] = rng.uniform(low, high)
        # Reflect the random walk into [low, high] (a triangle wave of the free walk).
        span = high - low
        phase = np.mod(np.cumsum(steps) - low, 2 * span)
        return low + np.where(phase > span, 2 * span - phase, phase)

    # -- outcomes ----------------------------------------------------------------------------
    def outcomes(self, episode: Episode, actions: np.ndarray | None = None) -> Outcomes:
        """True outcomes: of ``actions[i]`` for request ``i``, or of every action (requests × actions)."""
        if actions is None:
            cached = episode._cache.get("outcomes")
            if isinstance(cached, Outcomes):
                return cached
            result = self._evaluate(episode, np.arange(len(self.actions)))
            episode._cache["outcomes"] = result
            return result
        acts = np.asarray(actions, dtype=np.int64)
        if acts.shape != (len(episode),) or acts.min() < 0 or acts.max() >= len(self.actions):
            raise PolicyError(f"expected one action index in [0, {len(self.actions)}) per request")
        return self.outcomes(episode).take(acts)

    def predicted(self, episode: Episode) -> Outcomes:
        """Outcomes of every action as a model-based planner predicts them from the observed context.

        The planner knows the profile (as Neurosurgeon's and Edgent's regressions do), the
        device speed and edge load, but only the *estimated* throughput and the last RTT.
        """
        cached = episode._cache.get("predicted")
        if isinstance(cached, Outcomes):
            return cached
        model = self.planning_model
        latency, energy = model.predict(throughput_mbps=episode.est_mbps, rtt_ms=episode.rtt_est_ms,
                                        device_speed=episode.device_speed, edge_load=episode.edge_load)
        shape = latency.shape
        result = Outcomes(
            latency, energy, np.broadcast_to(model.accuracy, shape), np.broadcast_to(model.accuracy, shape),
            np.broadcast_to(model.offloaded > 0, shape), np.broadcast_to(self._action_exit, shape),
        )
        episode._cache["predicted"] = result
        return result

    @property
    def planning_model(self) -> PlanningModel:
        """Per-action constants from which a planner (or a device) predicts outcomes."""
        if self._planning_model is None:
            self._planning_model = PlanningModel.from_simulator(self)
        return self._planning_model

    def _evaluate(self, episode: Episode, actions: np.ndarray) -> Outcomes:
        n = self.manifest.num_segments
        speed = episode.device_speed
        # Transfer time depends only on the partition: compute it once per K.
        tx_ms: dict[int, np.ndarray] = {}
        for k in np.unique(self._action_partition):
            if k >= n:
                continue
            start = episode.t_s + self.device_cum_ms[k] / speed / 1000.0
            tx_ms[k] = (episode.trace.transfer_end_s(start, self.partition_megabits[k]) - start) * 1000.0
        columns: list[tuple[np.ndarray, ...]] = []
        for a in actions:
            act = self.actions[int(a)]
            taken = self._exit_taken(episode, act)
            seg_taken = self._exit_segment[taken]
            local = seg_taken < act.partition
            k = min(act.partition, n)
            latency, energy = action_cost(
                device_ms=np.where(local, self.device_cum_ms[seg_taken + 1], self.device_cum_ms[k]),
                edge_ms=self.edge_cum_ms[np.minimum(seg_taken + 1, n)] - self.edge_cum_ms[k],
                megabits=self.partition_megabits[k], offloaded=~local,
                transmit_ms=tx_ms[k] if k < n else 0.0, rtt_ms=episode.rtt_ms, device_speed=speed,
                edge_load=episode.edge_load, device_power_mw=self.device.compute_power_mw,
                radio_alpha_mw_per_mbps=self.radio.alpha_mw_per_mbps, radio_beta_mw=self.radio.beta_mw,
            )
            accuracy = self._exit_accuracy[taken]
            if self.samples is not None:
                correct = self.samples.correct[episode.sample_index, taken].astype(np.float64)
            else:
                correct = accuracy
            columns.append((latency, energy, correct, accuracy, ~local, taken))
        return Outcomes(*(np.stack([c[i] for c in columns], axis=1) for i in range(6)))

    def _exit_taken(self, episode: Episode, action: Action) -> np.ndarray:
        count = len(episode)
        if action.threshold is None or self.samples is None or episode.sample_index is None:
            return np.full(count, action.exit)
        target_segment = self._exit_segment[action.exit]
        candidates = [i for i, s in enumerate(self._exit_segment) if s <= target_segment and i != action.exit]
        candidates.sort(key=lambda i: self._exit_segment[i])
        taken = np.full(count, action.exit)
        undecided = np.ones(count, dtype=bool)
        for i in candidates:
            fires = undecided & (self.samples.confidence[episode.sample_index, i] >= action.threshold)
            taken[fires] = i
            undecided &= ~fires
        return taken

    def rewards(self, episode: Episode, outcomes: Outcomes, objective: Objective) -> np.ndarray:
        """Rewards of ``outcomes`` (one per request, or requests × actions) under ``objective``."""
        shape = (-1, 1) if outcomes.latency_ms.ndim == 2 else (-1,)
        return objective.reward(
            latency_ms=outcomes.latency_ms,
            energy_mj=outcomes.energy_mj,
            correct=outcomes.correct,
            exit_accuracy=outcomes.exit_accuracy,
            deadline_ms=episode.deadline_ms.reshape(shape),
            energy_budget_mj=episode.energy_budget_mj.reshape(shape),
        )

    def with_scenario(self, **changes: object) -> Simulator:
        """A copy of this simulator with some scenario fields changed."""
        clone = object.__new__(Simulator)
        clone.__dict__.update(self.__dict__)
        clone.scenario = replace(self.scenario, **changes)  # type: ignore[arg-type]
        return clone

