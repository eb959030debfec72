"""TFLite interpreter backends behind one small interface.

Backends are tried in this order unless one is named: ``litert`` (ai-edge-litert),
``tflite-runtime`` and ``tf`` (tensorflow.lite). Devices normally have one of the first
two; TensorFlow is only imported when nothing else is installed or it is asked for.

Delegates: ``"edgetpu"`` (first Edge TPU), ``"edgetpu:usb"``, ``"edgetpu:usb:0"``,
``"edgetpu:pci:0"`` load ``libedgetpu.so.1``. A missing library or device is a
``DelegateError`` naming it, or, with ``allow_fallback=True``, a logged fallback to CPU.

Kernels: ``"default"`` lets the runtime apply its default delegate (LiteRT applies XNNPACK,
which is fast but rounds int8 results differently from the reference kernels);
``"builtin"`` runs TFLite's builtin kernels only (``BUILTIN_WITHOUT_DEFAULT_DELEGATES``),
whose results are the same on LiteRT, tflite-runtime and across CPU architectures.
"""

from __future__ import annotations

import ctypes
import importlib
import importlib.metadata
import logging
import platform
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from .._native import native_stderr_logged
from ..errors import BackendError, DelegateError, InputError

__all__ = [
    "BACKEND_ORDER",
    "KERNELS",
    "Backend",
    "Interpreter",
    "InterpreterFactory",
    "InterpreterOptions",
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
_DISTRIBUTIONS = {"litert": "ai-edge-litert", "tflite-runtime": "tflite-runtime", "tf": "tensorflow"}
SIGNATURE_KEY = "serving_default"
KERNELS = ("default", "builtin")


@dataclass(frozen=True)
class Backend:
    """An importable interpreter implementation."""

    name: str
    interpreter_class: Callable[..., Any]
    load_delegate: Callable[..., Any]
    op_resolver_type: Any = None  # the module's OpResolverType enum

    @property
    def version(self) -> str:
        """The installed version of the backend's distribution ("unknown" when not recorded)."""
        try:
            return importlib.metadata.version(_DISTRIBUTIONS[self.name])
        except importlib.metadata.PackageNotFoundError:
            return "unknown"

    def resolver_options(self, kernels: str) -> dict[str, Any]:
        """Interpreter keyword arguments selecting ``kernels`` (one of ``KERNELS``)."""
        if kernels not in KERNELS:
            raise BackendError(f"unknown kernels {kernels!r}; choose one of {', '.join(KERNELS)}")
        if kernels == "default":
            return {}
        if self.op_resolver_type is None:
            raise BackendError(f"{self.name} cannot choose its kernels; use --kernels default")
        return {"experimental_op_resolver_type": self.op_resolver_type.BUILTIN_WITHOUT_DEFAULT_DELEGATES}


def _import_backend(name: str) -> Backend:
    module = importlib.import_module(_BACKEND_MODULES[name])
    if name == "tf":
        lite = module.lite
        return Backend(name, lite.Interpreter, lite.experimental.load_delegate,
                       getattr(lite.experimental, "OpResolverType", None))
    return Backend(name, module.Interpreter, module.load_delegate, getattr(module, "OpResolverType", None))


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


class Interpreter(Protocol):
    """What a segment runner needs from an interpreter: run once on named tensors."""

    @property
    def backend_name(self) -> str:
        ...

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        ...


# Makes the interpreter of one segment from its flatbuffer: (model bytes, label) -> interpreter.
InterpreterFactory = Callable[[bytes, str], Interpreter]


@dataclass(frozen=True)
class InterpreterOptions:
    """Which interpreter runs segments: backend name, threads, delegate, whether a missing
    delegate falls back to the CPU, and which kernels (see the module docstring)."""

    backend: str | None = None
    num_threads: int | None = None
    delegate: str | None = None
    allow_fallback: bool = False
    kernels: str = "default"

    def make(self, model_content: bytes, label: str = "model") -> SegmentInterpreter:
        """A ``SegmentInterpreter`` with these options (an ``InterpreterFactory``)."""
        return SegmentInterpreter(
            model_content, backend=self.backend, num_threads=self.num_threads, delegate=self.delegate,
            allow_fallback=self.allow_fallback, kernels=self.kernels, label=label,
        )


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
        kernels: str = "default",
        label: str = "model",
    ) -> None:
        self.backend = resolve_backend(backend)
        self.label = label
        self.kernels = kernels
        resolver = self.backend.resolver_options(kernels)
        delegates = []
        if delegate:
            try:
                delegates.append(_load_edgetpu(self.backend, delegate))
            except DelegateError as e:
                if not allow_fallback:
                    raise
                # Log the text, not the exception: a log record that kept its traceback alive
                # would keep this frame's locals, and LiteRT refuses to invoke an interpreter
                # that something else still references.
                log.warning("%s; falling back to the CPU for %s", str(e), label)
        self.delegate = delegate if delegates else None
        try:
            # LiteRT announces its XNNPACK delegate from C++ on every start: the log, not the terminal.
            with native_stderr_logged(log, f"{self.backend.name} creating the interpreter for {label}"):
                self._interpreter = self.backend.interpreter_class(
                    model_content=model_content, experimental_delegates=delegates or None, num_threads=num_threads,
                    **resolver,
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
    def backend_name(self) -> str:
        return self.backend.name

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
