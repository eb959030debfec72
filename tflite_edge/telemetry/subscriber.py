"""Receiving telemetry: a subscriber, a per-device view of the fleet, and session recordings.

``TelemetrySubscriber`` subscribes to the status, telemetry and (optionally) experience
topics of one device or all, validates every message against the schema and hands the
decoded message to a callback; invalid messages are counted and logged, never fatal.
``FleetView`` keeps what a live display needs per device, and ``render_table`` draws it.
A recording is JSON lines of ``{"topic", "received_unix_s", "message"}``; ``read_recording``
loads one back (for ``tflite-edge plot``).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from ..errors import TelemetryError, TelemetrySchemaError
from ..files import open_regular
from ..transport.protocol import DEFAULT_PREFIX
from .schema import ExperienceBatch, StatusMessage, TelemetryMessage, decode

__all__ = [
    "DeviceView",
    "FleetView",
    "Received",
    "TelemetrySubscriber",
    "read_recording",
    "render_table",
    "topic_filters",
]

log = logging.getLogger(__name__)

Message = TelemetryMessage | StatusMessage | ExperienceBatch


@dataclass(frozen=True)
class Received:
    """One validated message and where and when it arrived."""

    topic: str
    received_unix_s: float
    message: Message
    doc: dict[str, Any]

    def to_json(self) -> str:
        return json.dumps(
            {"topic": self.topic, "received_unix_s": round(self.received_unix_s, 4), "message": self.doc},
            separators=(",", ":"),
        )


def topic_filters(prefix: str, device: str | None, *, experience: bool = False) -> list[str]:
    """The topic filters for one device (or ``+`` for all) under ``prefix``."""
    from ..transport.protocol import validate_device_id, validate_prefix

    validate_prefix(prefix)
    level = "+" if device is None else validate_device_id(device)
    channels = ["status", "telemetry"] + (["experience"] if experience else [])
    return [f"{prefix}/dev/{level}/{channel}" for channel in channels]


class TelemetrySubscriber:
    """An MQTT 5 client that validates telemetry messages and passes them to ``on_message``.

    ``on_message`` runs on the network thread: keep it short. ``invalid`` counts messages
    that failed validation. With ``on_edge``, the edge workers' retained presence messages
    (``{prefix}/edge/+``, see ``transport.presence``) and load reports (``{prefix}/edge/+/load``,
    see ``edge.load``) go to ``on_edge(topic, payload)`` unparsed.
    """

    def __init__(
        self,
        broker_url: str,
        on_message: Callable[[Received], None],
        *,
        prefix: str = DEFAULT_PREFIX,
        device: str | None = None,
        experience: bool = False,
        client_id: str | None = None,
        on_edge: Callable[[str, bytes], None] | None = None,
    ) -> None:
        from ..transport.mqtt import make_client
        from ..transport.presence import presence_filter

        self.filters = topic_filters(prefix, device, experience=experience)
        self._edge_head = f"{prefix}/edge/"
        if on_edge is not None:
            from ..edge.load import edge_load_filter

            self.filters += [presence_filter(prefix), edge_load_filter(prefix)]
        self.on_edge = on_edge
        self.on_message = on_message
        self.invalid = 0
        self.received = 0
        self._subscribed = threading.Event()
        self._client = make_client(broker_url, client_id or f"tfe-telemetry-{time.monotonic_ns() % 10**9}")
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message

    def start(self, timeout_s: float = 10.0) -> TelemetrySubscriber:
        """Connect and wait until the subscriptions are active."""
        from ..transport.mqtt import connect_and_start

        connect_and_start(self._client, timeout_s)
        if not self._subscribed.wait(timeout_s):
            self.stop()
            raise TelemetryError(f"the broker did not confirm the subscriptions {self.filters} in {timeout_s:g} s")
        return self

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def __enter__(self) -> TelemetrySubscriber:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if not reason_code.is_failure:
            client.subscribe([(f, 1) for f in self.filters])

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, reason_codes: Any, properties: Any) -> None:
        self._subscribed.set()

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        if self.on_edge is not None and msg.topic.startswith(self._edge_head):
            try:
                self.on_edge(msg.topic, bytes(msg.payload))
            except Exception:  # as below: a consumer's bug must not stop the subscription
                log.exception("edge presence callback failed")
            return
        try:
            message = decode(msg.payload)
            doc = json.loads(msg.payload)
        except TelemetrySchemaError as e:
            self.invalid += 1
            log.warning("invalid message on %s: %s", msg.topic, e)
            return
        self.received += 1
        try:
            self.on_message(Received(msg.topic, time.time(), message, doc))
        except Exception:  # a display bug must not stop the subscription
            log.exception("telemetry callback failed")


# ---------------------------------------------------------------- the fleet view


@dataclass
class DeviceView:
    """What the live table shows for one device; exit/partition counts accumulate over the session."""

    device_id: str
    status: str = "?"
    last: TelemetryMessage | None = None
    #: the latest window that had requests: latency columns keep showing it while the device idles
    last_busy: TelemetryMessage | None = None
    last_seen_unix_s: float = 0.0
    requests: int = 0
    exits: Counter[str] = field(default_factory=Counter)
    partitions: Counter[str] = field(default_factory=Counter)
    experience_records: int = 0


class FleetView:
    """Per-device state built from received messages; thread-safe."""

    def __init__(self) -> None:
        self.devices: dict[str, DeviceView] = {}
        self._lock = threading.Lock()

    def update(self, received: Received) -> None:
        message = received.message
        with self._lock:
            view = self.devices.setdefault(message.device_id, DeviceView(message.device_id))
            view.last_seen_unix_s = received.received_unix_s
            if isinstance(message, StatusMessage):
                view.status = message.state
            elif isinstance(message, TelemetryMessage):
                view.last = message
                if message.requests.count:
                    view.last_busy = message
                if view.status == "?":
                    view.status = "online"
                view.requests += message.requests.count
                view.exits.update(message.requests.exits)
                view.partitions.update(message.requests.partitions)
            else:
                view.experience_records += len(message.records)

    def snapshot(self) -> list[DeviceView]:
        with self._lock:
            return [self.devices[k] for k in sorted(self.devices)]


def _mix(counts: Counter[str], limit: int = 3) -> str:
    total = sum(counts.values())
    if not total:
        return "-"
    return " ".join(f"{k}:{100 * n / total:.0f}%" for k, n in counts.most_common(limit))


def _num(value: float | None, fmt: str = "{:.1f}") -> str:
    return "-" if value is None else fmt.format(value)


COLUMNS = (
    "device", "status", "req", "exits", "partitions", "p50 ms", "p95 ms", "up Mbps", "rtt ms", "power mW", "mJ/inf",
)


def render_table(views: list[DeviceView]) -> str:
    """A plain-text table of the fleet (estimated power is marked with ``~``).

    Latency and energy come from each device's latest window with requests; link and power
    from its latest window.
    """
    rows = [list(COLUMNS)]
    for v in views:
        t, busy = v.last, v.last_busy
        power = "-"
        if t is not None and t.power.power_mw is not None:
            power = ("~" if t.power.estimated else "") + f"{t.power.power_mw:.0f}"
        rows.append(
            [
                v.device_id,
                v.status,
                str(v.requests),
                _mix(v.exits),
                _mix(v.partitions),
                _num(busy.latency.total_p50_ms if busy else None),
                _num(busy.latency.total_p95_ms if busy else None),
                _num(t.link.uplink_mbps if t else None, "{:.2f}"),
                _num(t.link.rtt_ms if t else None),
                power,
                _num(busy.power.energy_per_inference_mj if busy else None),
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    if any(v.last is not None and v.last.power.estimated for v in views):
        lines.append("~ power is a model-based estimate (no sensor on that device)")
    return "\n".join(lines)


# ---------------------------------------------------------------- recordings

MAX_RECORDING_LINE_BYTES = 512 * 1024
MAX_RECORDING_BYTES = 1 << 36  # recordings grow for days; a bound against /dev/zero, not a budget


def write_received(stream: IO[str], received: Received) -> None:
    stream.write(received.to_json() + "\n")
    stream.flush()


def read_recording(path: str | Path) -> Iterator[Received]:
    """The messages of a recording, validated again; unreadable lines are an error naming the line."""
    # A regular file only (a FIFO or a device would block or never end), read line by line
    # with each line bounded before it is decoded.
    raw, _ = open_regular(path, what="recording", max_bytes=MAX_RECORDING_BYTES, error=TelemetryError)
    with raw:
        for number, data in enumerate(iter(lambda: raw.readline(MAX_RECORDING_LINE_BYTES + 1), b""), start=1):
            if len(data) > MAX_RECORDING_LINE_BYTES:
                raise TelemetryError(f"{path}:{number}: line longer than {MAX_RECORDING_LINE_BYTES} bytes")
            try:
                line = data.decode("utf-8")
            except UnicodeDecodeError as e:
                raise TelemetryError(
                    f"{path} is not a telemetry recording (line {number} is not UTF-8 text); record one with "
                    "`tflite-edge telemetry --record FILE`"
                ) from e
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                doc = entry["message"]
                message = decode(json.dumps(doc))
                yield Received(str(entry["topic"]), float(entry["received_unix_s"]), message, doc)
            except (ValueError, KeyError, TypeError, TelemetrySchemaError) as e:
                raise TelemetryError(
                    f"{path}:{number}: not a telemetry recording line ({e}); record one with "
                    "`tflite-edge telemetry --record FILE`"
                ) from e
