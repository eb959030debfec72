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
      "converter_version": "0.1.0",
      "tensorflow_version": "2.21.0"
    }

Optional parts: ``accuracy_measured_on`` names the interpreter that measured the exits'
accuracy (``{"backend": "litert", "backend_version": "2.3.0", "kernels": "default",
"machine": "x86_64"}``), and a segment may list compiled ``variants`` beside its CPU file
(``[{"target": "edgetpu", "file": "segment_0_edgetpu.tflite", "sha256": "…", "size_bytes":
6144, "compiler_version": "16.0.384591198", "mapped_ops": 5, "cpu_ops": ["SOFTMAX"]}]``).
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
    "SCHEMA_VERSION",
    "QUANTIZATION_MODES",
    "TensorSpec",
    "SegmentSpec",
    "ExitSpec",
    "CutSpec",
    "MeasuredOn",
    "SegmentVariant",
    "VARIANT_TARGETS",
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
        dims = tuple(_typed(d, int, f"{where}.shape") for d in shape)
        if any(d <= 0 for d in dims):
            raise ManifestError(f"{where}.shape: dimensions must be positive, got {list(dims)}")
        dtype = _typed(doc["dtype"], str, f"{where}.dtype")
        if dtype not in DTYPE_BYTES:
            raise ManifestError(f"{where}.dtype: unsupported dtype {dtype!r}")
        zero_point = doc.get("zero_point")
        if zero_point is not None:
            _typed(zero_point, int, f"{where}.zero_point")
        spec = cls(name, dims, dtype, _optional_float(doc.get("scale"), f"{where}.scale"), zero_point)
        if "bytes" in doc and doc["bytes"] != spec.bytes:
            raise ManifestError(f"{where}.bytes: {doc['bytes']} does not match shape and dtype ({spec.bytes})")
        return spec


def _file_name(value: Any, where: str) -> str:
    file = _typed(value, str, where)
    if not file or "/" in file or "\\" in file or file.startswith("."):
        raise ManifestError(f"{where}: {file!r} must be a plain file name inside the bundle")
    return file


def _sha256(value: Any, where: str) -> str:
    sha = _typed(value, str, where)
    if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
        raise ManifestError(f"{where}: not a lowercase hex sha256 digest")
    return sha


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
        return cls(
            target=target,
            file=_file_name(doc["file"], f"{where}.file"),
            sha256=_sha256(doc["sha256"], f"{where}.sha256"),
            size_bytes=_typed(doc["size_bytes"], int, f"{where}.size_bytes"),
            compiler_version=_typed(doc["compiler_version"], str, f"{where}.compiler_version"),
            mapped_ops=_typed(doc["mapped_ops"], int, f"{where}.mapped_ops"),
            cpu_ops=tuple(_typed(op, str, f"{where}.cpu_ops") for op in _typed(doc.get("cpu_ops", []), list,
                                                                              f"{where}.cpu_ops")),
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
        doc: dict[str, Any] = {
            "index": self.index,
            "file": self.file,
            "sha256": self.sha256,
            "size_bytes": self.size_bytes,
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
        }
        if self.variants:
            doc["variants"] = [v.to_dict() for v in self.variants]
        return doc

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any], where: str) -> SegmentSpec:
        _require(doc, where, {"index", "file", "sha256", "size_bytes", "inputs", "outputs"}, {"variants"})
        file = _file_name(doc["file"], f"{where}.file")
        sha = _sha256(doc["sha256"], f"{where}.sha256")
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
            size_bytes=_typed(doc["size_bytes"], int, f"{where}.size_bytes"),
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
        return cls(
            name=_typed(doc["name"], str, f"{where}.name"),
            segment=_typed(doc["segment"], int, f"{where}.segment"),
            num_classes=_typed(doc["num_classes"], int, f"{where}.num_classes"),
            accuracy=_optional_float(doc.get("accuracy"), f"{where}.accuracy"),
            float_accuracy=_optional_float(doc.get("float_accuracy"), f"{where}.float_accuracy"),
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
        return cls(
            layer=_typed(doc["layer"], str, f"{where}.layer"),
            segment=_typed(doc["segment"], int, f"{where}.segment"),
            activation_bytes=_typed(doc["activation_bytes"], int, f"{where}.activation_bytes"),
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
        return cls(
            samples=_typed(doc["samples"], int, f"{where}.samples"),
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

    def tensor(self, name: str) -> TensorSpec:
        """The spec of a named tensor produced by a segment (or the segment-0 input)."""
        for segment in self.segments:
            for spec in (*segment.inputs, *segment.outputs):
                if spec.name == name:
                    return spec
        raise KeyError(name)

    # -- serialisation ---------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
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
        }
        if self.accuracy_measured_on is not None:
            doc["accuracy_measured_on"] = self.accuracy_measured_on.to_dict()
        return doc

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
            {"bundle_id", "verification", "accuracy_measured_on"},
        )
        version = _typed(doc["schema_version"], int, "schema_version")
        if version < 1:
            raise ManifestError(f"schema_version: {version} is not a valid schema version")
        quantization = _typed(doc["quantization"], str, "quantization")
        if quantization not in QUANTIZATION_MODES:
            raise ManifestError(f"quantization: {quantization!r} is not one of {', '.join(QUANTIZATION_MODES)}")
        verification = doc.get("verification")
        measured_on = doc.get("accuracy_measured_on")
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
        for file in (segment.file, *(v.file for v in segment.variants)):
            if file in files:
                raise ManifestError(f"segments[{i}]: file {file!r} is used twice in this bundle")
            files.add(file)
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
