"""The bundle manifest: a small tree of frozen dataclasses stored as ``bundle.json``.

The manifest states the structure of a bundle explicitly (which tensor each segment reads
and writes, where each exit lives, what each cut hands on); nothing is inferred from
tensor order. Parsing is strict: unknown keys, missing fields, wrong types and newer schema
versions are errors that name the offending field.

Example document (abridged)::

    {
      "schema_version": 1,
      "bundle_id": "3f2a9c0d1b7e4a55",
      "model_name": "digits_exits",
      "quantization": "int8",
      "input": {"name": "image", "shape": [1, 8, 8, 1], "dtype": "float32", ...},
      "segments": [
        {"index": 0, "file": "segment_0.tflite", "sha256": "…", "size_bytes": 5120,
         "inputs": [{"name": "image", "dtype": "int8", "scale": 0.0627, "zero_point": -128, …}],
         "outputs": [{"name": "exit_0", …}, {"name": "block_1_out", …}]},
        …
      ],
      "exits": [{"name": "exit_0", "segment": 0, "num_classes": 10,
                 "accuracy": 0.91, "float_accuracy": 0.915}, …],
      "cuts": [{"layer": "block_1_out", "segment": 0, "activation_bytes": 1024}],
      "fused": [{"start": 0, "stop": 2, "file": "fused_0_2.tflite", "sha256": "…", "size_bytes": 9216,
                 "outputs": ["exit_0", "block_1_out", "exit_1", "block_2_out"]}, …],
      "converter_version": "0.1.0",
      "tensorflow_version": "2.21.0"
    }

Also optional: ``accuracy_measured_on`` names the interpreter that measured the exits'
accuracy (``{"backend": "litert", "backend_version": "2.3.0", "kernels": "default",
"machine": "x86_64"}``), and a segment may list compiled ``variants`` beside its CPU file
(``[{"target": "edgetpu", "file": "segment_0_edgetpu.tflite", "sha256": "…", "size_bytes":
6144, "compiler_version": "16.0.384591198", "mapped_ops": 5, "cpu_ops": ["SOFTMAX x1: …"]}]``).
Neither enters the bundle id: a compiled variant computes the same segment.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import ManifestError, SchemaVersionError

__all__ = [
    "MAX_RANK",
    "MAX_SEGMENT_BYTES",
    "MAX_TENSOR_BYTES",
    "SCHEMA_VERSION",
    "QUANTIZATION_MODES",
    "TensorSpec",
    "MeasuredOn",
    "SegmentVariant",
    "VARIANT_TARGETS",
    "SegmentSpec",
    "ExitSpec",
    "CutSpec",
    "FusedSpec",
    "Verification",
    "Manifest",
    "compute_bundle_id",
]

SCHEMA_VERSION = 1
QUANTIZATION_MODES = ("int8", "float16", "dynamic", "none")
VARIANT_TARGETS = ("edgetpu",)
DTYPE_BYTES = {
    "int8": 1,
    "uint8": 1,
    "int16": 2,
    "float16": 2,
    "int32": 4,
    "float32": 4,
    "int64": 8,
    "bool": 1,
}
# Bounds on what a manifest may claim, so that no size derived from it is absurd.
MAX_RANK = 8
MAX_TENSOR_BYTES = 1 << 31  # one tensor of at most 2 GiB
MAX_SEGMENT_BYTES = (1 << 31) - 1  # a flatbuffer cannot be larger
_MAX_VERSION = (1 << 63) - 1


def _require(doc: Mapping[str, Any], where: str, required: set[str], optional: set[str] = frozenset()) -> None:  # type: ignore[assignment]
    if not isinstance(doc, Mapping):
        raise ManifestError(f"{where}: expected an object, got {type(doc).__name__}")
    missing = required - doc.keys()
    if missing:
        raise ManifestError(f"{where}: missing field(s) {', '.join(sorted(missing))}")
    unknown = doc.keys() - required - optional
    if unknown:
        raise ManifestError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")


def _typed(value: Any, kind: type | tuple[type, ...], where: str) -> Any:
    # bool is an int subclass; a manifest that says `true` for a size is wrong.
    if isinstance(value, bool) and kind is not bool:
        raise ManifestError(f"{where}: expected {_kind_name(kind)}, got a boolean")
    if not isinstance(value, kind):
        raise ManifestError(f"{where}: expected {_kind_name(kind)}, got {type(value).__name__}")
    return value


def _kind_name(kind: type | tuple[type, ...]) -> str:
    if isinstance(kind, tuple):
        return " or ".join(k.__name__ for k in kind)
    return kind.__name__


def _optional_float(value: Any, where: str) -> float | None:
    if value is None:
        return None
    try:
        number = float(_typed(value, (int, float), where))
    except OverflowError as e:  # an integer beyond float range, e.g. 1e400 written out in digits
        raise ManifestError(f"{where}: must be a finite number") from e
    if not math.isfinite(number):
        raise ManifestError(f"{where}: must be a finite number")
    return number


def _plain_file_name(doc: Mapping[str, Any], where: str) -> str:
    file = _typed(doc["file"], str, f"{where}.file")
    if (not file or "/" in file or "\\" in file or file.startswith(".") or len(file) > 255
            or any(ord(c) < 32 or ord(c) == 127 for c in file)):
        raise ManifestError(f"{where}.file: {file!r} must be a plain file name inside the bundle "
                            "(no path separators, control characters or leading dot)")
    return file


def _size_bytes(doc: Mapping[str, Any], where: str) -> int:
    size_bytes = _typed(doc["size_bytes"], int, f"{where}.size_bytes")
    if not 0 <= size_bytes <= MAX_SEGMENT_BYTES:
        raise ManifestError(f"{where}.size_bytes: {size_bytes} is outside 0..{MAX_SEGMENT_BYTES:,}")
    return size_bytes


def _sha256(doc: Mapping[str, Any], where: str) -> str:
    sha = _typed(doc["sha256"], str, f"{where}.sha256")
    if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
        raise ManifestError(f"{where}.sha256: not a lowercase hex sha256 digest")
    return sha


@dataclass(frozen=True)
class TensorSpec:
    """A named tensor at a segment boundary; scale/zero_point are set for quantized dtypes."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    scale: float | None = None
    zero_point: int | None = None

    @property
    def bytes(self) -> int:
        """Size of one tensor of this spec in bytes."""
        return math.prod(self.shape) * DTYPE_BYTES[self.dtype]

    @property
    def is_quantized(self) -> bool:
        return self.scale is not None and self.scale > 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "shape": list(self.shape),
            "dtype": self.dtype,
            "scale": self.scale,
            "zero_point": self.zero_point,
            "bytes": self.bytes,
        }

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any], where: str) -> TensorSpec:
        _require(doc, where, {"name", "shape", "dtype"}, {"scale", "zero_point", "bytes"})
        name = _typed(doc["name"], str, f"{where}.name")
        shape = _typed(doc["shape"], list, f"{where}.shape")
        if len(shape) > MAX_RANK:
            raise ManifestError(f"{where}.shape: rank {len(shape)} exceeds {MAX_RANK}")
        dims = tuple(_typed(d, int, f"{where}.shape") for d in shape)
        if any(d <= 0 for d in dims):
            raise ManifestError(f"{where}.shape: dimensions must be positive, got {list(dims)}")
        dtype = _typed(doc["dtype"], str, f"{where}.dtype")
        if dtype not in DTYPE_BYTES:
            raise ManifestError(f"{where}.dtype: unsupported dtype {dtype!r}")
        if math.prod(dims) * DTYPE_BYTES[dtype] > MAX_TENSOR_BYTES:
            raise ManifestError(f"{where}.shape: {list(dims)} of {dtype} exceeds {MAX_TENSOR_BYTES:,} bytes")
        zero_point = doc.get("zero_point")
        if zero_point is not None:
            _typed(zero_point, int, f"{where}.zero_point")
            if not -(1 << 31) <= zero_point < 1 << 31:
                raise ManifestError(f"{where}.zero_point: {zero_point} is out of range")
        scale = _optional_float(doc.get("scale"), f"{where}.scale")
        if scale is not None and not scale > 0:
            raise ManifestError(f"{where}.scale: a quantization scale must be positive, got {scale}")
        spec = cls(name, dims, dtype, scale, zero_point)
        if "bytes" in doc and doc["bytes"] != spec.bytes:
            raise ManifestError(f"{where}.bytes: {doc['bytes']} does not match shape and dtype ({spec.bytes})")
        return spec


