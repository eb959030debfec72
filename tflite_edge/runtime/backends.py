"""TFLite interpreter backends behind one small interface.

Backends are tried in this order unless one is named: ``litert`` (ai-edge-litert),
``tflite-runtime`` and ``tf`` (tensorflow.lite). Devices normally have one of the first
two; TensorFlow is only imported when nothing else is installed or it is asked for.

Delegates: ``"edgetpu"`` (first Edge TPU), ``"edgetpu:usb"``, ``"edgetpu:usb:0"``,
``"edgetpu:pci:0"`` load ``libedgetpu.so.1``. A missing library or device is a
``DelegateError`` naming it, or, with ``allow_fallback=True``, a logged fallback to CPU.
"""

from __future__ import annotations

import ctypes
import importlib
import logging
import platform
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._native import native_stderr_logged
from ..errors import BackendError, DelegateError, InputError

__all__ = [
    "BACKEND_ORDER",
    "Backend",
    "SegmentInterpreter",
    "available_backends",
    "resolve_backend",
]

log = logging.getLogger(__name__)

BACKEND_ORDER = ("litert", "tflite-runtime", "tf")
_BACKEND_MODULES = {
    "litert": "ai_edge_litert.interpreter",
    "tflite-runtime": "tflite_runtime.interpreter",
    "tf": "tensorflow",
}
_ALIASES = {"ai_edge_litert": "litert", "tflite_runtime": "tflite-runtime", "tensorflow": "tf", "tflite": "tf"}
SIGNATURE_KEY = "serving_default"


@dataclass(frozen=True)
class Backend:
    """An importable interpreter implementation."""

    name: str
    interpreter_class: Callable[..., Any]
    load_delegate: Callable[..., Any]


def _import_backend(name: str) -> Backend:
    module = importlib.import_module(_BACKEND_MODULES[name])
    if name == "tf":
        return Backend(name, module.lite.Interpreter, module.lite.experimental.load_delegate)
    return Backend(name, module.Interpreter, module.load_delegate)


def available_backends() -> list[str]:
    """Names of the backends that import on this machine, in preference order."""
    found = []
    for name in BACKEND_ORDER:
        try:
            _import_backend(name)
        except ImportError:
            continue
        found.append(name)
    return found


def resolve_backend(name: str | None = None) -> Backend:
    """The named backend, or the first importable one in ``BACKEND_ORDER``."""
    if name is not None:
        key = _ALIASES.get(name, name)
        if key not in _BACKEND_MODULES:
            raise BackendError(f"unknown backend {name!r}; choose one of {', '.join(BACKEND_ORDER)}")
        try:
            return _import_backend(key)
        except ImportError as e:
            raise BackendError(f"backend {key!r} is not installed ({e}); {_install_hint(key)}") from e
    for key in BACKEND_ORDER:
        try:
            return _import_backend(key)
        except ImportError:
            continue
    raise BackendError(
        "no TFLite interpreter is installed: pip install ai-edge-litert "
        "(or tflite-runtime on Python <= 3.11, or tensorflow)"
    )


def _install_hint(key: str) -> str:
    return {
        "litert": "pip install ai-edge-litert",
        "tflite-runtime": "pip install tflite-runtime (needs numpy<2)",
        "tf": "pip install tensorflow",
    }[key]


def _edgetpu_options(spec: str) -> dict[str, str]:
    # "edgetpu", "edgetpu:usb", "edgetpu:usb:0", "edgetpu:pci:1"
    parts = spec.split(":", 1)
    if parts[0] != "edgetpu":
        raise DelegateError(f"unknown delegate {spec!r}; the supported delegate is 'edgetpu[:usb|:pci[:N]]'")
    return {"device": parts[1]} if len(parts) == 2 and parts[1] else {}


def _edgetpu_library() -> str:
    return {"Darwin": "libedgetpu.1.dylib", "Windows": "edgetpu.dll"}.get(platform.system(), "libedgetpu.so.1")


