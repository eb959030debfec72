"""Model-based energy: used only when the device has no power sensor, and always labelled so.

Energy of one request = compute power × compute time + radio power × transmit time
+ idle power × the rest of the request (waiting for the edge). The radio's power while
sending follows the linear model of Huang et al., "A Close Examination of Performance and
Power Characteristics of 4G LTE Networks", MobiSys 2012: P = α_u · throughput + β, with
α_u in mW/Mbit/s and β in mW, fitted on smartphones for uplink transfers. Their Table 4
gives (uplink α_u, base β):

    LTE   438.39 mW/Mbps   1288.04 mW
    WiFi  283.17 mW/Mbps    132.86 mW
    3G    868.98 mW/Mbps    817.88 mW

The compute figures are deliberately simple (a constant active and idle power); set
them for your board. A real sensor always wins over this model.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import PowerSensorError
from .power import PowerReading, PowerSensor

__all__ = ["RADIO_MODELS", "ComputePowerModel", "EstimatedPowerSensor", "RadioPowerModel", "request_energy_mj"]


@dataclass(frozen=True)
class RadioPowerModel:
    """Radio power while transmitting: ``alpha_mw_per_mbps * throughput_mbps + beta_mw``."""

    name: str
    alpha_mw_per_mbps: float
    beta_mw: float

    def power_mw(self, throughput_mbps: float) -> float:
        return self.alpha_mw_per_mbps * max(throughput_mbps, 0.0) + self.beta_mw

    def energy_mj(self, transmit_s: float, throughput_mbps: float) -> float:
        """Energy to keep the radio sending for ``transmit_s`` at ``throughput_mbps`` (mW·s = mJ)."""
        return self.power_mw(throughput_mbps) * max(transmit_s, 0.0)


# Huang et al., MobiSys 2012, Table 4 (uplink α_u and β).
RADIO_MODELS: dict[str, RadioPowerModel] = {
    "wifi": RadioPowerModel("wifi", 283.17, 132.86),
    "lte": RadioPowerModel("lte", 438.39, 1288.04),
    "3g": RadioPowerModel("3g", 868.98, 817.88),
}


@dataclass(frozen=True)
class ComputePowerModel:
    """Board power while computing and while idle (defaults: a Raspberry Pi 4 class board).

    The defaults (2.7 W idle, 6.4 W with all cores busy) are commonly reported whole-board
    figures for a Raspberry Pi 4 Model B; they are a starting point, not a measurement.
    """

    active_mw: float = 6400.0
    idle_mw: float = 2700.0


def request_energy_mj(
    *,
    compute_s: float,
    transmit_s: float,
    total_s: float,
    throughput_mbps: float | None,
    compute: ComputePowerModel,
    radio: RadioPowerModel,
) -> float:
    """Modelled device energy of one request in mJ.

    Compute runs at ``active_mw``; while sending, the board idles and the radio adds its
    own power; the rest of the request (waiting for the edge) costs idle power.
    """
    compute_s = max(compute_s, 0.0)
    transmit_s = max(transmit_s, 0.0)
    waiting_s = max(total_s - compute_s - transmit_s, 0.0)
    rate = throughput_mbps if throughput_mbps is not None else 0.0
    return (
        compute.active_mw * compute_s
        + (compute.idle_mw * transmit_s + radio.energy_mj(transmit_s, rate))
        + compute.idle_mw * waiting_s
    )


class EstimatedPowerSensor(PowerSensor):
    """Average power over the last interval, from the activity the runtime reports.

    Call ``observe(compute_s=..., transmit_s=..., throughput_mbps=...)`` per request;
    ``read()`` returns the mean power since the previous read. Readings carry
    ``estimated=True``.
    """

    estimated = True

    def __init__(
        self,
        compute: ComputePowerModel | None = None,
        radio: RadioPowerModel | str = "wifi",
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.compute = compute or ComputePowerModel()
        if isinstance(radio, str):
            try:
                radio = RADIO_MODELS[radio]
            except KeyError as e:
                raise PowerSensorError(f"unknown radio model {radio!r}; choose one of {sorted(RADIO_MODELS)}") from e
        self.radio = radio
        self.source = f"model:{self.radio.name}"
        self._clock = clock
        self._lock = threading.Lock()
        self._since = clock()
        self._compute_s = 0.0
        self._radio_mj = 0.0
        self._transmit_s = 0.0
        self._last_mw = self.compute.idle_mw

    def observe(self, *, compute_s: float, transmit_s: float = 0.0, throughput_mbps: float | None = None) -> None:
        """Account one request's compute and transmit time."""
        with self._lock:
            self._compute_s += max(compute_s, 0.0)
            self._transmit_s += max(transmit_s, 0.0)
            self._radio_mj += self.radio.energy_mj(transmit_s, throughput_mbps or 0.0)

    def read(self) -> PowerReading:
        with self._lock:
            now = self._clock()
            elapsed = now - self._since
            if elapsed > 0:
                # Reported activity cannot exceed the interval (requests may straddle two reads).
                busy_s = min(self._compute_s, elapsed)
                radio_mj = self._radio_mj
                if self._transmit_s > elapsed:
                    radio_mj *= elapsed / self._transmit_s
                energy_mj = self.compute.active_mw * busy_s + self.compute.idle_mw * (elapsed - busy_s) + radio_mj
                self._last_mw = energy_mj / elapsed
                self._since = now
                self._compute_s = self._transmit_s = self._radio_mj = 0.0
            return PowerReading(self._last_mw, None, None, self.source, True)
