"""Uplink radio power: ``P = α · throughput + β`` while transmitting.

Coefficients from Huang, Qian, Gerber, Mao, Sen, Spatscheck, "A Close Examination of
Performance and Power Characteristics of 4G LTE Networks", MobiSys 2012 (Table 3: uplink
α_u in mW per Mbit/s and the base power β in mW, measured on phones). Promotion and tail
energy are not modelled: requests are assumed frequent enough to keep the radio connected.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ProfileError

__all__ = ["RADIOS", "RadioModel", "get_radio"]


@dataclass(frozen=True)
class RadioModel:
    """Linear uplink power model of one radio technology."""

    name: str
    alpha_mw_per_mbps: float
    beta_mw: float

    def power_mw(self, throughput_mbps: np.ndarray | float) -> np.ndarray:
        """Power while transmitting at ``throughput_mbps``."""
        return self.alpha_mw_per_mbps * np.asarray(throughput_mbps, dtype=np.float64) + self.beta_mw

    def energy_mj(self, megabits: np.ndarray | float, transmit_ms: np.ndarray | float) -> np.ndarray:
        """Energy of sending ``megabits`` in ``transmit_ms``: ``(α·rate + β)·t = α·bits + β·t``."""
        return self.alpha_mw_per_mbps * np.asarray(megabits, dtype=np.float64) + self.beta_mw * np.asarray(
            transmit_ms, dtype=np.float64
        ) / 1000.0


RADIOS: dict[str, RadioModel] = {
    "lte": RadioModel("lte", 438.39, 1288.04),
    "wifi": RadioModel("wifi", 283.17, 132.86),
    "3g": RadioModel("3g", 868.98, 817.88),
}


def get_radio(name: str) -> RadioModel:
    """A built-in radio model by name: ``lte``, ``wifi`` or ``3g``."""
    try:
        return RADIOS[name]
    except KeyError:
        raise ProfileError(f"unknown radio {name!r}; choose one of {', '.join(RADIOS)}") from None
