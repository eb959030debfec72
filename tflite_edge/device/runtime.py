"""The device runtime: run the head of a bundle, exit early or offload the tail, never drop a request.

Per request (see ``Plan``): segments [0, K) run locally, checking every exit passed on
the way against the early-exit rule. If the target exit lies beyond K, the activation at
the cut is sent to the edge; the device waits until the deadline minus the time it needs
to answer on its own. On timeout, an edge error or a missing broker it finishes locally,
at the deepest exit its measured segment latencies say it can still afford (or the last
exit it already computed), and marks the result ``fell_back``.

The device does not offload at all while no edge worker serving its bundle is online (the
workers' retained presence) or while its circuit breaker is open after consecutive
timeouts (``device.breaker``); both are logged once when they begin and end.

Imports neither TensorFlow nor anything heavier than numpy, paho-mqtt and a TFLite
interpreter, so it runs on tflite-runtime with numpy<2.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Unpack

import numpy as np

from ..bundle import Bundle, load_bundle
from ..errors import ErrorCode, InputError, RemoteError, TransportError, WireFormatError
from ..runtime.backends import InterpreterFactory
from ..runtime.chain import BundleRunner, dequantize, softmax_confidence
from ..transport.clock import ClockOffset
from ..transport.link import SYSTEM_CLOCK, Clock, MessageLink
from ..transport.protocol import RequestHeader, remote_error
from ..transport.wire import TensorEncoder, decode_exit_output
from .breaker import CircuitBreaker
from .config import DeviceConfig, DeviceOptions
from .offload import OffloadClient, Reply
from .plan import NO_RULE, ExitRule, Plan, ResolvedPlan, resolve_plan
from .result import InferenceResult, RanOn

if TYPE_CHECKING:  # emulation imports the agents' trace model, which a device does not need
    from .emulation import Emulation

__all__ = ["DeviceRuntime", "ResultHook"]

log = logging.getLogger(__name__)

ResultHook = Callable[[InferenceResult], None]
FALLBACK_MARGIN_MS = 2.0  # slack for scheduling jitter when reserving local compute time
EMA_WEIGHT = 0.2


class DeviceRuntime:
    """Runs requests on a device, offloading to edge workers when the plan says so.

    Settings come as a ``DeviceConfig`` and/or as its flat keywords (``device_id``,
    ``backend``, ``num_threads``, ``delegate``, ``allow_fallback``, ``prefix``, ``codec``,
    ``qos``, ``connect_timeout_s``, ``default_timeout_ms``, ``raise_remote_errors``,
    ``warmup``, ``require_broker``: see ``DeviceOptions``). With ``raise_remote_errors=True``
    an edge's error reply (e.g. ``UnknownBundleError``) is raised instead of falling back.
    ``require_broker=False`` starts even when the broker is down (requests fall back until
    the background connection succeeds); by default an unreachable broker is an error.

    The edge is reached through ``link`` (any ``MessageLink``) or an MQTT link to
    ``broker_url``; with neither the runtime is local-only (any offload falls back at
    once). ``runner`` replaces the segment runner, ``interpreters`` the interpreter
    factory of the default one and ``clock`` the time source (tests pass fakes).
    ``on_result`` is called with every result (for telemetry); exceptions it raises are
    logged and never affect the request.

    Emulation, for measuring partitions on a fast host: ``link_mbps`` wraps the link in an
    ``EmulatedLink`` of that speed in both directions (token buckets). ``emulation``
    (``device.emulation.Emulation``) makes this machine behave like another device: each
    segment lasts the latency of its device profile and offload requests wait for its
    uplink; results include the added time.
    """

    def __init__(
        self,
        bundle: Bundle | str | os.PathLike[str],
        config: DeviceConfig | None = None,
        *,
        broker_url: str | None = None,
        link: MessageLink | None = None,
        runner: BundleRunner | None = None,
        interpreters: InterpreterFactory | None = None,
        on_result: ResultHook | None = None,
        clock: Clock = SYSTEM_CLOCK,
        link_mbps: float | None = None,
        emulation: Emulation | None = None,
        **options: Unpack[DeviceOptions],
    ) -> None:
        self.config = config = DeviceConfig.from_options(config, **options)
        if broker_url is not None and link is not None:
            raise InputError("give a broker URL or a link, not both")
        self.bundle = bundle if isinstance(bundle, Bundle) else load_bundle(Path(bundle))
        self.manifest = self.bundle.manifest
        self.device_id = config.device_id
        self.codec = config.codec
        self.default_timeout_ms = config.default_timeout_ms
        self.on_result = on_result
        self.raise_remote_errors = config.raise_remote_errors
        if runner is None:
            settings = config.interpreter
            runner = BundleRunner(self.bundle, backend=settings.backend, num_threads=settings.num_threads,
                                  delegate=settings.delegate, allow_fallback=settings.allow_fallback,
                                  interpreters=interpreters, kernels=settings.kernels)
        self.runner = runner
        self.emulation = emulation
        # Host time of segment runs (what an emulation stretches), and the time latencies and
        # deadlines are measured in: the emulated device's clock when emulating.
        self._host_now: Callable[[], float] = time.perf_counter if emulation is not None else clock.now
        self._now: Callable[[], float] = emulation.clock if emulation is not None else clock.now
        self.segment_ms = [0.0] * self.manifest.num_segments
        self._lock = threading.Lock()
        self.clock = ClockOffset()  # edge clock minus this clock, from replies; dates requests for the edge
        self._ids = itertools.count()
        self._id_prefix = uuid.uuid4().hex[:8]
        self._exits_by_segment: dict[int, list[str]] = {}
        for spec in self.manifest.exits:
            self._exits_by_segment.setdefault(spec.segment, []).append(spec.name)
        self.offload: OffloadClient | None = None
        self._encoders: dict[int, TensorEncoder] = {}  # the activation at each cut offloaded so far
        self.breaker = CircuitBreaker(clock=clock.now)
        self._no_worker_logged = False
        if config.warmup:
            self.warmup()
        if broker_url is not None:
            from ..transport.mqtt import device_connection
            from ..transport.mqtt_link import MqttLink

            link = MqttLink(*device_connection(broker_url, self.device_id))
        if link is not None:
            uplink = emulation.send_delay_s if emulation is not None and emulation.uplink else None
            if link_mbps is not None or uplink is not None:
                from .link import EmulatedLink

                link = (EmulatedLink.at_rate(link, link_mbps, uplink_delay_s=uplink, clock=clock)
                        if link_mbps is not None else EmulatedLink(link, uplink_delay_s=uplink, clock=clock))
            self.offload = OffloadClient(link, self.device_id, config.offload, clock=clock)

    # -- lifecycle -------------------------------------------------------------------
    def warmup(self, rounds: int = 2) -> list[float]:
        """Load every segment and measure its latency on a neutral input; returns ``segment_ms``."""
        x = np.zeros(self.manifest.input.shape, dtype=np.float32)
        for _ in range(rounds):
            seen = {self.manifest.input.name: self.runner.quantize_input(x)}
            for index in range(self.manifest.num_segments):
                start = self._host_now()
                seen.update(self.runner.run_segment(index, seen))
                host_ms = (self._host_now() - start) * 1e3
                # Estimated at the emulated speed without sleeping through the warm-up.
                self.segment_ms[index] = host_ms if self.emulation is None else self.emulation.target_ms(index, host_ms)
        return list(self.segment_ms)

    def close(self) -> None:
        if self.offload is not None:
            self.offload.close()
            self.offload = None

    def __enter__(self) -> DeviceRuntime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- requests --------------------------------------------------------------------
    def infer(
        self,
        x: np.ndarray,
        *,
        exit: str | None = None,
        partition: int | None = None,
        deadline_ms: float | None = None,
        rule: ExitRule | None = None,
        request_id: str | None = None,
    ) -> InferenceResult:
        """Run one sample under a plan given by keywords (see ``run``)."""
        return self.run(x, Plan(exit, partition, deadline_ms, rule or NO_RULE), request_id=request_id)

    def run_many(self, xs: Iterable[np.ndarray], plan: Plan) -> Iterator[InferenceResult]:
        """``run`` for each sample, in order."""
        for x in xs:
            yield self.run(x, plan)

    def run(self, x: np.ndarray, plan: Plan, *, request_id: str | None = None) -> InferenceResult:
        """Answer one request for sample ``x`` following ``plan``. Always returns a result."""
        resolved = resolve_plan(self.manifest, plan)
        rid = request_id or f"{self._id_prefix}-{next(self._ids)}"
        with self._lock:
            result = self._run(x, resolved, rid)
        if self.on_result is not None:
            try:
                self.on_result(result)
            except Exception:  # telemetry must never break inference
                log.exception("on_result hook failed for request %s", rid)
        return result

    def _run(self, x: np.ndarray, plan: ResolvedPlan, rid: str) -> InferenceResult:
        t0 = self._now()
        seen = {self.manifest.input.name: self.runner.quantize_input(x)}
        device_ms = 0.0
        last_exit: str | None = None
        fused = self._runs_fused(plan)
        if fused:
            device_ms = self._run_fused(plan.local_stop, seen)
        for index in range(plan.local_stop):
            if not fused:
                device_ms += self._run_segment(index, seen)
            for name in self._exits_by_segment.get(index, ()):
                if name == plan.exit:
                    return self._finish(rid, plan, name, seen, t0, device_ms, ran_on=RanOn.DEVICE)
                if self._exit_before_target(name, plan):
                    last_exit = name
                    if plan.rule and plan.rule.confident(name, self.runner.exit_probabilities(seen, name)):
                        return self._finish(rid, plan, name, seen, t0, device_ms, ran_on=RanOn.DEVICE, early=True)
        # The target exit lies beyond the partition: offload the tail.
        return self._offload(rid, plan, seen, t0, device_ms, last_exit)

    def _exit_before_target(self, name: str, plan: ResolvedPlan) -> bool:
        return self.manifest.exit(name).segment <= plan.exit_segment and name != plan.exit

    def _runs_fused(self, plan: ResolvedPlan) -> bool:
        # One interpreter for the local head when nothing needs checking between its
        # segments (no early-exit rule) and no emulation stretches segments one by one.
        return not plan.rule and self.emulation is None and self.runner.has_fused(0, plan.local_stop)

    def _run_fused(self, stop: int, seen: dict[str, np.ndarray]) -> float:
        """Run segments [0, stop) as one fused interpreter; returns the time in ms."""
        start = self._host_now()
        seen.update(self.runner.run(seen, start=0, stop=stop))
        elapsed_ms = (self._host_now() - start) * 1e3
        # The fallback budget needs per-segment times: share the measurement out in
        # proportion to the current estimates (equal shares before any).
        estimates = self.segment_ms[:stop]
        total = sum(estimates)
        for index in range(stop):
            share = estimates[index] / total if total > 0 else 1.0 / stop
            self.segment_ms[index] += EMA_WEIGHT * (elapsed_ms * share - self.segment_ms[index])
        return elapsed_ms

    def _run_segment(self, index: int, seen: dict[str, np.ndarray]) -> float:
        start = self._host_now()
        seen.update(self.runner.run_segment(index, seen))
        if self.emulation is not None:  # waits until the emulated device would have finished
            elapsed_s = self.emulation.finish_segment(index, start)
        else:
            elapsed_s = self._host_now() - start
        elapsed_ms = elapsed_s * 1e3
        # Moving average: the fallback budget follows the device's current speed.
        self.segment_ms[index] += EMA_WEIGHT * (elapsed_ms - self.segment_ms[index])
        return elapsed_ms

    def _offload(
        self, rid: str, plan: ResolvedPlan, seen: dict[str, np.ndarray], t0: float, device_ms: float,
        last_exit: str | None,
    ) -> InferenceResult:
        k = plan.partition
        spec = self.manifest.segments[k].inputs[0]
        budget_ms = plan.deadline_ms if plan.deadline_ms is not None else self.default_timeout_ms
        reserve_ms = self.fallback_reserve_ms(k)
        error: str | None = None
        request_bytes = 0
        if self.offload is None:
            error = "no broker configured: the device answered locally"
        elif (paused := self._offload_paused()) is not None:
            error = paused
        else:
            t_send = self._now()
            wall_send = time.time()
            frame = self._encoder(k).encode(seen[spec.name])
            request_bytes = len(frame)
            elapsed_ms = (t_send - t0) * 1e3
            timeout_s = max(budget_ms - elapsed_ms - reserve_ms, 0.0) / 1e3
            header = RequestHeader(rid, plan.exit, thresholds=plan.rule.thresholds, threshold_kind=plan.rule.kind,
                                   deadline_us=self.clock.edge_deadline_us(wall_send + timeout_s))
            reply: Reply | None = None
            if timeout_s <= 0:
                # Nothing could come back in time: do not load the edge with it.
                error = f"the deadline leaves no time to offload ({budget_ms - elapsed_ms:.1f} ms left)"
                request_bytes = 0
                self.breaker.release_probe()
            else:
                try:
                    reply = self.offload.request(self.manifest.bundle_id, frame, header, timeout_s=timeout_s,
                                                 deadline_ms=plan.deadline_ms)
                except TransportError as e:
                    error = str(e)
                    self.breaker.release_probe()
            if reply is None and error is None:
                error = f"no reply from the edge within {timeout_s * 1e3:.1f} ms"
                self._record_timeout()
            elif reply is not None and self.breaker.record_success():
                log.warning("the edge answers again: offloading resumes")
            if reply is not None and not reply.header.ok:
                remote = remote_error(reply.header.code, reply.header.message)
                if self.raise_remote_errors:
                    raise remote
                error = str(remote)
            elif reply is not None:
                if reply.header.rx_us is not None:
                    self.clock.add(wall_send, wall_send + (reply.received_at - t_send), reply.header.rx_us / 1e6,
                                   reply.header.edge_us / 1e6)
                try:
                    return self._edge_result(rid, plan, reply, t0, t_send, device_ms, request_bytes)
                except (WireFormatError, RemoteError) as e:
                    error = f"the edge's reply is unusable: {e}"
        log.info("request %s falls back locally: %s", rid, error)
        return self._fallback(rid, plan, seen, t0, device_ms, last_exit, error, request_bytes)

    def _encoder(self, partition: int) -> TensorEncoder:
        encoder = self._encoders.get(partition)
        if encoder is None:
            spec = self.manifest.segments[partition].inputs[0]
            encoder = self._encoders[partition] = TensorEncoder(spec, bundle_id=self.manifest.bundle_id,
                                                                segment=partition, codec=self.codec)
        return encoder

    def _offload_paused(self) -> str | None:
        """Why this request is not offloaded at all (no worker online, breaker open), or None."""
        assert self.offload is not None
        if not self.offload.connected:
            return None  # the request fails at once and says so
        bundle_id = self.manifest.bundle_id
        if self.offload.workers_online(bundle_id) == 0:
            if not self._no_worker_logged:
                log.warning("no edge worker serving bundle %s is online: answering locally until one is", bundle_id)
                self._no_worker_logged = True
            return f"no edge worker serving bundle {bundle_id} is online"
        if self._no_worker_logged:
            log.warning("an edge worker serving bundle %s is online: offloading resumes", bundle_id)
            self._no_worker_logged = False
            self.breaker.reset()
        if not self.breaker.allow():
            return (f"offloading paused after {self.breaker.failures} timeouts in a row "
                    f"(next try in {self.breaker.retry_in_s():.1f} s)")
        return None

    def _record_timeout(self) -> None:
        if self.breaker.record_timeout():
            log.warning("%d offloads in a row got no reply in time: answering locally, trying the edge again "
                        "after %.0f s (then backing off up to %.0f s)", self.breaker.failures,
                        self.breaker.backoff_s, self.breaker.config.max_backoff_s)

    def _edge_result(
        self, rid: str, plan: ResolvedPlan, reply: Reply, t0: float, t_send: float, device_ms: float,
        request_bytes: int,
    ) -> InferenceResult:
        # The reply frame's tensor is the exit that answered (the target, or an earlier one
        # whose threshold fired on the edge).
        header, raw = decode_exit_output(reply.payload, self.manifest)
        # The transfer ends with the reply's frame decoded; turning the exit's output into
        # probabilities is the exit's work, as it is for an exit computed here.
        decoded = self._now()
        exit_name = header.tensor
        exit_spec = self.manifest.exit(exit_name)
        if exit_spec.segment < plan.partition or exit_spec.segment > plan.exit_segment:
            raise RemoteError(f"the edge answered with exit {exit_name!r}, outside the plan", ErrorCode.BAD_REPLY)
        probabilities = dequantize(raw, self.manifest.segments[exit_spec.segment].output(exit_name))[0]
        edge_ms = reply.header.edge_us / 1e3
        round_trip_ms = (decoded - t_send) * 1e3
        return self._result(
            rid, plan, exit_name, probabilities, t0, device_ms,
            transfer_ms=max(round_trip_ms - edge_ms, 0.0), edge_ms=edge_ms,
            ran_on=RanOn.EDGE if plan.partition == 0 else RanOn.SPLIT,
            early=exit_name != plan.exit, request_bytes=request_bytes, reply_bytes=len(reply.payload),
        )

    def _fallback(
        self, rid: str, plan: ResolvedPlan, seen: dict[str, np.ndarray], t0: float, device_ms: float,
        last_exit: str | None, error: str | None, request_bytes: int,
    ) -> InferenceResult:
        k = plan.partition
        budget_ms = plan.deadline_ms if plan.deadline_ms is not None else self.default_timeout_ms
        remaining_ms = budget_ms - (self._now() - t0) * 1e3
        candidates = [e for e in self.manifest.exits if k <= e.segment <= plan.exit_segment]
        # Deepest exit whose remaining segments fit in the time left; else the last exit
        # already computed; else the first exit after the cut, late but answered.
        chosen = next((e.name for e in reversed(candidates) if self._cost_ms(k, e.name) <= remaining_ms), None)
        if chosen is None:
            chosen = last_exit if last_exit is not None else candidates[0].name
        stop = self.manifest.exit(chosen).segment + 1
        for index in range(k, stop):
            device_ms += self._run_segment(index, seen)
            for name in self._exits_by_segment.get(index, ()):
                if (name != chosen and self._exit_before_target(name, plan) and plan.rule
                        and plan.rule.confident(name, self.runner.exit_probabilities(seen, name))):
                    return self._finish(rid, plan, name, seen, t0, device_ms, ran_on=RanOn.DEVICE, early=True,
                                        fell_back=True, error=error, request_bytes=request_bytes)
        return self._finish(rid, plan, chosen, seen, t0, device_ms, ran_on=RanOn.DEVICE, fell_back=True, error=error,
                            request_bytes=request_bytes)

    def fallback_reserve_ms(self, partition: int) -> float:
        """Time an offload at ``partition`` keeps back to answer locally if the edge is late.

        The margin alone when an exit lies before the partition (it is computed before the
        offload, and waiting the whole deadline would answer late), else also the measured
        time of the segments up to the first exit after the partition. Planners that want to
        predict whether an offload can be on time should add it to the offload's latency.
        """
        if any(e.segment < partition for e in self.manifest.exits):
            return FALLBACK_MARGIN_MS
        return FALLBACK_MARGIN_MS + self._cost_ms(partition, self._first_exit_from(partition))

    def _first_exit_from(self, k: int) -> str:
        return next(e.name for e in self.manifest.exits if e.segment >= k)

    def _cost_ms(self, k: int, exit_name: str) -> float:
        """Estimated local time to run segments [k, exit's segment]."""
        return sum(self.segment_ms[k:self.manifest.exit(exit_name).segment + 1])

    def _finish(
        self, rid: str, plan: ResolvedPlan, exit_name: str, seen: dict[str, np.ndarray], t0: float,
        device_ms: float, *, ran_on: RanOn, early: bool = False, fell_back: bool = False,
        error: str | None = None, request_bytes: int = 0,
    ) -> InferenceResult:
        probabilities = self.runner.exit_probabilities(seen, exit_name)
        return self._result(rid, plan, exit_name, probabilities, t0, device_ms, transfer_ms=0.0, edge_ms=0.0,
                            ran_on=ran_on, early=early, fell_back=fell_back, error=error,
                            request_bytes=request_bytes)

    def _result(
        self, rid: str, plan: ResolvedPlan, exit_name: str, probabilities: np.ndarray, t0: float,
        device_ms: float, *, transfer_ms: float, edge_ms: float, ran_on: RanOn, early: bool = False,
        fell_back: bool = False, error: str | None = None, request_bytes: int = 0, reply_bytes: int = 0,
    ) -> InferenceResult:
        top, score = softmax_confidence(probabilities)
        return InferenceResult(
            request_id=rid, exit=exit_name, partition=plan.partition, top1_class=top,
            top1_score=score, device_ms=device_ms, transfer_ms=transfer_ms, edge_ms=edge_ms,
            total_ms=(self._now() - t0) * 1e3,
            ran_on=ran_on, fell_back=fell_back, early_exit=early, error=error,
            request_bytes=request_bytes, reply_bytes=reply_bytes, codec=self.codec,
            deadline_ms=plan.deadline_ms, probabilities=probabilities,
        )
