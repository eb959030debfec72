"""The cost model: an action's latency and energy from a context (numpy only, device-safe).

Every place that predicts or accounts for what a request costs calls this module: the
simulator (true outcomes, from the trace's real transfer time), the planning model (a
planner's and a learned policy's predicted rewards, from the estimated throughput), the
device's live reward (``device.policy_loop``) and the radio energy of :mod:`.radio`.

For an action that runs ``device_ms`` of segments on the device at nominal speed, sends
``megabits`` and has the edge compute ``edge_ms`` when idle:

* latency = ``device_ms / device_speed`` + (when offloading) ``transmit_ms + rtt_ms``
  + ``edge_ms × edge_wait_factor(edge_load)``;
* energy = ``device_power_mw × device time`` + the radio's energy for the transfer,
  ``P = α·throughput + β`` during ``transmit_ms`` (Huang et al., MobiSys 2012), which is
  ``α·megabits + β·transmit time``.

The edge's waiting factor is the M/M/1 sojourn inflation ``1 / (1 - load)``, with the
load capped at :data:`EDGE_LOAD_CAP` so a saturated edge costs a large but finite time.

Where a real power sensor measures the device, the energy of a finished request is the
measured power times the request's duration (:func:`measured_energy_mj`) instead.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "EDGE_LOAD_CAP",
    "action_cost",
    "edge_wait_factor",
    "energy_mj",
    "measured_energy_mj",
    "transmit_ms",
]

#: Edge load above which the waiting factor stops growing (1 / (1 - 0.95) = 20×).
EDGE_LOAD_CAP = 0.95

ArrayLike = np.ndarray | float


def edge_wait_factor(edge_load: ArrayLike) -> np.ndarray:
    """How much longer the edge takes at ``edge_load`` (0 = idle) than when idle: ``1 / (1 - load)``."""
    load = np.clip(np.asarray(edge_load, dtype=np.float64), 0.0, EDGE_LOAD_CAP)
    return 1.0 / (1.0 - load)


def transmit_ms(megabits: ArrayLike, throughput_mbps: ArrayLike) -> np.ndarray:
    """Time to send ``megabits`` at ``throughput_mbps`` (a floor of 1e-6 Mbit/s avoids division by zero)."""
    rate = np.maximum(np.asarray(throughput_mbps, dtype=np.float64), 1e-6)
    return np.asarray(megabits, dtype=np.float64) * 1000.0 / rate


def energy_mj(
    *,
    device_ms: ArrayLike,
    megabits: ArrayLike,
    transmit_ms: ArrayLike,
    device_power_mw: float,
    radio_alpha_mw_per_mbps: float,
    radio_beta_mw: float,
) -> np.ndarray:
    """Modelled device energy (mJ): compute power × device time + the radio's energy for the transfer."""
    return (device_power_mw / 1000.0 * np.asarray(device_ms, dtype=np.float64)
            + radio_alpha_mw_per_mbps * np.asarray(megabits, dtype=np.float64)
            + radio_beta_mw / 1000.0 * np.asarray(transmit_ms, dtype=np.float64))


def measured_energy_mj(power_mw: ArrayLike, duration_ms: ArrayLike) -> np.ndarray:
    """Energy (mJ) of a request that lasted ``duration_ms`` at a measured ``power_mw``."""
    return np.asarray(power_mw, dtype=np.float64) * np.asarray(duration_ms, dtype=np.float64) / 1000.0


def action_cost(
    *,
    device_ms: ArrayLike,
    edge_ms: ArrayLike,
    megabits: ArrayLike,
    offloaded: ArrayLike,
    transmit_ms: ArrayLike,
    rtt_ms: ArrayLike,
    device_speed: ArrayLike,
    edge_load: ArrayLike,
    device_power_mw: float,
    radio_alpha_mw_per_mbps: float,
    radio_beta_mw: float,
) -> tuple[np.ndarray, np.ndarray]:
    """(latency_ms, energy_mj) of actions in contexts; every argument broadcasts with numpy rules.

    ``device_ms``/``edge_ms`` are nominal compute times (device at speed 1, edge idle);
    ``offloaded`` is 1 for actions that send (0 for local ones, whose ``megabits``,
    ``edge_ms`` and ``transmit_ms`` are ignored); ``transmit_ms`` is the time the transfer
    takes (true, from a trace, or predicted with :func:`transmit_ms`).
    """
    sends = np.asarray(offloaded, dtype=np.float64)
    device = np.asarray(device_ms, dtype=np.float64) / np.asarray(device_speed, dtype=np.float64)
    transfer = sends * np.asarray(transmit_ms, dtype=np.float64)
    latency = (device + transfer + sends * np.asarray(rtt_ms, dtype=np.float64)
               + sends * np.asarray(edge_ms, dtype=np.float64) * edge_wait_factor(edge_load))
    energy = energy_mj(device_ms=device, megabits=sends * np.asarray(megabits, dtype=np.float64),
                       transmit_ms=transfer, device_power_mw=device_power_mw,
                       radio_alpha_mw_per_mbps=radio_alpha_mw_per_mbps, radio_beta_mw=radio_beta_mw)
    return latency, energy
