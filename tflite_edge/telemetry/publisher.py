"""``TelemetryPublisher``: what a device measures, published over MQTT without slowing inference.

Topics (``prefix`` defaults to ``tflite-edge/v1``), QoS and why:

``{prefix}/dev/{id}/status``      QoS 1, retained. Must arrive, and a subscriber that comes
                                  later must still learn whether the device is up. The MQTT
                                  last will publishes ``offline`` (retained) if the device
                                  vanishes without saying goodbye.
``{prefix}/dev/{id}/telemetry``   QoS 1, not retained, one message per ``period_s``. The
                                  broker's PUBACK times each message, which gives a broker
                                  round trip even when no request runs; a period with no
                                  connection is skipped, never queued, so an outage does not
                                  replay stale windows. Retaining it would show dead devices
                                  as live; ``status`` says that.
``{prefix}/dev/{id}/experience``  QoS 1, not retained, batched. Every record is training data
                                  for the policy; a duplicate after a reconnect is harmless
                                  (records carry a sequence number), a loss is not. Records
                                  wait in a bounded queue while offline.

The per-request calls (``observe_result``, ``record_experience``) only append to bounded
in-memory structures under a lock; a background thread reads the sensors, builds and
publishes the messages. Inference never waits on the network or on a sensor.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from .. import __version__
from ..errors import PowerSensorError, TelemetryError
from ..transport.protocol import DEFAULT_PREFIX, Topics
from .energy import EstimatedPowerSensor, request_energy_mj
from .homeassistant import HomeAssistant, discovery_messages
from .link import LinkMonitor
from .power import PowerReading, PowerSensor, discover_power_sensor
from .schema import (
    MAX_EXPERIENCE_RECORDS,
    ExperienceBatch,
    ExperienceRecord,
    LinkStats,
    PowerStats,
    StatusMessage,
    SystemStats,
    TelemetryMessage,
    check_record,
    encode,
)
from .system import SystemMonitor
from .window import RequestObservation, WindowStats, observation_from_result, sanitized

if TYPE_CHECKING:
    import paho.mqtt.client as paho
    from paho.mqtt.properties import Properties
    from paho.mqtt.reasoncodes import ReasonCode

    from ..transport.mqtt import MqttClient, Will

__all__ = ["DEFAULT_PREFIX", "QOS", "TelemetryPublisher", "status_payload", "status_will"]

log = logging.getLogger(__name__)

QOS = {"status": 1, "telemetry": 1, "experience": 1}


def _topics(prefix: str) -> Topics:
    return Topics(prefix)


def status_payload(device_id: str, state: str, reason: str | None) -> bytes:
    """The encoded status message (also the payload of the last will)."""
    return encode(StatusMessage(device_id, state, time.time(), reason, f"tflite-edge {__version__}"))


def status_will(device_id: str, prefix: str = DEFAULT_PREFIX) -> Will:
    """The last will to pass to ``make_client`` so the broker announces ``offline`` for this device."""
    from ..transport.mqtt import Will

    return Will(
        topic=_topics(prefix).device(device_id, "status"),
        payload=status_payload(device_id, "offline", "connection lost"),
        qos=QOS["status"],
        retain=True,
    )


class TelemetryPublisher:
    """Publishes a device's status, periodic telemetry and experience records.

    Give ``broker_url`` (the publisher makes and owns its client, with the last will) or an
    existing paho ``client`` (then its owner should have set ``status_will`` as the will).
    ``power_sensor`` defaults to ``discover_power_sensor()``: a real sensor when one exists,
    else the labelled estimate. ``homeassistant`` publishes Home Assistant discovery for the
    device's sensors (or, disabled, removes it) at every connection; see ``homeassistant``.
    """

    def __init__(
        self,
        device_id: str,
        *,
        broker_url: str | None = None,
        client: MqttClient | None = None,
        prefix: str = DEFAULT_PREFIX,
        period_s: float = 5.0,
        experience_interval_s: float = 1.0,
        max_pending_experience: int = 10_000,
        max_pending_observations: int = 100_000,
        power_sensor: PowerSensor | None = None,
        link: LinkMonitor | None = None,
        system: SystemMonitor | None = None,
        connect_timeout_s: float = 10.0,
        homeassistant: HomeAssistant | None = None,
    ) -> None:
        if (broker_url is None) == (client is None):
            raise TelemetryError("give exactly one of broker_url or client")
        if period_s < 0.05 or experience_interval_s < 0.01:
            raise TelemetryError("period_s must be >= 0.05 s and experience_interval_s >= 0.01 s")
        topics = _topics(prefix)
        self.device_id = device_id
        self.prefix = prefix
        self.topic = {ch: topics.device(device_id, ch) for ch in ("status", "telemetry", "experience")}
        self.period_s = period_s
        self.experience_interval_s = experience_interval_s
        self.power_sensor = power_sensor if power_sensor is not None else discover_power_sensor()
        self.link = link or LinkMonitor()
        self.system = system or SystemMonitor()
        self.connect_timeout_s = connect_timeout_s
        self.homeassistant = homeassistant
        self._broker_url = broker_url
        self._client: MqttClient | None = client
        self._owns_client = client is None
        self._lock = threading.Lock()
        self._window = WindowStats()
        self._window_start = time.monotonic()
        self._pending: deque[tuple[RequestObservation, float | None]] = deque(maxlen=max_pending_observations)
        self._experience: deque[ExperienceRecord] = deque(maxlen=max_pending_experience)
        self.dropped_experience = 0
        self._seq = 0
        self._experience_seq = 0
        self._power_mw: float | None = None
        self._power_error_logged = False
        self._sent_at: dict[int, float] = {}
        self._early_acks: dict[int, float] = {}
        self.broker_rtt_ms: float | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self.published = {"status": 0, "telemetry": 0, "experience": 0}
        #: returns the version of the policy deciding on this device (see ``TelemetryMessage``)
        self.policy_version: Callable[[], int | None] = lambda: None

    # ------------------------------------------------------------ lifecycle

    def start(self) -> TelemetryPublisher:
        """Connect (when owning the client), announce ``online`` and start the background thread."""
        if self._thread is not None:
            return self
        if self._owns_client:
            from ..transport.mqtt import connect_and_start, device_connection, make_client

            assert self._broker_url is not None
            client = make_client(
                *device_connection(self._broker_url, self.device_id, "telemetry"),
                will=status_will(self.device_id, self.prefix),
            )
            client.on_publish = self._on_publish
            client.on_connect = self._on_connect
            self._client = client
            connect_and_start(client, self.connect_timeout_s)
        else:
            self._publish_status("online", None)
            self._publish_discovery()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"telemetry-{self.device_id}", daemon=True)
        self._thread.start()
        return self

    def stop(self, reason: str = "shutdown") -> None:
        """Publish the last window and pending experience, announce ``offline`` and disconnect."""
        if self._thread is None:
            return
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=10)
        self._thread = None
        try:
            self.flush()
        except TelemetryError as e:
            log.warning("final telemetry not published: %s", e)
        info = self._publish_status("offline", reason)
        if self._owns_client and self._client is not None:
            if info is not None:
                try:
                    info.wait_for_publish(timeout=2.0)
                except (RuntimeError, ValueError):
                    pass  # not connected: the last will says offline instead
            self._client.disconnect()
            self._client.loop_stop()
        self.power_sensor.close()

    def __enter__(self) -> TelemetryPublisher:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------ called by the runtime (never blocks)

    def observe_result(self, result: Any = None, /, **fields: Any) -> None:
        """Account one request: a ``RequestObservation``, the runtime's result object, or keywords.

        Suitable as the device runtime's ``on_result`` callback. Updates the link estimate
        (transfer bytes/time, RTT, losses) at once; the rest is summarised per window.
        """
        obs = sanitized(observation_from_result(result if result is not None else fields))
        link_ok = obs.ok and not obs.timed_out and not obs.link_failed
        if obs.bytes_sent > 0 and obs.transfer_ms > 0 and link_ok:
            self.link.record_transfer(obs.bytes_sent, obs.transfer_ms / 1000.0)
        if obs.rtt_ms is not None and link_ok:
            self.link.record_rtt(obs.rtt_ms)
        if obs.offloaded or obs.timed_out:
            if obs.timed_out:
                self.link.record_timeout()
            elif not link_ok:
                self.link.record_error()
            else:
                self.link.record_success()
        energy = self._request_energy_mj(obs)
        with self._lock:
            self._pending.append((obs, energy))

    def attach(self, runtime: Any) -> TelemetryPublisher:
        """Hook into a device runtime's ``on_result`` (keeping any hook it already has)."""
        previous = getattr(runtime, "on_result", None)
        if previous is None:
            runtime.on_result = self.observe_result
        else:

            def both(result: Any) -> None:
                previous(result)
                self.observe_result(result)

            runtime.on_result = both
        return self

    def record_experience(
        self,
        *,
        context: Mapping[str, float | None],
        action: Mapping[str, int | float | str],
        reward: float,
        latency_ms: float,
        deadline_ms: float | None = None,
        deadline_met: bool | None = None,
        energy_mj: float | None = None,
        request_id: str | None = None,
    ) -> None:
        """Queue one (context, action, reward) record for the ``experience`` topic.

        Raises ``TelemetrySchemaError`` for a record that does not fit the schema (a NaN
        reward, an action without ``exit`` and ``partition``).
        """
        record = ExperienceRecord(
            time_unix_s=time.time(),
            context={str(k): (None if v is None else float(v)) for k, v in context.items()},
            # numpy scalars (a policy's argmax) become plain numbers JSON can carry.
            action={str(k): v.item() if hasattr(v, "item") and not isinstance(v, str) else v
                    for k, v in action.items()},
            reward=float(reward),
            latency_ms=float(latency_ms),
            deadline_ms=deadline_ms,
            deadline_met=deadline_met,
            energy_mj=energy_mj,
            request_id=request_id,
        )
        # Checked now, where the caller can fix it, not when a batch of good records would be lost.
        check_record(record)
        with self._lock:
            if len(self._experience) == self._experience.maxlen:
                self.dropped_experience += 1
            self._experience.append(record)

    def context(self) -> dict[str, float | None]:
        """The measured state a policy decides on: link, power and load, as the latest figures.

        No I/O: every value was measured already (None until it has been).
        """
        uplink, rtt, loss = self.link.estimates()
        return {
            "uplink_mbps": uplink,
            "rtt_ms": rtt,
            "broker_rtt_ms": self.broker_rtt_ms,
            "loss_ratio": loss,
            "power_mw": self._power_mw,
        }

    def _request_energy_mj(self, obs: RequestObservation) -> float | None:
        sensor = self.power_sensor
        if isinstance(sensor, EstimatedPowerSensor):
            rate = self.link.throughput.mbps
            sensor.observe(
                compute_s=obs.device_compute_ms / 1000, transmit_s=obs.transfer_ms / 1000, throughput_mbps=rate
            )
            return request_energy_mj(
                compute_s=obs.device_compute_ms / 1000,
                transmit_s=obs.transfer_ms / 1000,
                total_s=obs.total_ms / 1000,
                throughput_mbps=rate,
                compute=sensor.compute,
                radio=sensor.radio,
            )
        # A measured power times the time the request kept the device busy or waiting.
        power = self._power_mw
        return None if power is None else power * obs.total_ms / 1000.0

    # ------------------------------------------------------------ building and publishing

    def _read_power(self) -> PowerReading | None:
        try:
            reading = self.power_sensor.read()
        except PowerSensorError as e:
            if not self._power_error_logged:
                log.warning("power sensor %s failed: %s", self.power_sensor.source, e)
                self._power_error_logged = True
            return None
        self._power_mw = reading.power_mw
        return reading

    def build_telemetry(self) -> TelemetryMessage:
        """The telemetry message for the window since the previous one (and start a new window)."""
        reading = self._read_power()
        with self._lock:
            for obs, energy in self._pending:
                self._window.add(obs, energy)
            self._pending.clear()
            window, self._window = self._window, WindowStats()
            now = time.monotonic()
            window_s, self._window_start = now - self._window_start, now
            self._seq += 1
            seq = self._seq
        snap = self.link.snapshot()
        system = self.system.snapshot()
        return TelemetryMessage(
            device_id=self.device_id,
            seq=seq,
            time_unix_s=time.time(),
            window_s=round(window_s, 3),
            requests=window.requests(),
            latency=window.latency(),
            link=LinkStats(
                rtt_ms=snap.rtt_ms,
                rtt_min_ms=snap.rtt_min_ms,
                broker_rtt_ms=self.broker_rtt_ms,
                uplink_mbps=snap.uplink_mbps,
                bytes_sent=window.bytes_sent,
                timeouts=snap.timeouts,
                errors=snap.errors,
                loss_ratio=snap.loss_ratio,
                wifi_signal_dbm=snap.wifi.signal_dbm if snap.wifi else None,
                wifi_link_quality=snap.wifi.link_quality if snap.wifi else None,
            ),
            power=PowerStats(
                power_mw=reading.power_mw if reading else None,
                voltage_mv=reading.voltage_mv if reading else None,
                current_ma=reading.current_ma if reading else None,
                source=reading.source if reading else self.power_sensor.source,
                estimated=reading.estimated if reading else self.power_sensor.estimated,
                energy_per_inference_mj=window.energy_per_inference_mj(),
            ),
            system=SystemStats(system.cpu_load_percent, system.cpu_temperature_c, system.memory_used_percent),
            policy_version=self.policy_version(),
        )

    def flush(self) -> None:
        """Publish one telemetry message and all pending experience now."""
        self._publish_telemetry()
        self._publish_experience()

    def _connected(self) -> bool:
        return self._client is not None and bool(self._client.is_connected())

    def _publish(self, channel: str, payload: bytes, *, retain: bool = False) -> paho.MQTTMessageInfo | None:
        assert self._client is not None
        info = self._client.publish(self.topic[channel], payload, qos=QOS[channel], retain=retain)
        if info.rc != 0:
            log.info("publishing %s failed (rc %s)", channel, info.rc)
            return None
        self.published[channel] += 1
        return info

    def _publish_status(self, state: str, reason: str | None) -> paho.MQTTMessageInfo | None:
        if self._client is None:
            return None
        return self._publish("status", status_payload(self.device_id, state, reason), retain=True)

    def _publish_discovery(self) -> None:
        """Home Assistant discovery (retained), or its removal; nothing without ``homeassistant``."""
        if self.homeassistant is None or self._client is None:
            return
        messages = discovery_messages(
            self.homeassistant, device_id=self.device_id, telemetry_topic=self.topic["telemetry"],
            status_topic=self.topic["status"], software=f"tflite-edge {__version__}", period_s=self.period_s,
        )
        for topic, payload in messages:
            self._client.publish(topic, payload, qos=1, retain=True)

    def _publish_telemetry(self) -> None:
        message = self.build_telemetry()
        if not self._connected():
            log.debug("not connected: telemetry window %d skipped", message.seq)
            return
        sent_at = time.monotonic()
        info = self._publish("telemetry", encode(message))
        if info is not None:
            with self._lock:
                # On loopback the PUBACK can beat this line: then the ack time is already here.
                acked_at = self._early_acks.pop(info.mid, None)
                if acked_at is None:
                    self._sent_at[info.mid] = sent_at
            if acked_at is not None:
                self.broker_rtt_ms = (acked_at - sent_at) * 1000.0

    def _publish_experience(self) -> None:
        while self._connected():
            with self._lock:
                if not self._experience:
                    return
                count = min(len(self._experience), MAX_EXPERIENCE_RECORDS)
                records = [self._experience.popleft() for _ in range(count)]
                self._experience_seq += 1
                seq = self._experience_seq
            self._publish("experience", encode(ExperienceBatch(self.device_id, seq, time.time(), records)))

    def _run(self) -> None:
        next_telemetry = time.monotonic() + self.period_s
        next_experience = time.monotonic() + self.experience_interval_s
        while not self._stop.is_set():
            timeout = max(0.0, min(next_telemetry, next_experience) - time.monotonic())
            self._wake.wait(timeout)
            self._wake.clear()
            if self._stop.is_set():
                return
            now = time.monotonic()
            try:
                if now >= next_experience:
                    self._publish_experience()
                    next_experience = now + self.experience_interval_s
                if now >= next_telemetry:
                    self._publish_telemetry()
                    next_telemetry += self.period_s
                    if next_telemetry < now:  # fell behind (suspended machine): do not burst
                        next_telemetry = now + self.period_s
            except Exception:  # a bug here must not kill telemetry for the rest of the run
                log.exception("telemetry publication failed")

    # ------------------------------------------------------------ paho callbacks (network thread)

    def _on_connect(self, client: paho.Client, userdata: Any, flags: paho.ConnectFlags, reason_code: ReasonCode,
                    properties: Properties | None) -> None:
        if not reason_code.is_failure:
            # Again after every reconnect: the last will may have said offline meanwhile.
            self._publish_status("online", None)
            self._publish_discovery()

    def _on_publish(self, client: paho.Client, userdata: Any, mid: int, reason_code: ReasonCode,
                    properties: Properties) -> None:
        now = time.monotonic()
        with self._lock:
            sent_at = self._sent_at.pop(mid, None)
            if sent_at is None:
                self._early_acks[mid] = now
            # Acks lost to a reconnect never come, and status/experience acks are never claimed.
            for table in (self._sent_at, self._early_acks):
                if len(table) > 1000:
                    table.clear()
        if sent_at is not None:
            self.broker_rtt_ms = (now - sent_at) * 1000.0
