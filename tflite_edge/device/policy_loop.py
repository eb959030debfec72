"""A device deciding per request with a learned policy, and taking signed policy updates live.

``PolicyRunner`` closes the loop on the device: before each request it reads the measured
context from the telemetry publisher (uplink estimate, RTT), asks the ``TFLitePolicy`` for
an (exit, partition, threshold), runs the request, and records the experience (context,
action, reward, latency) that the edge's online agent learns from.

``PolicyReceiver`` subscribes to the retained policy topic (``{prefix}/policy/{bundle_id}``)
and checks each message: size bound, Ed25519 signature by a trusted key, format, bundle,
actions, and a version newer than the current one (so an old signed policy cannot be
replayed). A good policy waits in the ``PolicySlot`` and is swapped in between requests;
anything else is logged, counted and reported in the next experience records, and the
device keeps its policy.

No TensorFlow: numpy, paho-mqtt, a TFLite interpreter and ``cryptography``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypedDict, Unpack

import numpy as np

from ..agents.cost import energy_mj as energy_model_mj
from ..agents.cost import measured_energy_mj
from ..agents.tflite_policy import TFLitePolicy
from ..errors import PolicyError, TfliteEdgeError
from ..transport.mqtt import SubscribingClient, device_connection
from ..transport.protocol import DEFAULT_PREFIX
from .context import POWER_SUPPLY_ROOT, ContextSubscriber, EdgeLoadTracker, PowerBudget, measured_device_speed
from .plan import ExitRule, Plan
from .result import InferenceResult

if TYPE_CHECKING:
    import paho.mqtt.client as paho
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from paho.mqtt.properties import Properties
    from paho.mqtt.reasoncodes import ReasonCode

    from ..bundle.manifest import Manifest
    from ..security.floors import VersionFloors
    from ..telemetry.homeassistant import HomeAssistant
    from ..telemetry.publisher import TelemetryPublisher
    from .runtime import DeviceRuntime

__all__ = [
    "LiveContext",
    "PolicyReceiver",
    "PolicyRunner",
    "PolicySlot",
    "RunnerOptions",
    "attached_telemetry",
    "policy_session",
]

log = logging.getLogger(__name__)


class PolicySlot:
    """The device's current policy and a newer one waiting to be swapped in between requests.

    The receiver's network thread calls ``offer``; the request loop calls ``current``, which
    performs the swap, so a request always runs start to end with one policy. With
    ``floors`` (a ``VersionFloors`` state file) and ``floor_key`` (the bundle id), the
    highest accepted version survives restarts: an older one is refused even by a freshly
    started device.
    """

    def __init__(self, policy: TFLitePolicy | None, version: int = 0, *, floors: VersionFloors | None = None,
                 floor_key: str = "") -> None:
        self._lock = threading.Lock()
        self._floors, self._floor_key = floors, floor_key
        self._policy, self._version = policy, version
        self._pending: tuple[TFLitePolicy, int] | None = None
        self.swaps = 0
        self.rejected = 0
        self.last_rejection: str | None = None

    @property
    def version(self) -> int:
        """The version in use (0: the policy loaded from a local directory)."""
        with self._lock:
            return self._version

    def newest_version(self) -> int:
        with self._lock:
            return self._pending[1] if self._pending is not None else self._version

    def offer(self, policy: TFLitePolicy, version: int) -> None:
        """Queue ``policy`` for the next request; ``PolicyError`` unless it is newer than what the slot holds."""
        with self._lock:
            newest = self._pending[1] if self._pending is not None else self._version
            if version <= newest:
                raise PolicyError(f"policy version {version} is not newer than version {newest}: ignored "
                                  "(a replayed or out-of-order update)")
            if self._floors is not None:
                self._floors.check("policy", self._floor_key, version, f"policy version {version}")
                self._floors.raise_to("policy", self._floor_key, version)  # persisted before it can go live
            self._pending = (policy, version)

    def reject(self, reason: str) -> None:
        with self._lock:
            self.rejected += 1
            self.last_rejection = reason

    def current(self) -> tuple[TFLitePolicy, int]:
        """The policy for the next request (swapping in a pending one first) and its version."""
        with self._lock:
            if self._pending is not None:
                (self._policy, self._version), self._pending = self._pending, None
                self.swaps += 1
                log.info("policy version %d is live", self._version)
            if self._policy is None:
                raise PolicyError("no policy yet: give a local policy directory or wait for a signed update")
            return self._policy, self._version

    def wait_for_policy(self, timeout_s: float) -> None:
        """Block until a policy is present or queued; ``PolicyError`` after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while True:
            with self._lock:
                if self._policy is not None or self._pending is not None:
                    return
                last = self.last_rejection
            if time.monotonic() >= deadline:
                why = f" (last update rejected: {last})" if last else ""
                raise PolicyError(f"no verified policy arrived within {timeout_s:g} s{why}; publish one with "
                                  "`tflite-edge agent` or give --policy POLICY_DIR")
            time.sleep(0.02)


