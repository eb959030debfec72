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
    │   ├── CalibrationError        calibration or validation data is missing or malformed
    │   └── EdgeTpuCompileError     edgetpu_compiler is missing or failed on a segment
    ├── VerificationError           the segment chain does not reproduce the whole model
    ├── BackendError                no usable TFLite interpreter, or it failed
    │   └── DelegateError           a hardware delegate (Edge TPU) is missing or unusable
    ├── InputError                  user data (an .npy/.npz file, an option) is unusable
    ├── TransportError              device-edge co-inference over MQTT failed
    │   ├── BrokerUrlError          a broker URL is malformed or uses an unknown scheme
    │   ├── BrokerConnectionError   the MQTT broker cannot be reached or refused the client
    │   ├── BrokerError             a private Mosquitto (tests, demo, benchmarks) cannot be started
    │   ├── TopicError              a device id, bundle id or topic prefix is not a valid topic level
    │   ├── WireFormatError         an activation frame is malformed (never trusted, never a crash)
    │   │   ├── FrameTruncatedError the frame is shorter than its header says
    │   │   ├── FrameHeaderError    bad magic, unknown version, flags or dtype, or an out-of-range field
    │   │   ├── FrameLimitError     a length, rank or size exceeds the parser's bounds
    │   │   ├── FrameMismatchError  the frame does not fit the bundle's manifest (tensor, shape, quantization)
    │   │   └── CompressionError    unknown or unavailable codec, or the payload does not decompress
    │   ├── ProtocolError           a request or reply violates the request/reply protocol
    │   └── RemoteError             the edge answered a request with an error reply
    │       └── UnknownBundleError  the edge does not serve the requested bundle
    ├── TelemetryError              measuring or publishing telemetry failed
    │   ├── PowerSensorError        a power sensor is absent, unreadable or gave nonsense
    │   └── TelemetrySchemaError    a telemetry message does not match the documented schema
    ├── FirmwareBridgeError         the serial link to a microcontroller failed
    │   ├── SerialFrameError        a serial frame is corrupt, torn, oversized or of another version
    │   ├── SerialMessageError      a frame's message payload is malformed or unexpected
    │   ├── SerialPortError         the serial port cannot be opened, or went away
    │   ├── BridgeTimeoutError      the microcontroller did not answer in time, after retries
    │   ├── McuError                the microcontroller answered with an error code and text
    │   └── MicroModelError         TFLite Micro cannot run a segment (unsupported ops, arena too small)
    ├── PolicyError                 the exit/offload policy, its simulator or its training cannot run
    │   ├── TraceError              a bandwidth trace is missing, empty or malformed
    │   ├── ScenarioError           a scenario file (schedules of the changing world) is malformed
    │   └── ProfileError            a latency profile or device profile does not fit the bundle
    └── SecurityError               signing, verification, TLS or broker access set-up failed
        ├── SigningKeyError         a key file is missing, unreadable, encrypted without a password or not Ed25519
        ├── SignatureError          a signature does not verify: tampered content or an untrusted key
        │   └── MissingSignatureError  the bundle or policy carries no signature at all
        ├── RollbackError           a signed bundle or policy is older than one this device already used
        ├── StateFileError          the device's state file (version floors) cannot be read or written
        ├── TlsSettingsError        a CA, certificate or key file for TLS is missing or unusable
        └── BrokerConfigError       a broker configuration (users, ACLs, password file) cannot be made

Third-party exceptions are translated at the boundary and re-raised ``from`` their cause.
The codes an edge puts in error replies, and that ``WireFormatError`` and ``RemoteError``
carry, are the values of ``ErrorCode``.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "BackendError",
    "BundleError",
    "CalibrationError",
    "ChainError",
    "ChecksumError",
    "ConversionError",
    "CutError",
    "DelegateError",
    "EdgeTpuCompileError",
    "InputError",
    "ManifestError",
    "ModelLoadError",
    "SchemaVersionError",
    "TfliteEdgeError",
    "VerificationError",
    "TransportError",
    "BrokerUrlError",
    "BrokerConnectionError",
    "BrokerError",
    "ErrorCode",
    "TopicError",
    "WireFormatError",
    "FrameTruncatedError",
    "FrameHeaderError",
    "FrameLimitError",
    "FrameMismatchError",
    "CompressionError",
    "ProtocolError",
    "RemoteError",
    "UnknownBundleError",
    "FirmwareBridgeError",
    "SerialFrameError",
    "SerialMessageError",
    "SerialPortError",
    "BridgeTimeoutError",
    "McuError",
    "MicroModelError",
    "PolicyError",
    "TraceError",
    "ScenarioError",
    "ProfileError",
    "SecurityError",
    "SigningKeyError",
    "SignatureError",
    "MissingSignatureError",
    "RollbackError",
    "StateFileError",
    "TlsSettingsError",
    "BrokerConfigError",
]


class ErrorCode(StrEnum):
    """Error codes on the wire: in an edge's error reply, and in ``code`` of the errors below."""

    UNKNOWN_BUNDLE = "unknown_bundle"
    BAD_REQUEST = "bad_request"
    EXPIRED = "expired"
    INTERNAL = "internal"
    BAD_REPLY = "bad_reply"  # the device could not use the edge's reply
    ERROR = "error"  # an error reply without a more specific code
    BAD_FRAME = "bad_frame"
    TRUNCATED = "truncated"
    BAD_HEADER = "bad_header"
    TOO_LARGE = "too_large"
    MISMATCH = "mismatch"
    COMPRESSION = "compression"


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


