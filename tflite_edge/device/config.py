"""Settings of a device runtime, grouped by concern.

``DeviceConfig`` holds what the runtime itself decides with (identity, codec, default
wait, error policy, warm-up), an ``InterpreterOptions`` (how segments run) and an
``OffloadOptions`` (how the edge is reached). ``DeviceRuntime`` also takes the same
settings as flat keywords (``DeviceOptions``), which ``DeviceConfig.from_options`` groups.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TypedDict

from ..errors import TransportError
from ..runtime.backends import InterpreterOptions
from ..transport.protocol import validate_device_id
from ..transport.wire import CODECS
from .offload import OffloadOptions

__all__ = ["DeviceConfig", "DeviceOptions"]


class DeviceOptions(TypedDict, total=False):
    """The flat keywords ``DeviceRuntime`` accepts besides a ``DeviceConfig``."""

    device_id: str
    codec: str
    default_timeout_ms: float
    raise_remote_errors: bool
    warmup: bool
    backend: str | None
    num_threads: int | None
    delegate: str | None
    allow_fallback: bool
    kernels: str
    prefix: str
    qos: int
    connect_timeout_s: float
    require_broker: bool


_INTERPRETER_KEYS = frozenset(f.name for f in dataclasses.fields(InterpreterOptions))
_OFFLOAD_KEYS = frozenset(f.name for f in dataclasses.fields(OffloadOptions))


@dataclass(frozen=True)
class DeviceConfig:
    """How a device runtime runs requests.

    ``default_timeout_ms`` bounds the wait for the edge when a plan has no deadline.
    ``raise_remote_errors=True`` raises an edge's error reply (e.g. ``UnknownBundleError``)
    instead of falling back. ``warmup`` loads and times every segment at start, which the
    fallback budget needs.
    """

    device_id: str = "device"
    codec: str = "none"
    default_timeout_ms: float = 10_000.0
    raise_remote_errors: bool = False
    warmup: bool = True
    interpreter: InterpreterOptions = field(default_factory=InterpreterOptions)
    offload: OffloadOptions = field(default_factory=OffloadOptions)

    def __post_init__(self) -> None:
        validate_device_id(self.device_id)
        if self.codec not in CODECS:
            raise TransportError(f"unknown codec {self.codec!r}; choose one of {', '.join(CODECS)}")

    @classmethod
    def from_options(cls, base: DeviceConfig | None = None, **options: object) -> DeviceConfig:
        """``base`` (or the defaults) with the flat ``DeviceOptions`` keywords applied."""
        base = base if base is not None else cls()
        own = {k: v for k, v in options.items() if k not in _INTERPRETER_KEYS | _OFFLOAD_KEYS}
        flat_fields = {f.name for f in dataclasses.fields(cls)} - {"interpreter", "offload"}
        unknown = set(own) - flat_fields
        if unknown:
            raise TypeError(f"unexpected device runtime option(s): {', '.join(sorted(unknown))}")
        interpreter = dataclasses.replace(
            base.interpreter, **{k: v for k, v in options.items() if k in _INTERPRETER_KEYS}  # type: ignore[arg-type]
        )
        offload = dataclasses.replace(
            base.offload, **{k: v for k, v in options.items() if k in _OFFLOAD_KEYS}  # type: ignore[arg-type]
        )
        return dataclasses.replace(base, interpreter=interpreter, offload=offload, **own)  # type: ignore[arg-type]