@dataclass(frozen=True)
class SegmentVariant:
    """A segment compiled for an accelerator, stored beside its CPU file.

    ``mapped_ops`` counts the operators the compiler placed on the accelerator;
    ``cpu_ops`` names those left to the CPU (empty when the whole segment is mapped).
    """

    target: str
    file: str
    sha256: str
    size_bytes: int
    compiler_version: str
    mapped_ops: int
    cpu_ops: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "cpu_ops": list(self.cpu_ops)}

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any], where: str) -> SegmentVariant:
        _require(doc, where, {"target", "file", "sha256", "size_bytes", "compiler_version", "mapped_ops"},
                 {"cpu_ops"})
        target = _typed(doc["target"], str, f"{where}.target")
        if target not in VARIANT_TARGETS:
            raise ManifestError(f"{where}.target: {target!r} is not one of {', '.join(VARIANT_TARGETS)}")
        cpu_ops = _typed(doc.get("cpu_ops", []), list, f"{where}.cpu_ops")
        return cls(
            target=target,
            file=_plain_file_name(doc, where),
            sha256=_sha256(doc, where),
            size_bytes=_size_bytes(doc, where),
            compiler_version=_typed(doc["compiler_version"], str, f"{where}.compiler_version"),
            mapped_ops=_typed(doc["mapped_ops"], int, f"{where}.mapped_ops"),
            cpu_ops=tuple(_typed(op, str, f"{where}.cpu_ops") for op in cpu_ops),
        )