class PolicyReceiver(SubscribingClient):
    """Subscribes to a policy topic and offers every verified, newer policy to ``slot``.

    ``on_update(version)`` / ``on_reject(reason)`` are called on the network thread.
    """

    def __init__(
        self,
        broker_url: str,
        topic: str,
        public_keys: Ed25519PublicKey | Sequence[Ed25519PublicKey],
        slot: PolicySlot,
        manifest: Manifest,
        *,
        client_id: str | None = None,
        device_id: str | None = None,
        backend: str | None = None,
        connect_timeout_s: float = 10.0,
        on_update: Callable[[int], None] | None = None,
        on_reject: Callable[[str], None] | None = None,
    ) -> None:
        from ..security.signing import trusted_keys

        self.topic = topic
        self.public_keys = trusted_keys(public_keys)
        self.slot = slot
        self.manifest = manifest
        self.backend = backend
        self.on_update = on_update
        self.on_reject = on_reject
        if (client_id is None) == (device_id is None):
            raise PolicyError("give the policy receiver a device_id (its connection is the device's) or a client_id")
        self.received = 0
        if device_id is not None:
            super().__init__(*device_connection(broker_url, device_id, "policy"), connect_timeout_s)
        else:
            assert client_id is not None
            super().__init__(broker_url, client_id, connect_timeout_s)

    def _configure(self, client: paho.Client) -> None:
        client.on_connect = self._on_connect
        client.on_message = self._on_message

    def _on_connect(self, client: paho.Client, userdata: Any, flags: paho.ConnectFlags, reason_code: ReasonCode,
                    properties: Properties | None) -> None:
        if not reason_code.is_failure:
            client.subscribe(self.topic, qos=1)

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        self.received += 1
        self.handle(bytes(message.payload))

    def handle(self, payload: bytes) -> bool:
        """Check one policy message and offer it to the slot; True when accepted."""
        from ..agents.policy_message import load_policy_message

        if not payload:  # an empty retained message clears the topic: nothing to load
            return False
        try:
            policy, version = load_policy_message(payload, self.public_keys, manifest=self.manifest,
                                                  backend=self.backend)
            self.slot.offer(policy, version)
        except TfliteEdgeError as e:
            reason = f"{type(e).__name__}: {e}"
            log.warning("policy update on %s rejected, keeping version %d: %s", self.topic,
                        self.slot.version, reason)
            self.slot.reject(reason)
            if self.on_reject is not None:
                self.on_reject(reason)
            return False
        log.info("policy version %d received on %s (verified); swapping in before the next request",
                 version, self.topic)
        if self.on_update is not None:
            self.on_update(version)
        return True


@dataclass(frozen=True)
class LiveContext:
    """What the policy decides on for one request (the features' raw inputs)."""

    throughput_mbps: float
    throughput_std_mbps: float
    rtt_ms: float
    deadline_ms: float
    power_budget_mw: float
    device_speed: float
    edge_load: float

    def as_dict(self) -> dict[str, float]:
        return {k: float(getattr(self, k)) for k in self.__dataclass_fields__}


class RunnerOptions(TypedDict, total=False):
    """``PolicyRunner``'s optional keywords (what ``policy_session`` passes on)."""

    device_speed: float
    edge_load: float
    prior_uplink_mbps: float
    prior_rtt_ms: float
    probe_every: int
    std_window: int


