"""What a device measures for its policy besides the link: its speed, the edge's load, its power budget.

Pure logic with injectable clocks and sysfs roots (tested without a broker), plus
:class:`ContextSubscriber`, the MQTT client that feeds the edge's load and the operator's
budget into them. ``PolicyRunner`` (``device.policy_loop``) reads them before each decision;
the table in docs/policy.md ("what the policy sees") lists every feature's source, unit and
staleness rule.

* Device speed (:func:`measured_device_speed`): the policy's nominal per-segment device
  times (``PlanningModel.device_segment_ms``, what training assumed at speed 1) over the
  runtime's measured ones (``DeviceRuntime.segment_ms``, a moving average refreshed by every
  segment the device runs), so throttling, CPU contention or a slower board show as a
  speed below 1.
* Edge load (:class:`EdgeLoadTracker`): the workers' reports on ``{prefix}/edge/+/load``
  (:mod:`tflite_edge.edge.load`); the mean of every worker's latest report younger than
  ``stale_after_s`` (by this device's clock at arrival), none when every report is stale.
* Power budget (:class:`PowerBudget`): the operator's value on the retained topic
  ``{prefix}/dev/{device_id}/budget`` when set, else the configured one (``--power-budget-mw``),
  scaled by the battery's charge while it discharges (``/sys/class/power_supply``).
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import PolicyError
from ..transport.mqtt import SubscribingClient, device_connection

__all__ = [
    "POWER_SUPPLY_ROOT",
    "BatteryState",
    "ContextSubscriber",
    "EdgeLoadTracker",
    "PowerBudget",
    "budget_topic",
    "measured_device_speed",
    "read_battery",
]

log = logging.getLogger(__name__)

POWER_SUPPLY_ROOT = Path("/sys/class/power_supply")
MAX_CONTEXT_MESSAGE_BYTES = 4096
#: The range a measured device speed is clipped to (a policy was trained on speeds near 1).
SPEED_RANGE = (0.05, 4.0)
#: The battery charge below which the budget stops shrinking (a share of the configured budget).
MIN_BATTERY_SHARE = 0.1


def budget_topic(prefix: str, device_id: str) -> str:
    """The retained topic an operator sets a device's power budget on (mW, a number or ``{"power_budget_mw": x}``)."""
    from ..transport.protocol import Topics

    return Topics(prefix).device(device_id, "budget")


def measured_device_speed(nominal_segment_ms: Sequence[float], measured_segment_ms: Sequence[float]) -> float | None:
    """Σ nominal / Σ measured over segments measured on both sides; None when nothing is comparable.

    Clipped to :data:`SPEED_RANGE`.
    """
    pairs = [(n, m) for n, m in zip(nominal_segment_ms, measured_segment_ms, strict=False) if n > 0 and m > 0]
    if not pairs:
        return None
    speed = sum(n for n, _ in pairs) / sum(m for _, m in pairs)
    return min(max(speed, SPEED_RANGE[0]), SPEED_RANGE[1])


class EdgeLoadTracker:
    """The latest load report of every edge worker; ``load()`` is the mean of the fresh ones."""

    def __init__(self, *, stale_after_s: float = 5.0, clock: Callable[[], float] = time.monotonic) -> None:
        if not stale_after_s > 0:
            raise PolicyError(f"stale_after_s must be positive, got {stale_after_s}")
        self.stale_after_s = stale_after_s
        self._clock = clock
        self._lock = threading.Lock()
        self._reports: dict[str, tuple[float, float]] = {}  # worker id -> (load, arrival time)
        self.rejected = 0

    def handle(self, payload: bytes) -> bool:
        """Take one load message (see :mod:`tflite_edge.edge.load`); False (and logged) when unusable."""
        try:
            if len(payload) > MAX_CONTEXT_MESSAGE_BYTES:
                raise ValueError(f"{len(payload)} bytes")
            doc = json.loads(payload)
            worker, load = str(doc["worker_id"]), doc["load"]
            if isinstance(load, bool) or not isinstance(load, (int, float)) or not 0 <= load < 1:
                raise ValueError(f"load {load!r} is not in [0, 1)")
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
            self.rejected += 1
            log.debug("edge load message ignored: %s", e)
            return False
        with self._lock:
            self._reports[worker] = (float(load), self._clock())
        return True

    def load(self) -> tuple[float | None, float | None]:
        """(mean load of the reports younger than ``stale_after_s``, age in s of the freshest report).

        The load is None when no report is fresh; the age is None when none ever arrived.
        """
        with self._lock:
            now = self._clock()
            fresh = [load for load, at in self._reports.values() if now - at <= self.stale_after_s]
            newest = max((at for _, at in self._reports.values()), default=None)
        age = None if newest is None else now - newest
        return (sum(fresh) / len(fresh) if fresh else None), age