@dataclass(frozen=True)
class SegmentSpec:
    """One TFLite file of the bundle and the named tensors it reads and writes."""

    index: int
    file: str
    sha256: str
    size_bytes: int
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    variants: tuple[SegmentVariant, ...] = ()

    def output(self, name: str) -> TensorSpec:
        for spec in self.outputs:
            if spec.name == name:
                return spec
        raise KeyError(name)

    def variant(self, target: str) -> SegmentVariant | None:
        """The compiled variant for ``target``, if the bundle has one."""
        return next((v for v in self.variants if v.target == target), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "file": self.file,
            "sha256": self.sha256,
            "size_bytes": self.size_bytes,
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
            **({"variants": [v.to_dict() for v in self.variants]} if self.variants else {}),
        }

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any], where: str) -> SegmentSpec:
        _require(doc, where, {"index", "file", "sha256", "size_bytes", "inputs", "outputs"}, {"variants"})
        file = _plain_file_name(doc, where)
        sha = _sha256(doc, where)
        size_bytes = _size_bytes(doc, where)
        variants = tuple(
            SegmentVariant.from_dict(v, f"{where}.variants[{i}]")
            for i, v in enumerate(_typed(doc.get("variants", []), list, f"{where}.variants"))
        )
        targets = [v.target for v in variants]
        if len(set(targets)) != len(targets):
            raise ManifestError(f"{where}.variants: more than one variant for the same target in {targets}")
        if any(v.file == file for v in variants):
            raise ManifestError(f"{where}.variants: a variant cannot use the segment's own file {file!r}")
        return cls(
            index=_typed(doc["index"], int, f"{where}.index"),
            file=file,
            sha256=sha,
            size_bytes=size_bytes,
            inputs=tuple(
                TensorSpec.from_dict(t, f"{where}.inputs[{i}]")
                for i, t in enumerate(_typed(doc["inputs"], list, f"{where}.inputs"))
            ),
            outputs=tuple(
                TensorSpec.from_dict(t, f"{where}.outputs[{i}]")
                for i, t in enumerate(_typed(doc["outputs"], list, f"{where}.outputs"))
            ),
            variants=variants,
        )


