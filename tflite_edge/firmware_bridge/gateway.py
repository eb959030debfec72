"""The gateway: segment 0 on the microcontroller, the rest here or on the edge.

``McuBundleRunner`` is a ``BundleRunner`` whose segment 0 runs on the MCU behind a
``BridgeClient``; everything else about the chain (quantizing the input, exits, later
segments) is the ordinary runner's. ``Gateway`` hands that runner to the device runtime
(``tflite_edge.device.DeviceRuntime``), which decides per request how far to run locally
and offloads the tail to edge workers over MQTT. ``McuPowerSensor`` exposes the MCU's
power readings as a telemetry ``PowerSensor``, so the device's telemetry on
``{prefix}/dev/{id}/telemetry`` carries the MCU's measured power.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np

from ..bundle import Bundle, load_bundle
from ..errors import InputError, McuError, MicroModelError, SerialMessageError
from ..runtime.chain import BundleRunner
from ..telemetry.homeassistant import HomeAssistant
from ..telemetry.power import PowerReading, PowerSensor
from ..transport.protocol import DEFAULT_PREFIX
from .client import BridgeClient
from .layout import SegmentLayout, segment_layout
from .messages import ErrorCode, ModelInfo

__all__ = ["McuBundleRunner", "McuPowerSensor", "Gateway"]

log = logging.getLogger(__name__)


class McuBundleRunner(BundleRunner):
    """Runs segment 0 of a bundle on the MCU and every later segment with a local interpreter."""

    def __init__(self, bundle: Bundle, client: BridgeClient, *, slot: int = 0, **options: Any) -> None:
        # Never a fused prefix: segment 0 must run on the MCU, through run_segment.
        super().__init__(bundle, use_fused=False, **options)
        self.client = client
        self.slot = slot
        self.layout: SegmentLayout = segment_layout(bundle, 0, backend=options.get("backend"))
        self.model_info: ModelInfo | None = None
        self.last_mcu_latency_us: int | None = None
        self.last_round_trip_ms: float | None = None

    def load(self) -> ModelInfo:
        """Send segment 0 to the MCU and check that what it reports matches the manifest."""
        if self.client.capabilities is None:
            self.client.hello()
        info = self.client.load(self.bundle.read_segment(0), slot=self.slot)
        for kind, descs, specs in (("input", info.inputs, self.layout.inputs),
                                   ("output", info.outputs, self.layout.outputs)):
            got = [(d.dtype, d.shape) for d in descs]
            want = [(s.dtype, s.shape) for s in specs]
            if got != want:
                raise MicroModelError(f"the MCU reports segment 0 {kind}s {got}, the manifest says {want}")
        self.model_info = info
        return info

    def run_segment(self, index: int, tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if index != 0:
            return super().run_segment(index, tensors)
        if self.model_info is None:
            self.load()
        try:
            feeds = [np.asarray(tensors[spec.name], dtype=spec.dtype) for spec in self.layout.inputs]
        except KeyError as e:
            raise SerialMessageError(f"segment 0 needs tensor {e.args[0]!r}, which was not provided") from e
        try:
            result = self.client.invoke(feeds, slot=self.slot)
        except McuError as e:
            if e.code != ErrorCode.NO_MODEL:  # the MCU was reset and lost the segment: load it again, once
                raise
            log.info("the MCU lost its model (reset?); greeting it and loading segment 0 again")
            self.client.hello()
            self.load()
            result = self.client.invoke(feeds, slot=self.slot)
        self.last_mcu_latency_us = result.latency_us
        self.last_round_trip_ms = result.round_trip_ms
        return {spec.name: out for spec, out in zip(self.layout.outputs, result.outputs, strict=True)}


class McuPowerSensor(PowerSensor):
    """The MCU's own power readings (e.g. from an INA219 on its supply), via the bridge."""

    estimated = False

    def __init__(self, client: BridgeClient) -> None:
        self.client = client
        board = client.capabilities.board if client.capabilities else "mcu"
        self.source = f"mcu:{board}"
        self.last_temperature_c: float | None = None
        self.last_free_memory_bytes: int | None = None

    def read(self) -> PowerReading:
        reading = self.client.telemetry()
        self.last_temperature_c = reading.temperature_c
        self.last_free_memory_bytes = reading.free_memory_bytes
        voltage = reading.voltage_mv if reading.voltage_mv > 0 else None
        current = reading.power_mw / voltage * 1000.0 if voltage else None
        return PowerReading(reading.power_mw, voltage, current, self.source, False)


class Gateway:
    """A device whose first stage is a microcontroller: MCU -> this gateway -> edge.

    ``broker_url=None`` runs the rest of the chain locally. Telemetry (with the MCU's power
    readings) is published every ``telemetry_period_s`` when a broker is given, unless
    ``telemetry=False``; ``homeassistant`` is passed on to the ``TelemetryPublisher``.
    """

    def __init__(
        self,
        bundle: Bundle | str,
        port: str,
        *,
        device_id: str = "mcu-gateway",
        broker_url: str | None = None,
        baud: int = 115200,
        timeout_s: float = 2.0,
        retries: int = 3,
        telemetry_period_s: float = 5.0,
        prefix: str = DEFAULT_PREFIX,
        backend: str | None = None,
        telemetry: bool = True,
        homeassistant: HomeAssistant | None = None,
        **runtime_options: Any,
    ) -> None:
        from ..device import DeviceRuntime

        self.bundle = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
        self.client = BridgeClient(port, baud=baud, timeout_s=timeout_s, retries=retries)
        self.publisher: Any = None
        try:
            self.client.hello()
            self.runner = McuBundleRunner(self.bundle, self.client, backend=backend)
            self.model_info = self.runner.load()
            if broker_url is not None and telemetry:
                from ..telemetry import TelemetryPublisher

                self.publisher = TelemetryPublisher(
                    device_id, broker_url=broker_url, prefix=prefix, period_s=telemetry_period_s,
                    power_sensor=McuPowerSensor(self.client), homeassistant=homeassistant,
                ).start()
            self.runtime = DeviceRuntime(
                self.bundle, broker_url=broker_url, device_id=device_id, prefix=prefix, backend=backend,
                on_result=self.publisher.observe_result if self.publisher else None,
                runner=self.runner,  # segment 0 runs on the MCU
                **runtime_options,
            )
        except BaseException:
            self.close()
            raise

    def run(self, x: np.ndarray, **plan: Any) -> Any:
        """One request (keywords as ``DeviceRuntime.infer``: exit, partition >= 1, deadline_ms, rule)."""
        if plan.get("partition") == 0:
            raise InputError("partition 0 would bypass the microcontroller; segment 0 runs on it, so use K >= 1")
        return self.runtime.infer(x, **plan)

    def run_many(self, xs: Iterable[np.ndarray], **plan: Any) -> Iterator[Any]:
        for x in xs:
            yield self.run(x, **plan)

    def close(self) -> None:
        runtime = getattr(self, "runtime", None)
        if runtime is not None:
            runtime.close()
        if self.publisher is not None:
            self.publisher.stop()
            self.publisher = None
        self.client.close()

    def __enter__(self) -> Gateway:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