class EdgeTpuCompileError(ConversionError):
    """The Edge TPU compiler is not installed, or it failed on a segment."""


class VerificationError(TfliteEdgeError):
    """The chain of segments does not reproduce the whole quantized model."""


class BackendError(TfliteEdgeError):
    """No usable TFLite interpreter backend, or the interpreter failed."""


class DelegateError(BackendError):
    """A hardware delegate (e.g. the Edge TPU's libedgetpu) is missing or unusable."""


class InputError(TfliteEdgeError):
    """User-supplied data or options cannot be used."""


class TransportError(TfliteEdgeError):
    """Device-edge co-inference over MQTT failed."""


class BrokerUrlError(TransportError):
    """A broker URL is malformed; use mqtt://[user:pass@]host[:port] or mqtts://..."""


class BrokerConnectionError(TransportError):
    """The MQTT broker cannot be reached in time, or it refused the connection."""


class BrokerError(TransportError):
    """A private Mosquitto broker (tests, demo, benchmarks) cannot be started."""


class TopicError(TransportError):
    """A device id, bundle id, group or topic prefix cannot be used as an MQTT topic level."""


class WireFormatError(TransportError):
    """An activation frame is malformed or does not fit the bundle; ``code`` names the reason on the wire."""

    code: str = ErrorCode.BAD_FRAME


class FrameTruncatedError(WireFormatError):
    """The frame ends before the lengths in its header say it should."""

    code: str = ErrorCode.TRUNCATED


class FrameHeaderError(WireFormatError):
    """Bad magic, an unknown version, flag, dtype or codec id, or a field out of range."""

    code: str = ErrorCode.BAD_HEADER


class FrameLimitError(WireFormatError):
    """A length, rank, dimension or payload size exceeds what the parser accepts."""

    code: str = ErrorCode.TOO_LARGE


class FrameMismatchError(WireFormatError):
    """The frame names a tensor, shape, dtype or quantization the bundle does not have there."""

    code: str = ErrorCode.MISMATCH


class CompressionError(WireFormatError):
    """The payload's codec is not installed here, or the payload does not decompress to its size."""

    code: str = ErrorCode.COMPRESSION


class ProtocolError(TransportError):
    """A request or reply violates the request/reply protocol (missing or malformed properties)."""


class RemoteError(TransportError):
    """The edge answered with an error reply; ``code`` is the reply's error code."""

    def __init__(self, message: str, code: str = ErrorCode.ERROR) -> None:
        super().__init__(message)
        self.code = code


class UnknownBundleError(RemoteError):
    """The edge does not serve the bundle the request names."""


class TelemetryError(TfliteEdgeError):
    """Measuring or publishing telemetry failed."""


class PowerSensorError(TelemetryError):
    """A power sensor is absent, cannot be read, or returned a value that makes no sense."""


class TelemetrySchemaError(TelemetryError):
    """A telemetry, status or experience message does not match the documented schema."""


class FirmwareBridgeError(TfliteEdgeError):
    """The serial link to a microcontroller (the firmware bridge) failed."""


class SerialFrameError(FirmwareBridgeError):
    """A serial frame is corrupt (COBS or CRC), torn, oversized or from another protocol version."""


class SerialMessageError(FirmwareBridgeError):
    """A frame arrived intact but its message payload is malformed, out of bounds or unexpected."""


class SerialPortError(FirmwareBridgeError):
    """The serial port cannot be opened, or it went away while in use."""


class BridgeTimeoutError(FirmwareBridgeError):
    """The microcontroller did not answer within the timeout, even after retries."""


class McuError(FirmwareBridgeError):
    """The microcontroller answered with an error message; ``code`` is its numeric error code."""

    def __init__(self, message: str, code: int = 0) -> None:
        super().__init__(message)
        self.code = code


class MicroModelError(FirmwareBridgeError):
    """TFLite Micro cannot run a segment: unsupported operators, or the tensor arena is too small."""


class PolicyError(TfliteEdgeError):
    """The exit/offload policy, its simulator or its training cannot run."""


class TraceError(PolicyError):
    """A bandwidth trace is missing, empty or malformed (expected lines of `time_s <tab> Mbit/s`)."""


class ScenarioError(PolicyError):
    """A scenario file (piecewise-constant schedules of device speed, edge load, budget, RTT) is malformed."""


class ProfileError(PolicyError):
    """A latency profile or device profile does not fit the bundle it is used with."""


class SecurityError(TfliteEdgeError):
    """Signing, signature verification, TLS or broker access control cannot be set up or failed."""


class SigningKeyError(SecurityError):
    """A signing or verification key file is missing, unreadable, needs a password, or is not Ed25519."""


class SignatureError(SecurityError):
    """A signature does not verify: the content was changed after signing, or the key is not trusted."""


class MissingSignatureError(SignatureError):
    """The bundle, policy or message carries no signature; sign it with `tflite-edge sign`."""


class RollbackError(SecurityError):
    """A signed bundle or policy is older than the version floor this device keeps: refused."""


class StateFileError(SecurityError):
    """The state file that keeps the version floors cannot be read, parsed or written."""


class TlsSettingsError(SecurityError):
    """A CA, certificate or private key file for TLS is missing, unreadable or does not match."""


class BrokerConfigError(SecurityError):
    """A Mosquitto configuration (users, passwords, ACLs, TLS listener) cannot be generated."""
