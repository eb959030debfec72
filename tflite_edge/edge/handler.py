"""Answering one co-inference request: frame in, exit output frame (or a typed error) out.

No MQTT here: ``EdgeHandler.handle`` takes the request's bundle id, payload and user
properties and returns the reply payload and header, so it is tested without a broker.
Besides the loaded interpreters it keeps only the fastest compute time seen per
(bundle, first segment, exit), a lower bound used to shed requests that cannot be
answered before their deadline.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from ..bundle import Bundle
from ..device.plan import ExitRule
from ..errors import InputError, ProtocolError, TfliteEdgeError, WireFormatError
from ..runtime.chain import BundleRunner
from ..transport.protocol import ErrorCode, ReplyHeader, RequestHeader, now_us
from ..transport.wire import decode_activation, encode_tensor

__all__ = ["EdgeHandler", "EdgeReply"]

log = logging.getLogger(__name__)

_NO_RULE = ExitRule()


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
        self._fastest_us: dict[tuple[str, int, str], int] = {}

    @property
    def bundle_ids(self) -> tuple[str, ...]:
        return tuple(self.runners)

    def warmup(self) -> None:
        """Load every segment of every bundle now, so the first request is not slow."""
        for runner in self.runners.values():
            for index in range(runner.manifest.num_segments):
                runner.interpreter(index)

    def handle(
        self, bundle_id: str, payload: bytes, properties: Mapping[str, str], correlation: bytes | None
    ) -> EdgeReply | None:
        """Answer one request: its bundle id (from the topic), frame, user properties and
        correlation data. Never raises for bad input: errors become error replies.

        Returns None, without computing anything, for a request whose deadline (``dl_us``)
        has passed or would pass before the fastest answer seen for the same work: its
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
            rule = ExitRule(header.thresholds, header.threshold_kind) if header.thresholds else _NO_RULE
        except TfliteEdgeError as e:
            return self._error(rid, ErrorCode.BAD_REQUEST, str(e))
        work = (bundle_id, frame.segment, header.exit)
        if header.deadline_us is not None and received_us + self._fastest_us.get(work, 0) > header.deadline_us:
            self.shed += 1
            log.debug("request %s shed: its deadline passed %d µs ago", rid, received_us - header.deadline_us)
            return None
        start = time.perf_counter()
        try:
            exit_name, seen = self._run(
                runner, frame.segment, exit_segment, header.exit, frame.tensor, activation, rule
            )
            spec = manifest.segments[manifest.exit(exit_name).segment].output(exit_name)
            out = encode_tensor(seen[exit_name], spec, bundle_id=bundle_id,
                                segment=manifest.exit(exit_name).segment, codec=self.codec)
        except TfliteEdgeError as e:
            log.warning("request %s failed: %s", rid, e)
            return self._error(rid, ErrorCode.INTERNAL, str(e))
        edge_us = int((time.perf_counter() - start) * 1e6)
        self._fastest_us[work] = min(edge_us, self._fastest_us.get(work, edge_us))
        return EdgeReply(out, ReplyHeader.success(header.request_id, edge_us, rx_us=received_us))

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