@dataclass(frozen=True)
class BatteryState:
    """A battery under /sys/class/power_supply: charge in percent and whether it is discharging."""

    name: str
    capacity_percent: float
    discharging: bool


def read_battery(root: str | Path = POWER_SUPPLY_ROOT) -> BatteryState | None:
    """The first battery's state (``type`` Battery with a ``capacity``); None when there is none."""
    base = Path(root)
    try:
        supplies = sorted(base.iterdir())
    except OSError:
        return None
    for supply in supplies:
        try:
            if (supply / "type").read_text().strip() != "Battery":
                continue
            capacity = float((supply / "capacity").read_text().strip())
            status = (supply / "status").read_text().strip() if (supply / "status").exists() else "Unknown"
        except (OSError, ValueError):
            continue
        if math.isfinite(capacity):
            return BatteryState(supply.name, min(max(capacity, 0.0), 100.0), status == "Discharging")
    return None


class PowerBudget:
    """The power budget now: the operator's (topic), else the configured one, scaled by a discharging battery.

    The battery is read at most every ``battery_every_s`` seconds; ``battery_root=None``
    ignores batteries.
    """

    def __init__(self, configured_mw: float, *, battery_root: str | Path | None = POWER_SUPPLY_ROOT,
                 battery_every_s: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        if not (math.isfinite(configured_mw) and configured_mw > 0):
            raise PolicyError(f"a power budget must be a positive number of mW, got {configured_mw}")
        self.configured_mw = configured_mw
        self.battery_root = battery_root
        self.battery_every_s = battery_every_s
        self._clock = clock
        self._lock = threading.Lock()
        self._operator_mw: float | None = None
        self._battery: BatteryState | None = None
        self._battery_read_at: float | None = None
        self.rejected = 0

    def handle(self, payload: bytes) -> bool:
        """Take the operator's budget message: a number of mW or ``{"power_budget_mw": x}``; empty clears it."""
        if not payload:
            with self._lock:
                self._operator_mw = None
            return True
        try:
            if len(payload) > MAX_CONTEXT_MESSAGE_BYTES:
                raise ValueError(f"{len(payload)} bytes")
            doc = json.loads(payload)
            value = doc["power_budget_mw"] if isinstance(doc, dict) else doc
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
                    math.isfinite(value) and value > 0):
                raise ValueError(f"{value!r} is not a positive number of mW")
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
            self.rejected += 1
            log.warning("power budget message ignored (keeping %.0f mW): %s", self.current()[0], e)
            return False
        with self._lock:
            self._operator_mw = float(value)
        log.info("power budget set to %.0f mW by the operator", value)
        return True

    def battery(self) -> BatteryState | None:
        if self.battery_root is None:
            return None
        now = self._clock()
        if self._battery_read_at is None or now - self._battery_read_at >= self.battery_every_s:
            self._battery, self._battery_read_at = read_battery(self.battery_root), now
        return self._battery

    def current(self) -> tuple[float, str]:
        """(budget in mW, its source: ``operator``, ``configured``, each ``+battery`` when scaled)."""
        with self._lock:
            base, source = ((self._operator_mw, "operator") if self._operator_mw is not None
                            else (self.configured_mw, "configured"))
        battery = self.battery()
        if battery is not None and battery.discharging:
            return base * max(battery.capacity_percent / 100.0, MIN_BATTERY_SHARE), f"{source}+battery"
        return base, source


class ContextSubscriber(SubscribingClient):
    """One MQTT client that feeds edge load reports and the operator's budget topic into a tracker and a budget."""

    def __init__(self, broker_url: str, *, device_id: str, prefix: str, edge_load: EdgeLoadTracker | None,
                 budget: PowerBudget | None, connect_timeout_s: float = 10.0) -> None:
        from ..edge.load import edge_load_filter

        self.edge_load = edge_load
        self.budget = budget
        self.topics: dict[str, Callable[[bytes], bool]] = {}
        if edge_load is not None:
            self.topics[edge_load_filter(prefix)] = edge_load.handle
        if budget is not None:
            self.topics[budget_topic(prefix, device_id)] = budget.handle
        self._budget_topic = budget_topic(prefix, device_id)
        # Its own login and client id ({device}-context) on a broker set up by `broker-config`.
        super().__init__(*device_connection(broker_url, device_id, "context"), connect_timeout_s)
        self._subscribed = threading.Event()

    def _configure(self, client: Any) -> None:
        client.on_connect = self._on_connect
        client.on_subscribe = lambda *args: self._subscribed.set()
        client.on_message = self._on_message

    def _connected(self) -> None:
        self._subscribed.wait(self._connect_timeout_s)

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if not reason_code.is_failure and self.topics:
            client.subscribe([(topic, 0) for topic in self.topics])

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        if message.topic == self._budget_topic and self.budget is not None:
            self.budget.handle(bytes(message.payload))
        elif self.edge_load is not None and message.topic != self._budget_topic:
            self.edge_load.handle(bytes(message.payload))
