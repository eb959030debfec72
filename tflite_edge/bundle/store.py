"""Reading and writing bundle directories.

A bundle is a directory holding ``bundle.json`` and one ``.tflite`` file per segment
(plus optional fused files of consecutive segments). Loading reads every file once,
through bounded reads (regular files only; bundle.json at most ``MAX_MANIFEST_BYTES``; each
file exactly the ``size_bytes`` its manifest entry states, checked before reading),
verifies the schema, every file's sha256 and that segments chain, and keeps the verified
bytes: what was checked is what runs, even if the directory changes afterwards. Writing is
atomic (a temporary directory beside the target, renamed into place), so a failed
conversion never leaves a half-written bundle behind, and replaces only a directory that
is a bundle.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import BundleError, ChainError, ChecksumError, ManifestError
from ..files import read_regular
from .manifest import MAX_SEGMENT_BYTES, FusedSpec, Manifest, SegmentSpec, TensorSpec

__all__ = [
    "MANIFEST_NAME",
    "MAX_MANIFEST_BYTES",
    "Bundle",
    "bundle_from_manifest_bytes",
    "check_chain",
    "check_replaceable",
    "load_bundle",
    "read_fused_file",
    "read_manifest_bytes",
    "read_segment_file",
    "sha256_hex",
    "write_bundle",
]

MANIFEST_NAME = "bundle.json"
SIGNATURE_NAME = "bundle.sig"
MAX_MANIFEST_BYTES = 16 << 20  # a manifest lists tensors and segments: kilobytes, not megabytes


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Bundle:
    """A loaded, verified bundle: its directory, its manifest and (normally) its segments' bytes.

    ``segment_data`` holds each segment's flatbuffer as it was read and checked at load time
    (``fused_data`` each fused file's, in the manifest's order);
    ``read_segment`` returns those bytes and never goes back to the directory. A bundle made
    without them (``load_bundle(..., verify_checksums=False)``) reads and checks each segment
    on first use instead. A ``Bundle`` can be pickled into worker processes with its bytes.
    """

    path: Path
    manifest: Manifest
    segment_data: tuple[bytes, ...] | None = field(default=None, repr=False, compare=False)
    fused_data: tuple[bytes, ...] | None = field(default=None, repr=False, compare=False)

    @property
    def bundle_id(self) -> str:
        return self.manifest.bundle_id

    def segment_path(self, index: int) -> Path:
        return self.path / self.manifest.segments[index].file

    def read_segment(self, index: int) -> bytes:
        """The segment's flatbuffer, checked against its recorded size and sha256."""
        if self.segment_data is not None:
            return self.segment_data[index]
        spec = self.manifest.segments[index]
        data = read_segment_file(self.path, spec)
        if sha256_hex(data) != spec.sha256:
            raise ChecksumError(
                f"segment {index} ({spec.file}) does not match its sha256 in {MANIFEST_NAME}: "
                "the file is corrupt or was modified; convert the model again"
            )
        return data


    def read_variant(self, index: int, target: str) -> bytes:
        """Segment ``index`` compiled for ``target`` (e.g. ``"edgetpu"``), read when first needed
        (bounded, like a segment) and checked against its recorded sha256. Raises
        ``BundleError`` when the bundle has no such variant."""
        variant = self.manifest.segments[index].variant(target)
        if variant is None:
            raise BundleError(
                f"segment {index} has no {target} variant; compile one with `tflite-edge {target} compile`"
            )
        what = f"segment {index}'s {target} variant ({variant.file})"
        data = read_regular(self.path / variant.file, what=what, max_bytes=MAX_SEGMENT_BYTES,
                            expected_bytes=variant.size_bytes, error=BundleError)
        if sha256_hex(data) != variant.sha256:
            raise ChecksumError(
                f"{what} does not match its sha256 in {MANIFEST_NAME}: the file is corrupt or was modified; "
                "compile the bundle again"
            )
        return data

    def read_fused(self, start: int, stop: int) -> bytes:
        """The fused file of segments [start, stop), checked against its recorded size and sha256."""
        spec = self.manifest.fused_span(start, stop)
        if spec is None:
            raise BundleError(f"this bundle has no fused file for segments [{start}, {stop})")
        if self.fused_data is not None:
            return self.fused_data[self.manifest.fused.index(spec)]
        return read_fused_file(self.path, spec)


def read_segment_file(root: Path, spec: SegmentSpec) -> bytes:
    """A segment file's bytes: a regular file of exactly ``spec.size_bytes`` bytes, read once."""
    return read_regular(
        root / spec.file, what=f"segment {spec.index} ({spec.file})", max_bytes=MAX_SEGMENT_BYTES,
        expected_bytes=spec.size_bytes, error=BundleError,
    )