class PolicyRunner:
    """Runs requests on ``runtime`` with the policy in ``slot``, deciding from measured features.

    Before every decision :meth:`context` measures (see docs/policy.md, "what the policy sees"):

    * the uplink and RTT from ``telemetry.context()``; until the first transfer has been
      measured they are ``prior_uplink_mbps`` and ``prior_rtt_ms``;
    * the device speed from the runtime's measured segment times against the policy's
      nominal ones (:func:`.context.measured_device_speed`); ``device_speed`` until the
      runtime has measured a segment, or for a policy that does not record them;
    * the edge load from ``edge_load_tracker`` (workers' reports, ignored once older than
      its ``stale_after_s``); ``edge_load`` when there is no fresh report;
    * the power budget from ``budget`` (operator topic, configured value, battery);
      ``power_budget_mw`` when no ``budget`` is given.

    After each request :attr:`measurements` holds what was measured for it, as numbers
    (``*_measured`` flags are 1 for a measurement, 0 for a prior or estimate; ``power_mw``
    is the telemetry's latest power reading, ``power_measured`` 1 only for a real sensor),
    and the experience record carries them next to the context. The reward's energy is
    the measured power × the request's duration when a real sensor measures the device,
    else the cost model's estimate (:func:`tflite_edge.agents.cost.energy_mj`).

    A policy that keeps answering locally would leave the uplink estimate stale, so after
    ``probe_every`` requests without an offload one request offloads the fewest bytes (the
    most accurate such action) to measure the link.
    """

    def __init__(
        self,
        runtime: DeviceRuntime,
        slot: PolicySlot,
        telemetry: TelemetryPublisher | None,
        *,
        deadline_ms: float,
        power_budget_mw: float = 2000.0,
        device_speed: float = 1.0,
        edge_load: float = 0.0,
        prior_uplink_mbps: float = 1.0,
        prior_rtt_ms: float = 50.0,
        probe_every: int = 25,
        std_window: int = 10,
        edge_load_tracker: EdgeLoadTracker | None = None,
        budget: PowerBudget | None = None,
    ) -> None:
        if not deadline_ms > 0 or not math.isfinite(deadline_ms):
            raise PolicyError(f"a policy needs a positive deadline, got {deadline_ms} ms")
        self.runtime = runtime
        self.slot = slot
        self.telemetry = telemetry
        self.deadline_ms = deadline_ms
        self.power_budget_mw = power_budget_mw
        self.device_speed = device_speed
        self.edge_load = edge_load
        self.edge_load_tracker = edge_load_tracker
        self.budget = budget
        self.prior_uplink_mbps = prior_uplink_mbps
        self.prior_rtt_ms = prior_rtt_ms
        self.probe_every = probe_every
        self.measurements: dict[str, float | None] = {}
        self._estimates: deque[float] = deque(maxlen=std_window)
        self._since_offload = 0
        self._last_estimate: float | None = None
        self._reported_rejections = 0
        # An offload that timed out bounds the uplink from above (its bytes did not get through
        # in the time waited); the telemetry estimate only learns from transfers that finished.
        self._timeout_bound_mbps: float | None = None
        policy, _ = slot.current()
        if policy.bundle_id != runtime.manifest.bundle_id:
            raise PolicyError(f"the policy was trained for bundle {policy.bundle_id!r}, the device runs "
                              f"{runtime.manifest.bundle_id!r}; train one for this bundle")

    def measured_device_speed(self, policy: TFLitePolicy) -> float | None:
        """The device's speed relative to what ``policy`` was trained for; None when not measurable."""
        measured = getattr(self.runtime, "segment_ms", None)
        if not measured:
            return None
        return measured_device_speed(policy.planning_model.device_segment_ms, measured)

    def context(self) -> LiveContext:
        """The measured context now (priors where nothing has been measured yet); see the class docstring."""
        measured = self.telemetry.context() if self.telemetry is not None else {}
        uplink = measured.get("uplink_mbps")
        if uplink is not None and uplink != self._last_estimate:
            self._estimates.append(uplink)
            self._last_estimate = uplink
            self._timeout_bound_mbps = None  # a fresh measurement supersedes the bound
        if self._timeout_bound_mbps is not None:
            uplink = min(uplink if uplink is not None else math.inf, self._timeout_bound_mbps)
        rtt = measured.get("rtt_ms")
        std = float(np.std(self._estimates)) if len(self._estimates) > 1 else 0.0
        policy, _ = self.slot.current()
        speed = self.measured_device_speed(policy)
        load, load_age_s = self.edge_load_tracker.load() if self.edge_load_tracker is not None else (None, None)
        budget, budget_source = (self.budget.current() if self.budget is not None
                                 else (self.power_budget_mw, "configured"))
        sensor = getattr(self.telemetry, "power_sensor", None)
        power_mw = measured.get("power_mw")
        self.measurements = {
            "device_speed_measured": float(speed is not None),
            "edge_load_measured": float(load is not None),
            "edge_load_age_s": load_age_s,
            "power_mw": power_mw,
            "power_measured": float(power_mw is not None and sensor is not None
                                    and not getattr(sensor, "estimated", True)),
            "power_budget_operator": float(budget_source.startswith("operator")),
            "power_budget_battery": float(budget_source.endswith("+battery")),
        }
        return LiveContext(
            throughput_mbps=uplink if uplink is not None else self.prior_uplink_mbps,
            throughput_std_mbps=std, rtt_ms=rtt if rtt is not None else self.prior_rtt_ms,
            deadline_ms=self.deadline_ms, power_budget_mw=budget,
            device_speed=speed if speed is not None else self.device_speed,
            edge_load=load if load is not None else self.edge_load,
        )

    def decide(self, policy: TFLitePolicy, context: LiveContext) -> tuple[int, bool]:
        """The action index for ``context`` and whether it is a link probe."""
        action = policy.act(**context.as_dict())
        index = policy.actions.index(action)
        probe = policy.planning_model.probe_action()
        if self._since_offload >= self.probe_every and not policy.planning_model.offloaded[index] and probe is not None:
            return probe, True
        return index, False

    def plan_for(self, policy: TFLitePolicy, index: int) -> Plan:
        manifest = self.runtime.manifest
        action = policy.actions[index]
        target = manifest.exits[action.exit]
        thresholds = {} if action.threshold is None else {
            e.name: action.threshold for e in manifest.exits if e.segment <= target.segment and e.name != target.name
        }
        return Plan(exit=target.name, partition=action.partition, deadline_ms=self.deadline_ms,
                    rule=ExitRule(thresholds))

    def run(self, x: np.ndarray, *, label: int | None = None) -> InferenceResult:
        """Decide, run one request and record its experience. ``label`` (when known) makes the
        reward the request's correctness; otherwise the answering exit's validation accuracy."""
        policy, version = self.slot.current()
        context = self.context()
        index, probe = self.decide(policy, context)
        # A probe keeps the deadline: on a poor link it times out, falls back locally in time,
        # and the timeout still bounds the uplink estimate (see context()).
        result = self.runtime.run(x, self.plan_for(policy, index))
        offloaded = bool(policy.planning_model.offloaded[index])
        self._since_offload = 0 if (result.offloaded or offloaded) else self._since_offload + 1
        if offloaded and result.fell_back and result.request_bytes > 0:
            waited_ms = result.total_ms - result.device_ms
            if waited_ms > 0:
                self._timeout_bound_mbps = result.request_bytes * 8 / 1e3 / waited_ms
        self._record(policy, version, index, probe, context, result, label)
        return result

    def reward(self, policy: TFLitePolicy, result: InferenceResult, context: LiveContext,
               label: int | None) -> tuple[float, float]:
        """(reward under the policy's objective, energy in mJ) of a finished request: measured
        power × duration with a real power sensor, else the cost model's estimate."""
        manifest = self.runtime.manifest
        accuracy = manifest.exit(result.exit).accuracy
        accuracy = float(accuracy) if accuracy is not None else 0.0
        correct = float(result.top1_class == label) if label is not None else accuracy
        plan = policy.planning_model
        power_mw = self.measurements.get("power_mw")
        if self.measurements.get("power_measured") and power_mw is not None:
            energy_mj = float(measured_energy_mj(power_mw, result.total_ms))
        else:
            energy_mj = float(energy_model_mj(
                device_ms=result.device_ms, megabits=result.request_bytes * 8e-6,
                transmit_ms=result.transfer_ms if result.request_bytes else 0.0,
                device_power_mw=plan.device_power_mw, radio_alpha_mw_per_mbps=plan.radio_alpha_mw_per_mbps,
                radio_beta_mw=plan.radio_beta_mw,
            ))
        value = policy.objective.reward(
            latency_ms=np.array(result.total_ms), energy_mj=np.array(energy_mj), correct=np.array(correct),
            exit_accuracy=np.array(accuracy), deadline_ms=self.deadline_ms,
            energy_budget_mj=context.power_budget_mw * self.deadline_ms / 1000.0,
        )
        return float(value), energy_mj

    def _record(self, policy: TFLitePolicy, version: int, index: int, probe: bool, context: LiveContext,
                result: InferenceResult, label: int | None) -> None:
        if self.telemetry is None:
            return
        reward, energy_mj = self.reward(policy, result, context, label)
        action = policy.actions[index]
        extra = dict(self.measurements)
        rejected = self.slot.rejected
        if rejected != self._reported_rejections:
            # Rejected updates travel with the next record, so the agent's operator sees them.
            extra["policy_rejections"] = float(rejected - self._reported_rejections)
            self._reported_rejections = rejected
        try:
            self.telemetry.record_experience(
                context={**context.as_dict(), **extra},
                action={"index": index, "label": policy.labels[index],
                        "exit": self.runtime.manifest.exits[action.exit].name, "partition": action.partition,
                        "policy_version": version, "probe": int(probe),
                        **({} if action.threshold is None else {"threshold": action.threshold})},
                reward=reward, latency_ms=result.total_ms, deadline_ms=self.deadline_ms,
                deadline_met=result.total_ms <= self.deadline_ms, energy_mj=energy_mj, request_id=result.request_id,
            )
        except TfliteEdgeError:  # experience is telemetry: never fail the request for it
            log.exception("experience for request %s not recorded", result.request_id)

    def run_many(self, xs: Sequence[np.ndarray] | np.ndarray, labels: Sequence[int] | None = None,
                 *, interval_ms: float = 0.0) -> Iterator[InferenceResult]:
        """``run`` for each sample in order, starting one every ``interval_ms`` (0: back to back)."""
        start = time.monotonic()
        for i, x in enumerate(xs):
            if interval_ms > 0:
                time.sleep(max(0.0, start + i * interval_ms / 1e3 - time.monotonic()))
            yield self.run(x, label=None if labels is None else int(labels[i]))


