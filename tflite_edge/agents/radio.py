"""Uplink radio energy for the simulator, vectorised over requests.

The radio model itself, ``P = α · throughput + β`` while transmitting (Huang et al., "A
Close Examination of Performance and Power Characteristics of 4G LTE Networks", MobiSys
2012), and its coefficients for LTE, Wi-Fi and 3G live in
:mod:`tflite_edge.telemetry.energy`, which devices use when they have no power sensor;
the simulator uses the same models so simulated and reported energy agree. Promotion and
tail energy are not modelled: requests are assumed frequent enough to keep the radio up.
"""

from __future__ import annotations

import numpy as np

from ..errors import ProfileError
from ..telemetry.energy import RADIO_MODELS, RadioPowerModel
from .cost import energy_mj

__all__ = ["RADIO_MODELS", "RadioPowerModel", "get_radio", "transmit_energy_mj"]


def transmit_energy_mj(radio: RadioPowerModel, megabits: np.ndarray | float, transmit_ms: np.ndarray) -> np.ndarray:
    """Energy of sending ``megabits`` in ``transmit_ms``: ``(α·rate + β)·t = α·bits + β·t`` (mJ),
    the radio part of :func:`.cost.energy_mj`."""
    return energy_mj(device_ms=0.0, megabits=megabits, transmit_ms=transmit_ms, device_power_mw=0.0,
                     radio_alpha_mw_per_mbps=radio.alpha_mw_per_mbps, radio_beta_mw=radio.beta_mw)


def get_radio(name: str) -> RadioPowerModel:
    """A radio model by name: ``lte``, ``wifi`` or ``3g``."""
    try:
        return RADIO_MODELS[name]
    except KeyError:
        raise ProfileError(f"unknown radio {name!r}; choose one of {', '.join(RADIO_MODELS)}") from None
