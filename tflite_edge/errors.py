"""Every exception tflite-edge raises, in one place.

Hierarchy::

    TfliteEdgeError
    ├── BundleError                 a bundle directory cannot be used
    │   ├── ManifestError           bundle.json is malformed, incomplete or has unknown keys
    │   │   └── SchemaVersionError  bundle.json was written by a newer tflite-edge
    │   ├── ChecksumError           a segment file does not match its recorded sha256
    │   └── ChainError              a segment's input is not produced by an earlier segment
    ├── ConversionError             a Keras model cannot be turned into a bundle
    │   ├── ModelLoadError          the file is not a loadable Keras model
    │   ├── CutError                a requested cut does not separate the graph
    │   └── CalibrationError        calibration or validation data is missing or malformed
    ├── VerificationError           the segment chain does not reproduce the whole model
    ├── BackendError                no usable TFLite interpreter, or it failed
    │   └── DelegateError           a hardware delegate (Edge TPU) is missing or unusable
    └── InputError                  user data (an .npy/.npz file, an option) is unusable

Third-party exceptions are translated at the boundary and re-raised ``from`` their cause.
Later subsystems (wire format, transport, telemetry, agents, firmware bridge) add their
own branches below ``TfliteEdgeError``.
"""

from __future__ import annotations

__all__ = [
    "BackendError",
    "BundleError",
    "CalibrationError",
    "ChainError",
    "ChecksumError",
    "ConversionError",
    "CutError",
    "DelegateError",
    "InputError",
    "ManifestError",
    "ModelLoadError",
    "SchemaVersionError",
    "TfliteEdgeError",
    "VerificationError",
]


class TfliteEdgeError(Exception):
    """Base class of every error tflite-edge raises on purpose."""


class BundleError(TfliteEdgeError):
    """A bundle directory cannot be used."""


class ManifestError(BundleError):
    """bundle.json is malformed, incomplete or has unknown keys."""


class SchemaVersionError(ManifestError):
    """bundle.json uses a schema version this tflite-edge does not know."""


class ChecksumError(BundleError):
    """A segment file does not match the sha256 recorded in the manifest."""


class ChainError(BundleError):
    """Segments do not chain: an input is not produced by the model input or an earlier segment."""


class ConversionError(TfliteEdgeError):
    """A Keras model cannot be turned into a segment bundle."""


class ModelLoadError(ConversionError):
    """The file is not a Keras model that can be loaded."""


class CutError(ConversionError):
    """A requested cut layer is unknown or does not separate the graph."""


class CalibrationError(ConversionError):
    """Calibration or validation data is missing or does not fit the model."""


class VerificationError(TfliteEdgeError):
    """The chain of segments does not reproduce the whole quantized model."""


class BackendError(TfliteEdgeError):
    """No usable TFLite interpreter backend, or the interpreter failed."""


class DelegateError(BackendError):
    """A hardware delegate (e.g. the Edge TPU's libedgetpu) is missing or unusable."""


class InputError(TfliteEdgeError):
    """User-supplied data or options cannot be used."""
