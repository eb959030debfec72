"""Compiling a bundle's segments for the Edge TPU with Coral's ``edgetpu_compiler``.

Each chosen segment is compiled on its own (``edgetpu_compiler -s``); the compiled file is
stored in the bundle beside the CPU file as ``segment_N_edgetpu.tflite`` and recorded in
bundle.json as a segment variant with its own sha256, the compiler's version, how many
operators it mapped to the Edge TPU and which it left on the CPU. The CPU files, their
checksums and the bundle id stay as they were, so edge workers keep serving the bundle.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..bundle import Bundle, SegmentVariant, write_bundle
from ..bundle.store import sha256_hex
from ..errors import EdgeTpuCompileError

__all__ = ["COMPILER", "CompileLog", "compiler_version", "parse_compile_log", "compile_bundle"]

COMPILER = "edgetpu_compiler"
INSTALL_HINT = (
    "install Coral's Edge TPU compiler (Debian/Ubuntu on x86-64: the edgetpu-compiler package from "
    "Coral's apt repository, see https://coral.ai/docs/edgetpu/compiler/)"
)
_VERSION = re.compile(r"Edge TPU Compiler version\s+(\S+)")
_OP_ROW = re.compile(r"^([A-Z][A-Z0-9_]*)\s+(\d+)\s+(\S.*?)\s*$")


@dataclass(frozen=True)
class CompileLog:
    """What the compiler reported for one model: version, mapped operators, CPU operators."""

    version: str
    mapped_ops: int
    cpu_ops: tuple[str, ...]  # "SOFTMAX x1: <the compiler's reason>"


def parse_compile_log(text: str) -> CompileLog:
    """Parse ``edgetpu_compiler -s`` output (its operator table)."""
    version = _VERSION.search(text)
    mapped = 0
    cpu: list[str] = []
    for line in text.splitlines():
        row = _OP_ROW.match(line.strip())
        if row is None:
            continue
        name, count, status = row.group(1), int(row.group(2)), row.group(3)
        if status.startswith("Mapped to Edge TPU"):
            mapped += count
        else:
            cpu.append(f"{name} x{count}: {status}")
    return CompileLog(version.group(1) if version else "unknown", mapped, tuple(cpu))


def _compiler() -> str:
    path = shutil.which(COMPILER)
    if path is None:
        raise EdgeTpuCompileError(f"{COMPILER} is not installed; {INSTALL_HINT}")
    return path


def compiler_version() -> str:
    """The installed compiler's version (raises ``EdgeTpuCompileError`` naming what to install)."""
    done = subprocess.run([_compiler(), "--version"], capture_output=True, text=True, timeout=60)
    found = _VERSION.search(done.stdout + done.stderr)
    if done.returncode != 0 or found is None:
        raise EdgeTpuCompileError(f"{COMPILER} --version failed: {(done.stderr or done.stdout).strip()}")
    return found.group(1)


def compile_bundle(bundle: Bundle, segments: Sequence[int] | None = None, *, timeout_s: float = 600.0) -> Bundle:
    """Compile the chosen segments (all by default) and record them as ``edgetpu`` variants.

    The bundle directory is rewritten atomically; returns it loaded again.
    """
    compiler = _compiler()
    manifest = bundle.manifest
    indices = list(range(manifest.num_segments)) if segments is None else list(segments)
    for index in indices:
        if not 0 <= index < manifest.num_segments:
            raise EdgeTpuCompileError(
                f"segment {index} is not a segment of this bundle (0..{manifest.num_segments - 1})"
            )
    files: dict[str, bytes] = {}
    specs = list(manifest.segments)
    with tempfile.TemporaryDirectory(prefix="tflite-edge-edgetpu-") as scratch:
        work = Path(scratch)
        for index in indices:
            spec = specs[index]
            source = work / spec.file
            source.write_bytes(bundle.read_segment(index))
            done = subprocess.run([compiler, "-s", "-o", str(work), str(source)], capture_output=True, text=True,
                                  timeout=timeout_s)
            compiled = work / f"{source.stem}_edgetpu.tflite"
            if done.returncode != 0 or not compiled.is_file():
                raise EdgeTpuCompileError(
                    f"{COMPILER} failed on segment {index}: {(done.stderr or done.stdout).strip()[-500:]}"
                )
            log = parse_compile_log(done.stdout)
            data = compiled.read_bytes()
            variant = SegmentVariant("edgetpu", compiled.name, sha256_hex(data), len(data), log.version,
                                     log.mapped_ops, log.cpu_ops)
            others = tuple(v for v in spec.variants if v.target != "edgetpu")
            specs[index] = dataclasses.replace(spec, variants=(*others, variant))
            files[compiled.name] = data
    updated = dataclasses.replace(manifest, segments=tuple(specs))
    for index, spec in enumerate(updated.segments):
        files[spec.file] = bundle.read_segment(index)
        for variant in spec.variants:
            if variant.file not in files:
                files[variant.file] = bundle.read_variant(index, variant.target)
    for fused in updated.fused:
        files[fused.file] = bundle.read_fused(fused.start, fused.stop)
    return write_bundle(bundle.path, updated, files, overwrite=True)
