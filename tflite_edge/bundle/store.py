"""Reading and writing bundle directories.

A bundle is a directory holding ``bundle.json`` and one ``.tflite`` file per segment.
Loading verifies the schema, every segment's sha256 and that segments chain; writing is
atomic (a temporary directory beside the target, renamed into place), so a failed
conversion never leaves a half-written bundle behind.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ..errors import BundleError, ChainError, ChecksumError, ManifestError
from .manifest import Manifest, TensorSpec

__all__ = ["MANIFEST_NAME", "Bundle", "load_bundle", "write_bundle", "check_chain", "sha256_hex"]

MANIFEST_NAME = "bundle.json"


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Bundle:
    """A loaded, verified bundle: its directory and manifest."""

    path: Path
    manifest: Manifest

    @property
    def bundle_id(self) -> str:
        return self.manifest.bundle_id

    def segment_path(self, index: int) -> Path:
        return self.path / self.manifest.segments[index].file

    def read_variant(self, index: int, target: str) -> bytes:
        """Segment ``index`` compiled for ``target`` (e.g. ``"edgetpu"``), checked against its
        recorded sha256. Raises ``BundleError`` when the bundle has no such variant."""
        spec = self.manifest.segments[index]
        variant = spec.variant(target)
        if variant is None:
            raise BundleError(
                f"segment {index} has no {target} variant; compile one with `tflite-edge {target} compile`"
            )
        data = _read(self.path / variant.file, f"segment {index} ({target})")
        if sha256_hex(data) != variant.sha256:
            raise ChecksumError(
                f"segment {index}'s {target} variant ({variant.file}) does not match its sha256 in "
                f"{MANIFEST_NAME}: the file is corrupt or was modified; compile the bundle again"
            )
        return data

    def read_segment(self, index: int) -> bytes:
        """The segment's flatbuffer, checked against its recorded sha256."""
        spec = self.manifest.segments[index]
        data = _read(self.segment_path(index), f"segment {index}")
        if sha256_hex(data) != spec.sha256:
            raise ChecksumError(
                f"segment {index} ({spec.file}) does not match its sha256 in {MANIFEST_NAME}: "
                "the file is corrupt or was modified; convert the model again"
            )
        return data


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError as e:
        raise BundleError(f"{what}: {path} is missing from the bundle") from e
    except OSError as e:
        raise BundleError(f"{what}: cannot read {path}: {e.strerror}") from e


def load_bundle(path: str | os.PathLike[str], *, verify_checksums: bool = True) -> Bundle:
    """Load and verify the bundle in directory ``path``.

    Raises ``BundleError`` (or a subclass naming the segment and tensor at fault) when the
    directory is not a bundle, the manifest is invalid, a checksum does not match or the
    segments do not chain.
    """
    root = Path(path)
    if not root.is_dir():
        raise BundleError(f"{root} is not a bundle directory (create one with `tflite-edge convert`)")
    manifest = Manifest.from_json(_read(root / MANIFEST_NAME, "manifest"))
    check_chain(manifest)
    bundle = Bundle(root, manifest)
    if verify_checksums:
        for index in range(manifest.num_segments):
            bundle.read_segment(index)
    return bundle


def check_chain(manifest: Manifest) -> None:
    """Every segment input must be the model input or an output of an earlier segment, with
    the same shape, dtype and quantization."""
    available: dict[str, tuple[TensorSpec, str]] = {}
    first_inputs = manifest.segments[0].inputs
    if [t.name for t in first_inputs] != [manifest.input.name]:
        raise ChainError(
            f"segment 0 reads {[t.name for t in first_inputs]}, but the model input is {manifest.input.name!r}"
        )
    available[manifest.input.name] = (first_inputs[0], "the model input")
    for segment in manifest.segments:
        for spec in segment.inputs:
            if spec.name not in available:
                raise ChainError(
                    f"segment {segment.index} reads tensor {spec.name!r}, which neither the model input "
                    "nor an earlier segment produces"
                )
            produced, by = available[spec.name]
            if (produced.shape, produced.dtype, produced.scale, produced.zero_point) != (
                spec.shape, spec.dtype, spec.scale, spec.zero_point,
            ):
                raise ChainError(
                    f"segment {segment.index} reads tensor {spec.name!r} as {_describe(spec)}, "
                    f"but {by} produces {_describe(produced)}"
                )
        for spec in segment.outputs:
            available[spec.name] = (spec, f"segment {segment.index}")
    for cut in manifest.cuts:
        nxt = manifest.segments[cut.segment + 1]
        if cut.layer not in {t.name for t in nxt.inputs}:
            raise ChainError(f"cut {cut.layer!r} is not an input of segment {nxt.index}")


def _describe(spec: TensorSpec) -> str:
    quant = f", scale={spec.scale}, zero_point={spec.zero_point}" if spec.is_quantized else ""
    return f"{spec.dtype}{list(spec.shape)}{quant}"


def write_bundle(
    directory: str | os.PathLike[str],
    manifest: Manifest,
    segment_files: Mapping[str, bytes],
    *,
    overwrite: bool = False,
) -> Bundle:
    """Write a bundle atomically and return it loaded.

    ``segment_files`` maps each segment's file name to its flatbuffer. The bundle appears at
    ``directory`` only once every file is written; an existing directory is replaced only
    with ``overwrite=True``.
    """
    target = Path(directory)
    if target.exists() and not overwrite:
        raise BundleError(f"{target} already exists; choose another output or pass overwrite (--force)")
    expected = {s.file for s in manifest.segments} | {v.file for s in manifest.segments for v in s.variants}
    if set(segment_files) != expected:
        raise ManifestError(f"segment files {sorted(segment_files)} do not match the manifest's {sorted(expected)}")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        for name, data in segment_files.items():
            (staging / name).write_bytes(data)
        (staging / MANIFEST_NAME).write_text(manifest.to_json())
        if target.exists():
            old = target.with_name(f".{target.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            target.rename(old)
            staging.rename(target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return load_bundle(target)