@dataclass(frozen=True)
class ExitSpec:
    """An early (or the final) classifier: which segment computes it, and how good it is."""

    name: str
    segment: int
    num_classes: int
    accuracy: float | None = None
    float_accuracy: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any], where: str) -> ExitSpec:
        _require(doc, where, {"name", "segment", "num_classes"}, {"accuracy", "float_accuracy"})
        num_classes = _typed(doc["num_classes"], int, f"{where}.num_classes")
        if not 1 <= num_classes <= MAX_TENSOR_BYTES:
            raise ManifestError(f"{where}.num_classes: must be at least 1, got {num_classes}")
        accuracy = _optional_float(doc.get("accuracy"), f"{where}.accuracy")
        float_accuracy = _optional_float(doc.get("float_accuracy"), f"{where}.float_accuracy")
        for key, value in (("accuracy", accuracy), ("float_accuracy", float_accuracy)):
            if value is not None and not 0.0 <= value <= 1.0:
                raise ManifestError(f"{where}.{key}: an accuracy lies in [0, 1], got {value}")
        return cls(
            name=_typed(doc["name"], str, f"{where}.name"),
            segment=_typed(doc["segment"], int, f"{where}.segment"),
            num_classes=num_classes,
            accuracy=accuracy,
            float_accuracy=float_accuracy,
        )


@dataclass(frozen=True)
class CutSpec:
    """A cut: the layer whose output segment ``segment`` hands to segment ``segment + 1``."""

    layer: str
    segment: int
    activation_bytes: int

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any], where: str) -> CutSpec:
        _require(doc, where, {"layer", "segment", "activation_bytes"})
        activation_bytes = _typed(doc["activation_bytes"], int, f"{where}.activation_bytes")
        if not 0 <= activation_bytes <= MAX_TENSOR_BYTES:
            raise ManifestError(f"{where}.activation_bytes: {activation_bytes} is outside 0..{MAX_TENSOR_BYTES:,}")
        return cls(
            layer=_typed(doc["layer"], str, f"{where}.layer"),
            segment=_typed(doc["segment"], int, f"{where}.segment"),
            activation_bytes=activation_bytes,
        )


@dataclass(frozen=True)
class FusedSpec:
    """Consecutive segments [start, stop) as one TFLite file, an optional speed-up.

    Carved from the same converted model as the segments and verified against their chain,
    it reads segment ``start``'s inputs and writes ``outputs``: every output of the
    segments it covers, so running it leaves exactly the tensors the chain would. A
    device runs it when it would run those segments back to back with no early-exit check
    in between, and pays one interpreter's thread-pool hand-over instead of one per segment.
    """

    start: int
    stop: int
    file: str
    sha256: str
    size_bytes: int
    outputs: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "outputs": list(self.outputs)}

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any], where: str) -> FusedSpec:
        _require(doc, where, {"start", "stop", "file", "sha256", "size_bytes", "outputs"})
        return cls(
            start=_typed(doc["start"], int, f"{where}.start"),
            stop=_typed(doc["stop"], int, f"{where}.stop"),
            file=_plain_file_name(doc, where),
            sha256=_sha256(doc, where),
            size_bytes=_size_bytes(doc, where),
            outputs=tuple(_typed(n, str, f"{where}.outputs") for n in _typed(doc["outputs"], list, f"{where}.outputs")),
        )