@contextlib.contextmanager
def attached_telemetry(runtime: DeviceRuntime, broker_url: str, *, prefix: str, period_s: float = 5.0,
                       connect_timeout_s: float = 10.0, require_broker: bool = True,
                       homeassistant: HomeAssistant | None = None) -> Iterator[TelemetryPublisher]:
    """A ``TelemetryPublisher`` for ``runtime``'s device, attached to its results, stopped on exit.

    ``require_broker=False`` starts even when the broker is down: the client keeps connecting
    in the background, and telemetry is published once it is up (experience waits in the
    publisher's bounded queue). ``homeassistant`` is passed on to the publisher.
    """
    from ..telemetry import TelemetryPublisher

    client = None
    if require_broker:
        telemetry = TelemetryPublisher(runtime.device_id, broker_url=broker_url, prefix=prefix, period_s=period_s,
                                       connect_timeout_s=connect_timeout_s, homeassistant=homeassistant)
    else:
        from ..telemetry.publisher import status_will
        from ..transport.mqtt import device_connection, make_client

        client = make_client(*device_connection(broker_url, runtime.device_id, "telemetry"),
                             will=status_will(runtime.device_id, prefix))
        client.loop_start()
        telemetry = TelemetryPublisher(runtime.device_id, client=client, prefix=prefix, period_s=period_s,
                                       homeassistant=homeassistant)
    telemetry.start()
    try:
        telemetry.attach(runtime)
        yield telemetry
    finally:
        telemetry.stop()
        if client is not None:
            client.disconnect()
            client.loop_stop()


