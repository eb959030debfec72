"""Edge workers: MQTT 5 shared-subscription consumers that answer co-inference requests.

Every worker subscribes to ``$share/{group}/{prefix}/req/{bundle_id}`` for each bundle it
serves, so the broker hands each request to exactly one worker of each group that serves
its bundle, and to no other group. Workers of one group may run in one process, several
processes or on several machines, and should serve the same bundles; different groups
should serve different bundles (a bundle served by two groups is computed by both).
Workers keep no state between requests: killing one loses only the requests it held, which
devices then finish locally.

A worker asks the broker (MQTT 5 ``MaximumPacketSize``) to deliver no message larger than
the largest request its bundles can take (``max_request_bytes``), so junk of any size
costs it nothing. A request published with the retain flag is not answered: the worker deletes the retained
copy (an empty retained message on its topic), so a device cannot park large messages on
the broker under a request topic.

Every worker also announces itself: a retained presence message listing its bundles on
``{prefix}/edge/{worker_id}``, cleared by its last will when it vanishes and by itself when
it stops (see ``transport.presence``), so devices stop offloading at once when no worker
for their bundle is online.

A worker reads ahead: before computing, it takes every request already waiting on its
connection into a backlog and, while several wait, answers the newest first, dropping
those whose deadline or expiry has passed (see :mod:`.backlog`); each reply is written
as soon as it is computed.

Every worker measures its own load (busy share, compute time against the fastest seen)
and publishes it every ``load_period_s`` on ``{prefix}/edge/{worker_id}/load`` (see
:mod:`.load`), so devices can take the edge's load into their decisions.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import os
import select
import signal
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from ..bundle import Bundle, load_bundle
from ..errors import BrokerConnectionError, InputError, ProtocolError, TopicError
from ..transport.mqtt import Will, connect_and_start, make_client
from ..transport.presence import presence_payload, presence_topic
from ..transport.protocol import (
    DEFAULT_PREFIX,
    ErrorCode,
    ReplyHeader,
    Topics,
    reply_properties,
    user_properties,
    validate_topic_level,
)
from .backlog import Backlog, Pending
from .handler import EdgeHandler, EdgeReply
from .load import LoadMeter, edge_load_topic

__all__ = ["DEFAULT_GROUP", "EdgeWorker", "serve"]

log = logging.getLogger(__name__)

DEFAULT_GROUP = "tflite-edge"
REQUEST_OVERHEAD_BYTES = 64 * 1024  # frame header, names, topic and MQTT properties of a request
MAX_REPLY_TOPICS = 4096  # reply topics remembered as valid
PUBLISH_PACKET = 0x30  # MQTT fixed header: packet type in the high four bits


class EdgeWorker:
    """One MQTT client answering requests for ``bundles``; requests run on paho's network thread.

    Running inference on the network thread keeps a request's path short (no hand-off to
    another thread); one worker therefore computes one request at a time, and parallelism
    comes from more workers in the group (see ``serve``). Requests read while others wait
    are answered newest first (:mod:`.backlog`).
    """

    def __init__(
        self,
        broker_url: str,
        bundles: Sequence[Bundle],
        *,
        group: str = DEFAULT_GROUP,
        prefix: str = DEFAULT_PREFIX,
        qos: int = 0,
        worker_id: str | None = None,
        backend: str | None = None,
        num_threads: int | None = None,
        delegate: str | None = None,
        allow_fallback: bool = False,
        codec: str = "none",
        load_period_s: float | None = 1.0,
    ) -> None:
        self.group = validate_topic_level(group, "group")
        self.topics = Topics(prefix)
        self.qos = qos
        self.handler = EdgeHandler(
            bundles, backend=backend, num_threads=num_threads, delegate=delegate,
            allow_fallback=allow_fallback, codec=codec,
        )
        self._request_head = self.topics.request_filter[:-1]  # "{prefix}/req/"
        self._reply_topics: set[str] = set()
        self._backlog = Backlog()
        self.worker_id = worker_id or f"tfe-edge-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.served = 0
        self.failed = 0
        self.load_meter = LoadMeter(window_s=max(2.0, 2 * (load_period_s or 1.0)))
        self.load_period_s = load_period_s
        self.load_topic = edge_load_topic(self.topics.prefix, validate_topic_level(self.worker_id, "worker id"))
        self._stop_load = threading.Event()
        self._load_thread: threading.Thread | None = None
        self._subscribed = threading.Event()
        self.presence_topic = presence_topic(self.topics.prefix, self.worker_id)
        # The broker clears this worker's presence when it vanishes without a DISCONNECT.
        self._client = make_client(broker_url, self.worker_id, will=Will(self.presence_topic, b"", qos=1, retain=True),
                                   max_packet_bytes=self.max_request_bytes)
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message

    def start(self, timeout_s: float = 10.0) -> EdgeWorker:
        """Load the segments, connect and wait until the shared subscription is active."""
        self.handler.warmup()
        connect_and_start(self._client, timeout_s)
        if not self._subscribed.wait(timeout_s):
            self.stop()
            raise BrokerConnectionError(
                f"the broker did not accept the shared subscriptions {', '.join(self.subscriptions)}; "
                "it must support MQTT 5 shared subscriptions (Mosquitto >= 1.6, EMQX, HiveMQ) and let "
                "this login read requests"
            )
        log.info("edge worker %s serving %s in group %s", self.worker_id, ", ".join(self.handler.bundle_ids),
                 self.group)
        if self.load_period_s is not None and self._load_thread is None:
            self._stop_load.clear()
            self._load_thread = threading.Thread(target=self._publish_load, name=f"load-{self.worker_id}",
                                                 daemon=True)
            self._load_thread.start()
        return self

    def publish_load(self) -> None:
        """Publish the load of the last window now (the background thread does so every ``load_period_s``)."""
        message = self.load_meter.snapshot().to_message(self.worker_id, self.group)
        self._client.publish(self.load_topic, message, qos=0)

    def _publish_load(self) -> None:
        assert self.load_period_s is not None
        while not self._stop_load.wait(self.load_period_s):
            if self._client.is_connected():
                self.publish_load()

    @property
    def max_request_bytes(self) -> int:
        """The largest MQTT packet a valid request for these bundles can be: the largest
        segment input, with room for a codec's worst-case growth, the frame header, the topic
        and the properties."""
        largest = max(spec.bytes for runner in self.handler.runners.values()
                      for segment in runner.manifest.segments for spec in segment.inputs)
        return largest + largest // 64 + REQUEST_OVERHEAD_BYTES

    @property
    def subscriptions(self) -> tuple[str, ...]:
        """The shared subscriptions of this worker: one per bundle it serves."""
        return tuple(self.topics.shared_request_filter(self.group, bundle_id) for bundle_id in self.handler.bundle_ids)

    def stop(self) -> None:
        """Clear this worker's presence, stop publishing its load, disconnect and stop the network thread."""
        self._stop_load.set()
        if self._load_thread is not None:
            self._load_thread.join(timeout=5)
            self._load_thread = None
        try:
            if self._client.is_connected():
                info = self._client.publish(self.presence_topic, b"", qos=1, retain=True)
                try:
                    info.wait_for_publish(2.0)
                except (RuntimeError, ValueError):  # the connection went meanwhile: the will clears it
                    pass
            self._client.disconnect()
        finally:
            self._client.loop_stop()

    def __enter__(self) -> EdgeWorker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- paho callbacks (network thread) -------------------------------------------------
    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any) -> None:
        if reason.is_failure:
            log.warning("broker refused the connection: %s", reason)
            return
        # Retain-as-published lets the worker see (and delete) a request sent with the retain flag.
        options = SubscribeOptions(qos=self.qos, retainAsPublished=True)
        client.subscribe([(topic, options) for topic in self.subscriptions])

    def _on_subscribe(self, client: paho.Client, userdata: Any, mid: int, codes: list[ReasonCode], props: Any) -> None:
        if codes and not any(code.is_failure for code in codes):
            # Announced only once requests reach this worker, again after every reconnect.
            payload = presence_payload(list(self.handler.bundle_ids), self.group)
            client.publish(self.presence_topic, payload, qos=1, retain=True)
            self._subscribed.set()
        else:
            log.error("shared subscription refused: %s", codes)

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any) -> None:
        self._subscribed.clear()
        if reason.is_failure:
            log.info("disconnected from the broker (%s); reconnecting in the background", reason)

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        self._accept(client, message)
        # Answer from the backlog until another request is waiting to be read: that one is
        # read first (this callback returns, paho reads it and calls back), so that the
        # choice of what to answer next sees every request already sent (see backlog.py).
        while len(self._backlog) and (self._backlog.full or not self._publish_waiting(client)):
            request, expired = self._backlog.take(time.monotonic())
            self._drop(expired, "its MQTT message expiry passed while it waited")
            if request is not None:
                self._serve(client, request)

    def _accept(self, client: paho.Client, message: paho.MQTTMessage) -> None:
        if message.retain:
            if message.payload:
                log.warning("retained request on %s deleted unanswered", message.topic)
                client.publish(message.topic, b"", qos=1, retain=True)
            return
        props = message.properties
        response_topic = getattr(props, "ResponseTopic", None)
        if not response_topic or not self._is_reply_topic(response_topic):
            # Only {prefix}/dev/{id}/res: a request must not make the edge publish elsewhere.
            log.warning("request on %s without a usable ResponseTopic dropped", message.topic)
            return
        arrived = time.monotonic()
        expiry = getattr(props, "MessageExpiryInterval", None)
        self._backlog.add(Pending(
            message.topic, message.payload, user_properties(props), getattr(props, "CorrelationData", None),
            response_topic, arrived, None if expiry is None else arrived + expiry,
        ))

    def _drop(self, requests: list[Pending], why: str) -> None:
        for request in requests:
            self.handler.shed += 1
            log.debug("request on %s dropped unanswered: %s", request.topic, why)

    def _publish_waiting(self, client: paho.Client) -> bool:
        """Whether the next packet waiting on the connection is a PUBLISH (a request).

        Looked at without reading it (MSG_PEEK); over TLS the bytes cannot be peeked at, and
        requests are answered in order of arrival."""
        sock = client.socket()
        if not isinstance(sock, socket.socket) or isinstance(sock, ssl.SSLSocket):
            return False
        try:
            if not select.select([sock], [], [], 0)[0]:
                return False
            first = sock.recv(1, socket.MSG_PEEK)
        except (OSError, ValueError):
            return False  # paho's loop finds out what is wrong with the socket
        return bool(first) and first[0] & 0xF0 == PUBLISH_PACKET

    def _serve(self, client: paho.Client, request: Pending) -> None:
        started = time.perf_counter()
        properties = request.properties
        try:
            reply = self._answer(request.topic, request.payload, properties, request.correlation)
        except Exception as e:  # a worker must survive anything a request can trigger
            log.exception("unexpected failure answering a request on %s", request.topic)
            reply = EdgeReply(b"", ReplyHeader.failure("", ErrorCode.INTERNAL, f"edge failure: {e}"))
        self.load_meter.record(
            time.perf_counter() - started, kind=(request.topic, len(request.payload), properties.get("exit")),
            compute_s=reply.header.edge_us / 1e6 if reply is not None and reply.header.ok else None,
        )
        if reply is None:  # shed: past its deadline, nobody waits for it
            return
        if reply.header.ok:
            self.served += 1
        else:
            self.failed += 1
        client.publish(request.response_topic, reply.payload, qos=self.qos,
                       properties=reply_properties(reply.header, correlation=request.correlation))
        # paho's loop reads before it writes: with another request already waiting, the reply
        # would leave only after that request's compute. This callback runs on the network
        # thread, the only one that writes to the socket, so the reply is written now (what
        # does not fit in the socket's buffer is left to the loop). The worker sets no
        # on_publish callback, which paho would call under the lock this callback holds.
        client.loop_write()

    def _is_reply_topic(self, topic: str) -> bool:
        if topic in self._reply_topics:
            return True
        head, tail = f"{self.topics.prefix}/dev/", "/res"
        if not (topic.startswith(head) and topic.endswith(tail)):
            return False
        try:
            validate_topic_level(topic[len(head):-len(tail)], "device id")
        except TopicError:
            return False
        if len(self._reply_topics) >= MAX_REPLY_TOPICS:
            self._reply_topics.clear()
        self._reply_topics.add(topic)  # devices repeat: checked once each
        return True

    @property
    def shed(self) -> int:
        """Requests dropped unanswered because their deadline had passed."""
        return self.handler.shed

    def _answer(
        self, topic: str, payload: bytes, properties: Mapping[str, str], correlation: bytes | None
    ) -> EdgeReply | None:
        # Served bundle ids are valid topic levels already; only other topics need checking.
        bundle_id = topic[len(self._request_head):] if topic.startswith(self._request_head) else ""
        if bundle_id in self.handler.runners:
            return self.handler.handle(bundle_id, payload, properties, correlation)
        try:
            bundle_id = self.topics.bundle_of(topic)
        except ProtocolError as e:
            return EdgeReply(b"", ReplyHeader.failure("", ErrorCode.BAD_REQUEST, str(e)))
        return self.handler.handle(bundle_id, payload, properties, correlation)