@dataclass(frozen=True)
class MeasuredOn:
    """The interpreter that measured the exits' accuracy: int8 results depend on the kernels
    (LiteRT's default XNNPACK delegate rounds differently from the builtin kernels)."""

    backend: str
    backend_version: str
    kernels: str
    machine: str

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def describe(self) -> str:
        return f"{self.backend} {self.backend_version}, {self.kernels} kernels, {self.machine}"

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any], where: str) -> MeasuredOn:
        _require(doc, where, {"backend", "backend_version", "kernels", "machine"})
        return cls(**{key: _typed(doc[key], str, f"{where}.{key}") for key in
                      ("backend", "backend_version", "kernels", "machine")})


@dataclass(frozen=True)
class Verification:
    """Outcome of comparing the segment chain with the whole quantized model."""

    samples: int
    max_abs_diff: float
    bit_exact: bool

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any], where: str) -> Verification:
        _require(doc, where, {"samples", "max_abs_diff", "bit_exact"})
        diff = _optional_float(doc["max_abs_diff"], f"{where}.max_abs_diff")
        if diff is not None and diff < 0:
            raise ManifestError(f"{where}.max_abs_diff: must not be negative, got {diff}")
        samples = _typed(doc["samples"], int, f"{where}.samples")
        if samples < 0:
            raise ManifestError(f"{where}.samples: must not be negative, got {samples}")
        return cls(
            samples=samples,
            max_abs_diff=0.0 if diff is None else diff,
            bit_exact=_typed(doc["bit_exact"], bool, f"{where}.bit_exact"),
        )