def read_fused_file(root: Path, spec: FusedSpec) -> bytes:
    """A fused file's bytes, read once (bounded like a segment) and checked against its sha256."""
    what = f"fused segments [{spec.start}, {spec.stop}) ({spec.file})"
    data = read_regular(root / spec.file, what=what, max_bytes=MAX_SEGMENT_BYTES, expected_bytes=spec.size_bytes,
                        error=BundleError)
    if sha256_hex(data) != spec.sha256:
        raise ChecksumError(
            f"{what} do not match their sha256 in {MANIFEST_NAME}: the file is corrupt or was modified; "
            "convert the model again"
        )
    return data


def read_manifest_bytes(root: Path) -> bytes:
    """bundle.json's bytes, read once through a bounded read."""
    return read_regular(root / MANIFEST_NAME, what="manifest", max_bytes=MAX_MANIFEST_BYTES, error=BundleError)


def _bundle_root(path: str | os.PathLike[str]) -> Path:
    root = Path(path)
    if not root.is_dir():
        raise BundleError(f"{root} is not a bundle directory (create one with `tflite-edge convert`)")
    return root


def load_bundle(path: str | os.PathLike[str], *, verify_checksums: bool = True) -> Bundle:
    """Load and verify the bundle in directory ``path``.

    Raises ``BundleError`` (or a subclass naming the segment and tensor at fault) when the
    directory is not a bundle, the manifest is invalid, a file is not a regular file of the
    expected size, a checksum does not match or the segments do not chain.
    """
    root = _bundle_root(path)
    return bundle_from_manifest_bytes(root, read_manifest_bytes(root), verify_checksums=verify_checksums)


def bundle_from_manifest_bytes(root: Path, manifest_bytes: bytes, *, verify_checksums: bool = True) -> Bundle:
    """The bundle described by ``manifest_bytes`` (already read from ``root``), with its segments
    read once and checked against their sizes and sha256 when ``verify_checksums``."""
    manifest = Manifest.from_json(manifest_bytes)
    check_chain(manifest)
    if not verify_checksums:
        return Bundle(root, manifest)
    data = []
    for spec in manifest.segments:
        segment = read_segment_file(root, spec)
        if sha256_hex(segment) != spec.sha256:
            raise ChecksumError(
                f"segment {spec.index} ({spec.file}) does not match its sha256 in {MANIFEST_NAME}: "
                "the file is corrupt or was modified; convert the model again"
            )
        data.append(segment)
    fused = tuple(read_fused_file(root, spec) for spec in manifest.fused)
    return Bundle(root, manifest, tuple(data), fused)


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

    ``segment_files`` maps each segment's (and fused file's) name to its flatbuffer. The bundle appears at
    ``directory`` only once every file is written; an existing directory is replaced only
    with ``overwrite=True``.
    """
    target = Path(directory)
    check_replaceable(target, overwrite=overwrite)
    expected = {s.file for s in manifest.segments} | {f.file for f in manifest.fused}
    expected |= {v.file for s in manifest.segments for v in s.variants}
    if set(segment_files) != expected:
        raise ManifestError(f"segment files {sorted(segment_files)} do not match the manifest's {sorted(expected)}")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        os.chmod(staging, 0o777 & ~_umask())  # mkdtemp makes 0700; a bundle gets the usual mode
        for name, data in segment_files.items():
            (staging / name).write_bytes(data)
        (staging / MANIFEST_NAME).write_text(manifest.to_json())
        if target.exists():
            check_replaceable(target, overwrite=overwrite)  # still a bundle, just before it goes
            # A fresh, empty name: rename() replaces an empty directory, never another one.
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            target.rename(old)
            staging.rename(target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return load_bundle(target)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def check_replaceable(target: Path, *, overwrite: bool) -> None:
    """Refuse to write a bundle over ``target`` unless it does not exist, or ``overwrite`` is
    set and ``target`` is a bundle directory: a readable manifest, and no file that the
    manifest (or its signature) does not account for."""
    if not target.exists() and not target.is_symlink():
        return
    if not overwrite:
        raise BundleError(f"{target} already exists; choose another output or pass overwrite (--force)")
    refuse = f"{target} exists and is not a bundle directory; --force replaces only a bundle: choose another output"
    if target.is_symlink() or not target.is_dir():
        raise BundleError(refuse)
    try:
        manifest = Manifest.from_json(read_manifest_bytes(target))
    except BundleError as e:
        raise BundleError(f"{refuse} ({e})") from e
    known = {MANIFEST_NAME, SIGNATURE_NAME, *(s.file for s in manifest.segments), *(f.file for f in manifest.fused)}
    others = sorted(p.name for p in target.iterdir() if p.name not in known)
    if others:
        shown = ", ".join(others[:5]) + (", ..." if len(others) > 5 else "")
        raise BundleError(f"{target} holds files that are not part of its bundle ({shown}); --force replaces only "
                          "a bundle: move them or choose another output")