def _worker_main(broker_url: str, bundles: list[Bundle], options: dict[str, Any], ready: Any) -> None:
    # Child process entry point: serve until SIGTERM/SIGINT. The bundles arrive with the
    # segment bytes the parent verified; nothing is read from the bundle directories again.
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    worker = EdgeWorker(broker_url, bundles, **options).start()
    ready.release()
    try:
        stop.wait()
    finally:
        worker.stop()


def serve(
    broker_url: str,
    bundles: Sequence[Bundle | str | os.PathLike[str]],
    *,
    workers: int = 1,
    stop: threading.Event | None = None,
    start_timeout_s: float = 30.0,
    on_ready: Callable[[], None] | None = None,
    **options: Any,
) -> None:
    """Run ``workers`` edge workers until ``stop`` is set (or SIGINT/SIGTERM in the CLI).

    ``bundles`` are loaded ``Bundle`` objects (e.g. from ``verify_bundle``) or directories,
    which are loaded and checked here, once. One worker runs in this process; more run as
    separate processes (one Python interpreter each, so they use separate cores), each
    handed the same verified segment bytes rather than the paths, so a bundle directory
    swapped after the check is never served. ``on_ready`` is called once every worker has
    subscribed. ``options`` go to ``EdgeWorker``.
    """
    stop = stop or threading.Event()
    # Fail fast, in this process, on a bad bundle; the bytes read here are what every worker runs.
    loaded = [b if isinstance(b, Bundle) else load_bundle(Path(b)) for b in bundles]
    loaded = [b if b.segment_data is not None else dataclasses.replace(
        b, segment_data=tuple(b.read_segment(i) for i in range(b.manifest.num_segments))) for b in loaded]
    if workers < 1:
        raise InputError(f"workers must be >= 1, got {workers}")
    if workers == 1:
        with EdgeWorker(broker_url, loaded, **options):
            if on_ready is not None:
                on_ready()
            while not stop.wait(0.5):  # a timed wait lets signal handlers run promptly
                pass
        return
    context = multiprocessing.get_context("spawn")
    ready = context.Semaphore(0)
    children = [
        context.Process(target=_worker_main, args=(broker_url, loaded, options, ready), daemon=True)
        for _ in range(workers)
    ]
    for child in children:
        child.start()
    try:
        deadline = time.monotonic() + start_timeout_s
        started = 0
        while started < len(children):
            if ready.acquire(timeout=0.1):
                started += 1
                continue
            if any(not c.is_alive() for c in children):
                # A child that dies before subscribing hit an error it logged; do not wait it out.
                raise BrokerConnectionError(
                    "an edge worker process exited while starting (broker unreachable or bundle unusable; "
                    "see its log)"
                )
            if time.monotonic() > deadline:
                raise BrokerConnectionError(f"edge workers did not start within {start_timeout_s:g} s")
        if on_ready is not None:
            on_ready()
        while not stop.wait(0.5):
            dead = [c for c in children if not c.is_alive()]
            if dead:
                log.warning("%d edge worker process(es) exited; the others keep serving", len(dead))
                children = [c for c in children if c.is_alive()]
                if not children:
                    raise BrokerConnectionError("every edge worker process exited")
    finally:
        for child in children:
            if child.is_alive():
                child.terminate()
        for child in children:
            child.join(5)