@dataclass(frozen=True)
class Manifest:
    """The whole of bundle.json."""

    model_name: str
    quantization: str
    input: TensorSpec
    segments: tuple[SegmentSpec, ...]
    exits: tuple[ExitSpec, ...]
    cuts: tuple[CutSpec, ...]
    converter_version: str
    tensorflow_version: str
    verification: Verification | None = None
    accuracy_measured_on: MeasuredOn | None = None
    schema_version: int = SCHEMA_VERSION
    bundle_id: str = field(default="")
    fused: tuple[FusedSpec, ...] = ()
    # The release number a signer gives the bundle (`tflite-edge sign --bundle-version N`);
    # devices with a state file never accept a signed bundle below the highest they used.
    # Not part of bundle_id: it names a release, not the content. 0: not versioned.
    bundle_version: int = 0

    def __post_init__(self) -> None:
        if not self.bundle_id:
            object.__setattr__(self, "bundle_id", compute_bundle_id(self))

    # -- derived views -------------------------------------------------------------
    @property
    def num_segments(self) -> int:
        return len(self.segments)

    @property
    def exit_names(self) -> tuple[str, ...]:
        return tuple(e.name for e in self.exits)

    def exit(self, name: str) -> ExitSpec:
        for spec in self.exits:
            if spec.name == name:
                return spec
        raise KeyError(f"unknown exit {name!r}; this bundle has {', '.join(self.exit_names)}")

    def partition_bytes(self) -> tuple[int, ...]:
        """Bytes of tensor data a device sends to the edge for each partition ``K = 0..num_segments``.

        ``K = 0`` sends segment 0's (quantized) input, ``0 < K < num_segments`` the activation
        at cut ``K - 1``, and ``K = num_segments`` (everything local) nothing. Frame headers
        (``transport.wire``) come on top.
        """
        first = self.segments[0].inputs
        return (first[0].bytes if first else self.input.bytes, *(c.activation_bytes for c in self.cuts), 0)

    def fused_span(self, start: int, stop: int) -> FusedSpec | None:
        """The fused file covering exactly segments [start, stop), if the bundle has one."""
        return next((f for f in self.fused if f.start == start and f.stop == stop), None)

    def tensor(self, name: str) -> TensorSpec:
        """The spec of a named tensor produced by a segment (or the segment-0 input)."""
        for segment in self.segments:
            for spec in (*segment.inputs, *segment.outputs):
                if spec.name == name:
                    return spec
        raise KeyError(name)

    # -- serialisation ---------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        optional = {"fused": [f.to_dict() for f in self.fused]} if self.fused else {}
        return {
            "schema_version": self.schema_version,
            "bundle_id": self.bundle_id,
            "model_name": self.model_name,
            "quantization": self.quantization,
            "input": self.input.to_dict(),
            "segments": [s.to_dict() for s in self.segments],
            "exits": [e.to_dict() for e in self.exits],
            "cuts": [c.to_dict() for c in self.cuts],
            "verification": None if self.verification is None else self.verification.to_dict(),
            "converter_version": self.converter_version,
            "tensorflow_version": self.tensorflow_version,
            **optional,
            # Written only when set, so unversioned bundles stay readable by older releases.
            **({"bundle_version": self.bundle_version} if self.bundle_version else {}),
            **({"accuracy_measured_on": self.accuracy_measured_on.to_dict()} if self.accuracy_measured_on else {}),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes) -> Manifest:
        try:
            doc = json.loads(text)
        except (ValueError, RecursionError) as e:  # also digit strings over 4300 digits and deep nesting
            raise ManifestError(f"bundle.json is not valid JSON: {e}") from e
        return cls.from_dict(doc)

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> Manifest:
        if isinstance(doc, Mapping) and "schema_version" in doc:
            version = doc["schema_version"]
            if isinstance(version, int) and not isinstance(version, bool) and version > SCHEMA_VERSION:
                raise SchemaVersionError(
                    f"bundle.json has schema version {version}, but this tflite-edge reads up to "
                    f"version {SCHEMA_VERSION}: upgrade tflite-edge to load this bundle"
                )
        _require(
            doc,
            "bundle.json",
            {"schema_version", "model_name", "quantization", "input", "segments", "exits", "cuts",
             "converter_version", "tensorflow_version"},
            {"bundle_id", "verification", "fused", "bundle_version", "accuracy_measured_on"},
        )
        version = _typed(doc["schema_version"], int, "schema_version")
        if version < 1:
            raise ManifestError(f"schema_version: {version} is not a valid schema version")
        quantization = _typed(doc["quantization"], str, "quantization")
        if quantization not in QUANTIZATION_MODES:
            raise ManifestError(f"quantization: {quantization!r} is not one of {', '.join(QUANTIZATION_MODES)}")
        verification = doc.get("verification")
        measured_on = doc.get("accuracy_measured_on")
        bundle_version = _typed(doc.get("bundle_version", 0), int, "bundle_version")
        if not 0 <= bundle_version <= _MAX_VERSION:
            raise ManifestError(f"bundle_version: {bundle_version} is outside 0..{_MAX_VERSION}")
        manifest = cls(
            schema_version=version,
            model_name=_typed(doc["model_name"], str, "model_name"),
            quantization=quantization,
            input=TensorSpec.from_dict(doc["input"], "input"),
            segments=tuple(
                SegmentSpec.from_dict(s, f"segments[{i}]")
                for i, s in enumerate(_typed(doc["segments"], list, "segments"))
            ),
            exits=tuple(
                ExitSpec.from_dict(e, f"exits[{i}]") for i, e in enumerate(_typed(doc["exits"], list, "exits"))
            ),
            cuts=tuple(CutSpec.from_dict(c, f"cuts[{i}]") for i, c in enumerate(_typed(doc["cuts"], list, "cuts"))),
            verification=None if verification is None else Verification.from_dict(verification, "verification"),
            accuracy_measured_on=None if measured_on is None else MeasuredOn.from_dict(
                measured_on, "accuracy_measured_on"),
            converter_version=_typed(doc["converter_version"], str, "converter_version"),
            tensorflow_version=_typed(doc["tensorflow_version"], str, "tensorflow_version"),
            fused=tuple(
                FusedSpec.from_dict(f, f"fused[{i}]") for i, f in enumerate(_typed(doc.get("fused", []), list, "fused"))
            ),
            bundle_version=bundle_version,
        )
        _check_structure(manifest)
        recorded = doc.get("bundle_id")
        if recorded is not None and recorded != manifest.bundle_id:
            raise ManifestError(
                f"bundle_id: recorded {recorded!r} but the segments hash to {manifest.bundle_id!r}; "
                "the manifest was edited by hand or is corrupt"
            )
        return manifest