def _load_edgetpu(backend: Backend, spec: str) -> Any:
    library = _edgetpu_library()
    options = _edgetpu_options(spec)
    try:
        # Probe the library first: the interpreter's Delegate object raises again from its
        # destructor when the library is missing.
        ctypes.CDLL(library)
        return backend.load_delegate(library, options)
    except OSError as e:
        raise DelegateError(
            f"the Edge TPU runtime library {library} is not installed ({e}); install libedgetpu "
            "(a build matching your TFLite runtime) or run without --delegate"
        ) from e
    except (ValueError, RuntimeError) as e:
        raise DelegateError(
            f"{library} loaded but no Edge TPU {options.get('device', '')} answered ({e}); check that the "
            "accelerator is plugged in and that this user may access it"
        ) from e


class SegmentInterpreter:
    """One TFLite model with named inputs and outputs (its ``serving_default`` signature)."""

    def __init__(
        self,
        model_content: bytes,
        *,
        backend: str | None = None,
        num_threads: int | None = None,
        delegate: str | None = None,
        allow_fallback: bool = False,
        label: str = "model",
    ) -> None:
        self.backend = resolve_backend(backend)
        self.label = label
        delegates = []
        if delegate:
            try:
                delegates.append(_load_edgetpu(self.backend, delegate))
            except DelegateError as e:
                if not allow_fallback:
                    raise
                log.warning("%s; falling back to the CPU for %s", e, label)
        self.delegate = delegate if delegates else None
        try:
            # LiteRT announces its XNNPACK delegate from C++ on every start: the log, not the terminal.
            with native_stderr_logged(log, f"{self.backend.name} creating the interpreter for {label}"):
                self._interpreter = self.backend.interpreter_class(
                    model_content=model_content, experimental_delegates=delegates or None, num_threads=num_threads
                )
                self._interpreter.allocate_tensors()
            runner = self._interpreter.get_signature_runner(SIGNATURE_KEY)
            self.input_details: dict[str, dict[str, Any]] = runner.get_input_details()
            self.output_details: dict[str, dict[str, Any]] = runner.get_output_details()
        except (RuntimeError, ValueError) as e:
            if "edgetpu-custom-op" in str(e):
                raise DelegateError(
                    f"{label} was compiled for the Edge TPU and needs the delegate: run with --delegate edgetpu"
                ) from e
            raise BackendError(f"{self.backend.name} cannot load {label}: {e}") from e
        self._inputs = {
            name: (d["index"], tuple(int(n) for n in d["shape"]), np.dtype(d["dtype"]))
            for name, d in self.input_details.items()
        }
        self._outputs = {name: d["index"] for name, d in self.output_details.items()}

    @property
    def input_names(self) -> list[str]:
        return list(self._inputs)

    @property
    def output_names(self) -> list[str]:
        return list(self._outputs)

    def operations(self) -> list[tuple[str, tuple[list[tuple[int, ...]], list[tuple[int, ...]]]]]:
        """Every operation of the model: (op name, (input shapes, output shapes)), for cost models."""
        shapes = {t["index"]: tuple(int(n) for n in t["shape"]) for t in self._interpreter.get_tensor_details()}
        return [
            (str(op["op_name"]), ([shapes[i] for i in op["inputs"] if i >= 0 and i in shapes],
                                  [shapes[i] for i in op["outputs"] if i in shapes]))
            for op in self._interpreter._get_ops_details()
        ]

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run once on named input arrays; returns every named output (copies)."""
        if set(feeds) != set(self._inputs):
            raise InputError(f"{self.label} takes inputs {sorted(self._inputs)}, got {sorted(feeds)}")
        for name, value in feeds.items():
            index, shape, dtype = self._inputs[name]
            if value.shape != shape or value.dtype != dtype:
                raise InputError(
                    f"{self.label} input {name!r} must be {dtype.name}{list(shape)}, "
                    f"got {value.dtype.name}{list(value.shape)}"
                )
            self._interpreter.set_tensor(index, value)
        try:
            self._interpreter.invoke()
        except RuntimeError as e:
            raise BackendError(f"{self.label} failed on {self.backend.name}: {e}") from e
        return {name: self._interpreter.get_tensor(index) for name, index in self._outputs.items()}