@contextlib.contextmanager
def policy_session(
    runtime: DeviceRuntime,
    *,
    broker_url: str,
    deadline_ms: float,
    policy_dir: str | None = None,
    prefix: str = DEFAULT_PREFIX,
    policy_topic: str | None = None,
    public_key_paths: Sequence[str] = (),
    backend: str | None = None,
    telemetry_period_s: float = 5.0,
    connect_timeout_s: float = 10.0,
    require_broker: bool = True,
    power_budget_mw: float = 2000.0,
    edge_load_stale_s: float = 5.0,
    battery_root: str | None = str(POWER_SUPPLY_ROOT),
    state_file: str | None = None,
    homeassistant: HomeAssistant | None = None,
    **runner_options: Unpack[RunnerOptions],
) -> Iterator[PolicyRunner]:
    """Everything a device needs to decide with a policy: telemetry (the context and the
    experience), the policy (from ``policy_dir``, or the first signed update), and, with
    ``policy_topic``, a receiver that verifies updates against ``public_key_paths``.

    ``policy_topic=""`` means the default topic ``{prefix}/policy/{bundle_id}``. With
    ``require_broker=False`` (and a local policy) the device starts while the broker is down
    and decides from the priors until measurements arrive. ``state_file`` keeps the highest
    accepted policy version across restarts (``security.floors``).

    The runner measures the edge's load from the workers' reports on
    ``{prefix}/edge/+/load`` (ignored after ``edge_load_stale_s``) and takes its power budget
    from ``power_budget_mw``, the retained operator topic ``{prefix}/dev/{device_id}/budget``
    and the battery under ``battery_root`` (None: ignore batteries).
    """
    from ..agents.policy_message import policy_topic as default_topic

    if policy_dir is None and policy_topic is None:
        raise PolicyError("give a policy directory, a policy topic, or both")
    if policy_topic is not None and not public_key_paths:
        raise PolicyError("a policy topic needs the signer's public key (--public-key PUB.pem): "
                          "devices take only signed policies")
    floors = None
    if state_file is not None:
        from ..security.floors import VersionFloors

        floors = VersionFloors(state_file)
    slot = PolicySlot(TFLitePolicy(policy_dir, backend=backend) if policy_dir is not None else None,
                      floors=floors, floor_key=runtime.manifest.bundle_id)
    with contextlib.ExitStack() as stack:
        telemetry = stack.enter_context(attached_telemetry(
            runtime, broker_url, prefix=prefix, period_s=telemetry_period_s, connect_timeout_s=connect_timeout_s,
            require_broker=require_broker, homeassistant=homeassistant))
        telemetry.policy_version = lambda: slot.version
        if policy_topic is not None:
            from ..security.signing import load_public_keys

            topic = policy_topic or default_topic(prefix, runtime.manifest.bundle_id)
            receiver = PolicyReceiver(broker_url, topic, load_public_keys(public_key_paths), slot, runtime.manifest,
                                      device_id=runtime.device_id, backend=backend,
                                      connect_timeout_s=connect_timeout_s)
            receiver.start(require_broker=require_broker)
            stack.callback(receiver.stop)
            if policy_dir is None:
                slot.wait_for_policy(connect_timeout_s)
        tracker = EdgeLoadTracker(stale_after_s=edge_load_stale_s)
        budget = PowerBudget(power_budget_mw, battery_root=battery_root)
        subscriber = ContextSubscriber(broker_url, device_id=runtime.device_id, prefix=prefix, edge_load=tracker,
                                       budget=budget, connect_timeout_s=connect_timeout_s)
        subscriber.start(require_broker=require_broker)
        stack.callback(subscriber.stop)
        yield PolicyRunner(runtime, slot, telemetry, deadline_ms=deadline_ms, power_budget_mw=power_budget_mw,
                           edge_load_tracker=tracker, budget=budget, **runner_options)