def _check_structure(manifest: Manifest) -> None:
    """Consistency that the field types alone cannot express."""
    if not manifest.segments:
        raise ManifestError("segments: a bundle needs at least one segment")
    files: set[str] = set()
    for i, segment in enumerate(manifest.segments):
        if segment.index != i:
            raise ManifestError(f"segments[{i}].index: expected {i}, got {segment.index}")
        if segment.file in files or segment.file in ("bundle.json", "bundle.sig"):
            raise ManifestError(f"segments[{i}].file: {segment.file!r} is used twice or names a bundle file")
        files.add(segment.file)
        for variant in segment.variants:
            if variant.file in files or variant.file in ("bundle.json", "bundle.sig"):
                raise ManifestError(f"segments[{i}].variants: file {variant.file!r} is used twice or names a "
                                    "bundle file")
            files.add(variant.file)
    if not manifest.exits:
        raise ManifestError("exits: a bundle needs at least one exit")
    names = [e.name for e in manifest.exits]
    if len(set(names)) != len(names):
        raise ManifestError(f"exits: duplicate exit names in {names}")
    for i, exit_spec in enumerate(manifest.exits):
        if not 0 <= exit_spec.segment < manifest.num_segments:
            raise ManifestError(f"exits[{i}].segment: {exit_spec.segment} is not a segment of this bundle")
        if exit_spec.name not in {t.name for t in manifest.segments[exit_spec.segment].outputs}:
            raise ManifestError(
                f"exits[{i}]: exit {exit_spec.name!r} is not an output of segment {exit_spec.segment}"
            )
    if len(manifest.cuts) != manifest.num_segments - 1:
        raise ManifestError(
            f"cuts: {manifest.num_segments} segments need {manifest.num_segments - 1} cuts, got {len(manifest.cuts)}"
        )
    for i, cut in enumerate(manifest.cuts):
        if cut.segment != i:
            raise ManifestError(f"cuts[{i}].segment: expected {i}, got {cut.segment}")
    spans = set()
    for i, fused in enumerate(manifest.fused):
        where = f"fused[{i}]"
        if not 0 <= fused.start < fused.stop <= manifest.num_segments or fused.stop - fused.start < 2:
            raise ManifestError(f"{where}: [{fused.start}, {fused.stop}) is not a range of 2 or more segments")
        if fused.file in files or (fused.start, fused.stop) in spans:
            raise ManifestError(f"{where}: file {fused.file!r} or range [{fused.start}, {fused.stop}) is listed twice")
        files.add(fused.file)
        spans.add((fused.start, fused.stop))
        expected = [t.name for s in manifest.segments[fused.start:fused.stop] for t in s.outputs]
        if sorted(fused.outputs) != sorted(expected):
            raise ManifestError(f"{where}.outputs: {list(fused.outputs)} are not the outputs of segments "
                                f"{fused.start}..{fused.stop - 1} ({expected})")


def compute_bundle_id(manifest: Manifest) -> str:
    """A short content hash of the segments and their wiring: equal ids mean equal bundles."""
    identity = {
        "schema_version": manifest.schema_version,
        "segments": [
            {"sha256": s.sha256, "inputs": [t.to_dict() for t in s.inputs], "outputs": [t.to_dict() for t in s.outputs]}
            for s in manifest.segments
        ],
        "exits": [[e.name, e.segment] for e in manifest.exits],
    }
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
    return digest[:16]
