"""Fakes for unit tests of the device logic: a bundle without TFLite, scripted segments, a scripted edge.

``fake_bundle`` writes a real bundle directory (manifest and checksummed segment files) whose
segment files are placeholders; ``ScriptedSegments`` is an interpreter factory whose
interpreters take a fixed simulated time on a ``ManualClock`` and output exit
probabilities the test chooses; ``ScriptedEdge`` answers requests from a ``MemoryLink``
the way an edge worker would (an exit's output frame, an error, or nothing).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tflite_edge.bundle import Bundle, CutSpec, ExitSpec, Manifest, SegmentSpec, TensorSpec, write_bundle
from tflite_edge.runtime.chain import quantize
from tflite_edge.transport.link import Message
from tflite_edge.transport.memory import ManualClock, MemoryLink
from tflite_edge.transport.presence import presence_payload, presence_topic
from tflite_edge.transport.protocol import DEFAULT_PREFIX, ReplyHeader
from tflite_edge.transport.wire import encode_tensor

NUM_CLASSES = 10
TOP_CLASS = 3


def _q(name: str, shape: tuple[int, ...], scale: float = 1 / 256, zero_point: int = -128) -> TensorSpec:
    return TensorSpec(name, shape, "int8", scale, zero_point)


def fake_bundle(directory: Path) -> Bundle:
    """Three segments, exits ``exit_1`` (segment 0), ``exit_2`` (segment 1), ``final`` (segment 2).

    Cuts ``cut_1`` (after segment 0, 24 bytes) and ``cut_2`` (after segment 1, 12 bytes).
    """
    image = _q("image", (1, 4, 4, 1))
    cut_1 = _q("cut_1", (1, 2, 3, 4), 0.05, 0)
    cut_2 = _q("cut_2", (1, 12), 0.05, 0)
    exits = [_q(name, (1, NUM_CLASSES)) for name in ("exit_1", "exit_2", "final")]
    files = {f"segment_{i}.tflite": f"placeholder segment {i}".encode() for i in range(3)}
    ios = [((image,), (exits[0], cut_1)), ((cut_1,), (exits[1], cut_2)), ((cut_2,), (exits[2],))]
    segments = tuple(
        SegmentSpec(i, name, hashlib.sha256(data).hexdigest(), len(data), inputs, outputs)
        for i, ((name, data), (inputs, outputs)) in enumerate(zip(files.items(), ios, strict=True))
    )
    manifest = Manifest(
        model_name="fake",
        quantization="int8",
        input=TensorSpec("image", (1, 4, 4, 1), "float32"),
        segments=segments,
        exits=(ExitSpec("exit_1", 0, NUM_CLASSES, 0.8), ExitSpec("exit_2", 1, NUM_CLASSES, 0.9),
               ExitSpec("final", 2, NUM_CLASSES, 0.95)),
        cuts=(CutSpec("cut_1", 0, cut_1.bytes), CutSpec("cut_2", 1, cut_2.bytes)),
        converter_version="0",
        tensorflow_version="0",
    )
    return write_bundle(directory, manifest, files)


def probabilities(top1: float) -> np.ndarray:
    """A probability vector with ``top1`` on class ``TOP_CLASS`` and the rest spread evenly."""
    p = np.full(NUM_CLASSES, (1.0 - top1) / (NUM_CLASSES - 1), np.float32)
    p[TOP_CLASS] = top1
    return p


def exit_output(spec: TensorSpec, top1: float) -> np.ndarray:
    """An exit's stored (quantized) output for a given top-1 probability."""
    return quantize(probabilities(top1)[np.newaxis], spec)


@dataclass
class ScriptedSegments:
    """An interpreter factory: segment ``i`` takes ``segment_ms[i]`` on ``clock``, exits output ``top1``.

    ``top1`` maps exit names to their top-1 probability (default 0.5); ``runs`` lists the
    segment indices run, in order.
    """

    manifest: Manifest
    clock: ManualClock
    segment_ms: Sequence[float]
    top1: dict[str, float] = field(default_factory=dict)
    runs: list[int] = field(default_factory=list)

    def __call__(self, model_content: bytes, label: str) -> _ScriptedInterpreter:
        index = int(label.rsplit(" ", 1)[1])
        return _ScriptedInterpreter(self, index)


class _ScriptedInterpreter:
    backend_name = "scripted"

    def __init__(self, script: ScriptedSegments, index: int) -> None:
        self.script = script
        self.spec = script.manifest.segments[index]

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        assert set(feeds) == {t.name for t in self.spec.inputs}
        self.script.runs.append(self.spec.index)
        self.script.clock.advance(self.script.segment_ms[self.spec.index] / 1e3)
        exits = set(self.script.manifest.exit_names)
        return {
            t.name: exit_output(t, self.script.top1.get(t.name, 0.5)) if t.name in exits
            else np.zeros(t.shape, np.dtype(t.dtype))
            for t in self.spec.outputs
        }


@dataclass
class ScriptedEdge:
    """A ``MemoryLink`` responder that answers like an edge worker, as scripted.

    ``answer`` is the exit the edge replies with (None: the request's target exit),
    ``top1`` its top-1 probability, ``edge_ms`` the compute time it reports, ``delay_s``
    how long after the request the reply arrives (on the link's clock), ``error`` an error
    code to answer with instead, ``silent`` never answers. ``requests`` lists what arrived.
    """

    manifest: Manifest
    answer: str | None = None
    top1: float = 0.9
    edge_ms: float = 1.0
    delay_s: float = 0.0
    error: str | None = None
    silent: bool = False
    link: object = None
    requests: list[Message] = field(default_factory=list)

    def __call__(self, request: Message) -> Message | None:
        self.requests.append(request)
        if self.silent:
            return None
        assert request.response_topic is not None and request.correlation is not None
        rid = request.correlation.decode()
        if self.error is not None:
            header = ReplyHeader.failure(rid, self.error, "scripted failure")
            payload = b""
        else:
            name = self.answer or request.user_properties["exit"]
            segment = self.manifest.exit(name).segment
            spec = self.manifest.segments[segment].output(name)
            payload = encode_tensor(exit_output(spec, self.top1), spec, bundle_id=self.manifest.bundle_id,
                                    segment=segment)
            header = ReplyHeader.success(rid, int(self.edge_ms * 1e3))
        reply = Message(request.response_topic, payload, correlation=request.correlation,
                        user_properties=dict(header.to_pairs()))
        if self.delay_s > 0:
            self.link.deliver(reply, after_s=self.delay_s)  # type: ignore[attr-defined]
            return None
        return reply


def announce_worker(link: MemoryLink, bundle_ids: Sequence[str], worker_id: str = "edge-1",
                    prefix: str = DEFAULT_PREFIX) -> None:
    """Publish an edge worker's retained presence on ``link`` (an empty list: the worker left)."""
    payload = presence_payload(list(bundle_ids), "tflite-edge") if bundle_ids else b""
    link.deliver(Message(presence_topic(prefix, worker_id), payload), retain=True)
