"""Answering one co-inference request: frame in, exit output frame (or a typed error) out.

No MQTT here: ``EdgeHandler.handle`` takes the request's bundle id, payload and user
properties and returns the reply payload and header, so it is tested without a broker.
Besides the loaded interpreters it keeps only a running estimate of the compute time per
(bundle, first segment, exit), used to shed requests that cannot be answered before their
deadline.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from ..bundle import Bundle, Manifest
from ..device.plan import NO_RULE, ExitRule
from ..errors import InputError, ProtocolError, TfliteEdgeError, WireFormatError
from ..runtime.chain import BundleRunner
from ..transport.protocol import ErrorCode, ReplyHeader, RequestHeader, now_us
from ..transport.wire import TensorEncoder, decode_activation

__all__ = ["EdgeHandler", "EdgeReply"]

log = logging.getLogger(__name__)

PROBE_AFTER_US = 250_000  # nothing computed for a kind of work this long: measure it again
PROBE_AFTER_MIN_US = 10_000  # ... or for its expected compute time, when that is shorter (but not below this)
RECENT_SAMPLES = 16


class ComputeEstimate:
    """How long a kind of work takes: ``bound_us``, the slowest of its last
    ``RECENT_SAMPLES`` compute times, is rarely exceeded by the next one.

    Shedding on it keeps an edge from spending its time on answers that would arrive just
    too late. A probe (``stale``) replaces what was known by its one new time, so a slow
    spell that is over stops counting at once.
    """

    __slots__ = ("recent", "updated_us", "stale")

    def __init__(self) -> None:
        self.recent: deque[float] = deque(maxlen=RECENT_SAMPLES)
        self.updated_us = 0  # the handler's clock when the last sample (or probe) came
        self.stale = False

    def add(self, sample_us: float, now_us: int = 0) -> None:
        self.updated_us = now_us
        if self.stale:
            self.stale = False
            self.recent.clear()
        self.recent.append(sample_us)

    @property
    def bound_us(self) -> float:
        return max(self.recent, default=0.0)


@dataclass(frozen=True)
class EdgeReply:
    """What to publish back: the frame (empty for errors) and the reply header."""

    payload: bytes
    header: ReplyHeader


class EdgeHandler:
    """Runs the tail segments of any of several bundles, keyed by bundle id."""

    def __init__(
        self,
        bundles: Iterable[Bundle],
        *,
        backend: str | None = None,
        num_threads: int | None = None,
        delegate: str | None = None,
        allow_fallback: bool = False,
        codec: str = "none",
        clock_us: Callable[[], int] = now_us,
    ) -> None:
        self.runners: dict[str, BundleRunner] = {}
        for bundle in bundles:
            self.runners[bundle.bundle_id] = BundleRunner(
                bundle, backend=backend, num_threads=num_threads, delegate=delegate, allow_fallback=allow_fallback
            )
        if not self.runners:
            raise InputError("an edge needs at least one bundle to serve")
        self.codec = codec
        self.clock_us = clock_us
        self.shed = 0  # requests dropped because their deadline had passed (or would before the answer)
        self._compute_us: dict[tuple[str, int, str], ComputeEstimate] = {}
        self._reply_encoders: dict[tuple[str, str], TensorEncoder] = {}  # per bundle and exit

    @property
    def bundle_ids(self) -> tuple[str, ...]:
        return tuple(self.runners)

    def warmup(self) -> None:
        """Load and run every segment of every bundle once now, so the first request is not
        slow (XNNPACK prepares its weights on the first run) and does not distort the
        compute estimates that shedding relies on."""
        for runner in self.runners.values():
            for index, segment in enumerate(runner.manifest.segments):
                runner.run_segment(index, {t.name: np.zeros(t.shape, np.dtype(t.dtype)) for t in segment.inputs})

    def handle(
        self, bundle_id: str, payload: bytes, properties: Mapping[str, str], correlation: bytes | None
    ) -> EdgeReply | None:
        """Answer one request: its bundle id (from the topic), frame, user properties and
        correlation data. Never raises for bad input: errors become error replies.

        Returns None, without computing anything, for a request whose deadline (``dl_us``)
        has passed or would pass before an answer computed in the usual time: its
        device has already answered locally, so a reply would only load the edge.
        """
        received_us = self.clock_us()
        try:
            header = RequestHeader.from_message(properties, correlation)
        except ProtocolError as e:
            return self._error("", ErrorCode.BAD_REQUEST, str(e))
        rid = header.request_id
        runner = self.runners.get(bundle_id)
        if runner is None:
            served = ", ".join(self.runners)
            return self._error(
                rid, ErrorCode.UNKNOWN_BUNDLE,
                f"this edge does not serve bundle {bundle_id!r} (it serves {served}); "
                "start the edge with --bundle pointing to that bundle",
            )
        manifest = runner.manifest
        try:
            frame, activation = decode_activation(payload, manifest)
        except WireFormatError as e:
            return self._error(rid, e.code, f"bad activation frame: {e}")
        try:
            exit_segment = manifest.exit(header.exit).segment
        except KeyError:
            return self._error(rid, ErrorCode.BAD_REQUEST, f"bundle {bundle_id} has no exit {header.exit!r}")
        if exit_segment < frame.segment:
            return self._error(
                rid, ErrorCode.BAD_REQUEST,
                f"exit {header.exit!r} is computed by segment {exit_segment}, "
                f"before the cut at segment {frame.segment}",
            )
        try:
            rule = ExitRule(header.thresholds, header.threshold_kind) if header.thresholds else NO_RULE
        except TfliteEdgeError as e:
            return self._error(rid, ErrorCode.BAD_REQUEST, str(e))
        work = (bundle_id, frame.segment, header.exit)
        if header.deadline_us is not None and self._dead(work, received_us, header.deadline_us):
            self.shed += 1
            log.debug("request %s shed: its deadline passed %d µs ago", rid, received_us - header.deadline_us)
            return None
        start = time.perf_counter()
        try:
            exit_name, seen = self._run(
                runner, frame.segment, exit_segment, header.exit, frame.tensor, activation, rule
            )
            out = self._reply_encoder(manifest, exit_name).encode(seen[exit_name])
        except TfliteEdgeError as e:
            log.warning("request %s failed: %s", rid, e)
            return self._error(rid, ErrorCode.INTERNAL, str(e))
        edge_us = int((time.perf_counter() - start) * 1e6)
        self._compute_us.setdefault(work, ComputeEstimate()).add(edge_us, received_us)
        return EdgeReply(out, ReplyHeader.success(header.request_id, edge_us, rx_us=received_us))

    def _reply_encoder(self, manifest: Manifest, exit_name: str) -> TensorEncoder:
        key = (manifest.bundle_id, exit_name)
        encoder = self._reply_encoders.get(key)
        if encoder is None:
            segment = manifest.exit(exit_name).segment
            encoder = self._reply_encoders[key] = TensorEncoder(
                manifest.segments[segment].output(exit_name), bundle_id=manifest.bundle_id, segment=segment,
                codec=self.codec)
        return encoder

    def _dead(self, work: tuple[str, int, str], received_us: int, deadline_us: int) -> bool:
        """Whether an answer to this request would come too late: its deadline has passed, or
        would before the work's expected compute time. When nothing has been computed for
        that work for as long as that expected time (at least ``PROBE_AFTER_MIN_US``, at most
        ``PROBE_AFTER_US``), one request is computed to measure again: an expectation that
        ran high after a slow spell would otherwise shed everything, leaving the worker idle."""
        if received_us > deadline_us:
            return True
        estimate = self._compute_us.get(work)
        if estimate is None or received_us + estimate.bound_us <= deadline_us:
            return False
        # Idle for as long as one expected compute (within limits): measure again.
        if received_us - estimate.updated_us > min(max(estimate.bound_us, PROBE_AFTER_MIN_US), PROBE_AFTER_US):
            estimate.updated_us = received_us  # one probe, then wait again
            estimate.stale = True  # the probe's time replaces what was known
            return False
        return True

    @staticmethod
    def _run(
        runner: BundleRunner, first: int, last: int, target: str, tensor: str, activation: np.ndarray, rule: ExitRule
    ) -> tuple[str, dict[str, np.ndarray]]:
        manifest = runner.manifest
        seen: dict[str, np.ndarray] = {tensor: activation}
        for index in range(first, last + 1):
            seen.update(runner.run_segment(index, seen))
            for spec in manifest.exits:
                if spec.segment != index:
                    continue
                # Same order as the device: the target ends the request, an earlier exit
                # ends it only when the rule finds it confident.
                if spec.name == target:
                    return target, seen
                if rule and rule.confident(spec.name, runner.exit_probabilities(seen, spec.name)):
                    return spec.name, seen
        return target, seen

    @staticmethod
    def _error(rid: str, code: str, message: str) -> EdgeReply:
        return EdgeReply(b"", ReplyHeader.failure(rid, code, message))
